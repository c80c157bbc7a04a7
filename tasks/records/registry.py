"""The records of the model registry: a version's metadata and lineage, its seal, the champion alias and
its moves, the stored evaluation report, and the listing ``mlcycle models list`` prints.

Written and read by ``tasks/registry/`` (the layout of the objects is in ``tasks/registry/__init__.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlcycle.tasks.records.evaluation import (
    BootstrapResult,
    CalibrationReport,
    FeatureImportance,
    GateDecision,
    LeakageCheck,
    Metrics,
    ModelScores,
    SliceMetrics,
)
from mlcycle.tasks.records.training import InputPartition, ModelSpec, SearchSummary, SplitSummary


class ArtifactRecord(BaseModel):
    key: str
    sha256: str
    bytes: int


class Lineage(BaseModel):
    """Where a version came from: exactly the partitions it read, the code, and the libraries."""

    dataset: str
    dataset_schema_hash: str
    partitions: list[InputPartition]
    window: str
    split: SplitSummary
    code_version: str  # git commit, or "unknown"
    code_dirty: bool | None  # uncommitted changes in the working tree when it was trained
    python: str
    libraries: dict[str, str]
    platform: str
    flow_run_id: str | None = None


class ModelDraft(ModelSpec):
    """Everything a training run says about a model before it gets a version number."""

    name: str
    search: SearchSummary
    metrics: Metrics  # on the test window
    slices: list[SliceMetrics]
    gate: GateDecision
    lineage: Lineage
    calibration: CalibrationReport | None = None  # classification: reliability before/after, and the decision


class ModelVersion(ModelDraft):
    """``metadata.json`` of a version."""

    version: int
    created_at: dt.datetime
    model_sha256: str
    artifacts: dict[str, ArtifactRecord]  # name within the version -> key, sha256, bytes

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True).encode()


class VersionSeal(BaseModel):
    name: str
    version: int
    metadata_sha256: str
    model_sha256: str
    sealed_at: dt.datetime
    # where the sealed metadata.json is: models/<name>/<n>/ for a first attempt, models/<name>/<n>/attempt-<k>/
    # for the k-th retry that took the claim over; None (seals written before attempts existed): the first
    metadata_key: str | None = None


class AliasTarget(BaseModel):
    version: int
    model_sha256: str
    metadata_sha256: str


class AliasPointer(AliasTarget):
    """``aliases/champion.json``: the champion, and the champion it replaced (``previous``)."""

    alias: Literal["champion"] = "champion"
    set_at: dt.datetime
    reason: str
    previous: AliasTarget | None = None


class AliasEvent(BaseModel):
    action: Literal["promote", "rollback"]
    name: str
    from_version: int | None
    to_version: int
    reason: str
    at: dt.datetime


class EvaluationReport(BaseModel):
    """``evaluation.json``: the challenger and the champion on the same test window, and the decision."""

    name: str
    version: int
    test_window: str
    challenger: ModelScores
    champion_version: int | None
    champion: ModelScores | None
    champion_error: str | None
    bootstrap: BootstrapResult | None
    decision: GateDecision
    comparison: list[dict[str, Any]]
    importances: list[FeatureImportance]
    plots: list[str]
    leakage: LeakageCheck | None = None
    calibration: CalibrationReport | None = None


# The test metrics a listing shows per task (``mlcycle models list``); ``models show`` has every metric.
LISTED_METRICS: dict[str, tuple[str, ...]] = {"binary": ("roc_auc", "pr_auc", "brier"),
                                              "multiclass": ("log_loss", "f1_macro", "balanced_accuracy"),
                                              "regression": ("rmse", "mae", "r2")}


class VersionListing(BaseModel):
    version: int
    created_at: dt.datetime | None = None
    family: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    gate: str | None = None  # "promote" | "refused"
    aliases: list[str] = Field(default_factory=list)
    status: str = "ok"  # or what is wrong with its files
