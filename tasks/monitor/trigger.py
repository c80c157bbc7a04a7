"""The retraining trigger: a ledger in the object store, its guard rails, and the decisions kept.

**Guard rails** around the trigger, all enforced in the object store so they hold across processes:

* a *trigger ledger* ``monitoring/triggers/<seq>.json``, numbered with exclusive creates (the same
  primitive as model versions): two monitors racing to trigger cannot both win a sequence number;
* a claim is a lease: it records ``claim_expires_at`` (``monitor.trigger_claim_seconds``). A monitor killed
  between claiming and starting the training no longer blocks its window forever: once the claim expired,
  the next monitor marks it ``expired`` (a conditional replace, so only one does) and claims again. The
  claimant's own update is conditional too: it records ``started`` only over its unexpired claim;
* one trigger per window: a window that already triggered training never triggers again;
* a cooldown: no trigger within ``cooldown_hours`` of the previous one;
* one running training: no trigger while a run of the train deployment is scheduled, pending or running;
* and the Prefect idempotency key ``retrain-<window_id>`` on ``run_deployment`` itself.

Every decision, taken or not, is written to ``monitoring/decisions/<window_id>.json`` with its
reasons (:func:`save_decision`; ``mlcycle status`` shows :func:`last_decision`), also when a warranted
training could not be started (outcome ``start-failed``, its slot released: :func:`start_training`).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from mlcycle.tasks.records.monitoring import MonitorReport, TriggerDecision, TriggerRecord
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.storage import ObjectNotFound, ObjectStore

TRIGGERS = "monitoring/triggers/"
DECISIONS = "monitoring/decisions/"


def trigger_records(store: ObjectStore) -> list[TriggerRecord]:
    records = []
    for key in store.list(TRIGGERS):
        try:
            records.append(TriggerRecord.model_validate_json(store.get_bytes(key)))
        except ObjectNotFound:
            continue
    return sorted(records, key=lambda r: r.seq)


def _trigger_key(seq: int) -> str:
    return f"{TRIGGERS}{seq:08d}.json"


def claim_trigger(store: ObjectStore, report: MonitorReport, now: dt.datetime, cooldown_hours: float,
                  training_running: bool = False, monitor_flow_run_id: str | None = None,
                  claim_seconds: float = 600.0) -> TriggerDecision:
    """Decide whether this window may start a training, and claim the next ledger slot if so."""
    if not report.drift.enough_data and not (report.performance and report.performance.degraded):
        return TriggerDecision(retrain_warranted=False, outcome="not-enough-data", detail=report.drift.summary())
    if not report.retrain_warranted:
        return TriggerDecision(retrain_warranted=False, outcome="not-warranted",
                               detail="no drift and no performance drop beyond tolerance")
    for _ in range(50):
        records = trigger_records(store)
        for stale in (r for r in records if r.status == "claimed" and r.released(now)):
            set_claim_status(store, stale, "expired", now)  # its monitor vanished before starting the training
        live = [r for r in records if not r.released(now)]
        same = [r for r in live if r.window_id == report.window_id]
        if same:
            return TriggerDecision(retrain_warranted=True, outcome="already-triggered", record=same[-1],
                                   detail=f"window {report.window_id} already triggered training "
                                          f"(trigger #{same[-1].seq} at {same[-1].at:%Y-%m-%d %H:%M} UTC)")
        if live and now - live[-1].at < dt.timedelta(hours=cooldown_hours):
            until = live[-1].at + dt.timedelta(hours=cooldown_hours)
            return TriggerDecision(retrain_warranted=True, outcome="cooldown", record=live[-1],
                                   detail=f"cooldown: trigger #{live[-1].seq} at {live[-1].at:%Y-%m-%d %H:%M} "
                                          f"UTC; next allowed after {until:%Y-%m-%d %H:%M} UTC")
        if training_running:
            return TriggerDecision(retrain_warranted=True, outcome="training-running",
                                   detail="a run of the train deployment is already scheduled or running")
        seq = (records[-1].seq if records else 0) + 1
        record = TriggerRecord(seq=seq, window_id=report.window_id, model=report.window.model,
                               version=report.window.version, at=now, reason="; ".join(report.reasons),
                               monitor_flow_run_id=monitor_flow_run_id,
                               claim_expires_at=now + dt.timedelta(seconds=claim_seconds))
        if store.create_exclusive(_trigger_key(seq), record.model_dump_json(indent=1).encode()):
            return TriggerDecision(retrain_warranted=True, triggered=True, outcome="triggered", record=record,
                                   detail=f"trigger #{seq}: {record.reason}")
        # another monitor took this slot first: re-read the ledger and decide again
    raise RuntimeError("could not claim a trigger slot after 50 attempts: the ledger is contended")


def set_claim_status(store: ObjectStore, record: TriggerRecord, status: str, now: dt.datetime,
                **changes) -> TriggerRecord | None:
    """Move a *claimed* slot on (to started, failed or expired) by one conditional replace; None if the slot
    is no longer that claim (another monitor expired it, or it moved on already)."""
    key = _trigger_key(record.seq)
    try:
        seen = store.read_tagged(key)
    except ObjectNotFound:
        return None
    current = TriggerRecord.model_validate_json(seen.data)
    if current.status != "claimed" or current.window_id != record.window_id or current.at != record.at:
        return None
    if status == "started" and current.released(now):
        return None  # expired: whoever expires it next owns the window (the start itself is idempotent)
    updated = current.model_copy(update={"status": status, **changes})
    return updated if store.replace_if(key, updated.model_dump_json(indent=1).encode(), seen.tag) else None


def expire_claim(store: ObjectStore, seq: int, now: dt.datetime) -> TriggerRecord | None:
    """Mark ledger slot ``seq`` expired if it is still a claim that expired unstarted (tasks/gc.py)."""
    try:
        record = TriggerRecord.model_validate_json(store.get_bytes(_trigger_key(seq)))
    except ObjectNotFound:
        return None
    if record.status != "claimed" or not record.released(now):
        return None
    return set_claim_status(store, record, "expired", now)


def update_trigger(store: ObjectStore, record: TriggerRecord) -> None:
    """Overwrite a ledger slot (tests and repairs; the flow moves slots on with conditional replaces)."""
    store.put_bytes(_trigger_key(record.seq), record.model_dump_json(indent=1).encode())


def idempotency_key(window_id: str) -> str:
    return "retrain-" + hashlib.sha256(window_id.encode()).hexdigest()[:24]


LATEST_DECISION = "monitoring/latest-decision.json"  # the pointer `mlcycle status` reads: one object, any history


def save_decision(store: ObjectStore, report: MonitorReport) -> str:
    """Store the decision under its window, then move the latest-decision pointer to it if its window ends
    later than the pointer's (a conditional replace, re-read on a lost race: a late, older window never
    moves it back)."""
    key = f"{DECISIONS}{report.window_id}.json"
    data = report.model_dump_json(indent=1).encode()
    store.put_bytes(key, data)
    for _ in range(50):
        try:
            seen = store.read_tagged(LATEST_DECISION)
        except ObjectNotFound:
            if store.create_exclusive(LATEST_DECISION, data):
                break
            continue
        if MonitorReport.model_validate_json(seen.data).window.end > report.window.end:
            break
        if store.replace_if(LATEST_DECISION, data, seen.tag):
            break
    return key


def last_decision(store: ObjectStore) -> MonitorReport | None:
    """The decision of the latest window, from the pointer: one read, however long the history. A store from
    before the pointer existed is read in full once (and the pointer is not written by a reader)."""
    try:
        return MonitorReport.model_validate_json(store.get_bytes(LATEST_DECISION))
    except ObjectNotFound:
        pass
    keys = store.list(DECISIONS)
    if not keys:
        return None
    reports = [MonitorReport.model_validate_json(store.get_bytes(k)) for k in keys]
    return max(reports, key=lambda r: r.window.end)


def training_in_flight(deployment_name: str) -> bool:
    """Whether a run of the train deployment is scheduled, pending or running."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound as NoSuchDeployment

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(deployment_name)
        except NoSuchDeployment:
            return False
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]))),
            limit=1,
        )
        return bool(runs)


def start_training(store: ObjectStore, decision: TriggerDecision, deployment_name: str) -> TriggerDecision:
    """Start the train deployment without waiting; the ledger records the run id, or the failure.

    A start that fails (no such deployment on this Prefect server, or ``run_deployment`` raising) loses
    nothing: the ledger slot is released (status ``failed``, so a later run can trigger again) and the
    decision comes back as ``start-failed``, its detail one sentence with the way out. The caller still
    writes the report and the decision.
    """
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound as NoSuchDeployment

    record = decision.record
    try:
        run = run_deployment(deployment_name, parameters={"reason": record.reason[:500]},
                             timeout=0, idempotency_key=idempotency_key(record.window_id),
                             tags=["mlcycle", "retrain", f"trigger-{record.seq}"])
    except Exception as exc:  # noqa: BLE001 - any failure to start is recorded, never a lost report
        failed = set_claim_status(store, record, "failed", _now()) or record.model_copy(update={"status": "failed"})
        return decision.model_copy(update={"triggered": False, "outcome": "start-failed", "record": failed,
                                           "detail": not_started(deployment_name, exc, NoSuchDeployment)})
    started = set_claim_status(store, record, "started", _now(), training_flow_run_id=str(run.id))
    if started is None:  # our claim expired and was taken over; the run is the window's all the same
        return decision.model_copy(update={
            "record": record.model_copy(update={"status": "started", "training_flow_run_id": str(run.id)}),
            "detail": f"{decision.detail} -> flow run {run.name} (this monitor's claim on trigger #{record.seq} "
                      "expired before it recorded the start; the run is idempotent per window)"})
    return decision.model_copy(update={"record": started, "detail": f"{decision.detail} -> flow run {run.name}"})


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def not_started(deployment_name: str, exc: Exception, missing: type[Exception] = LookupError) -> str:
    """Why a warranted retraining did not start, and the way out, in one sentence."""
    if isinstance(exc, missing):
        why = f"the Prefect server has no deployment {deployment_name} (monitor.train_deployment)"
    else:
        why = f"starting {deployment_name} failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
    return (f"retraining is warranted but could not be started: {why}; deploy it with `mlcycle up`, "
            "or train now with `mlcycle train`")


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers (flows/monitor.py)
# --------------------------------------------------------------------------------------------------

from mlcycle.tasks.lazy_task import NO_CACHE, task  # noqa: E402


@task(name="decide-trigger", cache_policy=NO_CACHE)
def decide_trigger_task(settings: Settings, report: MonitorReport) -> TriggerDecision:
    from prefect.runtime import flow_run

    from mlcycle.tasks.storage import open_store

    running = report.retrain_warranted and training_in_flight(settings.monitor.train_deployment)
    return claim_trigger(open_store(settings), report, dt.datetime.now(dt.UTC), settings.monitor.cooldown_hours,
                         training_running=running, monitor_flow_run_id=str(flow_run.id) if flow_run.id else None,
                         claim_seconds=settings.monitor.trigger_claim_seconds)


@task(name="start-training", cache_policy=NO_CACHE)
def start_training_task(settings: Settings, decision: TriggerDecision) -> TriggerDecision:
    """Start the train deployment without waiting; the ledger records the run id (or the failure)."""
    from mlcycle.tasks.storage import open_store

    return start_training(open_store(settings), decision, settings.monitor.train_deployment)
