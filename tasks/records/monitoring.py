"""Monitoring records: a window's drift decision, its live performance, the trigger and the report.

``FeatureDrift`` and ``DriftDecision`` are what ``tasks/drift.py`` computes (the statistics and
thresholds are explained there); the others are the monitor's (``tasks/monitor/``): the window it
looks at, the live-performance check, the trigger ledger's entries and decisions, and the
``MonitorReport`` that ``mlcycle monitor --json`` prints and ``monitoring/decisions/`` stores.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, model_validator


class FeatureDrift(BaseModel):
    feature: str
    kind: Literal["numeric", "categorical", "prediction"]
    critical: bool = False
    n_reference: int
    n_current: int
    test: str  # "ks" | "chi2"
    statistic: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    psi: float | None = None
    wasserstein_norm: float | None = None
    js_distance: float | None = None
    unseen_share: float | None = None
    null_rate_reference: float = 0.0
    null_rate_current: float = 0.0
    null_p_value: float | None = None
    null_p_adjusted: float | None = None
    drifted: bool = False
    reasons: list[str] = Field(default_factory=list)
    # what the window held, as the test saw it, so the report draws its plots without re-reading the window:
    # binned features and scores: counts per reference bin; categories and predicted classes: shares
    current_counts: list[float] | None = None
    current_shares: dict[str, float] | None = None


class DriftDecision(BaseModel):
    enough_data: bool
    rows: int
    min_rows: int
    features: list[FeatureDrift] = Field(default_factory=list)
    prediction: FeatureDrift | None = None
    drifted_features: list[str] = Field(default_factory=list)
    drifted_share: float = 0.0
    dataset_drift: bool = False
    reasons: list[str] = Field(default_factory=list)
    # Why the dataset-level verdict fell as it did, in words (tasks/drift.py: decide_drift), e.g. "2 of 10
    # features drifted (20%), below the 50% share, and no critical feature drifted: no dataset drift".
    verdict: str = ""
    rule: Literal["importance", "share"] = "share"  # the rule applied (importance falls back to share without any)
    importance_share: float | None = None  # rule importance: the drifted features' share of the importance
    importances: dict[str, float] = Field(default_factory=dict)  # each feature's share of the importance
    multivariate: MultivariateDrift | None = None

    @model_validator(mode="after")
    def _verdict_without_data(self) -> DriftDecision:
        if not self.verdict and not self.enough_data:
            self.verdict = (f"{self.rows} rows in the window, fewer than the {self.min_rows} needed "
                            "(drift.min_rows): no verdict on drift")
        return self

    def summary(self) -> str:
        if not self.enough_data:
            return f"not enough data: {self.rows} rows in the window, at least {self.min_rows} needed"
        if not self.dataset_drift:
            return f"no dataset drift ({len(self.drifted_features)} of {len(self.features)} features drifted)"
        return "dataset drift: " + "; ".join(self.reasons)


class MonitorWindow(BaseModel):
    """The hours of the inference log one monitor run judges, for one version of one model.

    ``version`` is the version that serves: the live deployment's when the endpoint serves this model, the
    champion only when nothing of it is deployed (``served_by`` says which, in words). After a failed
    rollout, a rollback or a registry rollback the live version can differ from the champion, and its
    traffic is what there is to judge. Windows stored before ``served_by`` existed named the field
    ``champion_version`` and read as judged on the champion.
    """

    model: str
    version: int = Field(validation_alias=AliasChoices("version", "champion_version"))
    served_by: str = "champion"
    start: dt.datetime
    end: dt.datetime

    @property
    def window_id(self) -> str:
        """``<model>-v<version>-<start>-<end>-<hash>``: the bounds to the second, and a short hash of the exact
        bounds (microseconds, in UTC), so two windows differ in id whenever their bounds differ, and the same
        window always gets the same id (the trigger's idempotency rests on it)."""
        start, end = (t.astimezone(dt.UTC) if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in (self.start, self.end))
        exact = hashlib.sha256(f"{start.isoformat()}/{end.isoformat()}".encode()).hexdigest()[:8]
        return f"{self.model}-v{self.version}-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}-{exact}"

    def dates(self) -> list[dt.date]:
        last = (self.end - dt.timedelta(microseconds=1)).date()
        days, day = [], self.start.date()
        while day <= last:
            days.append(day)
            day += dt.timedelta(days=1)
        return days


class PerformanceCheck(BaseModel):
    """The live metric on the window's labelled rows against the champion's test value (tasks/monitor/performance.py).

    ``worse_by`` is oriented so that positive is worse whatever the metric's direction: champion minus live for
    a higher-is-better metric (roc_auc, r2), live minus champion for a lower-is-better one (log_loss, rmse).
    """

    metric: str
    task: str = "binary"
    higher_is_better: bool = True
    labelled_rows: int
    min_labelled_rows: int
    live_value: float | None = None
    champion_value: float | None = None
    worse_by: float | None = None
    tolerance: float
    degraded: bool = False
    detail: str


class TriggerRecord(BaseModel):
    seq: int
    window_id: str
    model: str
    version: int = Field(validation_alias=AliasChoices("version", "champion_version"))  # the version judged
    at: dt.datetime
    reason: str
    # claimed: a monitor holds the slot until claim_expires_at and is starting the training; started: it did;
    # failed: the start failed (slot released); expired: the claimant vanished before starting (slot released)
    status: Literal["claimed", "started", "failed", "expired"] = "claimed"
    claim_expires_at: dt.datetime | None = None  # None: a record from before claims expired (never expires)
    training_flow_run_id: str | None = None
    monitor_flow_run_id: str | None = None

    def released(self, now: dt.datetime) -> bool:
        """The slot no longer stands for a training: its start failed, or its claim expired unstarted."""
        return self.status in ("failed", "expired") or (
            self.status == "claimed" and self.claim_expires_at is not None and self.claim_expires_at <= now)


class TriggerDecision(BaseModel):
    retrain_warranted: bool
    triggered: bool = False
    # start-failed: retraining was warranted and a ledger slot claimed, but the train deployment could not be
    # started (none on this server, or run_deployment failed); the slot is released (status failed)
    outcome: Literal["not-warranted", "triggered", "already-triggered", "cooldown", "training-running",
                     "not-enough-data", "start-failed"]
    detail: str
    record: TriggerRecord | None = None


class MonitorReport(BaseModel):
    window_id: str
    window: MonitorWindow
    rows: int
    drift: DriftDecision
    performance: PerformanceCheck | None
    reasons: list[str] = Field(default_factory=list)  # why retraining is warranted (empty: it is not)
    report_key: str | None = None
    trigger: TriggerDecision | None = None
    estimate: PerformanceEstimate | None = None  # performance without labels (None: off, or not estimable)

    @property
    def retrain_warranted(self) -> bool:
        return bool(self.reasons)

    @property
    def retraining_not_started(self) -> bool:
        """Retraining was warranted but could not be started (``mlcycle monitor`` exits with its own code)."""
        return self.trigger is not None and self.trigger.outcome == "start-failed"


class WindowSummary(BaseModel):
    """The fan-out's first step: the window, how many rows it holds, and the live performance check."""

    window: MonitorWindow
    rows: int
    performance: PerformanceCheck | None
    estimate: PerformanceEstimate | None = None
    multivariate: MultivariateDrift | None = None
    importances: dict[str, float] | None = None  # the judged version's permutation importance per feature


class MetricEstimate(BaseModel):
    """One performance metric of a window estimated without labels (tasks/monitor/estimation.py).

    ``std`` is the sampling uncertainty: the standard deviation of the *realized* metric on a window of this
    size if the model's probabilities (CBPE) or the loss model (DLE) are right; ``lower``/``upper`` are
    ``value -/+ 3 std`` clipped to the metric's range (NannyML's band). ``realized`` is the metric on the
    window's labelled rows once labels arrived, and ``labelled_rows`` how many there were.
    """

    metric: str
    value: float
    std: float
    lower: float
    upper: float
    realized: float | None = None
    labelled_rows: int = 0


class MultivariateDrift(BaseModel):
    """A change of the joint distribution of the features (tasks/drift_multivariate.py).

    ``auc`` is the cross-validated ROC AUC of a classifier telling reference rows from current ones (0.5: it
    cannot), ``p_value`` the test that it is 0.5, ``effect_threshold`` the AUC an effect must reach besides
    significance. ``top_features`` names what the classifier relied on (its permutation importance, largest
    first), so a drift says where it is.
    """

    method: Literal["domain_classifier"] = "domain_classifier"
    n_reference: int
    n_current: int
    features: list[str]
    auc: float | None = None
    p_value: float | None = None
    alpha: float
    effect_threshold: float
    drifted: bool = False
    top_features: list[tuple[str, float]] = Field(default_factory=list)
    detail: str = ""


class EstimateChunk(BaseModel):
    """The estimate over a part of the window (``monitor.estimation.chunk_hours``), with the realized value."""

    start: dt.datetime
    end: dt.datetime
    rows: int
    value: float | None = None
    lower: float | None = None
    upper: float | None = None
    realized: float | None = None
    labelled_rows: int = 0


class PerformanceEstimate(BaseModel):
    """The window's performance estimated without labels, against the same estimate on the test days.

    ``metric`` is the one judged (its project name, e.g. ``roc_auc_ovr``); ``estimates`` holds every metric the
    method estimates for the task, by the estimator's name (``roc_auc``, ``accuracy``, ``f1``, ``mae``,
    ``rmse``); ``reference_value`` the judged metric estimated the same way on the version's test days
    (regression: the realized test value, which the loss model was fitted to). ``worse_by`` is positive when
    worse, whatever the metric's direction, as in ``PerformanceCheck``.
    """

    method: Literal["cbpe", "dle"]
    metric: str
    rows: int
    estimates: dict[str, MetricEstimate] = Field(default_factory=dict)
    reference_value: float | None = None
    worse_by: float | None = None
    tolerance: float
    degraded: bool = False
    detail: str
    chunks: list[EstimateChunk] = Field(default_factory=list)
