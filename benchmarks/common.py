"""What the serving, rollout and soak benchmarks share: the repository's settings, telemetry off (there is
no network here), temporary folders for the rollout models of tests/support/rollout.py, and a registered
model trained on simulated days."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def offline_environment() -> None:
    """The repository's mlcycle.yaml, and no telemetry from BentoML or Prefect (unless already set)."""
    os.environ.setdefault("MLCYCLE_CONFIG", str(ROOT / "mlcycle.yaml"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


class Folders:
    """What tests/support/rollout.build_rollout_models needs from pytest's tmp_path_factory, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))


def simulated_champion(settings):
    """(store, registered version) of a model of ``settings.training.family`` trained on
    ``training.window_days`` simulated days written straight into ``validated/`` (one BLAS/OpenMP thread),
    gated (against the champion, if there is one) and registered, not promoted."""
    import datetime as dt

    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.evaluation.gate import decide
    from mlcycle.tasks.registry.registration import register_candidate
    from mlcycle.tasks.simulator import simulate_batch
    from mlcycle.tasks.storage import LocalStore
    from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
    from mlcycle.tasks.training.window import select_window
    from tests.support.training import write_day

    store = LocalStore(settings.store_root)
    start = dt.date(2026, 10, 1)
    for i in range(settings.training.window_days):
        day = start + dt.timedelta(days=i)
        write_day(store, settings, simulate_batch(day, settings.simulator, settings.dataset).frame, day)
    with threadpool_limits(1):
        candidate = train_challenger(store, settings, select_window(store, days=settings.training.window_days))
        comparison = compare_with_champion(store, settings, candidate)
        version = register_candidate(store, candidate, comparison, decide(settings.gate, candidate, comparison))
    return store, version
