"""Calibration of every claim method in findings.py on synthetic data where the truth is known.

With no effect, a one-sided 95% rule may say "shown" at most 2.5% of the time; each rate is
checked against 2.5% plus three Monte-Carlo standard errors. With a clear effect the same rule
must say "shown" most of the time: a method that is never shown is blind, not calibrated.
(The percentile bootstrap these methods replace said "shown" for 11-15% of null data at n = 3.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlscope import findings as fd

REPS = 1200
NOMINAL = 0.025
LIMIT = NOMINAL + 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / REPS)  # 0.038 at 1,200 replicates


def noise(kind: str, rng: np.random.Generator, size):
    """Unit-scale noise: normal, or heavy-tailed (Student t with 3 degrees of freedom; Laplace)."""
    if kind == "normal":
        return rng.standard_normal(size)
    if kind == "t3":
        return rng.standard_t(3, size) / math.sqrt(3)  # unit variance
    return rng.laplace(0, 1 / math.sqrt(2), size)


def shown_rate(make, method, reps=REPS, seed=0):
    rng = np.random.default_rng(seed)
    return sum(method(make(rng))[2] == fd.SHOWN for _ in range(reps)) / reps


@pytest.mark.parametrize("kind", ["normal", "t3", "laplace"])
@pytest.mark.parametrize("n", [3, 5, 8])
def test_greater_null(kind, n):
    rate = shown_rate(
        lambda rng: 0.3 + noise(kind, rng, n), lambda d: fd.greater(d, margin=0.3), reps=REPS // 2 if n >= 6 else REPS
    )
    assert rate <= LIMIT + 0.01 * (n >= 6), rate


def test_greater_clear_effect():
    # 1.5 SD at n = 8: the paired t has power ~0.97 here; with the sign-flip check beside it
    assert shown_rate(lambda rng: 1.5 + rng.standard_normal(8), fd.greater, reps=300) > 0.8
    # 3 SD at n = 3 (the t-interval alone, which shows only effects above 2.48 SD)
    assert shown_rate(lambda rng: 3.0 + rng.standard_normal(3), fd.greater) > 0.4


@pytest.mark.parametrize("n", [3, 5, 8])
def test_greater_share_null(n):
    # A wins a coin-flip's share of seeds: "A wins in most seeds" is not shown
    rate = shown_rate(
        lambda rng: rng.standard_normal(n) * np.where(rng.random(n) < 0.9, 1, 30), lambda d: fd.greater(d, share=True)
    )
    assert rate <= LIMIT, rate


def test_greater_share_effect():
    assert shown_rate(lambda rng: 2 + rng.standard_normal(10), lambda d: fd.greater(d, share=True)) > 0.7


@pytest.mark.parametrize("kind", ["normal", "t3"])
@pytest.mark.parametrize("m", [3, 5, 8])
def test_trend_null(kind, m):
    x = [16, 64, 256, 1024, 4096, 512]
    rate = shown_rate(lambda rng: noise(kind, rng, (m, len(x))), lambda y: fd.trend(x, y, sign=-1))
    assert rate <= LIMIT, rate


def test_trend_steady_effect_over_three_seeds():
    x = np.arange(6)
    rate = shown_rate(lambda rng: x + 1.0 * rng.standard_normal((3, 6)), lambda y: fd.trend(x, y))
    assert rate > 0.8, rate
    # a perfect ordering of 3 models in all of 3 seeds: Page's exact p = 1/216
    s = fd.trend([0, 1, 2], [[1, 2, 3], [0.5, 0.6, 0.9], [3, 4, 8]])
    assert s.verdict == fd.SHOWN and s.p == pytest.approx(1 / 216)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_within_null_at_edge(n):
    # the true mean sits on the edge: "inside" must not be shown
    rate = shown_rate(lambda rng: 0.13 + 0.02 * rng.standard_normal(n), lambda v: fd.within(v, 0.07, 0.13))
    assert rate <= LIMIT, rate


def test_within_clear_effect():
    assert shown_rate(lambda rng: 0.10 + 0.005 * rng.standard_normal(5), lambda v: fd.within(v, 0.07, 0.13)) > 0.8


@pytest.mark.parametrize("n", [3, 8, 30, 100])
def test_at_least_null(n):
    rate = shown_rate(lambda rng: (rng.random(n) < 0.9).sum(), lambda k: fd.at_least(k, n, 0.9))
    assert rate <= LIMIT, rate
    rate = shown_rate(lambda rng: (rng.random(n) < 0.1).sum(), lambda k: fd.at_most(k, n, 0.1))
    assert rate <= LIMIT, rate


def test_at_least_effect():
    assert shown_rate(lambda rng: (rng.random(100) < 0.98).sum(), lambda k: fd.at_least(k, 100, 0.9)) > 0.8
    assert shown_rate(lambda rng: (rng.random(100) < 0.01).sum(), lambda k: fd.at_most(k, 100, 0.1)) > 0.8


@pytest.mark.parametrize("kind", ["normal", "t3"])
@pytest.mark.parametrize("n", [10, 100])
def test_correlation_null(kind, n):
    rate = shown_rate(lambda rng: noise(kind, rng, (2, n)), lambda xy: fd.correlation(*xy), reps=500)
    assert rate <= NOMINAL + 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / 500), rate


def test_correlation_effect():
    def make(rng):
        x = rng.standard_normal(100)
        return x, 0.6 * x + 0.8 * rng.standard_normal(100)

    assert shown_rate(make, lambda xy: fd.correlation(*xy), reps=100) > 0.9


def test_no_zero_width_interval_over_differing_seeds():
    # three seeds whose rho is the same but whose values differ: no interval, not [0.4, 0.4]
    s = fd.trend([1, 2, 3, 4, 5, 6], [[1, 3, 2, 6, 4, 5], [10, 30, 20, 60, 40, 50], [0, 2, 1, 5, 3, 4]])
    assert s.ci is None and s.value == pytest.approx(27 / 35)  # rho = 0.771 in each seed
    # differing differences: the t-interval has width
    lo, hi = fd.greater([0.4, 0.41, 0.42]).ci
    assert hi - lo > 0


def test_detectable_matches_the_known_thresholds():
    # STATISTICS.md: 3 seeds x 6 levels need a mean rho of 0.524; t needs 2.48 SD at n = 3
    assert fd.page_detectable(3, 6) == pytest.approx(0.524, abs=1e-3)
    a = np.array([0.0, 1.0, 2.0])
    assert fd.t_detectable(a) == pytest.approx(2.48 * a.std(ddof=1), rel=1e-2)
    assert fd.greater(a).reason.startswith("with n = 3")


def test_holm():
    assert fd.holm_survivors([0.001, 0.02, None, 0.01]) == [True, True, False, True]
    assert fd.holm_survivors([0.012, 0.02]) == [True, True]
    assert fd.holm_survivors([0.013, 0.02]) == [False, False]


def test_all_of_null_and_effect():
    # "every model": one part null, one part clearly true -> the composite is shown no more often
    # than its null part; both clearly true -> shown most of the time
    def both(rng, first):
        return fd.all_of([fd.greater(first + rng.standard_normal(5)), fd.greater(3 + rng.standard_normal(5))], ["a", "b"])

    assert shown_rate(lambda rng: rng, lambda rng: both(rng, 0.0)) <= LIMIT
    assert shown_rate(lambda rng: rng, lambda rng: both(rng, 3.0), reps=300) > 0.8
