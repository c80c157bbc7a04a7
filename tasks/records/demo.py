"""The demo's record: what the ``demo`` flow returns and ``mlcycle demo --json`` prints (with where to look)."""

from __future__ import annotations

from pydantic import BaseModel

from mlcycle.tasks.records.evaluation import Metrics
from mlcycle.tasks.records.training import TrainingOutcome


class DemoChampion(BaseModel):
    """The champion after the demo's training: the version the rollout puts behind the endpoint."""

    version: int
    family: str
    metrics: Metrics


class DemoTraining(BaseModel):
    training: TrainingOutcome
    champion: DemoChampion | None  # None: the gate refused the first version, nothing is champion


class DemoServing(BaseModel):
    """What serves behind the stable endpoint once the rollout is live."""

    url: str
    model_version: str | None
    bento: str | None


class MonitorPhase(BaseModel):
    """One batch of demo traffic and what the monitor decided about it."""

    label: str  # "before the drift date" | "after the drift date"
    rows: int
    drift: str
    trigger: str  # outcome (detail)
    report: str | None  # the HTML report's key in the store


class DemoSummary(BaseModel):
    ingested: str  # the backfill's summary
    training: DemoTraining
    serving: DemoServing
    monitoring: list[MonitorPhase]
