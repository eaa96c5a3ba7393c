"""core.estimators: Student-t intervals clipped to the loss's range, and the two-sample U-statistic
interval of a random decoder's draws against the truth rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from core.estimators import SMALL_N, Z95, Estimate, t95


def test_t_quantiles():
    assert t95(7) == pytest.approx(2.364624, abs=1e-6)  # the n = 16 regret on fold B: 8 rows
    assert t95(15) == pytest.approx(2.131450, abs=1e-6)
    assert t95(math.inf) == Z95 and t95(1e6) == pytest.approx(Z95, abs=1e-5)
    with pytest.raises(ValueError, match="df must be > 0"):
        t95(0)


def test_from_values_uses_student_t_and_clips():
    v = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.2, 0.9, 0.3])
    e = Estimate.from_values(v)
    se = v.std(ddof=1) / math.sqrt(len(v))
    assert e.mean == pytest.approx(v.mean()) and e.stderr == pytest.approx(se) and e.n == 8 and e.df == 7
    assert e.ci_high - e.mean == pytest.approx(stats.t.ppf(0.975, 7) * se)
    clipped = Estimate.from_values(v, bounds=(0.3, 0.6))
    assert clipped.ci_low == 0.3 and clipped.ci_high == 0.6 and clipped.mean == pytest.approx(v.mean())
    near_zero = Estimate.from_values([0.0, 0.0, 0.0, 0.3], bounds=(0.0, 4.0))
    assert near_zero.ci_low == 0.0 and near_zero.ci_high > near_zero.mean
    one = Estimate.from_values([0.5], bounds=(0.0, 1.0))
    assert (one.ci_low, one.ci_high) == (0.0, 1.0) and one.stderr == math.inf
    constant = Estimate.from_values([2.0] * 5)
    assert constant.ci_low == constant.ci_high == 2.0 and not constant.exact
    assert Estimate.from_values([1.0, math.inf]).mean == math.inf
    assert e.small and not Estimate.from_values(np.arange(SMALL_N)).small
    assert Estimate.exact_value(0.3).describe_n() == "exact" and e.describe_n() == "n = 8"


def test_from_kernel_is_the_two_sample_u_statistic():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(40, 6)) + rng.normal(size=(1, 6))
    e = Estimate.from_kernel(k)
    a, b = k.mean(1).var(ddof=1) / 40, k.mean(0).var(ddof=1) / 6
    df = (a + b) ** 2 / (a * a / 39 + b * b / 5)
    assert e.mean == pytest.approx(k.mean()) and e.stderr == pytest.approx(math.sqrt(a + b))
    assert e.df == pytest.approx(df) and e.n == 40 and e.n_draws == 6
    assert e.ci_high - e.mean == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(a + b))
    assert e.describe_n() == "n = 40 rows × 6 draws"
    column = Estimate.from_kernel(k[:, :1])
    assert column == Estimate.from_values(k[:, 0])  # one fixed output: the rows' own interval
    constant_rows = Estimate.from_kernel(np.tile(rng.normal(size=(1, 9)), (30, 1)))  # 0-1 of draws
    assert constant_rows.df == pytest.approx(8)
    with pytest.raises(ValueError, match="kernel must be a non-empty"):
        Estimate.from_kernel(np.zeros(3))


def test_two_sample_interval_covers_on_simulated_kernels():
    """K[i, j] = a_i + b_j + e_ij with skewed parts: the interval covers the true mean ~95% (a little
    above: the variance estimate overstates Var(U) by Var(K)/(nm))."""
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(2000):
        a = rng.exponential(1.0, size=(64, 1))
        b = rng.normal(0.0, 0.5, size=(1, 16))
        k = a + b + rng.normal(0.0, 1.0, size=(64, 16))
        e = Estimate.from_kernel(k)
        covered += e.ci_low <= 1.0 <= e.ci_high
    assert 0.93 <= covered / 2000 <= 0.975
