"""The demo's packaged champion, shared by the serving tests and the serving faults: a real loan model
trained, registered, promoted and packaged into a bento once per session, and one valid request."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from mlcycle.tasks.storage import LocalStore

BUILD_TOKEN = "tok-present-at-build-time-7d21"  # noqa: S105 - in the environment of `bentoml build` only
SERVING = {"max_body_bytes": 64 * 1024, "max_records": 100, "canary_rows": 120, "latency_requests": 20}


@dataclass
class Champion:
    settings: object
    store: LocalStore
    model: object  # tasks.records.serving.PackagedModel
    bento: object  # tasks.records.serving.BentoRef
    loaded: object  # tasks.registry.LoadedModel


def package_champion(home: Path) -> Champion:
    """Train, register and promote one small model, import it into BentoML and build its bento (once)."""
    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.evaluation.gate import decide
    from mlcycle.tasks.registry.aliases import promote
    from mlcycle.tasks.registry.registration import register_candidate
    from mlcycle.tasks.registry.versions import load_model
    from mlcycle.tasks.serving.packaging import build_bento, import_model
    from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
    from mlcycle.tasks.training.window import select_window
    from tests.support.training import DAYS, fast_settings, seed_validated

    settings = fast_settings(home, training={"family": "hist_gradient_boosting"}, serving=SERVING)
    store = LocalStore(settings.store_root)
    with threadpool_limits(1):
        seed_validated(store, settings)
        candidate = train_challenger(store, settings, select_window(store, days=DAYS))
        comparison = compare_with_champion(store, settings, candidate)
        version = register_candidate(store, candidate, comparison, decide(settings.gate, candidate, comparison))
    promote(store, version.name, version.version, reason="serving tests")
    model = import_model(store, settings)
    with mock.patch.dict(os.environ, {"MLCYCLE_API_TOKEN": BUILD_TOKEN}):  # must not end up in the bento
        bento = build_bento(settings, model)
    return Champion(settings, store, model, bento, load_model(store, version.name, version.version))


GOOD = {"income": 52000.0, "age": 41, "debt_ratio": 0.3, "credit_score": 700, "loan_amount": 12000,
        "employment_years": 5.5, "employment_type": "salaried", "region": "north", "loan_purpose": "car"}
