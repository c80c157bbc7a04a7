"""The drift statistics agree with scipy, and BH / PSI / JS behave as documented.

KS and Wasserstein are computed on sorted samples (``ks_sorted``, ``wasserstein_sorted``: the current
column is sorted once for PSI, KS and W1): those production functions, and a numeric feature's whole
path through ``feature_drift``, are compared with ``scipy.stats`` directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
from scipy.spatial.distance import jensenshannon

from mlcycle.tasks.drift import (
    benjamini_hochberg,
    bin_counts_sorted,
    chi2_homogeneity,
    feature_drift,
    js_distance,
    ks_sorted,
    psi,
    two_proportion_p,
    wasserstein_sorted,
)
from mlcycle.tasks.profile import ReferenceProfile, profile_numeric, profile_predictions
from mlcycle.tasks.settings import FeatureSpec


@pytest.mark.parametrize("n1, n2, shift", [(5000, 5000, 0.0), (5000, 20000, 0.05), (300, 7000, 0.3),
                                           (5000, 1000, 1.0), (2000, 2000, 0.0)])
def test_ks_statistic_and_p_value_agree_with_scipy(n1, n2, shift):
    rng = np.random.default_rng(n1 + n2)
    a = rng.normal(0, 1, n1)
    b = rng.normal(shift, 1, n2)
    ours = ks_sorted(np.sort(a), np.sort(b))
    ref = st.ks_2samp(a, b, method="asymp")
    assert ours[0] == pytest.approx(ref.statistic, abs=1e-9)
    assert ours[1] == pytest.approx(ref.pvalue, abs=1e-9)


def test_ks_with_ties_agrees_with_scipy():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 20, 4000).astype(float)
    b = rng.integers(0, 21, 6000).astype(float)
    ours = ks_sorted(np.sort(a), np.sort(b))
    ref = st.ks_2samp(a, b, method="asymp")
    assert ours[0] == pytest.approx(ref.statistic, abs=1e-9) and ours[1] == pytest.approx(ref.pvalue, abs=1e-9)


def test_js_distance_agrees_with_scipy_base_2():
    p = {"a": 0.2, "b": 0.3, "c": 0.5}
    q = {"a": 0.25, "b": 0.25, "c": 0.4, "d": 0.1}
    expected = jensenshannon([0.2, 0.3, 0.5, 0.0], [0.25, 0.25, 0.4, 0.1], base=2)
    assert js_distance(p, q) == pytest.approx(expected, abs=1e-12)
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_distance({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)  # disjoint supports: the maximum


def test_js_distance_is_zero_where_scipy_answers_nan():
    """No mass on a side (scipy: 0/0) and equality up to rounding (scipy: sqrt of a hair below 0) give 0."""
    assert js_distance({}, {}) == 0.0
    assert js_distance({"a": 0.0, "b": 0.0}, {"a": 0.4, "b": 0.6}) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        shares = rng.random(6)
        shares /= shares.sum()
        nudged = np.abs(shares + rng.normal(0, 1e-15, 6))
        distance = js_distance(dict(zip("abcdef", shares, strict=True)), dict(zip("abcdef", nudged, strict=True)))
        assert distance == pytest.approx(0.0, abs=1e-6)  # never nan


def test_chi2_agrees_with_scipy_contingency():
    ref = {"a": 200.0, "b": 300.0, "c": 500.0}
    cur = {"a": 260.0, "b": 280.0, "c": 460.0}
    stat, p = chi2_homogeneity(ref, cur)
    expected = st.chi2_contingency([[200, 300, 500], [260, 280, 460]], correction=False)
    assert stat == pytest.approx(expected.statistic, abs=1e-9) and p == pytest.approx(expected.pvalue, abs=1e-12)


def test_benjamini_hochberg_agrees_with_scipy():
    p = [0.01, 0.04, 0.03, 0.2, 0.0001, 0.5, 0.049]
    assert benjamini_hochberg(p) == pytest.approx(list(st.false_discovery_control(p, method="bh")), abs=1e-12)
    assert benjamini_hochberg([]) == [] and benjamini_hochberg([0.3]) == [0.3]


def test_benjamini_hochberg_refuses_a_nan_instead_of_spreading_it():
    with pytest.raises(ValueError, match="between 0 and 1"):
        benjamini_hochberg([0.01, float("nan")])


def test_psi_is_zero_for_identical_and_grows_with_shift():
    ref = [100] * 10
    assert psi(ref, ref) == pytest.approx(0.0)
    small = psi(ref, [110, 105, 100, 100, 100, 100, 100, 100, 95, 90])
    large = psi(ref, [300, 200, 100, 100, 100, 50, 50, 50, 25, 25])
    assert 0 < small < 0.1 < 0.25 < large


def test_two_proportion_test_agrees_with_a_chi2_on_the_2x2_table():
    p = two_proportion_p(30, 1000, 60, 1000)
    expected = st.chi2_contingency([[30, 970], [60, 940]], correction=False).pvalue
    assert p == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n1, n2, shift", [(5000, 200_000, 0.3), (300, 4000, 0.0), (5000, 5000, 2.0)])
def test_wasserstein_agrees_with_scipy(n1, n2, shift):
    rng = np.random.default_rng(n2)
    a = rng.lognormal(0, 1, n1)
    b = rng.lognormal(shift, 1, n2)
    assert wasserstein_sorted(np.sort(a), np.sort(b)) == pytest.approx(st.wasserstein_distance(a, b), rel=1e-9)


def test_ks_on_a_large_window_with_ties_agrees_with_scipy():
    rng = np.random.default_rng(3)
    a = np.round(rng.normal(0, 1, 5000), 1)
    b = np.round(rng.normal(0.05, 1, 300_000), 1)
    ours = ks_sorted(np.sort(a), np.sort(b))
    ref = st.ks_2samp(a, b, method="asymp")
    assert ours[0] == pytest.approx(ref.statistic, abs=1e-12) and ours[1] == pytest.approx(ref.pvalue, abs=1e-9)


def test_bin_counts_of_a_sorted_column_equal_the_profile_binning():
    rng = np.random.default_rng(5)
    ref = profile_numeric("x", rng.normal(0, 1, 20_000), n_bins=10)
    current = np.concatenate([rng.normal(0.2, 1.3, 50_000), ref.bin_edges[1:4]])  # values on the edges too
    assert bin_counts_sorted(np.sort(current), ref.bin_edges) == ref.bin_counts(current)


def test_a_numeric_features_ks_and_wasserstein_agree_with_scipy_on_the_reference_sample():
    """The whole path of a numeric feature: nulls dropped, one sort, KS and W1/sd against the stored sample."""
    rng = np.random.default_rng(7)
    reference = profile_numeric("x", rng.normal(0, 2, 40_000), n_bins=10, sample_size=5000, seed=1)
    profile = ReferenceProfile(dataset="d", dataset_schema_hash="h", created_at="2026-01-01T00:00:00Z", rows=40_000,
                               label_rate=0.5, numeric={"x": reference},
                               predictions=profile_predictions(rng.random(100), n_bins=10))
    current = rng.normal(0.3, 2.5, 60_000)
    current[::50] = np.nan
    result = feature_drift(profile, current, FeatureSpec(name="x", kind="numeric"))
    present = current[~np.isnan(current)]
    expected = st.ks_2samp(reference.sample, present, method="asymp")
    assert result.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, abs=1e-9)
    assert result.wasserstein_norm == pytest.approx(st.wasserstein_distance(reference.sample, present) / reference.std,
                                                    rel=1e-9)
    assert result.null_rate_current == pytest.approx(0.02)
