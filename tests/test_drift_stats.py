"""The drift statistics agree with scipy, and BH / PSI / JS behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
from scipy.spatial.distance import jensenshannon

from mlcycle.tasks.drift import benjamini_hochberg, chi2_homogeneity, js_distance, ks_2samp, psi, two_proportion_p


@pytest.mark.parametrize("n1, n2, shift", [(5000, 5000, 0.0), (5000, 20000, 0.05), (300, 7000, 0.3),
                                           (5000, 1000, 1.0), (2000, 2000, 0.0)])
def test_ks_statistic_and_p_value_agree_with_scipy(n1, n2, shift):
    rng = np.random.default_rng(n1 + n2)
    a = rng.normal(0, 1, n1)
    b = rng.normal(shift, 1, n2)
    ours = ks_2samp(a, b)
    ref = st.ks_2samp(a, b, method="asymp")
    assert ours[0] == pytest.approx(ref.statistic, abs=1e-9)
    assert ours[1] == pytest.approx(ref.pvalue, abs=1e-9)


def test_ks_with_ties_agrees_with_scipy():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 20, 4000).astype(float)
    b = rng.integers(0, 21, 6000).astype(float)
    ours = ks_2samp(a, b)
    ref = st.ks_2samp(a, b, method="asymp")
    assert ours[0] == pytest.approx(ref.statistic, abs=1e-9) and ours[1] == pytest.approx(ref.pvalue, abs=1e-9)


def test_js_distance_agrees_with_scipy_base_2():
    p = {"a": 0.2, "b": 0.3, "c": 0.5}
    q = {"a": 0.25, "b": 0.25, "c": 0.4, "d": 0.1}
    expected = jensenshannon([0.2, 0.3, 0.5, 0.0], [0.25, 0.25, 0.4, 0.1], base=2)
    assert js_distance(p, q) == pytest.approx(expected, abs=1e-12)
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-12)


def test_chi2_agrees_with_scipy_contingency():
    ref = {"a": 200.0, "b": 300.0, "c": 500.0}
    cur = {"a": 260.0, "b": 280.0, "c": 460.0}
    stat, p = chi2_homogeneity(ref, cur)
    expected = st.chi2_contingency([[200, 300, 500], [260, 280, 460]], correction=False)
    assert stat == pytest.approx(expected.statistic, abs=1e-9) and p == pytest.approx(expected.pvalue, abs=1e-12)


def test_benjamini_hochberg_agrees_with_scipy():
    p = [0.01, 0.04, 0.03, 0.2, 0.0001, 0.5, 0.049]
    assert benjamini_hochberg(p) == pytest.approx(list(st.false_discovery_control(p, method="bh")), abs=1e-12)


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
    from mlcycle.tasks.drift import wasserstein_normalized

    rng = np.random.default_rng(n2)
    a = rng.lognormal(0, 1, n1)
    b = rng.lognormal(shift, 1, n2)
    expected = st.wasserstein_distance(a, b) / 2.0
    assert wasserstein_normalized(a, b, reference_std=2.0) == pytest.approx(expected, rel=1e-9)


def test_ks_on_a_large_window_with_ties_agrees_with_scipy():
    rng = np.random.default_rng(3)
    a = np.round(rng.normal(0, 1, 5000), 1)
    b = np.round(rng.normal(0.05, 1, 300_000), 1)
    ours = ks_2samp(a, b)
    ref = st.ks_2samp(a, b, method="asymp")
    assert ours[0] == pytest.approx(ref.statistic, abs=1e-12) and ours[1] == pytest.approx(ref.pvalue, abs=1e-9)


def test_bin_counts_of_a_sorted_column_equal_the_profile_binning():
    from mlcycle.tasks.drift import bin_counts_sorted
    from mlcycle.tasks.profile import profile_numeric

    rng = np.random.default_rng(5)
    ref = profile_numeric("x", rng.normal(0, 1, 20_000), n_bins=10)
    current = np.concatenate([rng.normal(0.2, 1.3, 50_000), ref.bin_edges[1:4]])  # values on the edges too
    assert bin_counts_sorted(np.sort(current), ref.bin_edges) == ref.bin_counts(current)
