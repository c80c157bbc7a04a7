"""Evaluation on the test window, the paired bootstrap, the promotion gate, and the report's plots.

Metrics (:func:`compute_metrics`): ROC AUC, PR AUC (average precision), log loss, Brier score, and F1,
recall and precision at the model's decision threshold; the same per value of each categorical feature
(:func:`slice_metrics`; nulls are the ``__missing__`` slice). AUCs are ``None`` where the rows hold a
single class.

The gate (:func:`apply_gate`) promotes a challenger only if every rule passes:

* ``floor:<metric>`` / ``ceiling:<metric>``: absolute bounds from ``gate.floors`` / ``gate.ceilings``;
* with a champion, scored on the *same* test rows:
  ``min_delta``: the primary metric improves by at least ``gate.min_delta``;
  ``bootstrap_ci``: the paired bootstrap confidence interval of that improvement lies above zero;
  ``slice:<feature>=<value>``: no slice with at least ``gate.min_slice_rows`` rows and both classes
  loses more than ``gate.max_slice_drop`` of the primary metric.
* with no champion only the bounds apply; a champion that cannot be scored blocks promotion.

"Improvement" is always oriented so that positive is better: challenger minus champion for ROC/PR
AUC, champion minus challenger for log loss and Brier. Each rule is recorded with what was observed
and what was required, so a :class:`GateDecision` explains itself.

Why a hand-written AUC: the bootstrap needs the metric on ~1000 resamples. A resample is represented
by per-row multiplicities (weights), and the rank-based AUC of every resample is computed in one
vectorised pass over the scores sorted once (:func:`weighted_roc_auc`): ~1000 resamples of a few
thousand rows take well under a second, where 1000 calls to scikit-learn take tens of seconds. The
weighted formulas reduce to scikit-learn's exactly at unit weights (tested).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from mlcycle.tasks.settings import LOWER_IS_BETTER, GateSettings

MISSING_SLICE = "__missing__"
_EPS = 1e-15


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------


class Metrics(BaseModel):
    rows: int
    positives: int
    threshold: float
    roc_auc: float | None
    pr_auc: float | None
    log_loss: float
    brier: float
    f1: float
    recall: float
    precision: float

    def get(self, metric: str) -> float | None:
        return getattr(self, metric)


class SliceMetrics(BaseModel):
    feature: str
    value: str
    metrics: Metrics

    @property
    def name(self) -> str:
        return f"{self.feature}={self.value}"


class ModelScores(BaseModel):
    """One model's metrics on a test window: overall and per slice."""

    overall: Metrics
    slices: list[SliceMetrics] = Field(default_factory=list)

    def slice(self, feature: str, value: str) -> SliceMetrics | None:
        return next((s for s in self.slices if s.feature == feature and s.value == value), None)


def compute_metrics(y, scores, threshold: float) -> Metrics:
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(scores, dtype=float), _EPS, 1 - _EPS)
    positives = int(y.sum())
    both = 0 < positives < len(y)
    predicted = p >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    fn = positives - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return Metrics(
        rows=len(y), positives=positives, threshold=threshold,
        roc_auc=float(weighted_roc_auc(y, p, np.ones((1, len(y))))[0]) if both else None,
        pr_auc=float(average_precision_score(y, p)) if both else None,
        log_loss=float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        brier=float(np.mean((p - y) ** 2)),
        f1=float(f1), recall=float(recall), precision=float(precision),
    )


def slice_metrics(frame, y, scores, features: Sequence[str], threshold: float) -> list[SliceMetrics]:
    """Metrics per value of each categorical feature in ``features`` (nulls: the ``__missing__`` slice)."""
    y = np.asarray(y)
    scores = np.asarray(scores)
    out = []
    for feature in features:
        values = slice_values(frame[feature])
        for value in sorted(set(values)):
            mask = values == value
            out.append(SliceMetrics(feature=feature, value=value,
                                    metrics=compute_metrics(y[mask], scores[mask], threshold)))
    return out


def slice_values(column) -> np.ndarray:
    import pandas as pd

    return pd.Series(column, dtype=object).where(lambda s: s.notna(), MISSING_SLICE).astype(str).to_numpy()


def score_model(frame, y, scores, slice_features: Sequence[str], threshold: float) -> ModelScores:
    return ModelScores(overall=compute_metrics(y, scores, threshold),
                      slices=slice_metrics(frame, y, scores, slice_features, threshold))


# --------------------------------------------------------------------------------------------------
# weighted metrics (for the bootstrap): W has shape (resamples, rows), rows in the original order
# --------------------------------------------------------------------------------------------------


def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def weighted_roc_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of ``weights``: P(score_pos > score_neg) + 0.5 P(tie), weighted by rows."""
    order = np.argsort(scores, kind="mergesort")
    starts = _tie_groups(scores[order])
    w = weights[:, order]
    ys = y[order].astype(float)
    pos = np.add.reduceat(w * ys, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - ys), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (pos * (neg_below + 0.5 * neg)).sum(axis=1) / denominator, np.nan)


def weighted_average_precision(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step-wise definition) under each row of ``weights``."""
    order = np.argsort(-scores, kind="mergesort")
    starts = _tie_groups(scores[order])
    w = weights[:, order]
    ys = y[order].astype(float)
    tp = np.add.reduceat(w * ys, starts, axis=1)
    fp = np.add.reduceat(w * (1.0 - ys), starts, axis=1)
    cum_tp, cum_fp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    total_pos = cum_tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cum_tp + cum_fp > 0, cum_tp / (cum_tp + cum_fp), 0.0)
        ap = (tp / total_pos * precision).sum(axis=1)
    return np.where(total_pos[:, 0] > 0, ap, np.nan)


def weighted_log_loss(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    p = np.clip(scores, _EPS, 1 - _EPS)
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return weights @ loss / weights.sum(axis=1)


def weighted_brier(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weights @ ((scores - y) ** 2) / weights.sum(axis=1)


WEIGHTED: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "roc_auc": weighted_roc_auc,
    "pr_auc": weighted_average_precision,
    "log_loss": weighted_log_loss,
    "brier": weighted_brier,
}


def improvement(metric: str, challenger: float, champion: float) -> float:
    """Positive when the challenger is better, whatever the metric's direction."""
    return champion - challenger if metric in LOWER_IS_BETTER else challenger - champion


# --------------------------------------------------------------------------------------------------
# paired bootstrap
# --------------------------------------------------------------------------------------------------


class BootstrapResult(BaseModel):
    """Paired bootstrap of the improvement of ``metric`` (positive: the challenger is better)."""

    metric: str
    samples: int
    seed: int
    confidence: float
    observed: float  # the improvement on the test window itself
    mean: float
    low: float
    high: float
    valid_samples: int  # resamples where the metric was defined (both classes drawn)


def paired_bootstrap(y, challenger_scores, champion_scores, metric: str, *, samples: int, seed: int,
                     confidence: float = 0.95, max_cells: int = 4_000_000) -> BootstrapResult:
    """Resample test rows with replacement; score both models on the *same* resample each time.

    Pairing removes the between-resample variance the two models share, so the interval is about the
    difference, not the two metrics. Resamples are drawn in chunks of at most ``max_cells`` weights.
    """
    if metric not in WEIGHTED:
        raise ValueError(f"no bootstrap for metric {metric!r}; choose one of {sorted(WEIGHTED)}")
    y = np.asarray(y, dtype=float)
    a = np.asarray(challenger_scores, dtype=float)
    b = np.asarray(champion_scores, dtype=float)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"paired bootstrap needs equal lengths, got y={len(y)}, challenger={len(a)}, "
                         f"champion={len(b)}")
    n = len(y)
    fn = WEIGHTED[metric]
    ones = np.ones((1, n))
    observed = improvement(metric, float(fn(y, a, ones)[0]), float(fn(y, b, ones)[0]))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(samples, max_cells // max(n, 1)))
    deltas = []
    done = 0
    while done < samples:
        size = min(chunk, samples - done)
        draws = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * n)[:, None]
        weights = np.bincount((draws + offsets).ravel(), minlength=size * n).reshape(size, n).astype(float)
        deltas.append(improvement(metric, fn(y, a, weights), fn(y, b, weights)))
        done += size
    d = np.concatenate(deltas)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        raise ValueError(f"{metric} is undefined on every bootstrap resample (does the test window hold "
                         "both classes?)")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(d, [tail, 100 - tail])
    return BootstrapResult(metric=metric, samples=samples, seed=seed, confidence=confidence, observed=observed,
                           mean=float(d.mean()), low=float(low), high=float(high), valid_samples=len(d))


# --------------------------------------------------------------------------------------------------
# the gate
# --------------------------------------------------------------------------------------------------


class RuleResult(BaseModel):
    rule: str  # floor:roc_auc | ceiling:brier | champion | min_delta | bootstrap_ci | slice:region=south
    passed: bool
    observed: float | None = None
    required: str = ""  # e.g. ">= 0.7"
    detail: str = ""


class GateDecision(BaseModel):
    """The outcome of the gate, with every rule's result: stored with the version, shown in the UI."""

    promote: bool
    primary_metric: str
    champion_version: int | None
    rules: list[RuleResult]
    summary: str
    decided_at: dt.datetime
    bootstrap: BootstrapResult | None = None

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]


def apply_gate(
    gate: GateSettings,
    challenger: ModelScores,
    champion: ModelScores | None = None,
    *,
    champion_version: int | None = None,
    bootstrap: BootstrapResult | None = None,
    champion_error: str | None = None,
    now: dt.datetime | None = None,
) -> GateDecision:
    """Decide promotion from the challenger's and champion's scores on the same test window."""
    metric = gate.primary_metric
    rules = _bound_rules(gate, challenger.overall)
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
                ok, detail = False, f"{metric} is undefined on the test window (a single class)"
            else:
                ok = value >= bound if kind == "floor" else value <= bound
                detail = f"{metric} {value:.4f} {op if ok else ('<' if kind == 'floor' else '>')} {bound}"
            rules.append(RuleResult(rule=f"{kind}:{metric}", passed=ok, observed=value, required=f"{op} {bound}",
                                    detail=detail))
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
        detail=f"{judged} slices judged (>= {gate.min_slice_rows} rows, both classes)"
               + (f"; too small or single-class, not judged: {', '.join(skipped)}" if skipped else "")))
    return rules


def comparison_table(challenger: ModelScores, champion: ModelScores | None,
                     metrics: Sequence[str] = ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "recall")
                     ) -> list[dict]:
    """Rows for the report: each metric overall and per slice, challenger vs champion."""
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


# --------------------------------------------------------------------------------------------------
# feature importance and plots (PNG bytes; matplotlib's Figure API, no pyplot global state)
# --------------------------------------------------------------------------------------------------


class FeatureImportance(BaseModel):
    feature: str
    importance: float  # mean drop of ROC AUC when the feature is permuted
    std: float


def permutation_importances(pipeline, frame, y, *, seed: int, n_repeats: int = 3,
                            max_rows: int = 5_000) -> list[FeatureImportance]:
    """Permutation importance of each *input* feature (so one-hot columns count as one feature)."""
    from sklearn.inspection import permutation_importance

    y = np.asarray(y)
    if len(y) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=max_rows, replace=False))
        frame, y = frame.iloc[idx], y[idx]
    if len(np.unique(y)) < 2:
        return []
    result = permutation_importance(pipeline, frame, y, scoring="roc_auc", n_repeats=n_repeats,
                                    random_state=seed, n_jobs=1)
    items = [FeatureImportance(feature=str(c), importance=float(m), std=float(s))
             for c, m, s in zip(frame.columns, result.importances_mean, result.importances_std, strict=True)]
    return sorted(items, key=lambda f: -f.importance)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def roc_plot(y, curves: dict[str, np.ndarray], title: str) -> bytes:
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for label, scores in curves.items():
        fpr, tpr, _ = roc_curve(y, scores)
        auc = weighted_roc_auc(np.asarray(y), np.asarray(scores, dtype=float), np.ones((1, len(y))))[0]
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    return _png(fig)


def calibration_plot(y, curves: dict[str, np.ndarray], title: str, n_bins: int = 10) -> bytes:
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for label, scores in curves.items():
        observed, predicted = calibration_curve(y, scores, n_bins=n_bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=label)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed default rate", title=title)
    ax.legend(loc="upper left")
    return _png(fig)


def importance_plot(importances: list[FeatureImportance], title: str) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 0.4 * max(len(importances), 3) + 1.2))
    ax = fig.subplots()
    items = list(reversed(importances))
    ax.barh([i.feature for i in items], [i.importance for i in items], xerr=[i.std for i in items])
    ax.set(xlabel="drop of ROC AUC when permuted", title=title)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------------------------------
# Prefect task: thin wrapper
# --------------------------------------------------------------------------------------------------

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


def decide(gate: GateSettings, candidate, comparison) -> GateDecision:
    """The gate applied to a staged challenger (tasks.training.Candidate) and its Comparison."""
    decision = apply_gate(gate, candidate.scores, comparison.champion_scores,
                          champion_version=comparison.champion_version, bootstrap=comparison.bootstrap,
                          champion_error=comparison.champion_error)
    overlap = comparison.champion_fitted_on_test_days
    if overlap:  # informational: it can only have made promotion harder
        decision.rules.append(RuleResult(
            rule="champion_test_overlap", passed=True, observed=float(len(overlap)),
            detail=f"champion v{comparison.champion_version} was fitted on {len(overlap)} of the test days "
                   f"({overlap[0]}..{overlap[-1]}): its test scores are optimistic, the comparison conservative"))
        if decision.promote:
            decision.summary = f"promote: all {len(decision.rules)} rules passed"
    return decision


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(gate: GateSettings, candidate, comparison) -> GateDecision:
    return decide(gate, candidate, comparison)
