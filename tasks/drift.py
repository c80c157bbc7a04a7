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
current counts. Predictions, per task (:data:`PREDICTION_DRIFT_COLUMN` names the inference-log column
read): binary, the positive class's probability, and regression, the predicted value, get PSI on the
profile's bins and KS against the reference prediction sample; multiclass, the predicted classes, get
PSI on the shares of the declared classes (the same effect size and threshold,
``prediction_psi_threshold``) and the chi-square test of homogeneity, with the Jensen-Shannon distance
reported beside them.

Dataset-level decision: drift *that matters* when

* rule ``importance`` (the default): the drifted features hold at least ``importance_share`` of the
  model's permutation importance on its test days (stored with the version; negative importances count
  as none). Four drifted features out of ten that carry most of what the model reads are drift; four
  the model ignores are not. A version without recorded importances falls back to the share rule, and
  the verdict says so. Rule ``share`` (the old one): the share of drifted features >= ``drift_share``;
* or a feature marked ``critical`` in the dataset declaration drifts;
* or the predictions drift;
* or the joint distribution changed (``multivariate``: tasks/drift_multivariate.py, a classifier that
  tells the window's rows from the version's reference rows): a change of correlation leaves every
  marginal, so every test above, untouched.

The performance estimated without labels (tasks/monitor/estimation.py) is judged beside it, by the
monitor (tasks/monitor/window.py): a drop beyond tolerance warrants retraining even when no input
drifted. Below ``min_rows`` current rows nothing is decided: the report says "not enough data". Every
decision carries the rule applied to its window in words (``DriftDecision.verdict``: "2 of 10 features
drifted (20%), holding 12% of the model's importance, below the 50% share, and no critical feature
drifted, ...: no dataset drift").

Memory does not grow with the training set: the reference side is the stored profile only. The
current window is processed one column at a time (bin counts, a sort for KS), so a window of millions
of rows costs a few column buffers, not a copy of the frame.
"""

from __future__ import annotations

import numpy as np

from mlcycle.tasks.drift_stats import (
    benjamini_hochberg,
    bin_counts_sorted,
    chi2_homogeneity,
    js_distance,
    ks_sorted,
    psi,
    relative_to_sd,
    two_proportion_p,
    wasserstein_sorted,
)
from mlcycle.tasks.records.monitoring import DriftDecision, FeatureDrift, MultivariateDrift

# The inference-log column (tasks/inference_log.py: PREDICTION_COLUMNS) prediction drift reads, per task.
PREDICTION_DRIFT_COLUMN = {"binary": "probability", "multiclass": "label", "regression": "prediction"}


# --------------------------------------------------------------------------------------------------


def assess_drift(profile, current, spec, config, *, prediction_column: str | None = "probability",
                 rows: int | None = None, importances: dict[str, float] | None = None,
                 multivariate: MultivariateDrift | None = None) -> DriftDecision:
    """Compare a window of live rows with the reference profile; see the module docstring.

    ``current`` maps column names to values (a DataFrame, or a lazy mapping that reads one column at a
    time); it holds the declared features and, if given, ``prediction_column``. ``config`` is a
    ``DriftSettings``; ``spec`` the ``DatasetSpec``.
    """
    n = int(rows if rows is not None else len(current[spec.features[0].name]))
    if n < config.min_rows:
        return DriftDecision(enough_data=False, rows=n, min_rows=config.min_rows, multivariate=multivariate)

    results: list[FeatureDrift] = []
    for feature in spec.features:
        result = feature_drift(profile, current[feature.name], feature)
        if result is not None:
            results.append(result)
    prediction = None
    if prediction_column is not None and has_prediction_reference(profile):
        prediction = _prediction(profile.predictions, current[prediction_column])
    return decide_drift(results, prediction, n, config, importances=importances, multivariate=multivariate)


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


def prediction_drift(profile, values) -> FeatureDrift | None:
    """The prediction distribution's statistics against the reference (None without a reference).

    ``values`` is the column :data:`PREDICTION_DRIFT_COLUMN` names for the profile's task: probabilities,
    predicted classes (canonical texts) or predicted values.
    """
    return _prediction(profile.predictions, values) if has_prediction_reference(profile) else None


def decide_drift(results: list[FeatureDrift], prediction: FeatureDrift | None, n: int, config, *,
                 importances: dict[str, float] | None = None,
                 multivariate: MultivariateDrift | None = None) -> DriftDecision:
    """The window's decision from its per-feature statistics (in dataset order): BH, effect sizes, reasons.

    ``importances``: the judged version's permutation importance per feature (rule ``importance``; None
    falls back to the share rule); ``multivariate``: the joint-distribution test's result, if it ran.
    """
    if n < config.min_rows:
        return DriftDecision(enough_data=False, rows=n, min_rows=config.min_rows, multivariate=multivariate)
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
    weights = importance_weights(importances, [r.feature for r in results]) if config.rule == "importance" else None
    weighted = round(sum(weights.get(f, 0.0) for f in drifted), 6) if weights else None  # no 0.4999... at 50%
    reasons = []
    if weights is not None and weighted >= config.importance_share:
        reasons.append(f"drifted features hold {weighted:.0%} of the model's importance "
                       f"(>= {config.importance_share:.0%}): {_heaviest(drifted, weights)}")
    elif weights is None and results and share >= config.drift_share:
        reasons.append(f"{len(drifted)} of {len(results)} features drifted ({share:.0%} >= {config.drift_share:.0%})")
    critical = [r.feature for r in results if r.drifted and r.critical]
    if critical:
        reasons.append(f"critical feature(s) drifted: {', '.join(critical)}")
    if prediction is not None and prediction.drifted:
        reasons.append("prediction distribution drifted (" + "; ".join(prediction.reasons) + ")")
    if multivariate is not None and multivariate.drifted:
        reasons.append(f"multivariate drift: {multivariate.detail}")
    verdict = _verdict(results, drifted, critical, prediction, share, config, weights, weighted, multivariate,
                       bool(reasons))
    return DriftDecision(
        enough_data=True, rows=n, min_rows=config.min_rows, features=results, prediction=prediction,
        drifted_features=drifted, drifted_share=share, dataset_drift=bool(reasons), reasons=reasons,
        verdict=verdict, rule="importance" if weights is not None else "share", importance_share=weighted,
        importances=weights or {}, multivariate=multivariate,
    )


def importance_weights(importances: dict[str, float] | None, features: list[str]) -> dict[str, float] | None:
    """Each compared feature's share of the model's importance (negative importances count as none).

    None when there is nothing to weigh by: no importances recorded, or none of them positive (a model that
    reads nothing, or importances too noisy to rank): the caller falls back to counting features alike.
    """
    if not importances:
        return None
    positive = {f: max(float(importances.get(f, 0.0)), 0.0) for f in features}
    total = sum(positive.values())
    return {f: v / total for f, v in positive.items()} if total > 0 else None


def _heaviest(drifted: list[str], weights: dict[str, float], top: int = 3) -> str:
    ranked = sorted(drifted, key=lambda f: -weights.get(f, 0.0))
    return ", ".join(f"{f} {weights.get(f, 0.0):.0%}" for f in ranked[:top]) + (" ..." if len(ranked) > top else "")


def _verdict(results: list[FeatureDrift], drifted: list[str], critical: list[str], prediction: FeatureDrift | None,
             share: float, config, weights: dict[str, float] | None, weighted: float | None,
             multivariate: MultivariateDrift | None, dataset_drift: bool) -> str:
    """The dataset-level rule applied to this window, in words: each of its parts, then the verdict.

    "2 of 10 features drifted (20%), below the 50% share, and no critical feature drifted: no dataset drift";
    with the importance rule, "2 of 10 features drifted (20%), holding 61% of the model's importance, at or
    above the 50% share, ...".
    """
    if results and weights is not None:
        side = "at or above" if weighted >= config.importance_share else "below"
        parts = [f"{len(drifted)} of {len(results)} features drifted ({share:.0%}), holding {weighted:.0%} of the "
                 f"model's importance, {side} the {config.importance_share:.0%} share"]
    elif results:
        side = "at or above" if share >= config.drift_share else "below"
        parts = [f"{len(drifted)} of {len(results)} features drifted ({share:.0%}), {side} the "
                 f"{config.drift_share:.0%} share"]
        if config.rule == "importance":
            parts[0] += " (no importances recorded for this version: features counted alike)"
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
    if multivariate is not None and multivariate.auc is not None:
        parts.append(f"the joint distribution {'changed' if multivariate.drifted else 'did not change'} "
                     f"(domain classifier AUC {multivariate.auc:.3f})")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
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
    current = bin_counts_sorted(present, ref.bin_edges)
    result.psi = psi(ref.counts, current)
    result.current_counts = [float(c) for c in current]
    result.statistic, result.p_value = ks_sorted(sample, present)
    result.wasserstein_norm = wasserstein_sorted(sample, present) / relative_to_sd(sample, ref.std)
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
    result.current_shares = {k: float(v) for k, v in current_freq.items()}
    seen = {k for k, v in ref.frequencies.items() if v > 0}
    result.unseen_share = float(sum(v for k, v in current_freq.items() if k not in seen))
    return result


def _prediction(ref, scores) -> FeatureDrift:
    if ref.class_frequencies is not None:
        return _predicted_classes(ref, scores)
    p = _as_float(scores)
    p = np.sort(p[~np.isnan(p)])
    result = FeatureDrift(feature="prediction", kind="prediction", n_reference=ref.rows, n_current=len(p),
                          test="ks")
    if len(p) == 0:
        return result
    current = bin_counts_sorted(p, ref.bin_edges)
    result.psi = psi(ref.counts, current)
    result.current_counts = [float(c) for c in current]
    result.statistic, result.p_value = ks_sorted(np.sort(np.asarray(ref.sample, dtype=float)), p)
    return result


def _predicted_classes(ref, labels) -> FeatureDrift:
    """Multiclass: the shares of the predicted classes against the reference's (PSI, chi-square, JS)."""
    from mlcycle.tasks.settings.problem import category_keys_of

    keys = category_keys_of(labels).dropna()
    result = FeatureDrift(feature="prediction", kind="prediction", n_reference=ref.rows, n_current=len(keys),
                          test="chi2")
    if len(keys) == 0:
        return result
    counts = keys.astype(str).value_counts()
    classes = list(ref.class_frequencies) + sorted(k for k in counts.index if k not in ref.class_frequencies)
    current = {k: float(counts.get(k, 0)) for k in classes}
    reference = {k: ref.class_frequencies.get(k, 0.0) * ref.rows for k in classes}
    result.psi = psi([reference[k] for k in classes], [current[k] for k in classes])
    result.statistic, result.p_value = chi2_homogeneity(reference, current)
    result.current_shares = {k: v / len(keys) for k, v in current.items()}
    result.js_distance = js_distance(ref.class_frequencies, result.current_shares)
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
