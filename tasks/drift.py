"""Drift statistics: the champion's reference profile against a window of live inputs and predictions.

Why these statistics, and how a decision is made
------------------------------------------------
With thousands of rows every two-sample test rejects: a p-value measures evidence, not size. So a
feature is *drifted* only when **both** hold:

1. the change is statistically significant after Benjamini-Hochberg correction across all tests of
   the window (false discovery rate ``alpha``); and
2. an **effect size** crosses its threshold (defaults in ``DriftSettings``, with their sources):

   * numeric: PSI on the reference's quantile bins >= ``psi_threshold`` (0.2; the credit-scoring
     convention: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift, Siddiqi 2006 / Yurdakul 2018), or
     the Wasserstein-1 distance divided by the reference's standard deviation >=
     ``wasserstein_threshold`` (0.1, Evidently's default for numeric columns with > 1000 rows);
   * categorical: Jensen-Shannon distance (base 2) >= ``js_threshold`` (0.05; Evidently uses 0.1,
     which misses a 10-point move of a 20% category -- distance ~0.1 -- roughly half the time), or a
     share of never-seen categories >= ``unseen_threshold``;
   * any feature: the null rate moved by >= ``null_rate_threshold`` (absolute), tested with a
     two-proportion z-test.

Tests: numeric features use the two-sample Kolmogorov-Smirnov test (the reference side is the
profile's seeded sample of the training rows; the p-value is scipy's asymptotic one, computed here
from the same formula); categorical features use the chi-square test of homogeneity on reference vs
current counts. Predictions (probability of the positive class) get PSI on the profile's fixed bins
and KS against the reference prediction sample.

Dataset-level decision: drift when the share of drifted features >= ``drift_share``, or a feature
marked ``critical`` in the dataset declaration drifts, or the predictions drift. Below ``min_rows``
current rows nothing is decided: the report says "not enough data". Every decision carries the rule
applied to its window in words (``DriftDecision.verdict``: "2 of 10 features drifted (20%), below the
50% share, and no critical feature drifted: no dataset drift").

Memory does not grow with the training set: the reference side is the stored profile only. The
current window is processed one column at a time (bin counts, a sort for KS), so a window of millions
of rows costs a few column buffers, not a copy of the frame.
"""

from __future__ import annotations

import math

import numpy as np

from mlcycle.tasks.records.monitoring import DriftDecision, FeatureDrift

# Smoothing for PSI on empty bins: a bin with zero rows counts as this share instead of 0.
_EPS = 1e-4


# --------------------------------------------------------------------------------------------------
# The statistics, as plain functions (each tested against scipy)
# --------------------------------------------------------------------------------------------------


def psi(reference_counts, current_counts) -> float:
    """Population stability index sum((c - r) * ln(c / r)) over shares, empty bins smoothed."""
    r = np.asarray(reference_counts, dtype=float)
    c = np.asarray(current_counts, dtype=float)
    if r.sum() == 0 or c.sum() == 0:
        return 0.0
    r = np.maximum(r / r.sum(), _EPS)
    c = np.maximum(c / c.sum(), _EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """KS on two sorted, NaN-free samples, ``a`` the small one (the reference sample).

    Equal to ``scipy.stats.ks_2samp(a, b, method="asymp")``, without its sort of the current window
    (already sorted once for PSI, KS and W1 together). Between consecutive points of ``a`` its CDF is
    constant while ``b``'s only grows, so the largest gap is at a point of ``a`` or just before it:
    2 x len(a) look-ups in ``b`` instead of a pass over both.
    """
    from scipy.stats import kstwo

    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    at = np.abs(np.searchsorted(a, a, side="right") / n1 - np.searchsorted(b, a, side="right") / n2)
    before = np.abs(np.searchsorted(a, a, side="left") / n1 - np.searchsorted(b, a, side="left") / n2)
    d = float(max(at.max(), before.max()))
    en = n1 * n2 / (n1 + n2)
    p = float(kstwo.sf(d, np.round(en)))
    return d, min(max(p, 0.0), 1.0)


def wasserstein_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """W1 = integral of |F_a - F_b| (as ``scipy.stats.wasserstein_distance``) on sorted, NaN-free samples.

    The small sample ``a`` is inserted into the sorted ``b`` (no second sort of the large one).
    """
    if len(a) == 0 or len(b) == 0:
        return 0.0
    merged = np.insert(b, np.searchsorted(b, a), a)
    deltas = np.diff(merged)
    points = merged[:-1]
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * deltas))


def _scale(a: np.ndarray, reference_std: float | None) -> float:
    if reference_std and reference_std > 0:
        return float(reference_std)
    return float(np.std(a)) or 1.0


def bin_counts_sorted(sorted_values: np.ndarray, edges: list[float]) -> list[int]:
    """Counts in the profile's bins (left-closed, out-of-range to the end bins) of an already sorted column."""
    if len(edges) < 2:
        return []
    cuts = np.searchsorted(sorted_values, np.asarray(edges[1:-1]), side="left")
    return [int(c) for c in np.diff(np.concatenate([[0], cuts, [len(sorted_values)]]))]


def js_distance(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two category distributions.

    ``scipy.spatial.distance.jensenshannon`` on the union of the categories (a category missing on one
    side has share 0 there). Two cases where scipy answers ``nan`` are distance 0 here: a side with no
    mass at all (scipy divides 0 by 0), and two distributions equal up to rounding (the sum of relative
    entropies comes out a hair below zero and its square root is ``nan``).
    """
    from scipy.spatial.distance import jensenshannon

    keys = sorted(set(p) | set(q))
    a = np.array([p.get(k, 0.0) for k in keys], dtype=float)
    b = np.array([q.get(k, 0.0) for k in keys], dtype=float)
    if a.sum() == 0 or b.sum() == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        distance = float(jensenshannon(a, b, base=2))
    return 0.0 if math.isnan(distance) else distance


def chi2_homogeneity(reference_counts: dict[str, float], current_counts: dict[str, float]) -> tuple[float, float]:
    """Chi-square test that reference and current counts come from one distribution (2 x k table)."""
    from scipy.stats import chi2_contingency

    keys = [k for k in sorted(set(reference_counts) | set(current_counts))
            if reference_counts.get(k, 0) + current_counts.get(k, 0) > 0]
    if len(keys) < 2:
        return 0.0, 1.0
    table = np.array([[reference_counts.get(k, 0.0) for k in keys], [current_counts.get(k, 0.0) for k in keys]])
    if table[0].sum() == 0 or table[1].sum() == 0:
        return 0.0, 1.0
    stat, p, _, _ = chi2_contingency(table, correction=False)
    return float(stat), float(p)


def two_proportion_p(x1: float, n1: int, x2: float, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (null rates)."""
    from scipy.stats import norm

    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(2 * norm.sf(abs(z)))


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """BH-adjusted p-values (step-up, monotone, capped at 1), in the input order.

    ``scipy.stats.false_discovery_control(method="bh")`` (Benjamini & Hochberg 1995): the expected
    share of false alarms among the window's significant tests stays at most ``alpha``. A p-value
    outside [0, 1] (or ``nan``) is refused with a ValueError instead of spreading ``nan``.
    """
    from scipy.stats import false_discovery_control

    if not p_values:
        return []
    return [float(x) for x in false_discovery_control(p_values, method="bh")]


# --------------------------------------------------------------------------------------------------
# The assessment of one window
# --------------------------------------------------------------------------------------------------


def assess_drift(profile, current, spec, config, *, prediction_column: str | None = "probability",
                 rows: int | None = None) -> DriftDecision:
    """Compare a window of live rows with the reference profile; see the module docstring.

    ``current`` maps column names to values (a DataFrame, or a lazy mapping that reads one column at a
    time); it holds the declared features and, if given, ``prediction_column``. ``config`` is a
    ``DriftSettings``; ``spec`` the ``DatasetSpec``.
    """
    n = int(rows if rows is not None else len(current[spec.features[0].name]))
    if n < config.min_rows:
        return DriftDecision(enough_data=False, rows=n, min_rows=config.min_rows)

    results: list[FeatureDrift] = []
    for feature in spec.features:
        result = feature_drift(profile, current[feature.name], feature)
        if result is not None:
            results.append(result)
    prediction = None
    if prediction_column is not None and has_prediction_reference(profile):
        prediction = _prediction(profile.predictions, current[prediction_column])
    return decide_drift(results, prediction, n, config)


def feature_drift(profile, values, feature) -> FeatureDrift | None:
    """One feature's statistics against its reference (None when the profile holds none for it).

    Independent of every other feature: the unit a Dask worker computes (see flows/monitor.py); the
    decision, which needs all of them (BH correction), is :func:`decide_drift`.
    """
    if feature.kind == "numeric" and feature.name in profile.numeric:
        return _numeric(profile.numeric[feature.name], values, feature.critical)
    if feature.kind == "categorical" and feature.name in profile.categorical:
        return _categorical(profile.categorical[feature.name], values, feature.critical)
    return None


def has_prediction_reference(profile) -> bool:
    return bool(getattr(profile.predictions, "sample", None))


def prediction_drift(profile, scores) -> FeatureDrift | None:
    """The prediction distribution's statistics against the reference (None without a reference)."""
    return _prediction(profile.predictions, scores) if has_prediction_reference(profile) else None


def decide_drift(results: list[FeatureDrift], prediction: FeatureDrift | None, n: int, config) -> DriftDecision:
    """The window's decision from its per-feature statistics (in dataset order): BH, effect sizes, reasons."""
    if n < config.min_rows:
        return DriftDecision(enough_data=False, rows=n, min_rows=config.min_rows)
    # One family of tests per window: distribution tests and null-rate tests, BH across all of them.
    tests = [r for r in [*results, *([prediction] if prediction else [])] if r.p_value is not None]
    nulls = [r for r in results if r.null_p_value is not None]
    adjusted = benjamini_hochberg([r.p_value for r in tests] + [r.null_p_value for r in nulls])
    for r, p in zip(tests, adjusted[: len(tests)], strict=True):
        r.p_adjusted = p
    for r, p in zip(nulls, adjusted[len(tests):], strict=True):
        r.null_p_adjusted = p

    for r in results:
        _decide(r, config)
    if prediction is not None:
        _decide(prediction, config)

    drifted = [r.feature for r in results if r.drifted]
    share = len(drifted) / len(results) if results else 0.0
    reasons = []
    if results and share >= config.drift_share:
        reasons.append(f"{len(drifted)} of {len(results)} features drifted ({share:.0%} >= {config.drift_share:.0%})")
    critical = [r.feature for r in results if r.drifted and r.critical]
    if critical:
        reasons.append(f"critical feature(s) drifted: {', '.join(critical)}")
    if prediction is not None and prediction.drifted:
        reasons.append("prediction distribution drifted (" + "; ".join(prediction.reasons) + ")")
    return DriftDecision(
        enough_data=True, rows=n, min_rows=config.min_rows, features=results, prediction=prediction,
        drifted_features=drifted, drifted_share=share, dataset_drift=bool(reasons), reasons=reasons,
        verdict=_verdict(results, drifted, critical, prediction, share, config.drift_share),
    )


def _verdict(results: list[FeatureDrift], drifted: list[str], critical: list[str], prediction: FeatureDrift | None,
             share: float, drift_share: float) -> str:
    """The dataset-level rule applied to this window, in words: each of its three parts, then the verdict.

    "2 of 10 features drifted (20%), below the 50% share, and no critical feature drifted: no dataset drift".
    """
    if results:
        side = "at or above" if share >= drift_share else "below"
        parts = [f"{len(drifted)} of {len(results)} features drifted ({share:.0%}), {side} the {drift_share:.0%} share"]
    else:
        parts = ["no feature could be compared with the reference"]
    if critical:
        parts.append(f"critical feature{'s' if len(critical) > 1 else ''} {', '.join(critical)} drifted")
    elif any(r.critical for r in results):
        parts.append("no critical feature drifted")
    else:
        parts.append("no feature is declared critical")
    if prediction is not None:
        parts.append("the predictions drifted" if prediction.drifted else "the predictions did not drift")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    dataset_drift = ((bool(results) and share >= drift_share) or bool(critical)
                     or bool(prediction and prediction.drifted))
    return f"{listed}: {'dataset drift' if dataset_drift else 'no dataset drift'}"


def _as_float(values) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _numeric(ref, values, critical: bool) -> FeatureDrift:
    x = _as_float(values)
    nulls = int(np.isnan(x).sum())
    result = FeatureDrift(feature=ref.name, kind="numeric", critical=critical, n_reference=ref.rows,
                          n_current=len(x), test="ks", null_rate_reference=ref.null_rate,
                          null_rate_current=nulls / len(x) if len(x) else 0.0)
    result.null_p_value = two_proportion_p(ref.null_rate * ref.rows, ref.rows, nulls, len(x))
    present = np.sort(x[~np.isnan(x)])  # the one sort of the current column: PSI, KS and W1 all use it
    del x
    if len(present) == 0 or not ref.counts:
        return result
    sample = np.sort(np.asarray(ref.sample, dtype=float))  # stored sorted; cheap insurance
    result.psi = psi(ref.counts, bin_counts_sorted(present, ref.bin_edges))
    result.statistic, result.p_value = ks_sorted(sample, present)
    result.wasserstein_norm = wasserstein_sorted(sample, present) / _scale(sample, ref.std)
    return result


def _categorical(ref, values, critical: bool) -> FeatureDrift:
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values)
    n = len(series)
    counts = series.value_counts(dropna=True)  # on the column's own dtype: no per-value Python objects
    present = int(counts.sum())
    nulls = n - present
    result = FeatureDrift(feature=ref.name, kind="categorical", critical=critical, n_reference=ref.rows,
                          n_current=n, test="chi2", null_rate_reference=ref.null_rate,
                          null_rate_current=nulls / n if n else 0.0)
    result.null_p_value = two_proportion_p(ref.null_rate * ref.rows, ref.rows, nulls, n)
    if present == 0:
        return result
    current_counts = {str(k): float(v) for k, v in counts.items()}
    current_freq = {k: current_counts.get(k, 0.0) / present for k in ref.frequencies}
    current_freq.update({k: v / present for k, v in current_counts.items() if k not in ref.frequencies})
    ref_present = ref.rows * (1 - ref.null_rate)
    ref_counts = {k: v * ref_present for k, v in ref.frequencies.items()}
    result.statistic, result.p_value = chi2_homogeneity(ref_counts, current_counts)
    result.js_distance = js_distance(ref.frequencies, current_freq)
    seen = {k for k, v in ref.frequencies.items() if v > 0}
    result.unseen_share = float(sum(v for k, v in current_freq.items() if k not in seen))
    return result


def _prediction(ref, scores) -> FeatureDrift:
    p = _as_float(scores)
    p = np.sort(p[~np.isnan(p)])
    result = FeatureDrift(feature="prediction", kind="prediction", n_reference=ref.rows, n_current=len(p),
                          test="ks")
    if len(p) == 0:
        return result
    result.psi = psi(ref.counts, bin_counts_sorted(p, ref.bin_edges))
    result.statistic, result.p_value = ks_sorted(np.sort(np.asarray(ref.sample, dtype=float)), p)
    return result


def _decide(r: FeatureDrift, config) -> None:
    significant = r.p_adjusted is not None and r.p_adjusted < config.alpha
    p_text = f"BH-adjusted p={r.p_adjusted:.2g}" if r.p_adjusted is not None else "no test"
    effects = []
    if r.kind == "prediction":
        if r.psi is not None and r.psi >= config.prediction_psi_threshold:
            effects.append(f"PSI {r.psi:.3f} >= {config.prediction_psi_threshold}")
    elif r.kind == "numeric":
        if r.psi is not None and r.psi >= config.psi_threshold:
            effects.append(f"PSI {r.psi:.3f} >= {config.psi_threshold}")
        if r.wasserstein_norm is not None and r.wasserstein_norm >= config.wasserstein_threshold:
            effects.append(f"Wasserstein/sd {r.wasserstein_norm:.3f} >= {config.wasserstein_threshold}")
    else:
        if r.js_distance is not None and r.js_distance >= config.js_threshold:
            effects.append(f"Jensen-Shannon {r.js_distance:.3f} >= {config.js_threshold}")
        if r.unseen_share is not None and r.unseen_share >= config.unseen_threshold:
            effects.append(f"unseen categories {r.unseen_share:.1%} >= {config.unseen_threshold:.1%}")
    if significant and effects:
        r.drifted = True
        r.reasons.append(f"{', '.join(effects)} ({r.test} {p_text})")
    null_delta = abs(r.null_rate_current - r.null_rate_reference)
    if (r.null_p_adjusted is not None and r.null_p_adjusted < config.alpha
            and null_delta >= config.null_rate_threshold):
        r.drifted = True
        r.reasons.append(f"null rate {r.null_rate_reference:.1%} -> {r.null_rate_current:.1%} "
                         f"(BH-adjusted p={r.null_p_adjusted:.2g})")
