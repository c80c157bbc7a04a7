"""The monitor's report: the per-feature table, the markdown decision and the HTML drift report.

The HTML report goes to ``reports/monitoring/<window_id>/report.html``: a self-contained page (the
Jinja2 template ``templates/report.html.j2``, autoescaped) with the table and reference-vs-current
plots of the drifted features, drawn with matplotlib's object API (a ``Figure`` on the Agg canvas: no
pyplot, so no global figure registry to leak into and no process-wide backend switch). The decision
itself goes to ``monitoring/decisions/`` (``tasks/monitor/trigger.py``); the markdown and the table
are Prefect artifacts.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from pathlib import Path

import numpy as np

from mlcycle.tasks.monitor.trigger import save_decision
from mlcycle.tasks.records.monitoring import FeatureDrift, MonitorReport
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.storage import ObjectStore

REPORTS = "reports/monitoring/"
TEMPLATES = Path(__file__).parent / "templates"


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
        f"# Monitoring {report.window.model} v{report.window.version}",
        f"window {report.window.start:%Y-%m-%d %H:%M} to {report.window.end:%Y-%m-%d %H:%M} UTC, "
        f"{report.rows} logged rows",
        f"judged: v{report.window.version}, from the {report.window.served_by}",
        "",
        f"**Drift:** {d.summary()}",
        f"**Why:** {d.verdict}",
    ]
    if report.performance is not None:
        lines.append(f"**Performance:** {report.performance.detail}")
    if report.estimate is not None:
        lines.append(f"**Estimated performance (no labels, {report.estimate.method.upper()}):** "
                     f"{report.estimate.detail}")
    if d.multivariate is not None:
        lines.append(f"**Multivariate drift:** {d.multivariate.detail}")
    lines.append(f"**Retraining warranted:** {'yes: ' + '; '.join(report.reasons) if report.reasons else 'no'}")
    if trigger is not None:
        lines.append(f"**Trigger:** {trigger.outcome}: {trigger.detail}")
    lines.append("")
    lines.append("thresholds: " + ", ".join(f"{k}={v}" for k, v in thresholds.items()))
    if report_uri:
        lines.append(f"\n[HTML report with reference-vs-current plots]({report_uri})")
    return "\n".join(lines)


def render_html(report: MonitorReport, profile, thresholds: dict) -> str:
    """A self-contained HTML report: the table, and reference-vs-current plots of drifted features, drawn from
    the counts the drift tests already computed (``FeatureDrift.current_counts`` / ``current_shares``): the
    window is not read a second time, however many rows it holds."""
    table = feature_table(report)
    chart = estimate_figure(report)
    return _templates().get_template("report.html.j2").render(
        report=report, columns=list(table[0]) if table else [], table=table,
        figures=drift_figures(report, profile), thresholds_json=json.dumps(thresholds),
        estimate_png=base64.b64encode(chart).decode() if chart else None)


def estimate_figure(report: MonitorReport) -> bytes | None:
    """The label-free estimate per chunk of the window with its band, the realized value where labels arrived,
    and the test-day reference (None without at least one estimated chunk)."""
    estimate = report.estimate
    chunks = [c for c in (estimate.chunks if estimate else []) if c.value is not None]
    if not chunks:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = [c.start for c in chunks]
    ax.fill_between(x, [c.lower for c in chunks], [c.upper for c in chunks], alpha=0.2, label="estimate band")
    ax.plot(x, [c.value for c in chunks], marker="o", label=f"estimated ({estimate.method.upper()})")
    realized = [(c.start, c.realized) for c in chunks if c.realized is not None]
    if realized:
        ax.plot(*zip(*realized, strict=True), marker="s", linestyle="--", label="realized (labels)")
    if estimate.reference_value is not None:
        ax.axhline(estimate.reference_value, color="grey", linewidth=1, label="test days")
    ax.set_ylabel(estimate.metric)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


@functools.cache
def _templates():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)


def drift_figures(report: MonitorReport, profile) -> list[tuple[str, str]]:
    """(feature, base64 PNG) of each drifted feature (and the predictions): reference vs current shares."""
    drifted = [f for f in report.drift.features if f.drifted]
    if report.drift.prediction is not None and report.drift.prediction.drifted:
        drifted.append(report.drift.prediction)
    return [(f.feature, base64.b64encode(_figure(f, profile)).decode()) for f in drifted
            if f.current_counts is not None or f.current_shares is not None]


def _figure(f: FeatureDrift, profile) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ref = {"numeric": lambda: profile.numeric[f.feature], "categorical": lambda: profile.categorical[f.feature],
           "prediction": lambda: profile.predictions}[f.kind]()
    if f.current_counts is not None:  # binned (numeric features, scores and values): per reference bin
        cur_counts = np.asarray(f.current_counts, dtype=float)
        ref_counts = np.asarray(ref.counts, dtype=float)
        x = np.arange(len(ref_counts))
        ax.bar(x - 0.2, ref_counts / max(ref_counts.sum(), 1), width=0.4, label="reference")
        ax.bar(x + 0.2, cur_counts / max(cur_counts.sum(), 1), width=0.4, label="current")
        ax.set_xlabel("reference quantile bin" if f.kind == "numeric" else "prediction bin")
    else:  # category shares (features, or predicted classes)
        reference = ref.frequencies if f.kind == "categorical" else (ref.class_frequencies or {})
        keys = list(dict.fromkeys([*reference, *f.current_shares]))
        x = np.arange(len(keys))
        ax.bar(x - 0.2, [reference.get(k, 0.0) for k in keys], width=0.4, label="reference")
        ax.bar(x + 0.2, [f.current_shares.get(k, 0.0) for k in keys], width=0.4, label="current")
        ax.set_xticks(x, keys, rotation=30, fontsize=8)
    ax.set_ylabel("share")
    ax.set_title(f"{f.feature}: " + "; ".join(f.reasons)[:90], fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def save_html(store: ObjectStore, report: MonitorReport, page: str) -> str:
    key = f"{REPORTS}{report.window_id}/report.html"
    store.put_bytes(key, page.encode())
    return key


def write_report(store: ObjectStore, report: MonitorReport, thresholds: dict) -> MonitorReport:
    """The HTML report and the decision into the store; the report, now with its ``report_key``."""
    from mlcycle.tasks.registry.versions import load_profile

    profile = load_profile(store, report.window.model, report.window.version)
    key = save_html(store, report, render_html(report, profile, thresholds))
    report = report.model_copy(update={"report_key": key})
    save_decision(store, report)
    return report


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers (flows/monitor.py)
# --------------------------------------------------------------------------------------------------

from mlcycle.tasks.lazy_task import NO_CACHE, task  # noqa: E402


@task(name="monitoring-report", cache_policy=NO_CACHE)
def report_task(settings: Settings, report: MonitorReport) -> MonitorReport:
    """HTML report and decision into the store; markdown and table artifacts in the UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from mlcycle.tasks.storage import browse_uri, open_store

    store = open_store(settings)
    thresholds = settings.drift.model_dump()
    report = write_report(store, report, thresholds)
    key = report.report_key
    uri = browse_uri(store, key)
    create_markdown_artifact(key="monitoring-decision", markdown=render_markdown(report, uri, thresholds),
                             description=f"monitoring decision for {report.window_id}")
    estimate = report.estimate
    if estimate is not None and estimate.chunks:
        create_table_artifact(key="monitoring-estimate", table=[c.model_dump(mode="json") for c in estimate.chunks],
                              description=f"estimated vs realized {estimate.metric} per chunk, {report.window_id}")
    if report.drift.features:
        create_table_artifact(key="monitoring-drift", table=feature_table(report),
                              description=f"per-feature drift statistics for {report.window_id}")
    return report
