"""The evaluation report: built for each version at registration (``evaluation.json``, :func:`evaluation_report`)
and rendered in markdown (``report.md``, :func:`render_report`), which the training flow also shows as a
Prefect artifact. Per task: the task's own metrics, the gate's rules (leakage and too-perfect checks
included), the single-feature scores of the leakage check, and the calibration's ECE before and after.
"""

from __future__ import annotations

from pathlib import Path

from mlcycle.tasks.evaluation.gate import comparison_table
from mlcycle.tasks.records.evaluation import GateDecision
from mlcycle.tasks.records.registry import EvaluationReport
from mlcycle.tasks.records.training import Candidate, Comparison

LEAKAGE_ROWS = 5  # the strongest single features shown in the report


def evaluation_report(candidate: Candidate, comparison: Comparison, decision: GateDecision, version: int,
                      plots: list[str]) -> EvaluationReport:
    """The challenger and the champion on the same test window, the decision, and what they rest on."""
    test = candidate.split.test
    return EvaluationReport(
        name=candidate.model_name, version=version, test_window=f"{test.first_day}..{test.last_day}",
        challenger=candidate.scores, champion_version=comparison.champion_version,
        champion=comparison.champion_scores, champion_error=comparison.champion_error,
        bootstrap=comparison.bootstrap, decision=decision,
        comparison=comparison_table(candidate.scores, comparison.champion_scores),
        importances=candidate.importances, plots=plots, leakage=candidate.leakage,
        calibration=candidate.calibration,
    )


def render_report(report: EvaluationReport, plot_links: dict[str, str]) -> str:
    d = report.decision
    verdict = "PROMOTED to champion" if d.promote else "NOT promoted"
    against = f"champion v{report.champion_version}" if report.champion_version else "no champion (floors only)"
    task = report.challenger.overall.task
    lines = [f"# {report.name} v{report.version}: {verdict}", "",
             f"Test window {report.test_window} ({task}, {report.challenger.overall.rows} rows); compared with "
             f"{against}.", "", f"**Decision**: {d.summary}", "",
             "| rule | passed | observed | required | detail |", "|---|---|---|---|---|"]
    for r in d.rules:
        observed = "" if r.observed is None else f"{r.observed:.4f}"
        lines.append(f"| {r.rule} | {'yes' if r.passed else '**NO**'} | {observed} | {r.required} | {r.detail} |")
    lines += ["", "| scope | metric | challenger | champion | improvement |", "|---|---|---|---|---|"]
    for row in report.comparison:
        if row["scope"] == "overall" or row["metric"] == d.primary_metric:
            lines.append(f"| {row['scope']} | {row['metric']} | {_fmt(row['challenger'])} | {_fmt(row['champion'])} "
                         f"| {_fmt(row['improvement'])} |")
    if report.leakage is not None and report.leakage.features:
        check = report.leakage
        lines += ["", f"Leakage check: each feature alone, fitted on {check.train_rows} training rows, "
                      f"{check.metric} on {check.validation_rows} validation rows (strongest first): "
                  + ", ".join(f"{f.feature} {_fmt(f.score) or 'n/a'}" for f in check.features[:LEAKAGE_ROWS])]
    if report.calibration is not None:
        lines += ["", calibration_line(report.calibration)]
    if plot_links:
        lines += ["", "Plots: " + " · ".join(f"[{Path(p).stem}]({link})" for p, link in sorted(plot_links.items()))]
    return "\n".join(lines) + "\n"


def calibration_line(c) -> str:
    """One sentence on the calibration: ECE before/after on the validation days, on the test days, the decision."""
    test = ""
    if c.test_ece_before is not None:
        test = (f"; on the test days {c.test_ece_before:.4f} as fitted, {c.test_ece_after:.4f} as registered"
                if c.applied else f"; on the test days {c.test_ece_before:.4f}")
    return (f"Calibration ({c.method}, {c.bins} bins, {c.validation_rows} validation rows): ECE "
            f"{c.ece_before:.4f} before (p = {c.p_value:.3f} against chance), {c.ece_after:.4f} after (cross-fitted)"
            f"{test}. {c.reason}.")


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"
