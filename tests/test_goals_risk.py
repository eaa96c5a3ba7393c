"""Goals, exact risk, Bayes outputs and Monte Carlo risk: claims.md E1-E4, brute force on hundreds
of toys, and confidence-interval coverage of the estimators."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from test_decoders import random_toys

from core.decoders import Beam, Fixed, Greedy, Lookahead, Sampling, sample_many
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.risk import (
    Estimate,
    approx_bayes_output,
    bayes_output,
    estimate_risk,
    exact_risk,
    max_window_sum,
    risk_table,
    truncated_mass,
)
from core.toy import PRESETS, TableDistribution, output_distribution, random_table

A, B = 0, 1
KL, TV = DistributionMatch("kl"), DistributionMatch("tv")


# ---- claims.md ------------------------------------------------------------------------------------


def test_e1_greedy_mode_and_hamming_optimum():
    e1 = PRESETS["E1"].build()
    assert Greedy().decode(e1, [], 2).tokens == (A, A)
    assert exact_risk(ZeroOne(), e1, Greedy(), 2) == pytest.approx(0.67)
    assert exact_risk(Hamming(), e1, Greedy(), 2) == pytest.approx(0.71)
    assert Lookahead(2).decode(e1, [], 2).tokens == bayes_output(ZeroOne(), e1, 2) == (B, A)
    assert exact_risk(ZeroOne(), e1, Lookahead(2), 2) == pytest.approx(0.64)
    assert exact_risk(Hamming(), e1, Lookahead(2), 2) == pytest.approx(0.91)
    assert e1.window_marginals(1)[:, A] == pytest.approx([0.6, 0.69])
    assert bayes_output(Hamming(), e1, 2) == (A, A)
    # no single deterministic output is optimal for both goals
    risks = {y: (exact_risk(ZeroOne(), e1, Fixed(y), 2), exact_risk(Hamming(), e1, Fixed(y), 2))
             for y in itertools.product((A, B), repeat=2)}
    best01, best_ham = min(r[0] for r in risks.values()), min(r[1] for r in risks.values())
    assert not any(r == (pytest.approx(best01), pytest.approx(best_ham)) for r in risks.values())


def test_e2_three_different_winners_and_temperature():
    e2 = PRESETS["E2"].build()
    assert exact_risk(ZeroOne(), e2, Greedy(), 2) == pytest.approx(0.67)
    assert exact_risk(Hamming(), e2, Greedy(), 2) == pytest.approx(1.07)
    assert bayes_output(ZeroOne(), e2, 2) == (B, B)
    assert exact_risk(ZeroOne(), e2, Fixed((B, B)), 2) == pytest.approx(0.60)
    assert bayes_output(Hamming(), e2, 2) == (A, B)
    assert exact_risk(Hamming(), e2, Fixed((A, B)), 2) == pytest.approx(0.73)
    for tau, risk in [(0.5, 0.66512), (1.0, 0.6582), (2.0, 0.65422)]:
        assert exact_risk(ZeroOne(), e2, Sampling(temperature=tau), 2) == pytest.approx(risk, abs=5e-6)


def test_e3_sampling_matches_the_distribution():
    e1 = PRESETS["E1"].build()
    assert exact_risk(KL, e1, Sampling(), 2) == pytest.approx(0.0, abs=1e-12)
    assert exact_risk(TV, e1, Sampling(), 2) == pytest.approx(0.0, abs=1e-12)
    probs = [p for _, p in e1.support()]
    assert exact_risk(ZeroOne(), e1, Sampling(), 2) == pytest.approx(1 - sum(p * p for p in probs)) == 0.687
    assert exact_risk(KL, e1, Greedy(), 2) == math.inf
    assert exact_risk(TV, e1, Greedy(), 2) == pytest.approx(0.67)


def test_e4_per_token_temperature_breaks_distribution_matching():
    e1 = PRESETS["E1"].build()
    assert exact_risk(KL, e1, Sampling(temperature=0.5), 2) == pytest.approx(0.07270, abs=5e-6)
    assert exact_risk(TV, e1, Sampling(temperature=0.5), 2) == pytest.approx(0.09231, abs=5e-6)
    assert exact_risk(ZeroOne(), e1, Sampling(temperature=1e-3), 2) == pytest.approx(0.67, abs=1e-6)  # -> greedy


# ---- goals ----------------------------------------------------------------------------------------


def test_losses():
    assert ZeroOne().loss((0, 1), (0, 1)) == 0 and ZeroOne().loss((0, 1), (1, 1)) == 1
    assert Hamming().loss((0, 1, 1), (0, 0, 1)) == 1
    assert NGramHamming(2).loss((0, 1, 1), (0, 0, 1)) == 2  # windows 01|00 and 11|01
    assert NGramHamming(3).loss((0, 1, 1), (0, 0, 1)) == ZeroOne().loss((0, 1, 1), (0, 0, 1)) == 1
    assert NGramHamming(1).loss((2, 1, 0), (0, 1, 2)) == Hamming().loss((2, 1, 0), (0, 1, 2)) == 2
    assert KL.between({(0,): 0.5, (1,): 0.5}, {(0,): 1.0}) == math.inf
    assert TV.between({(0,): 0.5, (1,): 0.5}, {(0,): 1.0}) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: NGramHamming(0), "n must be an integer >= 1, got 0"),
        (lambda: NGramHamming(2).window(1), r"n must be <= steps \(1\), got 2"),
        (lambda: DistributionMatch("js"), "divergence must be 'kl' or 'tv', got 'js'"),
        (lambda: Hamming().loss((0,), (0, 1)), "same length"),
        (lambda: bayes_output(KL, PRESETS["E1"].build(), 2), "the Bayes decoder is P itself"),
        (lambda: exact_risk(ZeroOne(), PRESETS["E1"].build(), Greedy(), 3), "steps must be an integer in 1..2"),
        (lambda: estimate_risk(Hamming(), PRESETS["E1"].build(), Greedy(), [], 2, 1, 0),
         "n_samples must be an integer >= 2, got 1"),
        (lambda: estimate_risk(Hamming(), PRESETS["E1"].build(), Greedy(), [], 2, 10, None),
         "seed must be an integer, got None"),
        (lambda: estimate_risk(Hamming(), PRESETS["E1"].build(), Greedy(), [], 2, 10, 0,
                               truth_samples=sample_many(PRESETS["E1"].build(), [], 2, 5, 0)),
         r"truth_samples must hold \[n_samples, steps\] = \[10, 2\] tokens, got \[5, 2\]"),
    ],
)
def test_bad_parameters_raise_precise_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---- brute force on random toys -----------------------------------------------------------------


def brute_force_risks(goal, toy, steps: int) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Every output of ``steps`` tokens and its risk Σ_y P(y) ℓ(ŷ, y) under P's first ``steps`` tokens."""
    seqs, probs = toy.joint()
    seqs = seqs[:, :steps]
    outputs = np.array(list(itertools.product(range(toy.vocab_size), repeat=steps)))
    n = goal.window(steps)
    loss = sum(np.any(outputs[:, None, t : t + n] != seqs[None, :, t : t + n], axis=2)
               for t in range(steps - n + 1))
    return [tuple(o) for o in outputs.tolist()], loss @ probs


TOYS = random_toys(320, seed=1)


def goals_for(steps: int):
    return [ZeroOne(), Hamming()] + [NGramHamming(k) for k in range(2, steps)]


def test_bayes_output_is_the_argmin_over_all_outputs_on_320_toys():
    for toy in TOYS:
        for steps in {toy.length, max(1, toy.length - 1)}:
            for goal in goals_for(steps):
                outputs, risks = brute_force_risks(goal, toy, steps)
                best = bayes_output(goal, toy, steps)
                assert risks[outputs.index(best)] == pytest.approx(risks.min(), abs=1e-12), (toy, goal, steps)
                assert exact_risk(goal, toy, Fixed(best), steps) == pytest.approx(risks.min(), abs=1e-12)


def test_exact_risk_of_decoders_equals_brute_force():
    for toy in TOYS[:120]:
        steps = toy.length
        for goal in goals_for(steps):
            outputs, risks = brute_force_risks(goal, toy, steps)
            for decoder in (Greedy(), Beam(2), Sampling(0.7), Sampling(1.3, top_k=2)):
                r = output_distribution(decoder, toy, steps)
                expected = sum(q * risks[outputs.index(y)] for y, q in r.items())
                assert exact_risk(goal, toy, decoder, steps) == pytest.approx(expected, abs=1e-12)
        p = dict(toy.support())
        greedy = Greedy().decode(toy, [], steps).tokens
        assert exact_risk(TV, toy, Greedy(), steps) == pytest.approx(1 - p.get(greedy, 0.0), abs=1e-12)
        assert exact_risk(KL, toy, Greedy(), steps) == (0.0 if p.get(greedy) == 1.0 else math.inf)


def test_max_window_sum_against_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k, n, w = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
        scores = rng.integers(0, 3, size=(2, w, k**n)).astype(float)  # small integers: many exact ties
        got = max_window_sum(scores, k, n)
        for b in range(2):
            best = max(itertools.product(range(k), repeat=w + n - 1), key=lambda y, b=b: (
                sum(scores[b, t, np.ravel_multi_index(y[t : t + n], (k,) * n)] for t in range(w)),
                [-v for v in y]))  # the highest total, then the lexicographically smallest
            assert tuple(got[b]) == best


# ---- Monte Carlo --------------------------------------------------------------------------------


def test_estimates_cover_the_exact_risk():
    toy = random_table(3, 3, seed=3, alpha=0.6)
    decoders = [Greedy(), Lookahead(2), Beam(2), Sampling(0.7), Sampling(top_k=2), Sampling(0.9, top_p=0.8)]
    for goal in [ZeroOne(), Hamming(), NGramHamming(2), KL, TV]:
        for decoder in decoders:
            exact = exact_risk(goal, toy, decoder, 3)
            output = None if decoder.is_random else decoder.decode(toy, [], 3)
            first = estimate_risk(goal, toy, decoder, [], 3, 200, 0, output=output)
            if first.exact:  # 0-1 / TV of a fixed output, KL of a fixed output or a truncating sampler
                assert first.mean == pytest.approx(exact, abs=1e-12) and first.stderr == 0
                continue
            covered = 0
            for seed in range(100):
                e = estimate_risk(goal, toy, decoder, [], 3, 200, seed, output=output)
                covered += e.ci_low - 1e-12 <= exact <= e.ci_high + 1e-12
            assert covered >= 90, (goal, decoder, covered)


def test_estimates_are_reproducible_and_can_share_truth_samples():
    toy = random_table(3, 4, seed=8)
    truth = sample_many(toy, [], 4, 300, seed=21)
    for goal in (Hamming(), NGramHamming(2), KL, TV):
        for decoder in (Greedy(), Sampling(0.8)):
            a = estimate_risk(goal, toy, decoder, [], 4, 300, 21)
            assert a == estimate_risk(goal, toy, decoder, [], 4, 300, 21)
            assert a == estimate_risk(goal, toy, decoder, [], 4, 300, 21, truth_samples=truth)
            if isinstance(goal, DistributionMatch) and not decoder.is_random:  # exact: ∞, 1 − P(ŷ)
                assert a.exact and a.mean == exact_risk(goal, toy, decoder, 4)
            else:
                assert a.n == 300 and not a.exact and a.ci_low <= a.mean <= a.ci_high


def test_exact_estimates_and_truncation():
    e1 = PRESETS["E1"].build()
    e = estimate_risk(ZeroOne(), e1, Greedy(), [], 2, 50, 0)
    assert e.exact and e.mean == pytest.approx(0.67) and e.ci_low == e.ci_high == e.mean
    assert estimate_risk(TV, e1, Lookahead(2), [], 2, 50, 0).mean == pytest.approx(0.64)
    assert estimate_risk(KL, e1, Greedy(), [], 2, 50, 0).mean == math.inf
    cut = estimate_risk(KL, e1, Sampling(top_k=1), [], 2, 50, 0)
    assert cut.exact and cut.mean == math.inf and "cut off" in cut.note
    identity = estimate_risk(KL, e1, Sampling(), [], 2, 50, 0)
    assert identity.mean == 0.0 and identity.stderr == 0.0
    # the truth's mass outside a top-p sampler's support
    toy = random_table(3, 3, seed=5)
    sampler = Sampling(top_p=0.6)
    r = output_distribution(sampler, toy, 3)
    outside = sum(p for y, p in toy.support() if y not in r)
    covered = sum(truncated_mass(toy, sampler, [], 3, 200, s).ci_low - 1e-12 <= outside
                  <= truncated_mass(toy, sampler, [], 3, 200, s).ci_high + 1e-12 for s in range(30))
    assert covered >= 25


def test_approximate_bayes_outputs_on_toys():
    sat = PRESETS["SAT trap"].build()
    res = approx_bayes_output(ZeroOne(), sat, [], 8, 100, 0)
    assert res.exact and res.tokens == bayes_output(ZeroOne(), sat, 8) == (1,) * 8
    cut = approx_bayes_output(ZeroOne(), sat, [], 8, 100, 0, node_budget=2)
    assert not cut.exact and "budget of 2 nodes" in cut.method
    assert sat.prob(cut.tokens) >= sat.prob(Beam(8).decode(sat, [], 8).tokens)
    e1 = PRESETS["E1"].build()
    assert approx_bayes_output(Hamming(), e1, [], 2, 400, 0).tokens == bayes_output(Hamming(), e1, 2)
    toy = TableDistribution({(0, 1, 2): 0.4, (1, 1, 2): 0.1, (2, 0, 0): 0.3, (2, 2, 2): 0.2}, 3)
    for goal in (Hamming(), NGramHamming(2)):
        approx = approx_bayes_output(goal, toy, [], 3, 2000, 1)
        assert not approx.exact and approx.tokens == bayes_output(goal, toy, 3)
    draw = approx_bayes_output(KL, e1, [], 2, 10, 3)
    assert draw.exact and draw.tokens in dict(e1.support())


def test_risk_table_rows():
    rows = risk_table([ZeroOne(), Hamming(), KL], PRESETS["E1"].build(), [Greedy(), Sampling()], 2)
    assert [r["decoder"] for r in rows] == ["greedy", "sampling (τ=1)", "Bayes output (0-1)", "Bayes output (Hamming)"]
    assert rows[0]["output"] == (A, A) and rows[1]["output"] is None
    assert rows[0]["0-1"] == pytest.approx(0.67) and rows[1]["KL(P‖r)"] == pytest.approx(0.0, abs=1e-12)
    assert rows[2]["output"] == (B, A) and rows[2]["0-1"] == pytest.approx(0.64)
    assert rows[3]["Hamming"] == pytest.approx(0.71)


def test_monte_carlo_on_the_engine(tiny_engine):
    prompt = tiny_engine.encode("A dog")
    greedy = Greedy().decode(tiny_engine, prompt, 4)
    e = estimate_risk(ZeroOne(), tiny_engine, Greedy(), prompt, 4, 16, 0, output=greedy)
    assert e.exact and e.mean == pytest.approx(1 - math.exp(greedy.logprob))
    truth = sample_many(tiny_engine, prompt, 4, 16, seed=0)
    ham = estimate_risk(Hamming(), tiny_engine, Greedy(), prompt, 4, 16, 0, truth_samples=truth, output=greedy)
    assert 3.9 < ham.mean <= 4.0 and ham.n == 16  # a random model: each token is a ~1/8192 guess
    two = estimate_risk(NGramHamming(2), tiny_engine, Sampling(0.8), prompt, 4, 16, 0, truth_samples=truth)
    assert 2.9 < two.mean <= 3.0
    assert estimate_risk(KL, tiny_engine, Sampling(), prompt, 4, 16, 0).mean == 0.0
    assert estimate_risk(KL, tiny_engine, Sampling(top_k=100), prompt, 4, 16, 0).mean == math.inf
    tv = estimate_risk(TV, tiny_engine, Sampling(0.9), prompt, 4, 16, 0, truth_samples=truth)
    assert 0 <= tv.mean <= 1 and isinstance(tv, Estimate)
    cut = approx_bayes_output(ZeroOne(), tiny_engine, prompt, 3, 16, 0, node_budget=8)
    assert not cut.exact and len(cut.tokens) == 3
    ham_bayes = approx_bayes_output(Hamming(), tiny_engine, prompt, 3, 16, 0)
    assert not ham_bayes.exact and len(ham_bayes.tokens) == 3
    with pytest.raises(ValueError, match="enumerable toy"):
        exact_risk(ZeroOne(), tiny_engine, Greedy(), 3)


def test_the_rollout_gathers_what_teacher_forcing_gives(tiny_engine):
    """The one truth walk keeps p(target_s | Y_i,<s) for every target and row (the N-gram and Hamming
    estimators' only input besides the tokens); it must equal scoring each prefix from scratch."""
    from core.rollout import path_targets, roll_out

    prompt = tiny_engine.encode("The dog ran")
    steps, n = 5, 4
    path = Greedy().decode(tiny_engine, prompt, steps)
    rollout = roll_out(tiny_engine, prompt, steps, n, 3, targets={"greedy": path_targets([path], steps, None)})
    assert torch.equal(rollout.tokens, sample_many(tiny_engine, prompt, steps, n, seed=3).tokens)
    rows = rollout.tokens.tolist()
    for i in range(n):
        lp = tiny_engine.logprobs([prompt + rows[i][:t] for t in range(steps)])
        want = lp[torch.arange(steps), list(path.tokens)].exp()
        torch.testing.assert_close(rollout.hits[:, i, 0], want, rtol=1e-4, atol=1e-7)
        partner = int(rollout.partner()[i])
        torch.testing.assert_close(rollout.pair_hits[:, i], lp[torch.arange(steps), rows[partner]].exp(),
                                   rtol=1e-4, atol=1e-7)


def test_divergence_fast_paths_equal_the_samplers_full_warp(tiny_engine):
    """Pure temperature, top-k and top-p samplers take O(V) shortcuts over the truth rows (no sort);
    the same samplers spelled so that they go through ``Sampling.warp`` (top_p=1.0 or top_k=V change
    nothing) give the same estimates (to float32 rounding: the full warp runs in the model's float32,
    the temperature shortcut in float64)."""
    prompt = tiny_engine.encode("The dog ran")
    cases = [(Sampling(0.7), Sampling(0.7, top_p=1.0)), (Sampling(top_k=2), Sampling(top_k=2, top_p=1.0)),
             (Sampling(top_p=0.6), Sampling(top_p=0.6, top_k=10**6))]
    for model, pre, steps in [(random_table(3, 4, seed=2), [], 4), (tiny_engine, prompt, 3)]:
        for fast, full in cases:
            for goal in (KL, TV):
                a = estimate_risk(goal, model, fast, pre, steps, 64, 4)
                b = estimate_risk(goal, model, full, pre, steps, 64, 4)
                assert a.mean == pytest.approx(b.mean, rel=1e-6, abs=1e-5), (goal, fast)
                assert a.ci_high == pytest.approx(b.ci_high, rel=1e-6, abs=1e-5) and a.exact == b.exact
            assert truncated_mass(model, fast, pre, steps, 64, 4) == truncated_mass(model, full, pre, steps, 64, 4)
