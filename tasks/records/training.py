"""The records of a training run: the window of validated partitions, the time split, the search, the
staged challenger with its test scores, the champion's scores on the same rows, and the run's outcome.

Built by ``tasks/training/`` and passed between the tasks of ``flows/train.py``: references and small
summaries, never DataFrames or fitted models (those are staged in the object store, see
:class:`StagedArtifact`). :class:`TrainingOutcome` is what ``mlcycle train --json`` prints and the
monitoring flow reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlcycle.tasks.records.data import PartitionRef
from mlcycle.tasks.records.evaluation import (
    BootstrapResult,
    CalibrationReport,
    FeatureImportance,
    GateDecision,
    LeakageCheck,
    Metrics,
    ModelScores,
)

SplitName = Literal["train", "validation", "test"]


class InputColumn(BaseModel):
    """One column the model reads (what the serving request schema is generated from)."""

    name: str
    kind: str  # numeric | categorical
    dtype: str  # float | int | str
    nullable: bool
    categories: list[str] | None = None


class InputPartition(PartitionRef):
    """A validated partition used for training, with the dataset declaration it was validated under."""

    dataset_schema_hash: str


class TrainingWindow(BaseModel):
    partitions: list[InputPartition]
    first_day: dt.date
    last_day: dt.date
    requested: str  # how the window was asked for, e.g. "last 10 validated days up to 2026-10-14"

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)


class SplitPart(BaseModel):
    """One of train, validation and test: its days, rows, partitions, and what it holds of the target
    (binary ``positives``, multiclass rows per ``classes``, regression ``target_mean``)."""

    name: SplitName
    start: dt.datetime  # inclusive
    end: dt.datetime  # exclusive
    first_day: dt.date
    last_day: dt.date
    rows: int
    positives: int | None = None  # binary
    classes: dict[str, int] | None = None  # multiclass: rows per declared class (0 for a class absent here)
    target_mean: float | None = None  # regression
    partitions: list[PartitionRef]  # the partitions holding its rows

    @property
    def positive_rate(self) -> float | None:
        if self.positives is None:
            return None
        return self.positives / self.rows if self.rows else 0.0


class SplitSummary(BaseModel):
    timestamp_column: str
    train: SplitPart
    validation: SplitPart
    test: SplitPart


class CandidateScore(BaseModel):
    params: dict[str, Any]
    mean_score: float
    std_score: float
    rank: int


class SearchSummary(BaseModel):
    strategy: str  # random | halving
    cv: str
    scoring: str
    n_candidates: int
    best_params: dict[str, Any]
    best_score: float
    candidates: list[CandidateScore]
    backend: str
    n_jobs: int
    seconds: float


class StagedArtifact(BaseModel):
    key: str
    sha256: str
    bytes: int


class ModelSpec(BaseModel):
    """What a fitted model is, as the candidate carries it and its registered version keeps it."""

    family: str
    estimator: str
    params: dict[str, Any]  # the estimator's parameters: fixed ones and the search's best
    seed: int
    threshold: float  # binary: the decision threshold behind F1, recall and precision
    task: str = "binary"
    classes: list[str] | None = None  # classification: the class labels, in the order predictions use
    positive_label: str | None = None  # binary: the class whose probability the model outputs
    features: list[InputColumn]


class Candidate(ModelSpec):
    """A trained, scored, not yet registered model: what the train task hands to the rest of the flow."""

    model_name: str
    staging_prefix: str
    dataset: str
    dataset_schema_hash: str
    window: TrainingWindow
    split: SplitSummary
    search: SearchSummary
    scores: ModelScores  # on the test window
    importances: list[FeatureImportance]
    leakage: LeakageCheck | None = None  # None: the gate's leakage guard is off
    calibration: CalibrationReport | None = None  # classification with training.calibration on
    artifacts: dict[str, StagedArtifact] = Field(default_factory=dict)  # name in the version -> staged object
    seconds: dict[str, float] = Field(default_factory=dict)


class Comparison(BaseModel):
    """The champion on the challenger's test rows, and the paired bootstrap of the improvement."""

    champion_version: int | None = None
    # test days the champion was itself fitted on: its scores there are optimistic (the comparison is
    # then conservative: it can only make promotion harder)
    champion_fitted_on_test_days: list[dt.date] = Field(default_factory=list)
    champion_scores: ModelScores | None = None
    champion_error: str | None = None
    bootstrap: BootstrapResult | None = None
    artifacts: dict[str, StagedArtifact] = Field(default_factory=dict)


class TrainingOutcome(BaseModel):
    """What a training run did: what ``mlcycle train --json`` prints and the monitoring flow reads."""

    name: str
    version: int
    family: str
    promoted: bool
    champion: int | None  # the champion after this run
    previous: int | None
    decision: GateDecision
    metrics: Metrics
    window: str
    test_window: str
    note: str = ""
    report_uri: str
