"""Packaging and test-serving records: a registry version in BentoML's store, its bento, and the proof it serves.

``import_model`` gives a :class:`PackagedModel`, ``build_bento`` a :class:`BentoRef`, ``verify_serving`` a
:class:`ServingCheck` (its :class:`CanaryReport` and :class:`LatencyReport`); the package flow returns a
:class:`PackageOutcome`, what ``mlcycle package --json`` prints and the rollout reads (its bento tag).
"""

from __future__ import annotations

from pydantic import BaseModel


class PackagedModel(BaseModel):
    """A registry version in the BentoML model store."""

    tag: str  # BentoML model tag, name:version
    name: str  # registry name
    version: int  # registry version
    model_sha256: str
    path: str
    imported: bool  # False: it was already there, intact


class BentoRef(BaseModel):
    """A built bento: its tag and what it serves."""

    tag: str
    path: str
    model_tag: str
    model_name: str
    model_version: int
    model_sha256: str
    labels: dict[str, str]
    built: bool  # False: an identical bento already existed
    seconds: float


class CanaryReport(BaseModel):
    """Served vs in-process predictions on the test window's first rows (tasks/serving/client.py: check_canaries).

    The differences are those of the task's values: binary the positive class's probability, multiclass the
    largest over the class probabilities, regression the value relative to ``max(1, |value|)``;
    ``labels_agree`` compares the labels (always true for regression, which has none)."""

    task: str = "binary"
    rows: int
    test_window: str
    max_abs_diff_predict: float
    max_abs_diff_batch: float
    tolerance: float
    mismatches: int
    labels_agree: bool


class LatencyReport(BaseModel):
    requests: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    budget_ms: float


class ServingCheck(BaseModel):
    bento_tag: str
    url: str
    ready_seconds: float
    canary: CanaryReport
    latency: LatencyReport
    metadata_version: int
    passed: bool = True


class PackageOutcome(BaseModel):
    """What a packaging run produced: what ``mlcycle package --json`` prints and the rollout reads."""

    model_name: str
    model_version: int
    model_sha256: str
    bento_model_tag: str
    bento_tag: str
    bento_path: str
    built: bool  # False: an identical bento already existed
    check: ServingCheck
