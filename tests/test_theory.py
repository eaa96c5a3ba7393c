"""The greedy-optimality sweep over random Markov chains: speed, trend, and per-chain agreement with
the decoders and Bayes outputs of core.decoders / core.risk."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from core.decoders import Fixed, Greedy
from core.goals import Hamming, ZeroOne
from core.risk import bayes_output, exact_risk
from core.theory import (
    METRICS,
    TOLERANCE,
    greedy_optimality_sweep,
    greedy_paths,
    hamming_risks,
    modes,
    path_logprobs,
    random_chains,
    state_marginals,
    wilson_interval,
)
from core.toy import MarkovChain


def test_sweep_grid_is_fast_and_seeded():
    start = time.perf_counter()
    sweep = greedy_optimality_sweep(n_states=(2, 3, 4, 6, 8), alphas=(0.1, 0.3, 1, 3, 10, 30),
                                    n_chains=200, length=10, seed=0)
    assert time.perf_counter() - start < 10.0
    assert sweep.greedy_is_hamming_optimal.shape == sweep.greedy_is_mode.shape == (5, 6)
    assert len(sweep.rows()) == 30 and set(sweep.rows()[0]) >= {"n_states", "alpha", "greedy is a mode"}
    again = greedy_optimality_sweep(seed=0)
    assert np.array_equal(sweep.greedy_is_hamming_optimal, again.greedy_is_hamming_optimal)
    assert not np.array_equal(sweep.greedy_is_mode, greedy_optimality_sweep(seed=1).greedy_is_mode)
    assert np.all((sweep.greedy_is_mode >= 0) & (sweep.greedy_is_mode <= 1))


def test_greedy_is_less_often_hamming_optimal_as_states_and_alpha_grow():
    sweep = greedy_optimality_sweep(n_chains=400, seed=3)
    frac = sweep.greedy_is_hamming_optimal
    assert np.all(np.diff(frac.mean(axis=1)) < 0)  # more states: rarer, averaged over alpha
    assert frac[:, 0].mean() > frac[:, -1].mean() + 0.2  # flatter rows (large alpha): rarer
    assert frac[0, 0] > 0.8 and frac[-1, -1] < 0.2


def test_vectorised_paths_agree_with_the_per_chain_api():
    rng = np.random.default_rng(5)
    for v, alpha in [(2, 0.3), (3, 1.0), (4, 3.0), (5, 0.5)]:
        init, trans = random_chains(v, alpha, 25, rng)
        greedy, mode = greedy_paths(init, trans, 6), modes(init, trans, 6)
        marg = state_marginals(init, trans, 6)
        greedy_risk, best_risk = hamming_risks(marg, greedy), hamming_risks(marg, marg.argmax(axis=2))
        greedy_lp, mode_lp = path_logprobs(init, trans, greedy), path_logprobs(init, trans, mode)
        for c in range(25):
            chain = MarkovChain(init[c], trans[c], 6)
            assert tuple(greedy[c]) == Greedy().decode(chain, [], 6).tokens
            assert np.allclose(marg[c], chain.state_marginals())
            mode_c, ham_c = bayes_output(ZeroOne(), chain, 6), bayes_output(Hamming(), chain, 6)
            assert mode_lp[c] == pytest.approx(math.log(chain.prob(mode_c)), rel=1e-12)
            assert greedy_risk[c] == pytest.approx(exact_risk(Hamming(), chain, Greedy(), 6), abs=1e-12)
            assert best_risk[c] == pytest.approx(exact_risk(Hamming(), chain, Fixed(ham_c), 6), abs=1e-12)
            # the sweep's verdicts are the per-chain ones
            assert (greedy_risk[c] <= best_risk[c] + TOLERANCE) == (
                exact_risk(Hamming(), chain, Greedy(), 6) <= exact_risk(Hamming(), chain, Fixed(ham_c), 6) + TOLERANCE)
            assert (greedy_lp[c] >= mode_lp[c] - TOLERANCE) == (
                chain.prob(greedy[c]) >= chain.prob(mode_c) * math.exp(-TOLERANCE))


def test_sweep_validation():
    with pytest.raises(ValueError, match="alphas must be a non-empty list of numbers > 0 and finite"):
        greedy_optimality_sweep(alphas=(0.0,))
    with pytest.raises(ValueError, match="n_chains must be an integer >= 1, got 0"):
        greedy_optimality_sweep(n_chains=0)


def test_wilson_interval_values_and_exact_coverage():
    low, high = wilson_interval([0, 5, 10], 10)
    assert low == pytest.approx([0.0, 0.236593, 0.722467], abs=1e-6)
    assert high == pytest.approx([0.277533, 0.763407, 1.0], abs=1e-6)
    for n in (50, 200):  # coverage computed exactly from the binomial distribution
        k = np.arange(n + 1)
        low, high = wilson_interval(k, n)
        for p in (0.05, 0.3, 0.5, 0.9):
            covered = (low <= p) & (p <= high)
            assert stats.binom.pmf(k, n, p)[covered].sum() > 0.92
    with pytest.raises(ValueError, match="successes must be counts from 0 to n = 10"):
        wilson_interval([11], 10)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        wilson_interval([0], 0)


def test_sweep_reports_intervals_and_the_number_of_chains():
    sweep = greedy_optimality_sweep(n_states=(2, 4), alphas=(0.1, 10.0), n_chains=60, length=6, seed=2)
    for field, name in METRICS.items():
        frac = getattr(sweep, field)
        counts = sweep.counts(field)
        assert np.array_equal(counts / 60, frac)
        low, high = sweep.interval(field)
        assert np.all((low <= frac) & (frac <= high)) and np.all(high - low > 0.02)
        row = sweep.rows()[1]
        assert row["n_chains"] == 60 and row[name] == frac[0, 1]
        assert (row[f"{name} (95% low)"], row[f"{name} (95% high)"]) == (low[0, 1], high[0, 1])
    with pytest.raises(ValueError, match="metric must be one of"):
        sweep.counts("greedy is a mode")
