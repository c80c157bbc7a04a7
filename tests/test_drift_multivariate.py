"""The multivariate drift test (tasks/drift_multivariate.py), seeded: what univariate tests miss, false alarms,
mixed feature kinds, and the guard rails."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.drift import assess_drift
from mlcycle.tasks.drift_multivariate import multivariate_drift
from mlcycle.tasks.profile import build_profile
from mlcycle.tasks.settings import DatasetSpec, DriftSettings, FeatureSpec

WINDOWS = 40
WINDOW_ROWS = 2000
REFERENCE_ROWS = 5000
FEATURES = [f"x{i}" for i in range(10)]


def correlated_rows(n: int, rho: float, rng: np.random.Generator) -> pd.DataFrame:
    """10 independent standard normals, except that x0 and x1 are bivariate normal with correlation ``rho``:
    every marginal is N(0, 1) whatever ``rho`` is."""
    z = rng.standard_normal((n, len(FEATURES)))
    z[:, 1] = rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]
    return pd.DataFrame(z, columns=FEATURES)


@pytest.fixture(scope="module")
def correlation_world():
    rng = np.random.default_rng(20261101)
    reference = correlated_rows(REFERENCE_ROWS, 0.8, rng)
    unchanged = [correlated_rows(WINDOW_ROWS, 0.8, rng) for _ in range(WINDOWS)]
    decorrelated = [correlated_rows(WINDOW_ROWS, 0.0, rng) for _ in range(WINDOWS)]
    return reference, unchanged, decorrelated


@pytest.fixture(scope="module")
def decorrelated_results(correlation_world):
    reference, _, decorrelated = correlation_world
    return [multivariate_drift(reference, window, FEATURES, seed=i) for i, window in enumerate(decorrelated)]


def univariate_decision(reference: pd.DataFrame, window: pd.DataFrame):
    """The project's own univariate machinery: a reference profile of the fitted rows, then assess_drift."""
    spec = DatasetSpec(name="correlated", target="y", features=[FeatureSpec(name=f, kind="numeric") for f in FEATURES])
    profile = build_profile(reference, spec.features, np.zeros(len(reference)), np.full(len(reference), 0.5),
                            dataset=spec.name, dataset_schema_hash=spec.schema_hash(), n_bins=10,
                            created_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), sample_size=REFERENCE_ROWS, seed=1)
    return assess_drift(profile, window, spec, DriftSettings(), prediction_column=None)


# --------------------------------------------------------------------------------------------------
# the acceptance criteria
# --------------------------------------------------------------------------------------------------


def test_a_correlation_change_with_unchanged_marginals_is_missed_by_every_univariate_test(correlation_world):
    reference, _, decorrelated = correlation_world
    decisions = [univariate_decision(reference, window) for window in decorrelated]
    assert all(d.enough_data for d in decisions)
    flagged = [(i, d.drifted_features) for i, d in enumerate(decisions) if d.drifted_features or d.dataset_drift]
    assert not flagged, f"univariate tests flagged windows {flagged}"


def test_a_correlation_change_is_caught_in_at_least_95_percent_of_windows(decorrelated_results):
    caught = [r.drifted for r in decorrelated_results]
    assert len(caught) == WINDOWS
    assert np.mean(caught) >= 0.95, f"caught in {sum(caught)} of {len(caught)} windows"


def test_a_caught_correlation_change_names_the_two_features_and_says_what_was_found(decorrelated_results):
    result = next(r for r in decorrelated_results if r.drifted)
    assert {name for name, _ in result.top_features[:2]} == {"x0", "x1"}
    assert all(a[1] >= b[1] for a, b in zip(result.top_features, result.top_features[1:], strict=False))
    assert len(result.top_features) <= 5
    assert result.method == "domain_classifier" and result.n_reference == result.n_current == WINDOW_ROWS
    assert result.detail.startswith("a classifier tells current rows from reference rows")
    assert f"AUC {result.auc:.2f}" in result.detail and "the joint distribution changed, mostly in x" in result.detail


def test_false_alarms_are_at_most_5_percent_over_40_windows_without_drift(correlation_world):
    reference, unchanged, _ = correlation_world
    results = [multivariate_drift(reference, window, FEATURES, seed=i) for i, window in enumerate(unchanged)]
    alarms = [r.drifted for r in results]
    assert len(alarms) == WINDOWS
    assert np.mean(alarms) <= 0.05, f"{sum(alarms)} false alarms in {len(alarms)} windows"
    assert all(r.top_features == [] for r in results if not r.drifted)
    assert max(r.auc for r in results) < 0.55


# --------------------------------------------------------------------------------------------------
# numeric and categorical features together
# --------------------------------------------------------------------------------------------------


def mixed_rows(n: int, rng: np.random.Generator, *, linked: bool) -> pd.DataFrame:
    """Four numerics, an all-null column, and ``segment`` (a/b/c, 2% missing) that follows x0's tercile in 80%
    of the rows when ``linked``; unlinked, ``segment`` is shuffled: the same shares, no relation to x0."""
    x = rng.standard_normal((n, 4))
    tercile = np.digitize(x[:, 0], np.quantile(x[:, 0], [1 / 3, 2 / 3]))
    segment = np.where(rng.random(n) < 0.8, np.array(["a", "b", "c"])[tercile], rng.choice(["a", "b", "c"], n))
    segment = np.where(rng.random(n) < 0.02, None, segment).astype(object)
    if not linked:
        segment = rng.permutation(segment)
    frame = pd.DataFrame(x, columns=["x0", "x1", "x2", "x3"])
    return frame.assign(segment=segment, empty=np.nan)


MIXED = ["x0", "x1", "x2", "x3", "segment", "empty"]


def test_a_categorical_whose_relation_to_a_numeric_changes_is_caught_and_located():
    rng = np.random.default_rng(7)
    reference = mixed_rows(REFERENCE_ROWS, rng, linked=True)
    for i in range(3):
        result = multivariate_drift(reference, mixed_rows(WINDOW_ROWS, rng, linked=False), MIXED, ["segment"], seed=i)
        assert result.drifted, result.detail
        assert {name for name, _ in result.top_features[:2]} == {"x0", "segment"}, result.top_features


def test_mixed_features_without_drift_raise_no_alarm_even_when_dtypes_differ_by_side():
    rng = np.random.default_rng(8)
    reference = mixed_rows(REFERENCE_ROWS, rng, linked=True)
    for i in range(3):
        window = mixed_rows(WINDOW_ROWS, rng, linked=True)
        # the live side as pandas categories and nullable floats: the same values, so no change
        window = window.astype({"segment": "category", "x1": "Float64"})
        result = multivariate_drift(reference, window, MIXED, ["segment"], seed=i)
        assert not result.drifted and result.auc < 0.55, result.detail


def test_a_category_never_seen_in_the_reference_is_a_change():
    rng = np.random.default_rng(9)
    reference = mixed_rows(REFERENCE_ROWS, rng, linked=True)
    window = mixed_rows(WINDOW_ROWS, rng, linked=True)
    window.loc[window.index[: WINDOW_ROWS // 5], "segment"] = "d"  # a fifth of the rows: a new category
    result = multivariate_drift(reference, window, MIXED, ["segment"])
    assert result.drifted and result.top_features[0][0] == "segment", result.detail


# --------------------------------------------------------------------------------------------------
# sizes, seeds and bad inputs
# --------------------------------------------------------------------------------------------------


def test_a_large_window_is_sampled_to_max_rows_and_the_result_is_seeded():
    rng = np.random.default_rng(10)
    reference, current = correlated_rows(3000, 0.8, rng), correlated_rows(200_000, -0.8, rng)
    first = multivariate_drift(reference, current, FEATURES, max_rows=500, seed=3)
    again = multivariate_drift(reference, current, FEATURES, max_rows=500, seed=3)
    assert first.n_current == first.n_reference == 500
    assert "sampled from 200,000 current and 3,000 reference rows" in first.detail
    assert first == again and first.drifted


def test_a_missing_feature_is_named():
    rng = np.random.default_rng(11)
    reference, current = correlated_rows(100, 0.8, rng), correlated_rows(100, 0.8, rng).drop(columns="x7")
    with pytest.raises(ValueError, match=r"\['x7'\] missing from the current rows"):
        multivariate_drift(reference, current, FEATURES)
    with pytest.raises(ValueError, match="'x10'.*missing from the reference rows"):
        multivariate_drift(reference, reference, [*FEATURES, "x10"])


def test_tiny_windows_give_not_enough_rows_instead_of_an_exception():
    rng = np.random.default_rng(12)
    reference = correlated_rows(REFERENCE_ROWS, 0.8, rng)
    for current, ref in ((correlated_rows(49, 0.8, rng), reference), (reference, reference.head(10))):
        result = multivariate_drift(ref, current, FEATURES)
        assert not result.drifted and result.auc is None and result.p_value is None
        assert result.detail.startswith("not enough rows"), result.detail
        assert (result.n_reference, result.n_current) == (len(ref), len(current))


def test_only_all_null_columns_give_chance_level_and_no_drift():
    empty = pd.DataFrame({"a": [np.nan] * 200, "b": [None] * 200})
    result = multivariate_drift(empty, empty.head(120), ["a", "b"], ["b"])
    assert result.auc == 0.5 and result.p_value == 1.0 and not result.drifted


def test_bad_arguments_name_what_is_wrong():
    frame = pd.DataFrame({"x": np.arange(100.0), "word": ["w"] * 100})
    with pytest.raises(ValueError, match="'word' holds non-numeric values.*categorical"):
        multivariate_drift(frame, frame, ["x", "word"])
    with pytest.raises(ValueError, match=r"categorical names \['color'\]"):
        multivariate_drift(frame, frame, ["x"], ["color"])
    with pytest.raises(ValueError, match="effect_threshold"):
        multivariate_drift(frame, frame, ["x"], effect_threshold=0.4)
    with pytest.raises(ValueError, match=r"\['x'\] more than once"):
        multivariate_drift(frame, frame, ["x", "x"])
