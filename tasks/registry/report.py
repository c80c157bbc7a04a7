"""The evaluation report in markdown: stored with each version as ``report.md`` and shown as a Prefect
artifact by the training flow. Rendered from the version's :class:`~mlcycle.tasks.records.registry.EvaluationReport`.
"""

from __future__ import annotations

from pathlib import Path

from mlcycle.tasks.records.registry import EvaluationReport


def render_report(report: EvaluationReport, plot_links: dict[str, str]) -> str:
    d = report.decision
    verdict = "PROMOTED to champion" if d.promote else "NOT promoted"
    against = f"champion v{report.champion_version}" if report.champion_version else "no champion (floors only)"
    lines = [f"# {report.name} v{report.version}: {verdict}", "",
             f"Test window {report.test_window}; compared with {against}.", "", f"**Decision**: {d.summary}", "",
             "| rule | passed | observed | required | detail |", "|---|---|---|---|---|"]
    for r in d.rules:
        observed = "" if r.observed is None else f"{r.observed:.4f}"
        lines.append(f"| {r.rule} | {'yes' if r.passed else '**NO**'} | {observed} | {r.required} | {r.detail} |")
    lines += ["", "| scope | metric | challenger | champion | improvement |", "|---|---|---|---|---|"]
    for row in report.comparison:
        if row["scope"] == "overall" or row["metric"] == d.primary_metric:
            lines.append(f"| {row['scope']} | {row['metric']} | {_fmt(row['challenger'])} | {_fmt(row['champion'])} "
                         f"| {_fmt(row['improvement'])} |")
    if plot_links:
        lines += ["", "Plots: " + " · ".join(f"[{Path(p).stem}]({link})" for p, link in sorted(plot_links.items()))]
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"
