"""A small fitted model, registered through the registry's real path (:func:`register_candidate`).

:func:`fitted_model` fits a logistic regression on one simulated day and describes it as the training
stage would (a :class:`Candidate` with its test scores, and a gate decision that promotes it), without a
search or a time split, so registry and bucket-policy tests get versions in milliseconds.
:func:`register_fitted` stages its model bytes in a store, as ``train_challenger`` does, and registers
them with ``register_candidate``, which drops the staging again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlcycle.tasks.evaluation.metrics import compute_metrics
from mlcycle.tasks.features import build_pipeline, input_schema, resolve_family, training_features
from mlcycle.tasks.partitions import PartitionRef
from mlcycle.tasks.records.evaluation import GateDecision, ModelScores
from mlcycle.tasks.records.registry import ModelVersion
from mlcycle.tasks.records.training import (
    Candidate,
    Comparison,
    InputPartition,
    SearchSummary,
    SplitPart,
    SplitSummary,
    StagedArtifact,
    TrainingWindow,
)
from mlcycle.tasks.registry.registration import register_candidate
from mlcycle.tasks.registry.versions import MODEL_FILE, staging_prefix
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.simulator import simulate_batch
from mlcycle.tasks.storage import ObjectStore
from mlcycle.tasks.training.challenger import dump_model
from mlcycle.tasks.training.window import labels

DAY = dt.date(2026, 10, 1)


@dataclass(frozen=True)
class FittedModel:
    """A fitted pipeline, its joblib bytes, the rows it was fitted on, and the candidate describing it."""

    settings: Settings
    frame: pd.DataFrame
    pipeline: Any
    model_bytes: bytes
    candidate: Candidate  # not staged anywhere: register_fitted stages it in the store it registers in
    decision: GateDecision


def fitted_model(settings: Settings, name: str = "loans-default", rows: int = 600) -> FittedModel:
    spec = settings.dataset
    frame = simulate_batch(DAY, settings.simulator, spec, rows=rows).frame
    features = training_features(settings)
    pipeline = build_pipeline(features, resolve_family(settings, "logistic_regression")[1], seed=0, task=spec.task)
    y = labels(frame, spec)
    pipeline.fit(frame, y)
    ref = PartitionRef(zone="validated", date=DAY, data_key="validated/date=2026-10-01/data-x.parquet",
                       data_sha256="0" * 64, rows=len(frame))
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    part = SplitPart(name="train", start=now, end=now, first_day=DAY, last_day=DAY, rows=len(frame),
                     positives=int(y.sum()), partitions=[ref])
    candidate = Candidate(
        model_name=name, staging_prefix="", family="logistic_regression", estimator="logistic_regression",
        params={"C": 1.0}, seed=0, threshold=0.5, features=input_schema(features), dataset=spec.name,
        dataset_schema_hash=spec.schema_hash(),
        window=TrainingWindow(partitions=[InputPartition(**ref.model_dump(), dataset_schema_hash="h")],
                              first_day=DAY, last_day=DAY, requested="test"),
        split=SplitSummary(timestamp_column=spec.timestamp_column, train=part,
                           validation=part.model_copy(update={"name": "validation"}),
                           test=part.model_copy(update={"name": "test"})),
        search=SearchSummary(strategy="random", cv="holdout", scoring="roc_auc", n_candidates=1, best_params={},
                             best_score=0.8, candidates=[], backend="loky", n_jobs=1, seconds=0.1),
        scores=ModelScores(overall=compute_metrics(y, pipeline.predict_proba(frame)[:, 1], 0.5)), importances=[],
    )
    decision = GateDecision(promote=True, primary_metric="roc_auc", champion_version=None, rules=[],
                            summary="promote: all 0 rules passed", decided_at=now)
    return FittedModel(settings=settings, frame=frame, pipeline=pipeline, model_bytes=dump_model(pipeline),
                       candidate=candidate, decision=decision)


def staged(store: ObjectStore, fitted: FittedModel) -> Candidate:
    """The fitted model staged in ``store`` under a fresh staging prefix, as ``train_challenger`` leaves it."""
    prefix = staging_prefix(fitted.candidate.model_name, uuid.uuid4().hex)
    info = store.put_bytes(prefix + MODEL_FILE, fitted.model_bytes)
    artifact = StagedArtifact(key=info.key, sha256=info.sha256, bytes=info.size)
    return fitted.candidate.model_copy(update={"staging_prefix": prefix, "artifacts": {MODEL_FILE: artifact}})


def register_fitted(store: ObjectStore, fitted: FittedModel) -> ModelVersion:
    """Stage the fitted model and register it: a new sealed version (not promoted)."""
    return register_candidate(store, staged(store, fitted), Comparison(), fitted.decision)
