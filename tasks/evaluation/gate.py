"""The promotion gate: whether a challenger becomes champion, with every rule's observed and required value.

The gate (:func:`apply_gate`) promotes a challenger only if every rule passes:

* ``floor:<metric>`` / ``ceiling:<metric>``: absolute bounds from ``gate.floors`` / ``gate.ceilings``
  (floors bound the task's higher-is-better metrics, ceilings its lower-is-better ones);
* the leakage guard (``gate.leakage``, on by default): ``leakage:<feature>``, no feature alone predicts the
  target on the validation window at or beyond the task's threshold (binary ROC AUC, multiclass balanced
  accuracy, regression R2; computed in training, tasks/training/leakage.py); ``too_perfect:<metric>``, no
  test metric is at or beyond its ``too_perfect`` bound (in the metric's better direction);
* with a champion, scored on the *same* test rows:
  ``min_delta``: the primary metric improves by at least ``gate.min_delta``;
  ``bootstrap_ci``: the paired bootstrap confidence interval of that improvement lies above zero;
  ``slice:<feature>=<value>``: no slice with at least ``gate.min_slice_rows`` rows (on which the metric is
  defined: both classes, a target that varies) loses more than ``gate.max_slice_drop`` of the primary metric.
* with no champion only the bounds and the leakage guard apply; a champion that cannot be scored blocks
  promotion.

Every rule is about the task's own metrics (``Metrics.task``); improvements are oriented by the metric's
direction (``problem.direction``), so that positive is better
(:func:`~mlcycle.tasks.evaluation.metrics.improvement`).
Each rule is recorded with what was observed and what was required, so a :class:`GateDecision` explains
itself. :func:`decide` applies the gate to a staged challenger and its comparison with the champion;
:func:`comparison_table` gives the report's challenger-vs-champion rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from mlcycle.tasks.evaluation.metrics import improvement
from mlcycle.tasks.lazy_task import NO_CACHE, task
from mlcycle.tasks.records.evaluation import (
    BootstrapResult,
    GateDecision,
    LeakageCheck,
    Metrics,
    ModelScores,
    RuleResult,
)
from mlcycle.tasks.records.training import Candidate, Comparison
from mlcycle.tasks.settings import GateSettings
from mlcycle.tasks.settings.problem import HIGHER, METRICS, direction

# The metrics of the report's comparison table: binary as it always was, the others every metric of the task.
TABLE_METRICS: dict[str, tuple[str, ...]] = {"binary": ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "recall")}


def apply_gate(
    gate: GateSettings,
    challenger: ModelScores,
    champion: ModelScores | None = None,
    *,
    champion_version: int | None = None,
    bootstrap: BootstrapResult | None = None,
    champion_error: str | None = None,
    leakage: LeakageCheck | None = None,
    now: dt.datetime | None = None,
) -> GateDecision:
    """Decide promotion from the challenger's and champion's scores on the same test window (and the
    challenger's single-feature scores, when the leakage guard is on)."""
    metric = gate.primary_metric
    rules = _bound_rules(gate, challenger.overall)
    if gate.leakage.enabled:
        rules += leakage_rules(gate, challenger.overall, leakage)
    if champion_error is not None:
        rules.append(RuleResult(rule="champion", passed=False, detail=(
            f"champion v{champion_version} could not be scored on this test window: {champion_error}; "
            "promote by hand once checked")))
    elif champion is None:
        rules.append(RuleResult(rule="champion", passed=True,
                                detail="no champion yet: only floors and ceilings apply"))
    else:
        rules += _comparison_rules(gate, challenger, champion, champion_version, bootstrap)
    failed = [r for r in rules if not r.passed]
    if failed:
        summary = "refused: " + "; ".join(f"{r.rule} ({r.detail})" for r in failed)
    else:
        summary = f"promote: all {len(rules)} rules passed"
    return GateDecision(promote=not failed, primary_metric=metric, champion_version=champion_version, rules=rules,
                        summary=summary, decided_at=now or dt.datetime.now(dt.UTC), bootstrap=bootstrap)


def _bound_rules(gate: GateSettings, overall: Metrics) -> list[RuleResult]:
    rules = []
    for kind, bounds in (("floor", gate.floors), ("ceiling", gate.ceilings)):
        for metric, bound in sorted(bounds.items()):
            value = overall.get(metric)
            op = ">=" if kind == "floor" else "<="
            if value is None:
                ok, detail = False, f"{metric} is undefined on the test window ({_why_undefined(overall.task)})"
            else:
                ok = value >= bound if kind == "floor" else value <= bound
                detail = f"{metric} {value:.4f} {op if ok else ('<' if kind == 'floor' else '>')} {bound}"
            rules.append(RuleResult(rule=f"{kind}:{metric}", passed=ok, observed=value, required=f"{op} {bound}",
                                    detail=detail))
    return rules


def _why_undefined(task: str) -> str:
    return "a constant target" if task == "regression" else "a single class"


def leakage_rules(gate: GateSettings, overall: Metrics, leakage: LeakageCheck | None) -> list[RuleResult]:
    """``leakage:<feature>`` for each feature that alone predicts the target too well, ``too_perfect:<metric>``
    for each test metric beyond belief; one passing ``leakage`` / ``too_perfect`` rule when none is.

    ``leakage`` None (the check was not computed) adds no feature rule; the test metrics are judged anyway."""
    config, task = gate.leakage, overall.task
    rules = []
    metric, threshold = config.feature_threshold(task)
    if leakage is not None:  # None: not computed (training ran with the guard off)
        leaks = [f for f in leakage.features if f.score is not None and f.score >= threshold]
        for f in leaks:
            rules.append(RuleResult(
                rule=f"leakage:{f.feature}", passed=False, observed=f.score, required=f"< {threshold}",
                detail=f"{f.feature} alone predicts the target: {metric} {f.score:.4f} >= {threshold} on the "
                       f"validation window ({leakage.validation_rows} rows); a column known only with or after "
                       "the outcome? drop it from training.features, or raise gate.leakage.feature_"
                       f"{metric} if it is real"))
        if not leaks:
            best = next((f for f in leakage.features if f.score is not None), None)
            rules.append(RuleResult(
                rule="leakage", passed=True, observed=best.score if best else None, required=f"< {threshold}",
                detail=(f"no feature alone reaches {metric} {threshold}; the strongest, {best.feature}, scores "
                        f"{best.score:.4f}" if best else "no feature's single-feature score is defined")))
    too_perfect = []
    for name, bound in sorted(config.too_perfect.items()):
        value = overall.get(name)
        if name not in METRICS[task] or value is None:
            continue
        higher = direction(task, name) == HIGHER
        if value >= bound if higher else value <= bound:
            op = ">=" if higher else "<="
            too_perfect.append(RuleResult(
                rule=f"too_perfect:{name}", passed=False, observed=value, required=f"{'<' if higher else '>'} {bound}",
                detail=f"test {name} {value:.4f} {op} {bound}: too good to be true on real data; look for a "
                       "feature that leaks the target or test rows that were trained on"))
    rules += too_perfect or [RuleResult(rule="too_perfect", passed=True, detail=(
        "no test metric is beyond its gate.leakage.too_perfect bound"))]
    return rules


def _comparison_rules(gate: GateSettings, challenger: ModelScores, champion: ModelScores,
                      champion_version: int | None, bootstrap: BootstrapResult | None) -> list[RuleResult]:
    metric = gate.primary_metric
    rules = []
    a, b = challenger.overall.get(metric), champion.overall.get(metric)
    if a is None or b is None:
        return [RuleResult(rule="min_delta", passed=False, detail=f"{metric} is undefined on the test window")]
    delta = improvement(metric, a, b)
    rules.append(RuleResult(
        rule="min_delta", passed=delta >= gate.min_delta, observed=delta, required=f">= {gate.min_delta}",
        detail=f"{metric} {a:.4f} vs champion v{champion_version} {b:.4f}: improvement {delta:+.4f} "
               f"{'>=' if delta >= gate.min_delta else '<'} {gate.min_delta}"))
    if bootstrap is None:
        rules.append(RuleResult(rule="bootstrap_ci", passed=False, detail="no bootstrap was computed"))
    else:
        pct = f"{bootstrap.confidence:.0%}"
        rules.append(RuleResult(
            rule="bootstrap_ci", passed=bootstrap.low > 0, observed=bootstrap.low, required="> 0",
            detail=f"{pct} CI of the improvement [{bootstrap.low:+.4f}, {bootstrap.high:+.4f}] "
                   f"({bootstrap.samples} paired resamples) "
                   f"{'lies above zero' if bootstrap.low > 0 else 'does not lie above zero'}"))
    judged, skipped = 0, []
    for mine in challenger.slices:
        theirs = champion.slice(mine.feature, mine.value)
        sa = mine.metrics.get(metric)
        sb = theirs.metrics.get(metric) if theirs is not None else None
        if mine.metrics.rows < gate.min_slice_rows or sa is None or sb is None:
            skipped.append(f"{mine.name} ({mine.metrics.rows} rows)")
            continue
        judged += 1
        drop = -improvement(metric, sa, sb)
        ok = drop <= gate.max_slice_drop
        rules.append(RuleResult(
            rule=f"slice:{mine.name}", passed=ok, observed=drop, required=f"drop <= {gate.max_slice_drop}",
            detail=f"{mine.name} ({mine.metrics.rows} rows): {metric} {sa:.4f} vs champion {sb:.4f}, "
                   f"{'drop' if drop > 0 else 'gain'} {abs(drop):.4f}"
                   + ("" if ok else f" > max_slice_drop {gate.max_slice_drop}")))
    rules.append(RuleResult(
        rule="slices", passed=True, observed=float(judged),
        detail=f"{judged} slices judged (>= {gate.min_slice_rows} rows, {metric} defined)"
               + (f"; too small or {metric} undefined, not judged: {', '.join(skipped)}" if skipped else "")))
    return rules


def comparison_table(challenger: ModelScores, champion: ModelScores | None,
                     metrics: Sequence[str] | None = None) -> list[dict]:
    """Rows for the report: each metric overall and per slice, challenger vs champion (default: the task's)."""
    task = challenger.overall.task
    metrics = metrics or TABLE_METRICS.get(task) or tuple(METRICS[task])
    rows = []
    scopes: list[tuple[str, Metrics, Metrics | None]] = [
        ("overall", challenger.overall, champion.overall if champion else None)]
    for s in challenger.slices:
        other = champion.slice(s.feature, s.value) if champion else None
        scopes.append((s.name, s.metrics, other.metrics if other else None))
    for scope, mine, theirs in scopes:
        for metric in metrics:
            a = mine.get(metric)
            b = theirs.get(metric) if theirs else None
            rows.append({
                "scope": scope, "rows": mine.rows, "metric": metric,
                "challenger": _round(a), "champion": _round(b),
                "improvement": _round(improvement(metric, a, b)) if a is not None and b is not None else None,
            })
    return rows


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def decide(gate: GateSettings, candidate: Candidate, comparison: Comparison) -> GateDecision:
    """The gate applied to a staged challenger and its comparison with the champion."""
    decision = apply_gate(gate, candidate.scores, comparison.champion_scores,
                          champion_version=comparison.champion_version, bootstrap=comparison.bootstrap,
                          champion_error=comparison.champion_error, leakage=candidate.leakage)
    overlap = comparison.champion_fitted_on_test_days
    if overlap:  # informational: it can only have made promotion harder
        decision.rules.append(RuleResult(
            rule="champion_test_overlap", passed=True, observed=float(len(overlap)),
            detail=f"champion v{comparison.champion_version} was fitted on {len(overlap)} of the test days "
                   f"({overlap[0]}..{overlap[-1]}): its test scores are optimistic, the comparison conservative"))
        if decision.promote:
            decision.summary = f"promote: all {len(decision.rules)} rules passed"
    return decision


# --------------------------------------------------------------------------------------------------
# Prefect task: thin wrapper
# --------------------------------------------------------------------------------------------------


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(gate: GateSettings, candidate: Candidate, comparison: Comparison) -> GateDecision:
    return decide(gate, candidate, comparison)
