"""Multivariate drift: can a classifier tell the live window's rows from the reference rows?

Why a classifier
----------------
Every test in tasks/drift.py looks at one column at a time, so a change that leaves every marginal
alone passes them all: two features whose correlation flips from 0.8 to -0.8, a dependence
``x2 = x1**2 + noise`` that disappears, a category whose relation to a numeric feature changes while
its shares stay put. A model that reads all features jointly can still be wrong on such rows.

The test used here is the *domain classifier* of Rabanser, Günnemann & Lipton (2019, "Failing Loudly:
An Empirical Study of Methods for Detecting Dataset Shift", NeurIPS), which is the *classifier
two-sample test* of Lopez-Paz & Oquab (2017, "Revisiting Classifier Two-Sample Tests", ICLR): label the
reference rows 0 and the current rows 1 and ask whether a classifier, scored on rows it never saw,
orders them better than chance. If both samples come from one joint distribution no classifier can
(AUC 0.5); any change a classifier can pick up, linear or not, numeric or categorical, raises the AUC.
It also says *where* the change is: the features the classifier relied on (permutation importance).
NannyML's alternative, PCA reconstruction error, sees only what a linear projection fitted on the
reference loses. benchmarks/estimation.py runs both on one drifted 1 M-row stream (benchmarks/README.md:
12/14 shifted chunks flagged against NannyML's 13/14, 0/6 unshifted for both).

How
---
1. Seeded samples of at most ``max_rows`` rows of each side, both of the same size (the smaller
   side's, when it is below ``max_rows``): a live window of a million rows costs 5,000 of them, and
   balanced classes make the classifier's task symmetric.
2. Numeric features as floats, NaN kept (the booster learns a branch for missing values, so a changed
   null rate is a change too; infinities become the largest finite floats); categorical features as
   the reference sample's categories by frequency (canonical texts, as everywhere in mlcycle), the
   254 most frequent ones coded 0..253, all others -- rare in the reference or never seen there --
   sharing one code, missing values left missing. All-null columns are allowed (they carry nothing).
3. A seeded ``HistGradientBoostingClassifier`` (native categorical splits, NaN handling, cheap on
   10,000 rows), stratified K-fold (``folds``): every row is scored by a model that never saw it.
4. AUC of those out-of-fold scores, and the one-sided test of AUC = 0.5 from the Mann-Whitney U
   statistic (``U / (n0 * n1)`` *is* the AUC) with its normal approximation, ties corrected.
5. **Drifted only when both** p < ``alpha`` **and** AUC >= ``effect_threshold``, as in tasks/drift.py:
   with 5,000 rows a side a p-value alone flags changes too small to matter; the threshold's reasoning
   is on ``MultivariateSettings``. Out-of-fold scores of different folds are not quite independent, so
   the p-value is approximate; the effect threshold (0.55 is about 5 null standard errors at 2,000
   rows a side) keeps false alarms rare (tests/test_drift_multivariate.py measures them).
6. When drifted, ``top_features``: the drop in held-out AUC when a feature is permuted
   (``sklearn.inspection.permutation_importance`` on each fold's held-out rows, averaged over folds),
   the largest five, positive drops only. Not computed otherwise: a classifier at chance level relies
   on nothing, and its importances are noise.

Below 50 rows on either side nothing is decided (the record says so, no exception): five folds of
fewer rows leave the classifier nothing to learn from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlcycle.tasks.records.monitoring import MultivariateDrift
from mlcycle.tasks.settings.problem import category_keys_of

MIN_ROWS = 50  # per side; below it: "not enough rows"
TOP_FEATURES = 5
# HistGradientBoosting codes categories 0..max_bins-1 (255 bins, one kept for missing values): the 254 most
# frequent reference categories get their own code, everything else one shared code.
KEPT_CATEGORIES = 254
# The booster: small and fixed, so 2,000 rows a side cost about half a second on one CPU (larger boosters
# were not benchmarked: a domain classifier needs to beat chance, not to be accurate).
BOOSTER = {"max_iter": 50, "learning_rate": 0.1, "max_leaf_nodes": 15, "min_samples_leaf": 20,
           "early_stopping": False}
PERMUTATION_REPEATS = 1  # per fold; five folds already average five permutations


def multivariate_drift(reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[str],
                       categorical: Sequence[str] = (), *, alpha: float = 0.01, effect_threshold: float = 0.55,
                       max_rows: int = 5000, folds: int = 5, seed: int = 0) -> MultivariateDrift:
    """Whether the joint distribution of ``features`` in ``current`` differs from ``reference``'s.

    ``reference``: the stored joint sample of the rows the model was fitted on; ``current``: the live
    window, any size (sampled to ``max_rows``). ``categorical`` names the features compared as
    categories (canonical texts); the others must be numeric. ``n_reference`` and ``n_current`` in the
    record are the rows the classifier compared (equal, after sampling), or, without enough rows, the
    rows there were. See the module docstring for the method and its sources.
    """
    features = list(features)
    categorical = set(categorical)
    _check_arguments(reference, current, features, categorical, alpha, effect_threshold, max_rows, folds)
    record = {"features": features, "alpha": alpha, "effect_threshold": effect_threshold}
    if len(reference) < MIN_ROWS or len(current) < MIN_ROWS:
        return MultivariateDrift(
            n_reference=len(reference), n_current=len(current), **record,
            detail=f"not enough rows: {len(current):,} current and {len(reference):,} reference rows, at least "
                   f"{MIN_ROWS} a side needed to cross-validate a classifier: no verdict on the joint distribution")

    n = min(len(reference), len(current), max_rows)
    reference_rows, current_rows = (joint_sample(frame, features, n, s)
                                    for frame, s in zip((reference, current), np.random.SeedSequence(seed).spawn(2),
                                                        strict=True))
    x, is_categorical = encode_features(reference_rows, current_rows, features, categorical)
    y = np.repeat([0, 1], n)
    # A column without a single value on either side carries nothing (and sklearn 1.9's binning of an
    # all-NaN numeric column fails: "window shape cannot be larger than input array shape"): left out.
    usable = ~np.isnan(x).all(axis=0)
    scores, fitted = out_of_fold_scores(x[:, usable], y, is_categorical[usable], folds, seed) if usable.any() \
        else (np.full(len(y), 0.5), [])
    auc, p_value = auc_test(scores, y)
    drifted = p_value < alpha and auc >= effect_threshold
    top = top_features(fitted, x[:, usable], y, [f for f, u in zip(features, usable, strict=True) if u],
                       seed) if drifted else []
    sampled = "" if n == len(reference) == len(current) else \
        f", sampled from {len(current):,} current and {len(reference):,} reference rows"
    return MultivariateDrift(
        n_reference=n, n_current=n, **record, auc=round(auc, 4), p_value=p_value, drifted=drifted,
        top_features=top,
        detail=f"a classifier tells current rows from reference rows ({n:,} a side{sampled}) with AUC {auc:.2f} "
               f"({_verdict(auc, p_value, alpha, effect_threshold, top)}")


def _check_arguments(reference, current, features: list[str], categorical: set[str], alpha: float,
                     effect_threshold: float, max_rows: int, folds: int) -> None:
    if not features:
        raise ValueError("multivariate_drift needs at least one feature; features is empty")
    twice = sorted({f for f in features if features.count(f) > 1})
    if twice:
        raise ValueError(f"features lists {twice} more than once")
    for name, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"the {name} rows must be a pandas DataFrame, got {type(frame).__name__}")
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise ValueError(f"feature(s) {missing} missing from the {name} rows (they hold "
                             f"{list(frame.columns)[:20]}{' ...' if len(frame.columns) > 20 else ''})")
    undeclared = sorted(categorical - set(features))
    if undeclared:
        raise ValueError(f"categorical names {undeclared}, which are not among the features {features}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not 0.5 < effect_threshold < 1:
        raise ValueError(f"effect_threshold is an AUC between 0.5 (chance) and 1, got {effect_threshold}")
    if max_rows < MIN_ROWS:
        raise ValueError(f"max_rows must be at least {MIN_ROWS} (rows a side), got {max_rows}")
    if not 2 <= folds <= MIN_ROWS:
        raise ValueError(f"folds must be between 2 and {MIN_ROWS}, got {folds}")


def joint_sample(frame: pd.DataFrame, features: list[str], size: int, seed) -> pd.DataFrame:
    """``size`` rows of ``frame`` drawn without replacement (seeded), whole rows so the joint law is kept."""
    if size >= len(frame):
        return frame[features]
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=size, replace=False))
    return frame.take(rows)[features]


def encode_features(reference: pd.DataFrame, current: pd.DataFrame, features: list[str],
                    categorical: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as one float matrix (reference rows first) and the mask of categorical columns.

    Categories are coded from the reference side only (by frequency, see the module docstring), so a
    category never seen there shares the code of the rare ones: mostly a current-side code, which the
    classifier picks up as the change it is.
    """
    columns = []
    for name in features:
        if name in categorical:
            columns.append(_category_codes(reference[name], current[name]))
        else:
            columns.append(np.concatenate([_numbers(reference[name], name, "reference"),
                                           _numbers(current[name], name, "current")]))
    x = np.column_stack(columns)
    return x, np.array([name in categorical for name in features])


def _numbers(values: pd.Series, name: str, side: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    lost = values.notna() & numbers.isna()
    if lost.any():
        raise ValueError(f"numeric feature {name!r} holds non-numeric values in the {side} rows "
                         f"(e.g. {values[lost].iloc[0]!r}); name it in categorical to compare it as categories")
    x = numbers.astype(float).to_numpy(dtype=float, na_value=np.nan)
    return np.nan_to_num(x, nan=np.nan, posinf=np.finfo(float).max, neginf=np.finfo(float).min)


def _category_codes(reference: pd.Series, current: pd.Series) -> np.ndarray:
    keys = pd.concat([category_keys_of(reference), category_keys_of(current)], ignore_index=True)
    ranked = keys.iloc[: len(reference)].value_counts(dropna=True).index[:KEPT_CATEGORIES]
    codes = keys.map({key: float(i) for i, key in enumerate(ranked)}).astype(float)
    codes[keys.notna() & codes.isna()] = float(len(ranked))  # rare in, or absent from, the reference
    return codes.to_numpy(dtype=float)


def out_of_fold_scores(x: np.ndarray, y: np.ndarray, is_categorical: np.ndarray, folds: int,
                       seed: int) -> tuple[np.ndarray, list[tuple[object, np.ndarray]]]:
    """Each row's probability of being a current row from a model fitted without it (stratified K-fold).

    Returns the scores and, per fold, the fitted model with the rows it scored (for the importances).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    scores = np.empty(len(y), dtype=float)
    fitted = []
    for train, held_out in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        model = HistGradientBoostingClassifier(**BOOSTER, categorical_features=is_categorical, random_state=seed)
        model.fit(x[train], y[train])
        scores[held_out] = model.predict_proba(x[held_out])[:, 1]
        fitted.append((model, held_out))
    return scores, fitted


def auc_test(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """AUC of ``scores`` for ``y`` and the one-sided p-value of AUC = 0.5 (Mann-Whitney U, normal approximation).

    ``U / (n1 * n0)`` is the AUC, ties counted half, the same number as ``sklearn.metrics.roc_auc_score``.
    Scores all equal (nothing to learn, e.g. only all-null columns) give AUC 0.5 and p = 1.
    """
    from scipy.stats import mannwhitneyu

    current, reference = scores[y == 1], scores[y == 0]
    if np.ptp(scores) == 0:
        return 0.5, 1.0
    result = mannwhitneyu(current, reference, alternative="greater", method="asymptotic")
    return float(result.statistic) / (len(current) * len(reference)), float(result.pvalue)


def top_features(fitted: list[tuple[object, np.ndarray]], x: np.ndarray, y: np.ndarray, features: list[str],
                 seed: int) -> list[tuple[str, float]]:
    """The features whose permutation costs the classifier most held-out AUC, largest first (at most five).

    Per fold, ``sklearn.inspection.permutation_importance`` on the rows that fold's model never saw;
    the drops are averaged over folds, rounded to 3 decimals, and only positive ones kept.
    """
    from sklearn.inspection import permutation_importance

    drops = np.zeros(len(features))
    for model, held_out in fitted:
        result = permutation_importance(model, x[held_out], y[held_out], scoring="roc_auc",
                                        n_repeats=PERMUTATION_REPEATS, random_state=seed)
        drops += result.importances_mean / len(fitted)
    ranked = sorted(zip(features, (round(float(d), 3) for d in drops), strict=True), key=lambda item: -item[1])
    return [(name, drop) for name, drop in ranked[:TOP_FEATURES] if drop > 0]


def _verdict(auc: float, p_value: float, alpha: float, effect_threshold: float,
             top: list[tuple[str, float]]) -> str:
    """The rest of the detail sentence, after "with AUC 0.71 (": both conditions, then what follows."""
    p = "p~0" if p_value == 0 else f"p={p_value:.2g}"  # the normal tail underflows beyond z ~ 38
    if p_value >= alpha:
        return f"{p}, not below {alpha}): no evidence that the joint distribution changed"
    if auc < effect_threshold:
        return f"{p} < {alpha}, but below {effect_threshold}): a change too small to act on"
    # name the features that carry the change, not every one with a drop above rounding noise
    carriers = [name for name, drop in top if drop >= top[0][1] / 4] if top else []
    where = f", mostly in {', '.join(carriers)}" if carriers else ""
    return f"{p} < {alpha}, >= {effect_threshold}): the joint distribution changed{where}"
