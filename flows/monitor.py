"""The monitor flow: drift and live performance of the champion, and a guarded retraining trigger.

``monitor`` (deployment ``monitor/hourly``, scheduled in prefect.yaml)::

    window ─▶ evaluate-window (drift + performance) ─▶ decide-trigger (ledger, cooldown, one training)
           ─▶ start-training (run_deployment train/on-demand, not awaited) ─▶ report (store + artifacts)

With ``dask.address`` set, evaluate-window is replaced by the subflow ``monitor-drift-features`` on a
DaskTaskRunner (tasks/runners.py): window-summary (rows + performance), then one ``feature-drift`` task per
declared feature and one ``prediction-drift``, each reading only its column of the window on a Dask
worker; the decision (BH across all tests) is taken from their results, the same as in-process.

The trigger's guard rails are described in ``tasks/monitor.py``; a decision is always recorded, with
its reasons, whether or not a training starts.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from mlcycle.tasks import monitor as mon
from mlcycle.tasks.drift import FeatureDrift
from mlcycle.tasks.ingest import retrying
from mlcycle.tasks.runners import dask_task_runner, settings_for_workers
from mlcycle.tasks.settings import Settings, get_settings


@task(name="evaluate-window", cache_policy=NO_CACHE)
def evaluate_window_task(settings: Settings, hours: int, end: dt.datetime | None,
                         start: dt.datetime | None = None) -> mon.MonitorReport:
    from mlcycle.tasks.registry.versions import load_metadata, load_profile
    from mlcycle.tasks.storage import open_store
    from mlcycle.tasks.training.challenger import model_name

    store = open_store(settings)
    name = model_name(settings)
    champion = load_metadata(store, name, "champion")
    profile = load_profile(store, name, "champion")
    window = mon.window_for(name, champion.version, hours, end, start)
    return mon.evaluate(store, window, profile, champion.metrics.model_dump(), settings.dataset, settings.drift,
                        settings.monitor)


@task(name="window-summary", cache_policy=NO_CACHE)
def window_summary_task(settings: Settings, hours: int, end: dt.datetime | None,
                        start: dt.datetime | None = None) -> mon.WindowSummary:
    from mlcycle.tasks.registry.versions import load_metadata
    from mlcycle.tasks.storage import open_store
    from mlcycle.tasks.training.challenger import model_name

    store = open_store(settings)
    name = model_name(settings)
    champion = load_metadata(store, name, "champion")
    window = mon.window_for(name, champion.version, hours, end, start)
    return mon.summarize_window(store, window, champion.metrics.model_dump(), settings.dataset, settings.monitor)


@task(name="feature-drift", cache_policy=NO_CACHE, task_run_name="drift-{feature}")
def feature_drift_task(settings: Settings, window: mon.MonitorWindow, feature: str) -> FeatureDrift | None:
    from mlcycle.tasks.storage import open_store

    return mon.window_feature_drift(open_store(settings), window, settings.dataset, feature)


@task(name="prediction-drift", cache_policy=NO_CACHE)
def prediction_drift_task(settings: Settings, window: mon.MonitorWindow) -> FeatureDrift | None:
    from mlcycle.tasks.storage import open_store

    return mon.window_prediction_drift(open_store(settings), window)


@flow(name="monitor-drift-features", log_prints=True)
def drift_features_flow(hours: int, end: dt.datetime | None = None,
                        start: dt.datetime | None = None) -> mon.MonitorReport:
    """evaluate-window fanned out per feature; ``monitor`` runs it with the Dask task runner."""
    settings = settings_for_workers(get_settings())
    summary = retrying(window_summary_task, settings).submit(settings, hours, end, start).result()
    features: list[FeatureDrift | None] = []
    prediction = None
    if summary.rows >= settings.drift.min_rows:
        per_feature = retrying(feature_drift_task, settings)
        futures = [per_feature.submit(settings, summary.window, f.name) for f in settings.dataset.features]
        predicted = retrying(prediction_drift_task, settings).submit(settings, summary.window)
        features = [future.result() for future in futures]
        prediction = predicted.result()
    return mon.report_from_parts(summary, features, prediction, settings.drift)


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
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(deployment_name)
        except ObjectNotFound:
            return False
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]))),
            limit=1,
        )
        return bool(runs)


@task(name="decide-trigger", cache_policy=NO_CACHE)
def decide_trigger_task(settings: Settings, report: mon.MonitorReport) -> mon.TriggerDecision:
    from mlcycle.tasks.storage import open_store

    running = report.retrain_warranted and training_in_flight(settings.monitor.train_deployment)
    return mon.claim_trigger(open_store(settings), report, dt.datetime.now(dt.UTC), settings.monitor.cooldown_hours,
                             training_running=running, monitor_flow_run_id=str(flow_run.id) if flow_run.id else None)


@task(name="start-training", cache_policy=NO_CACHE)
def start_training_task(settings: Settings, decision: mon.TriggerDecision) -> mon.TriggerDecision:
    """Start the train deployment without waiting; the ledger records the run id (or the failure)."""
    from prefect.deployments import run_deployment

    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    record = decision.record
    try:
        run = run_deployment(settings.monitor.train_deployment, parameters={"reason": record.reason[:500]},
                             timeout=0, idempotency_key=mon.idempotency_key(record.window_id),
                             tags=["mlcycle", "retrain", f"trigger-{record.seq}"])
    except Exception as exc:
        mon.update_trigger(store, record.model_copy(update={"status": "failed"}))
        raise RuntimeError(f"could not start {settings.monitor.train_deployment}: {exc}") from exc
    record = record.model_copy(update={"status": "started", "training_flow_run_id": str(run.id)})
    mon.update_trigger(store, record)
    return decision.model_copy(update={"record": record, "detail": f"{decision.detail} -> flow run {run.name}"})


@task(name="monitoring-report", cache_policy=NO_CACHE)
def report_task(settings: Settings, report: mon.MonitorReport) -> mon.MonitorReport:
    """HTML report and decision into the store; markdown and table artifacts in the UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from mlcycle.tasks.registry.versions import load_profile
    from mlcycle.tasks.storage import MinioStore, open_store

    store = open_store(settings)
    thresholds = settings.drift.model_dump()
    rows = mon.window_rows(store, report.window, settings.dataset)
    page = mon.render_html(report, load_profile(store, report.window.model, report.window.champion_version), rows,
                           thresholds)
    key = mon.save_html(store, report, page)
    report = report.model_copy(update={"report_key": key})
    mon.save_decision(store, report)
    uri = store.http_url(key) if isinstance(store, MinioStore) else store.uri(key)
    create_markdown_artifact(key="monitoring-decision", markdown=mon.render_markdown(report, uri, thresholds),
                             description=f"monitoring decision for {report.window_id}")
    if report.drift.features:
        create_table_artifact(key="monitoring-drift", table=mon.feature_table(report),
                              description=f"per-feature drift statistics for {report.window_id}")
    return report


@task(name="nothing-to-monitor", cache_policy=NO_CACHE)
def nothing_to_monitor_task(settings: Settings) -> str | None:
    """Why there is nothing to monitor (no champion yet), as a sentence and an artifact; None otherwise."""
    from prefect.artifacts import create_markdown_artifact

    from mlcycle.tasks.registry.versions import read_alias
    from mlcycle.tasks.storage import open_store
    from mlcycle.tasks.training.challenger import model_name

    name = model_name(settings)
    if read_alias(open_store(settings), name) is not None:
        return None
    reason = (f"model {name!r} has no champion yet, so no model serves traffic to judge; train one with "
              "`mlcycle train` (or run train/on-demand)")
    create_markdown_artifact(key="monitoring-decision", markdown=f"# Nothing to monitor\n\n{reason}",
                             description="nothing to monitor: no champion yet")
    return reason


@flow(name="monitor", log_prints=True)
def monitor_flow(hours: int | None = None, end: str | None = None,
                 start: str | None = None) -> mon.MonitorReport | None:
    """Measure drift and live performance over a window; start a training when warranted.

    Returns None (and the run completes) when there is nothing to monitor yet: no version was ever
    promoted to champion, as on a fresh stack whose hourly schedule fires before the first training.

    Args:
        hours: window length; defaults to ``monitor.window_hours``.
        end: window end (ISO datetime, UTC); defaults to the current hour.
        start: window start (ISO datetime, UTC); overrides ``hours`` when given.
    """
    settings = get_settings()
    window_end = dt.datetime.fromisoformat(end) if end else None
    window_start = dt.datetime.fromisoformat(start) if start else None
    nothing = nothing_to_monitor_task(settings)
    if nothing:  # a scheduled run before the first model: Completed, with the reason, not a red run every hour
        get_run_logger().info("nothing to monitor: %s", nothing)
        return None
    hours = hours or settings.monitor.window_hours
    runner = dask_task_runner(settings)  # None without dask.address: everything in this process, as always
    if runner is None:
        report = retrying(evaluate_window_task, settings)(settings, hours, window_end, window_start)
    else:
        report = drift_features_flow.with_options(task_runner=runner)(hours, window_end, window_start)
    decision = decide_trigger_task(settings, report)
    if decision.triggered:
        decision = start_training_task(settings, decision)
    report = retrying(report_task, settings)(settings, report.model_copy(update={"trigger": decision}))
    get_run_logger().info("%s: %s; trigger %s (%s)", report.window_id, report.drift.summary(), decision.outcome,
                          decision.detail)
    return report
