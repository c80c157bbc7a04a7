"""What the serving, rollout and soak benchmarks share: the repository's settings, telemetry off (there is
no network here), and temporary folders for the rollout models of tests/support/rollout.py."""

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
