"""Monitoring: drift and live performance of the champion over a window, and the retraining trigger.

The monitoring flow (``flows/monitor.py``) reads as::

    window -> champion + reference profile -> inference log of the window (+ labels)
           -> drift decision (tasks.drift) + performance check -> report (store + artifacts)
           -> trigger decision (guard rails) -> run_deployment(train) without waiting

**Windows** are aligned to whole hours (``[end - window_hours, end)``, ``end`` rounded down to the hour
unless given), so every monitor run within the same hour looks at the same window and gets the same
``window_id``; the id also names the champion version, since a new champion starts a new story.

**Guard rails** around the trigger, all enforced in the object store so they hold across processes:

* a *trigger ledger* ``monitoring/triggers/<seq>.json``, numbered with exclusive creates (the same
  primitive as model versions): two monitors racing to trigger cannot both win a sequence number;
* one trigger per window: a window that already triggered training never triggers again;
* a cooldown: no trigger within ``cooldown_hours`` of the previous one;
* one running training: no trigger while a run of the train deployment is scheduled, pending or running;
* and the Prefect idempotency key ``retrain-<window_id>`` on ``run_deployment`` itself.

Every decision, taken or not, is written to ``monitoring/decisions/<window_id>.json`` with its
reasons; the HTML report with reference-vs-current plots of the drifted features goes to
``reports/monitoring/<window_id>/report.html``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io
import json
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from mlcycle.tasks.drift import DriftDecision, FeatureDrift, assess_drift, decide_drift, feature_drift, prediction_drift
from mlcycle.tasks.storage import ObjectNotFound, ObjectStore

TRIGGERS = "monitoring/triggers/"
DECISIONS = "monitoring/decisions/"
REPORTS = "reports/monitoring/"


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


# --------------------------------------------------------------------------------------------------
# window and data
# --------------------------------------------------------------------------------------------------


def window_for(model: str, champion_version: int, hours: int, end: dt.datetime | None = None,
               start: dt.datetime | None = None) -> MonitorWindow:
    """``[end - hours, end)``, ``end`` defaulting to now rounded down to the hour (UTC); or ``[start, end)``."""
    if end is None:
        end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    if start is not None:
        start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
        if start >= end:
            raise ValueError(f"monitoring window start {start.isoformat()} is not before its end {end.isoformat()}")
    return MonitorWindow(model=model, champion_version=champion_version,
                         start=start or end - dt.timedelta(hours=hours), end=end)


def window_rows(store: ObjectStore, window: MonitorWindow, spec):
    """The inference log rows of the window for the current champion, with labels joined when present."""
    from mlcycle.tasks.inference_log import join_labels, read_inference_log
    from mlcycle.tasks.labels import read_labels

    logged = read_inference_log(store, window.dates())
    if logged.empty:
        return logged
    logged = _in_window(logged, window)
    labels = read_labels(store, None)
    return join_labels(logged, labels, spec)


def _in_window(logged, window: MonitorWindow):
    """The rows logged inside ``[start, end)`` by the window's champion version, in log order."""
    import pandas as pd

    ts = pd.to_datetime(logged["ts"], utc=True)
    keep = (ts >= pd.Timestamp(window.start)) & (ts < pd.Timestamp(window.end))
    if "model_version" in logged.columns:
        keep &= logged["model_version"].astype(str) == str(window.champion_version)
    return logged[keep.to_numpy()].reset_index(drop=True)


def window_columns(store: ObjectStore, window: MonitorWindow, columns: list[str]):
    """Only ``columns`` of :func:`window_rows` (same rows, same order), reading no other column.

    What one per-feature drift task reads: a column of the window, not the whole log.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlcycle.tasks.inference_log import INFERENCE_PREFIX, list_parts

    wanted = list(dict.fromkeys(["ts", "model_version", *columns]))
    tables = []
    for key in list_parts(store, INFERENCE_PREFIX, window.dates()):
        data = store.get_bytes(key)
        present = set(pq.read_schema(pa.BufferReader(data)).names)
        tables.append(pq.read_table(pa.BufferReader(data), columns=[c for c in wanted if c in present]))
    if not tables:
        return pd.DataFrame()
    return _in_window(pa.concat_tables(tables, promote_options="default").to_pandas(), window)


def check_performance(rows, spec, champion_metrics: dict, config) -> PerformanceCheck:
    """The primary metric on the labelled rows of the window vs the champion's test-window metric."""
    from sklearn.metrics import roc_auc_score

    metric = config.performance_metric
    champion_value = champion_metrics.get(metric)
    labelled = rows[rows[spec.target].notna()] if len(rows) and spec.target in rows.columns else rows.iloc[:0]
    n = len(labelled)
    check = PerformanceCheck(metric=metric, labelled_rows=n, min_labelled_rows=config.min_labelled_rows,
                             champion_value=champion_value, tolerance=config.performance_tolerance,
                             detail="")
    if n < config.min_labelled_rows:
        check.detail = f"not enough labels: {n} labelled rows, at least {config.min_labelled_rows} needed"
        return check
    y = labelled[spec.target].astype(int).to_numpy()
    if len(np.unique(y)) < 2:
        check.detail = f"{n} labelled rows hold a single class: {metric} undefined"
        return check
    if metric != "roc_auc":
        raise ValueError(f"monitor.performance_metric {metric!r} is not supported (use roc_auc)")
    check.live_value = float(roc_auc_score(y, labelled["probability"].astype(float).to_numpy()))
    if champion_value is None:
        check.detail = f"live {metric} {check.live_value:.4f}; the champion recorded no {metric}"
        return check
    drop = champion_value - check.live_value
    check.degraded = drop > config.performance_tolerance
    check.detail = (f"live {metric} {check.live_value:.4f} on {n} labelled rows vs champion test "
                    f"{champion_value:.4f}: drop {drop:+.4f} {'>' if check.degraded else '<='} tolerance "
                    f"{config.performance_tolerance}")
    return check


def evaluate(store: ObjectStore, window: MonitorWindow, profile, champion_metrics: dict, spec, drift_config,
             monitor_config) -> MonitorReport:
    """Drift and performance for one window: the plain-function core of the monitoring flow."""
    rows = window_rows(store, window, spec)
    decision = assess_drift(profile, rows, spec, drift_config, rows=len(rows)) if len(rows) else \
        DriftDecision(enough_data=False, rows=0, min_rows=drift_config.min_rows)
    performance = check_performance(rows, spec, champion_metrics, monitor_config) if len(rows) else None
    return _report(window, len(rows), decision, performance)


def _report(window: MonitorWindow, rows: int, decision: DriftDecision,
            performance: PerformanceCheck | None) -> MonitorReport:
    reasons = list(decision.reasons) if decision.dataset_drift else []
    if performance is not None and performance.degraded:
        reasons.append(f"performance: {performance.detail}")
    return MonitorReport(window_id=window.window_id, window=window, rows=rows, drift=decision,
                         performance=performance, reasons=reasons)


# --------------------------------------------------------------------------------------------------
# the same evaluation, fanned out per feature (flows/monitor.py runs it on Dask when configured)
# --------------------------------------------------------------------------------------------------


class WindowSummary(BaseModel):
    """The fan-out's first step: the window, how many rows it holds, and the live performance check."""

    window: MonitorWindow
    rows: int
    performance: PerformanceCheck | None


def summarize_window(store: ObjectStore, window: MonitorWindow, champion_metrics: dict, spec,
                     monitor_config) -> WindowSummary:
    rows = window_rows(store, window, spec)
    performance = check_performance(rows, spec, champion_metrics, monitor_config) if len(rows) else None
    return WindowSummary(window=window, rows=len(rows), performance=performance)


def window_feature_drift(store: ObjectStore, window: MonitorWindow, spec, feature: str) -> FeatureDrift | None:
    """One feature of the window against the champion's reference: reads that column and the profile only."""
    from mlcycle.tasks.registry.versions import load_profile

    declared = spec.feature(feature)
    profile = load_profile(store, window.model, window.champion_version)
    return feature_drift(profile, window_columns(store, window, [feature])[feature], declared)


def window_prediction_drift(store: ObjectStore, window: MonitorWindow,
                            prediction_column: str = "probability") -> FeatureDrift | None:
    from mlcycle.tasks.registry.versions import load_profile

    profile = load_profile(store, window.model, window.champion_version)
    return prediction_drift(profile, window_columns(store, window, [prediction_column])[prediction_column])


def report_from_parts(summary: WindowSummary, features: list[FeatureDrift | None], prediction: FeatureDrift | None,
                      drift_config) -> MonitorReport:
    """The report :func:`evaluate` gives, from the fanned-out pieces (``features`` in dataset order)."""
    decision = decide_drift([f for f in features if f is not None], prediction, summary.rows, drift_config)
    return _report(summary.window, summary.rows, decision, summary.performance)


# --------------------------------------------------------------------------------------------------
# the trigger ledger
# --------------------------------------------------------------------------------------------------


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
                  training_running: bool = False, monitor_flow_run_id: str | None = None) -> TriggerDecision:
    """Decide whether this window may start a training, and claim the next ledger slot if so."""
    if not report.drift.enough_data and not (report.performance and report.performance.degraded):
        return TriggerDecision(retrain_warranted=False, outcome="not-enough-data", detail=report.drift.summary())
    if not report.retrain_warranted:
        return TriggerDecision(retrain_warranted=False, outcome="not-warranted",
                               detail="no drift and no performance drop beyond tolerance")
    for _ in range(50):
        records = trigger_records(store)
        same = [r for r in records if r.window_id == report.window_id and r.status != "failed"]
        if same:
            return TriggerDecision(retrain_warranted=True, outcome="already-triggered", record=same[-1],
                                   detail=f"window {report.window_id} already triggered training "
                                          f"(trigger #{same[-1].seq} at {same[-1].at:%Y-%m-%d %H:%M} UTC)")
        live = [r for r in records if r.status != "failed"]
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
                               champion_version=report.window.champion_version, at=now,
                               reason="; ".join(report.reasons), monitor_flow_run_id=monitor_flow_run_id)
        if store.create_exclusive(_trigger_key(seq), record.model_dump_json(indent=1).encode()):
            return TriggerDecision(retrain_warranted=True, triggered=True, outcome="triggered", record=record,
                                   detail=f"trigger #{seq}: {record.reason}")
        # another monitor took this slot first: re-read the ledger and decide again
    raise RuntimeError("could not claim a trigger slot after 50 attempts: the ledger is contended")


def update_trigger(store: ObjectStore, record: TriggerRecord) -> None:
    store.put_bytes(_trigger_key(record.seq), record.model_dump_json(indent=1).encode())


def idempotency_key(window_id: str) -> str:
    return "retrain-" + hashlib.sha256(window_id.encode()).hexdigest()[:24]


def save_decision(store: ObjectStore, report: MonitorReport) -> str:
    key = f"{DECISIONS}{report.window_id}.json"
    store.put_bytes(key, report.model_dump_json(indent=1).encode())
    return key


def last_decision(store: ObjectStore) -> MonitorReport | None:
    keys = store.list(DECISIONS)
    if not keys:
        return None
    reports = [MonitorReport.model_validate_json(store.get_bytes(k)) for k in keys]
    return max(reports, key=lambda r: r.window.end)


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------


def feature_table(report: MonitorReport) -> list[dict]:
    """One row per feature (and the predictions): the statistics, corrected p-values, verdict."""
    rows = []
    for f in [*report.drift.features, *([report.drift.prediction] if report.drift.prediction else [])]:
        rows.append({
            "feature": f.feature, "kind": f.kind, "critical": f.critical, "test": f.test,
            "statistic": _r(f.statistic), "p_value": _r(f.p_value, 3), "p_adjusted": _r(f.p_adjusted, 3),
            "psi": _r(f.psi), "wasserstein_sd": _r(f.wasserstein_norm), "js_distance": _r(f.js_distance),
            "unseen_share": _r(f.unseen_share), "null_rate_ref": _r(f.null_rate_reference),
            "null_rate_cur": _r(f.null_rate_current), "drifted": f.drifted, "why": "; ".join(f.reasons),
        })
    return rows


def _r(x: float | None, digits: int = 4):
    if x is None:
        return None
    return float(f"{x:.{digits}g}") if abs(x) < 1e-3 and x != 0 else round(float(x), digits)


def render_markdown(report: MonitorReport, report_uri: str | None, thresholds: dict) -> str:
    d = report.drift
    trigger = report.trigger
    lines = [
        f"# Monitoring {report.window.model} v{report.window.champion_version}",
        f"window {report.window.start:%Y-%m-%d %H:%M} to {report.window.end:%Y-%m-%d %H:%M} UTC, "
        f"{report.rows} logged rows",
        "",
        f"**Drift:** {d.summary()}",
    ]
    if report.performance is not None:
        lines.append(f"**Performance:** {report.performance.detail}")
    lines.append(f"**Retraining warranted:** {'yes: ' + '; '.join(report.reasons) if report.reasons else 'no'}")
    if trigger is not None:
        lines.append(f"**Trigger:** {trigger.outcome}: {trigger.detail}")
    lines.append("")
    lines.append("thresholds: " + ", ".join(f"{k}={v}" for k, v in thresholds.items()))
    if report_uri:
        lines.append(f"\n[HTML report with reference-vs-current plots]({report_uri})")
    return "\n".join(lines)


def render_html(report: MonitorReport, profile, rows, thresholds: dict) -> str:
    """A self-contained HTML report: the table, and reference-vs-current plots of drifted features."""
    table = feature_table(report)
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in (table[0] if table else {}))
    body = "".join(
        "<tr class='{}'>".format("drift" if r["drifted"] else "") +
        "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r.values()) + "</tr>"
        for r in table)
    plots = "".join(
        f"<h3>{html.escape(name)}</h3><img alt='{html.escape(name)}' src='data:image/png;base64,{png}'/>"
        for name, png in _plots(report, profile, rows))
    trigger = report.trigger
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(report.window_id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}tr.drift{{background:#fde2e2}}</style></head><body>
<h1>Drift report: {html.escape(report.window.model)} v{report.window.champion_version}</h1>
<p>Window {report.window.start:%Y-%m-%d %H:%M} to {report.window.end:%Y-%m-%d %H:%M} UTC, {report.rows} rows.</p>
<p><b>Dataset decision:</b> {html.escape(report.drift.summary())}</p>
<p><b>Performance:</b> {html.escape(report.performance.detail if report.performance else 'no data')}</p>
<p><b>Trigger:</b> {html.escape(f'{trigger.outcome}: {trigger.detail}' if trigger else 'not evaluated')}</p>
<p>Thresholds: {html.escape(json.dumps(thresholds))}</p>
<table><tr>{head}</tr>{body}</table>
<h2>Drifted features: reference vs current</h2>{plots or '<p>none</p>'}
</body></html>"""


def _plots(report: MonitorReport, profile, rows) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    drifted = [f for f in report.drift.features if f.drifted]
    if report.drift.prediction is not None and report.drift.prediction.drifted:
        drifted.append(report.drift.prediction)
    for f in drifted:
        fig, ax = plt.subplots(figsize=(6, 3))
        if f.kind in ("numeric", "prediction"):
            ref = profile.numeric[f.feature] if f.kind == "numeric" else profile.predictions
            column = f.feature if f.kind == "numeric" else "probability"
            cur_counts = np.asarray(ref.bin_counts(np.asarray(rows[column], dtype=float)), dtype=float)
            ref_counts = np.asarray(ref.counts, dtype=float)
            x = np.arange(len(ref_counts))
            ax.bar(x - 0.2, ref_counts / max(ref_counts.sum(), 1), width=0.4, label="reference")
            ax.bar(x + 0.2, cur_counts / max(cur_counts.sum(), 1), width=0.4, label="current")
            ax.set_xlabel("reference quantile bin" if f.kind == "numeric" else "probability bin")
        else:
            ref = profile.categorical[f.feature]
            cur = ref.frequencies_of(rows[f.feature])
            keys = list(cur)
            x = np.arange(len(keys))
            ax.bar(x - 0.2, [ref.frequencies.get(k, 0.0) for k in keys], width=0.4, label="reference")
            ax.bar(x + 0.2, [cur[k] for k in keys], width=0.4, label="current")
            ax.set_xticks(x, keys, rotation=30, fontsize=8)
        ax.set_ylabel("share")
        ax.set_title(f"{f.feature}: " + "; ".join(f.reasons)[:90], fontsize=8)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out.append((f.feature, base64.b64encode(buf.getvalue()).decode()))
    return out


def save_html(store: ObjectStore, report: MonitorReport, page: str) -> str:
    key = f"{REPORTS}{report.window_id}/report.html"
    store.put_bytes(key, page.encode())
    return key
