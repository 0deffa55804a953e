"""Bootstrap intervals and McNemar's test against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from creason.evaluate.stats import MCNEMAR_EXACT_BELOW, bootstrap_ci, bootstrap_means, mcnemar, percentile_interval


def test_mcnemar_exact_binomial_by_hand():
    # A right only on 6 questions, B right only on 1, both right on 3, both wrong on 2.
    a = [1] * 6 + [0] + [1] * 3 + [0] * 2
    b = [0] * 6 + [1] + [1] * 3 + [0] * 2
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"], r["both"], r["neither"], r["n"]) == (6, 1, 3, 2, 7)
    # n = 7 discordant, min = 1: P(X <= 1) = (C(7,0) + C(7,1)) / 2^7 = 8 / 128; two-sided: 16 / 128
    assert r["p_value"] == pytest.approx(0.125) and r["method"] == "exact binomial"
    assert mcnemar(b, a)["p_value"] == pytest.approx(0.125)  # symmetric


def test_mcnemar_exact_balanced_is_one_and_none_discordant_is_one():
    # 3 vs 3: 2 * P(X <= 3), X ~ Bin(6, 1/2) = 2 * (1 + 6 + 15 + 20) / 64 = 84 / 64 -> capped at 1
    assert mcnemar([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1])["p_value"] == 1.0
    r = mcnemar([1, 0, 1], [1, 0, 1])
    assert r["p_value"] == 1.0 and r["n"] == 0


def test_mcnemar_chi_square_with_continuity_correction_by_hand():
    # 25 vs 10 discordant (n = 35 >= 25): chi2 = (|25 - 10| - 1)^2 / 35 = 196 / 35 = 5.6
    # p = P(chi2_1 > 5.6) = P(|Z| > sqrt(5.6) = 2.3664) = 2 * (1 - Phi(2.3664)) = 0.017960...
    a = np.r_[np.ones(25), np.zeros(10), np.ones(5)]
    b = np.r_[np.zeros(25), np.ones(10), np.ones(5)]
    r = mcnemar(a, b)
    assert r["method"] == "chi-square with continuity correction"
    assert r["statistic"] == pytest.approx(5.6)
    assert r["p_value"] == pytest.approx(0.0179605, abs=1e-6)


def test_mcnemar_switches_method_at_the_documented_threshold():
    just_below = mcnemar([1] * (MCNEMAR_EXACT_BELOW - 1), [0] * (MCNEMAR_EXACT_BELOW - 1))
    at = mcnemar([1] * MCNEMAR_EXACT_BELOW, [0] * MCNEMAR_EXACT_BELOW)
    assert just_below["method"] == "exact binomial" and at["method"].startswith("chi-square")
    # 24 vs 0: 2 / 2^24; 25 vs 0: chi2 = 24^2 / 25 = 23.04
    assert just_below["p_value"] == pytest.approx(2 / 2**24)
    assert at["statistic"] == pytest.approx(23.04)


def test_mcnemar_agrees_with_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (10, 40, 200):
        a, b = rng.random(n) < 0.6, rng.random(n) < 0.5
        r = mcnemar(a, b)
        if r["method"] == "exact binomial":
            expected = scipy_stats.binomtest(r["a_only"], r["n"], 0.5).pvalue
        else:
            expected = scipy_stats.chi2.sf(r["statistic"], 1)
        assert r["p_value"] == pytest.approx(expected, rel=1e-9)


def test_percentile_interval_by_hand():
    samples = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    # quantile 0.1 of 5 sorted values: position 0.1 * 4 = 0.4 -> 0.4; quantile 0.9: 3.6
    assert percentile_interval(samples, 0.8) == pytest.approx((0.4, 3.6))
    assert all(math.isnan(x) for x in percentile_interval(np.array([]), 0.95))


def test_bootstrap_of_two_values_by_hand():
    # Resampling [0, 1] twice: mean 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4.
    means = bootstrap_means(np.array([0.0, 1.0]), 20000, seed=1)
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}
    assert [np.mean(means == v) for v in (0.0, 0.5, 1.0)] == pytest.approx([0.25, 0.5, 0.25], abs=0.015)
    assert bootstrap_ci([0, 1], 20000, 0.95, seed=1) == (0.0, 1.0)
    # The 30% and 70% quantiles both fall in the 0.5 mass (0.25 < 0.3 and 0.75 > 0.7).
    assert bootstrap_ci([0, 1], 20000, 0.4, seed=1) == (0.5, 0.5)


def test_bootstrap_degenerate_and_empty():
    assert bootstrap_ci([1, 1, 1, 1]) == (1.0, 1.0)
    assert bootstrap_ci(np.zeros(7)) == (0.0, 0.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_bootstrap_is_seeded():
    values = np.random.default_rng(3).random(50) < 0.4
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)


def test_counts_bootstrap_matches_index_resampling():
    """The multinomial shortcut has the distribution of the obvious index resampling."""
    values = (np.random.default_rng(0).random(200) < 0.3).astype(float)
    fast = bootstrap_means(values, 20000, seed=0)
    rng = np.random.default_rng(1)
    slow = np.array([values[rng.integers(0, values.size, values.size)].mean() for _ in range(20000)])
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.002)
    assert fast.std() == pytest.approx(slow.std(), rel=0.03)
    # and both match the binomial standard error sqrt(p (1 - p) / n)
    p = values.mean()
    assert fast.std() == pytest.approx(math.sqrt(p * (1 - p) / values.size), rel=0.03)
