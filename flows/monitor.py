"""The monitor flow: drift and live performance of the version that serves, and a guarded retraining trigger.

``monitor`` (deployment ``monitor/<project>-hourly``, scheduled in prefect.yaml)::

    nothing-to-monitor? (no champion yet: the run completes, with the reason)
    ─▶ evaluate-window (drift + performance of the version the live deployment serves; the champion
       when nothing is deployed) ─▶ decide-trigger (ledger, cooldown, one training)
    ─▶ start-training (run_deployment monitor.train_deployment, not awaited) ─▶ monitoring-report (store + artifacts)
    ─▶ sweep-leftovers (tasks/gc.py, with ``gc.in_monitor``: a failed sweep is a warning, never a failed monitor)

With ``dask.address`` set, evaluate-window is replaced by the subflow ``monitor-drift-features`` on a
DaskTaskRunner (tasks/runners.py): window-summary (rows + performance), then one ``feature-drift`` task per
declared feature and one ``prediction-drift``, each reading only its column of the window on a Dask
worker; the decision (BH across all tests) is taken from their results, the same as in-process.

The tasks are in ``tasks/monitor/`` (window, trigger, report); the trigger's guard rails are described in
``tasks/monitor/trigger.py``. A decision is always recorded, with its reasons, whether or not a training
starts: also when a warranted training cannot be started (no train deployment on this server, e.g. no
`mlcycle up`): the trigger's outcome is then ``start-failed``, its ledger slot released, and the report,
the decision and the run's log say so with the way out (`mlcycle up`, or `mlcycle train`).
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger

from mlcycle.tasks.gc import gc_task
from mlcycle.tasks.monitor.report import report_task
from mlcycle.tasks.monitor.trigger import decide_trigger_task, start_training_task
from mlcycle.tasks.monitor.window import (
    evaluate_window_task,
    feature_drift_task,
    nothing_to_monitor_task,
    prediction_drift_task,
    report_from_parts,
    window_summary_task,
)
from mlcycle.tasks.records.monitoring import FeatureDrift, MonitorReport
from mlcycle.tasks.retry import retrying
from mlcycle.tasks.runners import dask_task_runner, settings_for_workers
from mlcycle.tasks.settings import get_settings


@flow(name="monitor-drift-features", log_prints=True)
def drift_features_flow(hours: int, end: dt.datetime | None = None,
                        start: dt.datetime | None = None) -> MonitorReport:
    """evaluate-window fanned out per feature; ``monitor`` runs it with the Dask task runner."""
    settings = settings_for_workers(get_settings())
    summary = retrying(window_summary_task, settings.retries.monitoring).submit(settings, hours, end, start).result()
    features: list[FeatureDrift | None] = []
    prediction = None
    if summary.rows >= settings.drift.min_rows:
        per_feature = retrying(feature_drift_task, settings.retries.monitoring)
        futures = [per_feature.submit(settings, summary.window, f.name) for f in settings.dataset.features]
        predicted = retrying(prediction_drift_task, settings.retries.monitoring).submit(settings, summary.window)
        features = [future.result() for future in futures]
        prediction = predicted.result()
    return report_from_parts(summary, features, prediction, settings.drift)


@flow(name="monitor", log_prints=True)
def monitor_flow(hours: int | None = None, end: str | None = None,
                 start: str | None = None) -> MonitorReport | None:
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
        report = retrying(evaluate_window_task, settings.retries.monitoring)(settings, hours, window_end, window_start)
    else:
        report = drift_features_flow.with_options(task_runner=runner)(hours, window_end, window_start)
    decision = decide_trigger_task(settings, report)
    if decision.triggered:
        decision = start_training_task(settings, decision)
    report = retrying(report_task, settings.retries.monitoring)(
        settings, report.model_copy(update={"trigger": decision}))
    logger = get_run_logger()
    logger.info("%s: %s; trigger %s (%s)", report.window_id, report.drift.verdict, decision.outcome, decision.detail)
    if report.retraining_not_started:  # the report and the decision are written; the run says what is missing
        logger.error(decision.detail)
    if settings.gc.in_monitor:
        swept = gc_task(settings, return_state=True)
        if swept.is_completed():
            logger.info("sweep: %s", swept.result()["summary"])
        else:  # the report is written whatever the sweep did
            logger.warning("the sweep of leftovers failed (the next run retries it): %s", swept.message)
    return report
