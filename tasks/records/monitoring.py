"""Monitoring records: a window's drift decision, its live performance, the trigger and the report.

``FeatureDrift`` and ``DriftDecision`` are what ``tasks/drift.py`` computes (the statistics and
thresholds are explained there); the others are the monitor's (``tasks/monitor/``): the window it
looks at, the live-performance check, the trigger ledger's entries and decisions, and the
``MonitorReport`` that ``mlcycle monitor --json`` prints and ``monitoring/decisions/`` stores.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field


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

    def summary(self) -> str:
        if not self.enough_data:
            return f"not enough data: {self.rows} rows in the window, at least {self.min_rows} needed"
        if not self.dataset_drift:
            return f"no dataset drift ({len(self.drifted_features)} of {len(self.features)} features drifted)"
        return "dataset drift: " + "; ".join(self.reasons)


class MonitorWindow(BaseModel):
    model: str
    champion_version: int
    start: dt.datetime
    end: dt.datetime

    @property
    def window_id(self) -> str:
        return (f"{self.model}-v{self.champion_version}-{self.start:%Y%m%dT%H%M}-{self.end:%Y%m%dT%H%M}")

    def dates(self) -> list[dt.date]:
        last = (self.end - dt.timedelta(microseconds=1)).date()
        days, day = [], self.start.date()
        while day <= last:
            days.append(day)
            day += dt.timedelta(days=1)
        return days


class PerformanceCheck(BaseModel):
    metric: str
    labelled_rows: int
    min_labelled_rows: int
    live_value: float | None = None
    champion_value: float | None = None
    tolerance: float
    degraded: bool = False
    detail: str


class TriggerRecord(BaseModel):
    seq: int
    window_id: str
    model: str
    champion_version: int
    at: dt.datetime
    reason: str
    status: Literal["claimed", "started", "failed"] = "claimed"
    training_flow_run_id: str | None = None
    monitor_flow_run_id: str | None = None


class TriggerDecision(BaseModel):
    retrain_warranted: bool
    triggered: bool = False
    outcome: Literal["not-warranted", "triggered", "already-triggered", "cooldown", "training-running",
                     "not-enough-data"]
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

    @property
    def retrain_warranted(self) -> bool:
        return bool(self.reasons)


class WindowSummary(BaseModel):
    """The fan-out's first step: the window, how many rows it holds, and the live performance check."""

    window: MonitorWindow
    rows: int
    performance: PerformanceCheck | None
