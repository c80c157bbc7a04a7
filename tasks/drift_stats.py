"""The two-sample statistics behind drift decisions, as plain functions of arrays and counts.

PSI on shared bins (empty bins smoothed to ``_EPS``), the Kolmogorov-Smirnov statistic and asymptotic
p-value and the Wasserstein-1 distance from sorted samples (one sort per column serves all three), the
Jensen-Shannon distance (scipy), the chi-square test of homogeneity, the two-proportion z-test, and
Benjamini-Hochberg (scipy). Why each is used, and the thresholds, are explained in tasks/drift.py; each
function is tested against scipy (tests/test_drift_stats.py).
"""

from __future__ import annotations

import math

import numpy as np

# Smoothing for PSI on empty bins: a bin with zero rows counts as this share instead of 0.
_EPS = 1e-4




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


def relative_to_sd(a: np.ndarray, reference_std: float | None) -> float:
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
