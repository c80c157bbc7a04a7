"""The monitor's window: which rows it judges, their drift and live performance, as one report.

**Windows** are aligned to whole hours (``[end - window_hours, end)``, ``end`` rounded down to the hour
unless given), so every monitor run within the same hour looks at the same window and gets the same
``window_id``; the id also names the champion version, since a new champion starts a new story, and
holds the bounds to the second plus a short hash of the exact bounds, so different windows never share one.

:func:`evaluate` is the plain-function core of the monitoring flow: the window's rows from the
inference log (labels joined), the drift decision (``tasks/drift.py``, the predictions in the task's
column: :func:`prediction_column`) and the performance check (``tasks/monitor/performance.py``).
The same evaluation also runs fanned out per feature (``flows/monitor.py`` does so on Dask when
configured): :func:`summarize_window`, one :func:`window_feature_drift` per feature and
:func:`window_prediction_drift`, each reading only its column, then :func:`report_from_parts`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mlcycle.tasks.drift import assess_drift, decide_drift, feature_drift, prediction_drift
from mlcycle.tasks.inference_rows import PREDICTION_COLUMNS
from mlcycle.tasks.monitor.performance import check_performance
from mlcycle.tasks.records.monitoring import (
    DriftDecision,
    FeatureDrift,
    MonitorReport,
    MonitorWindow,
    MultivariateDrift,
    PerformanceCheck,
    PerformanceEstimate,
    WindowSummary,
)
from mlcycle.tasks.records.registry import ModelVersion
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.storage import ObjectStore

# --------------------------------------------------------------------------------------------------
# window and data
# --------------------------------------------------------------------------------------------------


def window_for(model: str, version: int, hours: int, end: dt.datetime | None = None,
               start: dt.datetime | None = None, served_by: str = "champion") -> MonitorWindow:
    """``[end - hours, end)``, ``end`` defaulting to now rounded down to the hour (UTC); or ``[start, end)``."""
    if end is None:
        end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    if start is not None:
        start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
        if start >= end:
            raise ValueError(f"monitoring window start {start.isoformat()} is not before its end {end.isoformat()}")
    return MonitorWindow(model=model, version=version, served_by=served_by,
                         start=start or end - dt.timedelta(hours=hours), end=end)


def window_rows(store: ObjectStore, window: MonitorWindow, spec):
    """The inference log rows of the window for the version judged, with labels joined when present."""
    from mlcycle.tasks.inference_reader import join_labels, read_inference_log
    from mlcycle.tasks.labels import read_labels

    logged = read_inference_log(store, window.dates())
    if logged.empty:
        return logged
    logged = _in_window(logged, window)
    labels = read_labels(store, label_dates(window, dt.datetime.now(dt.UTC).date()))
    return join_labels(logged, labels, spec)


def label_dates(window: MonitorWindow, today: dt.date) -> list[dt.date]:
    """The labels partitions that can hold a label of the window's predictions: labels are filed by the day
    they arrived (tasks/labels.py), and an outcome arrives after its prediction, so from the window's first day
    to today. A monitor run over the current window reads a day or two of labels, however long the history."""
    last = max(window.end.date(), today)
    return [window.start.date() + dt.timedelta(days=i) for i in range((last - window.start.date()).days + 1)]


def _in_window(logged, window: MonitorWindow):
    """The rows logged inside ``[start, end)`` by the window's version, in log order."""
    import pandas as pd

    ts = pd.to_datetime(logged["ts"], utc=True)
    keep = (ts >= pd.Timestamp(window.start)) & (ts < pd.Timestamp(window.end))
    if "model_version" in logged.columns:
        keep &= logged["model_version"].astype(str) == str(window.version)
    return logged[keep.to_numpy()].reset_index(drop=True)


def window_columns(store: ObjectStore, window: MonitorWindow, columns: list[str]):
    """Only ``columns`` of :func:`window_rows` (same rows, same order), reading no other column.

    What one per-feature drift task reads: a column of the window (its live rows), not the whole log.
    """
    from mlcycle.tasks.inference_reader import read_inference_log

    wanted = list(dict.fromkeys(["ts", "model_version", *columns]))
    logged = read_inference_log(store, window.dates(), columns=wanted)
    return _in_window(logged, window) if len(logged) else logged


def prediction_column(task: str) -> str:
    """The inference-log column whose distribution the prediction drift compares with the reference: the
    task's first prediction column (binary ``probability``, multiclass ``label``, regression ``prediction``)."""
    return PREDICTION_COLUMNS[task][0]


@dataclass
class JudgedVersion:
    """What the monitor reads of the judged version beyond its profile: its metadata (stored artifacts for the
    label-free estimate and the multivariate test), its permutation importances, and the settings."""

    metadata: ModelVersion
    importances: dict[str, float] | None
    settings: Settings

    def assess(self, store: ObjectStore, rows) -> tuple[PerformanceEstimate | None, MultivariateDrift | None]:
        from mlcycle.tasks.monitor.assessment import assess_estimate, assess_multivariate

        if not len(rows):
            return None, None
        spec = self.settings.dataset
        return (assess_estimate(store, self.metadata, rows, spec, self.settings),
                assess_multivariate(store, self.metadata, rows, self.settings))


def evaluate(store: ObjectStore, window: MonitorWindow, profile, champion_metrics: dict, spec, drift_config,
             monitor_config, judged: JudgedVersion | None = None) -> MonitorReport:
    """Drift and performance for one window: the plain-function core of the monitoring flow.

    With ``judged``: the importance-weighted verdict, the label-free estimate and the multivariate test too.
    """
    rows = window_rows(store, window, spec)
    estimate, multivariate = judged.assess(store, rows) if judged is not None else (None, None)
    importances = judged.importances if judged is not None else None
    decision = assess_drift(profile, rows, spec, drift_config, prediction_column=prediction_column(spec.task),
                            rows=len(rows), importances=importances, multivariate=multivariate) if len(rows) else \
        DriftDecision(enough_data=False, rows=0, min_rows=drift_config.min_rows)
    performance = check_performance(rows, spec, champion_metrics, monitor_config) if len(rows) else None
    return assemble_report(window, len(rows), decision, performance, estimate)


def assemble_report(window: MonitorWindow, rows: int, decision: DriftDecision, performance: PerformanceCheck | None,
            estimate: PerformanceEstimate | None = None) -> MonitorReport:
    reasons = list(decision.reasons) if decision.dataset_drift else []
    if performance is not None and performance.degraded:
        reasons.append(f"performance: {performance.detail}")
    if estimate is not None and estimate.degraded:
        reasons.append(f"estimated performance: {estimate.detail}")
    return MonitorReport(window_id=window.window_id, window=window, rows=rows, drift=decision,
                         performance=performance, reasons=reasons, estimate=estimate)


# --------------------------------------------------------------------------------------------------
# the same evaluation, fanned out per feature (flows/monitor.py runs it on Dask when configured)
# --------------------------------------------------------------------------------------------------


def summarize_window(store: ObjectStore, window: MonitorWindow, champion_metrics: dict, spec,
                     monitor_config, judged: JudgedVersion | None = None) -> WindowSummary:
    """The fan-out's first step: the rows, the live performance, and (reading the same rows) the label-free
    estimate and the multivariate test, which need every feature's column at once."""
    rows = window_rows(store, window, spec)
    performance = check_performance(rows, spec, champion_metrics, monitor_config) if len(rows) else None
    estimate, multivariate = judged.assess(store, rows) if judged is not None else (None, None)
    return WindowSummary(window=window, rows=len(rows), performance=performance, estimate=estimate,
                         multivariate=multivariate, importances=judged.importances if judged else None)


def window_feature_drift(store: ObjectStore, window: MonitorWindow, spec, feature: str) -> FeatureDrift | None:
    """One feature of the window against its version's reference: reads that column and the profile only."""
    from mlcycle.tasks.registry.versions import load_profile

    declared = spec.feature(feature)
    profile = load_profile(store, window.model, window.version)
    return feature_drift(profile, window_columns(store, window, [feature])[feature], declared)


def window_prediction_drift(store: ObjectStore, window: MonitorWindow, column: str) -> FeatureDrift | None:
    """The predictions of the window (``column``, see :func:`prediction_column`) against the reference."""
    from mlcycle.tasks.registry.versions import load_profile

    profile = load_profile(store, window.model, window.version)
    values = window_columns(store, window, [column])
    return prediction_drift(profile, values[column]) if column in values.columns else None


def report_from_parts(summary: WindowSummary, features: list[FeatureDrift | None], prediction: FeatureDrift | None,
                      drift_config) -> MonitorReport:
    """The report :func:`evaluate` gives, from the fanned-out pieces (``features`` in dataset order)."""
    decision = decide_drift([f for f in features if f is not None], prediction, summary.rows, drift_config,
                            importances=summary.importances, multivariate=summary.multivariate)
    return assemble_report(summary.window, summary.rows, decision, summary.performance, summary.estimate)


# --------------------------------------------------------------------------------------------------
# which version is judged
# --------------------------------------------------------------------------------------------------


def load_judged(store: ObjectStore, metadata: ModelVersion, settings: Settings) -> JudgedVersion:
    """The judged version with its permutation importances (from its evaluation report; None if it has none)."""
    from mlcycle.tasks.registry.versions import load_evaluation

    try:
        evaluation = load_evaluation(store, metadata.name, metadata.version)
        importances = {i.feature: i.importance for i in evaluation.importances}
    except KeyError:  # a version without an evaluation report: the share rule decides
        importances = None
    return JudgedVersion(metadata=metadata, importances=importances or None, settings=settings)


def judged_version(store: ObjectStore, name: str) -> tuple[int, str]:
    """The version of model ``name`` whose traffic the monitor judges, and why, in words.

    The live deployment's version when the stable endpoint serves this model (what answers requests is
    what there is to judge: after a failed rollout the old version keeps serving, after a rollback an
    older one serves again, and a registry rollback moves the champion without redeploying); the
    champion only when nothing of model ``name`` is deployed (no rollout yet, or `mlcycle serve` only).
    """
    from mlcycle.tasks.registry.versions import read_alias
    from mlcycle.tasks.rollout.orchestrate import read_current

    champion = read_alias(store, name)
    current = read_current(store)
    if current is not None and current.status == "live" and current.model_name == name and current.model_version:
        version = int(current.model_version)
        against = "the champion" if champion and champion.version == version else (
            f"champion v{champion.version}" if champion else "no champion")
        return version, f"live deployment {current.id} (serving v{version}; {against})"
    if champion is None:
        raise LookupError(f"model {name!r} has no champion and no live deployment to judge")
    return champion.version, "champion (nothing of this model is deployed behind the endpoint)"


# --------------------------------------------------------------------------------------------------
# before the first champion
# --------------------------------------------------------------------------------------------------


def nothing_to_monitor(store: ObjectStore, name: str) -> str | None:
    """Why there is nothing to monitor (model ``name`` has no champion yet), as a sentence; None otherwise."""
    from mlcycle.tasks.registry.versions import read_alias

    if read_alias(store, name) is not None:
        return None
    return (f"model {name!r} has no champion yet, so no model serves traffic to judge; train one with "
            "`mlcycle train` (or run the deployment monitor.train_deployment names)")


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers (flows/monitor.py)
# --------------------------------------------------------------------------------------------------

from mlcycle.tasks.lazy_task import NO_CACHE, task  # noqa: E402


@task(name="nothing-to-monitor", cache_policy=NO_CACHE)
def nothing_to_monitor_task(settings: Settings) -> str | None:
    """Why there is nothing to monitor (no champion yet), as a sentence and an artifact; None otherwise."""
    from prefect.artifacts import create_markdown_artifact

    from mlcycle.tasks.registry.versions import model_name
    from mlcycle.tasks.storage import open_store

    reason = nothing_to_monitor(open_store(settings), model_name(settings))
    if reason is not None:
        create_markdown_artifact(key="monitoring-decision", markdown=f"# Nothing to monitor\n\n{reason}",
                                 description="nothing to monitor: no champion yet")
    return reason


@task(name="evaluate-window", cache_policy=NO_CACHE)
def evaluate_window_task(settings: Settings, hours: int, end: dt.datetime | None,
                         start: dt.datetime | None = None) -> MonitorReport:
    from mlcycle.tasks.registry.versions import load_metadata, load_profile, model_name
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    name = model_name(settings)
    version, served_by = judged_version(store, name)
    judged = load_metadata(store, name, version)
    profile = load_profile(store, name, version)
    window = window_for(name, version, hours, end, start, served_by)
    return evaluate(store, window, profile, judged.metrics.model_dump(), settings.dataset, settings.drift,
                    settings.monitor, load_judged(store, judged, settings))


@task(name="window-summary", cache_policy=NO_CACHE)
def window_summary_task(settings: Settings, hours: int, end: dt.datetime | None,
                        start: dt.datetime | None = None) -> WindowSummary:
    from mlcycle.tasks.registry.versions import load_metadata, model_name
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    name = model_name(settings)
    version, served_by = judged_version(store, name)
    window = window_for(name, version, hours, end, start, served_by)
    judged = load_metadata(store, name, version)
    return summarize_window(store, window, judged.metrics.model_dump(), settings.dataset, settings.monitor,
                            load_judged(store, judged, settings))


@task(name="feature-drift", cache_policy=NO_CACHE, task_run_name="drift-{feature}")
def feature_drift_task(settings: Settings, window: MonitorWindow, feature: str) -> FeatureDrift | None:
    from mlcycle.tasks.storage import open_store

    return window_feature_drift(open_store(settings), window, settings.dataset, feature)


@task(name="prediction-drift", cache_policy=NO_CACHE)
def prediction_drift_task(settings: Settings, window: MonitorWindow) -> FeatureDrift | None:
    from mlcycle.tasks.storage import open_store

    return window_prediction_drift(open_store(settings), window, prediction_column(settings.dataset.task))
