"""Rollout records: one attempt (:class:`Deployment`), where it runs (:class:`Backend`), what it took.

They live in the object store (``tasks/rollout/orchestrate.py`` writes them)::

    deployments/current.json                 the live Deployment (what serves behind the stable URL)
    deployments/history/<ts>-<id>.json       every attempt: live, retired, failed (with stage + reason)

``mlcycle deployments list --json`` prints Deployments, ``mlcycle deployments current --json`` a
:class:`CurrentStatus`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from mlcycle.tasks.records.serving import CanaryReport, LatencyReport

CURRENT_KEY = "deployments/current.json"
HISTORY_PREFIX = "deployments/history/"

TargetName = Literal["process", "docker"]
Stage = Literal["resolve", "build", "start", "ready", "canary", "switch"]


class Backend(BaseModel):
    """A running serving backend: where it listens and how to stop it."""

    target: TargetName
    host: str = "127.0.0.1"
    port: int
    pid: int | None = None             # process: `bentoml serve` (its own process group)
    service: str | None = None         # process: the stack service name (pid file under <home>/run/)
    log: str | None = None
    container_id: str | None = None    # docker
    container_name: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Timings(BaseModel):
    build_seconds: float | None = None           # docker image build (0 when the image existed)
    start_to_ready_seconds: float | None = None  # candidate started -> /readyz 200
    canary_seconds: float | None = None
    switch_seconds: float | None = None          # endpoint reload -> the new backend answers
    drain_seconds: float | None = None           # reload -> every old worker finished its requests
    stop_previous_seconds: float | None = None
    total_seconds: float | None = None


class CanarySummary(BaseModel):
    rows: int
    max_abs_diff: float
    tolerance: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_budget_ms: float

    @classmethod
    def of(cls, canary: CanaryReport, latency: LatencyReport) -> CanarySummary:
        """The test-serving check's two reports, in the few numbers a deployment record keeps."""
        return cls(rows=canary.rows, max_abs_diff=max(canary.max_abs_diff_predict, canary.max_abs_diff_batch),
                   tolerance=canary.tolerance, latency_p50_ms=latency.p50_ms, latency_p95_ms=latency.p95_ms,
                   latency_budget_ms=latency.budget_ms)


class Deployment(BaseModel):
    """One rollout attempt and, if it went live, the deployment it became."""

    id: str
    kind: Literal["rollout", "rollback"] = "rollout"
    status: Literal["starting", "live", "retired", "failed"] = "starting"
    target: TargetName
    model_name: str | None = None
    model_version: str | None = None
    bento_tag: str | None = None
    image: str | None = None        # docker: the image tag ...
    image_id: str | None = None     # ... and its id
    backend: Backend | None = None
    endpoint_url: str
    flow_run_id: str | None = None
    requested_at: dt.datetime
    live_since: dt.datetime | None = None
    ended_at: dt.datetime | None = None   # failed, or retired (replaced by another deployment)
    previous_id: str | None = None        # the deployment that was live when this attempt started
    rollback_of: str | None = None        # kind rollback: the deployment it replaced
    replaced_by: str | None = None        # status retired: the deployment that replaced it
    failed_stage: Stage | None = None
    reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    canary: CanarySummary | None = None
    timings: Timings = Field(default_factory=Timings)

    @property
    def history_key(self) -> str:
        return f"{HISTORY_PREFIX}{self.requested_at.strftime('%Y%m%dT%H%M%S%fZ')}-{self.id}.json"

    def summary(self) -> str:
        what = f"{self.model_name} v{self.model_version}" if self.model_version else "?"
        where = self.image or self.bento_tag or "?"
        if self.status == "failed":
            return f"{self.id} FAILED at {self.failed_stage}: {what} ({self.target}, {where}): {self.reason}"
        since = f" since {self.live_since:%Y-%m-%d %H:%M:%S}Z" if self.live_since else ""
        return f"{self.id} {self.status}{since}: {what} ({self.target}, {where}) behind {self.endpoint_url}"


class CurrentStatus(BaseModel):
    """`mlcycle deployments current`: the live record, and whether its pieces actually run."""

    deployment: Deployment | None
    endpoint_url: str
    endpoint_running: bool
    endpoint_serves: str | None   # the deployment id nginx proxies to right now
    backend_alive: bool | None
