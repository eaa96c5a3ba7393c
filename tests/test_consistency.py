"""Consistency curves (core.consistency): models q approaching the truth p, and the exact risk under p
of a decoder run on q, checked against exact_risk (q = p) and against brute force with the goals' own
losses; the learned family's band is the stated t-interval; limits reproduce claims.md E1-E4."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from core.consistency import (
    LEARNED_GRID,
    MIXTURE_GRID,
    PrefixModel,
    bayes_risk,
    bayes_rows,
    data_seed,
    decode_outputs,
    decoded_risk,
    default_grid,
    draw_seed,
    grid,
    is_enumerable,
    learned_model,
    mixture_model,
    risk_curve,
    risk_row,
    risk_under,
)
from core.decoders import Beam, Greedy, Lookahead, Sampling
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.protocol import pad_after_eos
from core.risk import exact_risk
from core.toy import (
    PRESETS,
    MarkovChain,
    TableDistribution,
    binary_tree,
    output_distribution,
    random_markov_chain,
    random_table,
)

KL, TV = DistributionMatch("kl"), DistributionMatch("tv")
DECODERS = [Greedy(), Lookahead(2), Beam(2), Sampling(), Sampling(temperature=0.5), Sampling(top_k=1),
            Sampling(top_p=0.8)]


def toys():
    """Tables (one sparse), Markov chains and binary trees without exact ties, plus E1 and E2."""
    return [random_table(2, 3, 1), random_table(3, 2, 2, zero_fraction=0.3), random_markov_chain(3, 0.7, 3, 3),
            random_markov_chain(2, 2.0, 4, 4), binary_tree([0.3, 0.8, 0.45, 0.1, 0.65, 0.9, 0.35], 3),
            PRESETS["E1"].build(), PRESETS["E2"].build()]


def goals(length: int):
    return [ZeroOne(), Hamming(), KL, TV] + ([NGramHamming(2)] if length >= 3 else [])


def conditionals(model, length: int, vocab: int) -> np.ndarray:
    """Every prefix's next-token distribution, prefixes in lexicographic order by length."""
    prefixes = [list(p) for t in range(length) for p in itertools.product(range(vocab), repeat=t)]
    return model.logprobs(prefixes).exp().numpy()


def brute_force(goal, truth, r: dict) -> float:
    """Σ_ŷ r(ŷ) Σ_y P(y) loss(ŷ, y) with the goal's own loss (pointwise goals)."""
    return math.fsum(w * p * goal.loss(y_hat, y) for y_hat, w in r.items() for y, p in truth.support())


# ---- scoring a decoder run on q under p -----------------------------------------------------------


@pytest.mark.parametrize("truth", toys(), ids=repr)
def test_decoding_q_equal_to_p_gives_exact_risk(truth):
    q = mixture_model(truth, 0.0, seed=0)
    n = truth.length
    for decoder in DECODERS:
        r = output_distribution(decoder, q, n)
        for goal in goals(n):
            assert risk_under(goal, truth, r, n) == pytest.approx(exact_risk(goal, truth, decoder, n), abs=1e-12)


@pytest.mark.parametrize("truth", toys()[:5], ids=repr)
def test_risk_under_p_of_outputs_from_another_model_equals_brute_force(truth):
    q = mixture_model(truth, 0.3, seed=7)
    n = truth.length
    p = dict(truth.support())
    for decoder in DECODERS:
        r = output_distribution(decoder, q, n)
        memo: dict = {}
        for goal in goals(n):
            got = risk_under(goal, truth, r, n, memo={})
            if goal.pointwise:
                assert got == pytest.approx(brute_force(goal, truth, r), abs=1e-12)
            elif goal == TV:
                assert got == pytest.approx(0.5 * sum(abs(p.get(y, 0) - r.get(y, 0)) for y in set(p) | set(r)))
            else:
                kl = sum(w * math.log(w / r[y]) if r.get(y, 0) > 0 else math.inf for y, w in p.items() if w > 0)
                assert got == pytest.approx(kl, abs=1e-12) if math.isfinite(kl) else got == math.inf
        assert risk_under(Hamming(), truth, r, n, memo) == risk_under(Hamming(), truth, r, n, memo)  # memo reused


# ---- the two families of models q ---------------------------------------------------------------


def test_mixture_model_mixes_every_conditional():
    truth = binary_tree([0.3, 0.8, 0.45], 2)
    p = conditionals(truth, 2, 2)
    noise = (conditionals(mixture_model(truth, 1.0, seed=5), 2, 2))
    assert not np.allclose(noise, 0.5)  # a random conditional per prefix
    for eps in (0.0, 0.01, 0.5):
        q = mixture_model(truth, eps, seed=5)
        assert isinstance(q, PrefixModel) and q.length == 2 and q.vocab_size == 2
        assert np.allclose(conditionals(q, 2, 2), (1 - eps) * p + eps * noise, atol=1e-15)
    uniform = conditionals(mixture_model(truth, 0.4, seed=5, noise="uniform"), 2, 2)
    assert np.allclose(uniform, 0.6 * p + 0.4 * 0.5)


def test_mixture_of_a_chain_is_a_chain_mixed_per_state():
    chain = random_markov_chain(3, 0.5, 4, 1)
    q0, q1, qe = (mixture_model(chain, e, seed=2) for e in (0.0, 1.0, 0.1))
    assert isinstance(qe, MarkovChain) and qe.length == 4
    assert np.array_equal(q0.transition, chain.transition) and np.array_equal(q0.initial, chain.initial)
    assert np.allclose(qe.transition, 0.9 * chain.transition + 0.1 * q1.transition)
    assert np.allclose(qe.initial, 0.9 * chain.initial + 0.1 * q1.initial)


def test_uniform_noise_never_moves_greedy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = binary_tree(rng.uniform(size=15).tolist(), 4)
        greedy = Greedy().decode(truth, [], 4).tokens
        for eps in (0.1, 0.9, 0.999):
            assert Greedy().decode(mixture_model(truth, eps, 0, noise="uniform"), [], 4).tokens == greedy


def test_learned_model_is_add_alpha_counts():
    point = binary_tree([1.0, 0.0, 0.5], 2)  # always AB
    q = learned_model(point, 10, seed=0)
    rows = conditionals(q, 2, 2)
    assert rows[0] == pytest.approx([10.5 / 11, 0.5 / 11])  # root: 10 A's
    assert rows[1] == pytest.approx([0.5 / 11, 10.5 / 11])  # after A: 10 B's
    assert rows[2] == pytest.approx([0.5, 0.5])  # after B: never seen
    chain = MarkovChain([0.0, 1.0], [[1.0, 0.0], [1.0, 0.0]], 3)  # always BAA
    qc = learned_model(chain, 4, seed=0, alpha=1.0)
    assert np.allclose(qc.initial, [1 / 6, 5 / 6])
    assert np.allclose(qc.transition, [[5 / 6, 1 / 6], [5 / 6, 1 / 6]])  # A->A four times, B->A four times


def test_learned_model_approaches_p():
    for truth in (PRESETS["E1"].build(), random_markov_chain(3, 1.0, 3, 0)):
        n_cond = truth.vocab_size ** (truth.length - 1)
        p = conditionals(truth, truth.length, truth.vocab_size)[:n_cond]
        far = conditionals(learned_model(truth, 30, 1), truth.length, truth.vocab_size)[:n_cond]
        near = conditionals(learned_model(truth, 10**6, 1), truth.length, truth.vocab_size)[:n_cond]
        assert np.abs(near - p).max() < 0.01 < np.abs(far - p).max()


# ---- risk curves ------------------------------------------------------------------------------------


def test_mixture_curves_are_exact_and_reach_the_limits_of_claims_e1_to_e4():
    e1 = PRESETS["E1"].build()
    greedy = risk_curve(e1, Greedy(), ZeroOne(), "mixture", MIXTURE_GRID, 2, seed=0)
    assert [x for x, *_ in greedy] == list(MIXTURE_GRID)
    assert all(lo == r == hi for _, r, lo, hi in greedy)
    assert [r for x, r, *_ in greedy if x <= 1e-2] == pytest.approx([0.67] * 5)  # C1: greedy AA, not the mode
    assert bayes_risk(ZeroOne(), e1, 2) == pytest.approx(0.64)
    kl = [r for _, r, *_ in risk_curve(e1, Sampling(), KL, "mixture", MIXTURE_GRID, 2, seed=0)]
    assert all(a > b for a, b in itertools.pairwise(kl)) and kl[-1] < 1e-7  # E3: sampling is consistent
    cold = risk_curve(e1, Sampling(temperature=0.5), KL, "mixture", (1e-6,), 2, seed=0)
    assert cold[0][1] == pytest.approx(0.07270, abs=5e-6)  # E4: τ = .5 stays away from P
    zero_one = risk_curve(e1, Sampling(), ZeroOne(), "mixture", (1e-6,), 2, seed=0)
    assert zero_one[0][1] == pytest.approx(0.687, abs=1e-5)  # E3: 1 − Σ P(y)²
    assert risk_curve(e1, Greedy(), KL, "mixture", (0.1,), 2, seed=0)[0][1] == math.inf


def test_learned_band_is_the_t_interval_over_data_sets():
    e1 = PRESETS["E1"].build()
    grid, n_seeds = (10, 1000), 5
    curve = risk_curve(e1, Sampling(), TV, "learned", grid, 2, seed=4, n_seeds=n_seeds)
    t95 = stats.t.ppf(0.975, n_seeds - 1)
    for (x, mean, low, high), n in zip(curve, grid):
        risks = [risk_under(TV, e1, output_distribution(Sampling(), learned_model(e1, n, data_seed(4, n, i)), 2), 2)
                 for i in range(n_seeds)]
        half = t95 * np.std(risks, ddof=1) / math.sqrt(n_seeds)
        assert x == n and mean == pytest.approx(np.mean(risks), abs=1e-15)
        assert low == pytest.approx(max(np.mean(risks) - half, 0.0)) and high == pytest.approx(np.mean(risks) + half)
        assert low < mean < high
    assert curve[1][3] - curve[1][2] < curve[0][3] - curve[0][2]  # more data, narrower band


def test_learned_curves_converge_and_are_reproducible():
    e1 = PRESETS["E1"].build()
    kl = risk_curve(e1, Sampling(), KL, "learned", LEARNED_GRID, 2, seed=0, n_seeds=10)
    assert kl[0][1] > 0.01 > 1e-3 > kl[-1][1]  # KL(P‖r_q) → 0 as N grows
    greedy = risk_curve(e1, Greedy(), ZeroOne(), "learned", (10**5,), 2, seed=0, n_seeds=10)
    assert greedy == [(1e5, pytest.approx(0.67), pytest.approx(0.67), pytest.approx(0.67))]  # every q: AA
    assert kl == risk_curve(e1, Sampling(), KL, "learned", LEARNED_GRID, 2, seed=0, n_seeds=10)
    assert kl != risk_curve(e1, Sampling(), KL, "learned", LEARNED_GRID, 2, seed=1, n_seeds=10)


def test_chain_curves_and_shorter_steps():
    chain = PRESETS["Markov chain"].build()
    for family in ("mixture", "learned"):
        curve = risk_curve(chain, Lookahead(3), Hamming(), family, default_grid(family)[-2:], 4, seed=0, n_seeds=3)
        assert len(curve) == 2 and all(math.isfinite(r) for _, r, _, _ in curve)
    q = mixture_model(chain, 1e-9, 0)
    assert risk_curve(chain, Lookahead(3), Hamming(), "mixture", (1e-9,), 4, 0)[0][1] == pytest.approx(
        exact_risk(Hamming(), chain, Lookahead(3), 4))
    assert q.length == 6


class SampledOnly:
    """A random decoder without ``warp`` (like MBR): its output distribution cannot be enumerated. It
    samples at τ = 1, so its exact risk is Sampling()'s."""

    is_random = True
    label = "sampled"

    def decode(self, model, prompt, steps, seed=None):
        return Sampling().decode(model, prompt, steps, seed)


def test_decoders_that_cannot_be_enumerated_are_estimated_from_seeded_draws():
    e1 = PRESETS["E1"].build()
    assert not is_enumerable(SampledOnly()) and is_enumerable(Sampling()) and is_enumerable(Greedy())
    (x, mean, low, high), = risk_curve(e1, SampledOnly(), ZeroOne(), "mixture", (1e-6,), 2, seed=0, n_draws=400)
    exact = exact_risk(ZeroOne(), e1, Sampling(), 2)  # .687
    assert low < mean < high and abs(mean - exact) < 4 * (high - low) / (2 * 1.96)
    again = risk_curve(e1, SampledOnly(), ZeroOne(), "mixture", (1e-6,), 2, seed=0, n_draws=400)
    assert again == [(x, mean, low, high)]
    (_, mean, low, high), = risk_curve(e1, SampledOnly(), Hamming(), "learned", (10**5,), 2, seed=0, n_seeds=3,
                                       n_draws=200)
    assert low <= mean <= high and mean == pytest.approx(exact_risk(Hamming(), e1, Sampling(), 2), abs=0.2)
    kl = risk_curve(e1, SampledOnly(), TV, "mixture", (1e-6,), 2, seed=0, n_draws=400)[0]
    assert kl[1] == kl[2] == kl[3] < 0.1  # plug-in TV of the draws' empirical distribution
    at_p = decoded_risk(e1, e1, SampledOnly(), ZeroOne(), 2, seed=0, n_draws=400)
    assert at_p[1] < at_p[0] < at_p[2] and abs(at_p[0] - exact) < 4 * (at_p[2] - at_p[1]) / (2 * 1.96)
    assert decoded_risk(e1, e1, Greedy(), ZeroOne(), 2) == pytest.approx((0.67, 0.67, 0.67))


def test_default_grids():
    assert MIXTURE_GRID[0] == 1.0 and MIXTURE_GRID[-1] == pytest.approx(1e-4) and len(MIXTURE_GRID) == 9
    assert LEARNED_GRID == (10, 32, 100, 316, 1000, 3162, 10000, 31623, 100000)
    assert default_grid("learned") is LEARNED_GRID


E1, GREEDY, ZERO_ONE = PRESETS["E1"].build(), Greedy(), ZeroOne()


def curve(family="mixture", grid=(0.1,), steps=2, seed=0, truth=E1, decoder=GREEDY, goal=ZERO_ONE, **kw):
    return risk_curve(truth, decoder, goal, family, grid, steps, seed, **kw)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: curve("annealed"), "family must be one of mixture, learned, got 'annealed'"),
        (lambda: curve(grid=(0.0,)), r"ε values in \(0, 1\], got 0\.0"),
        (lambda: curve(grid=(1.5,)), r"ε values in \(0, 1\], got 1\.5"),
        (lambda: curve(grid=()), "grid must be a non-empty list"),
        (lambda: curve(grid=0.1), "grid must be a non-empty list"),
        (lambda: curve("learned", (10.5,)), "integers from 1 to 10,000,000, got 10.5"),
        (lambda: curve("learned", (0,)), "integers from 1 to 10,000,000, got 0"),
        (lambda: curve("learned", (10,), n_seeds=1), "n_seeds must be an integer >= 2"),
        (lambda: curve(steps=3), "steps must be an integer from 1 to the truth's length 2, got 3"),
        (lambda: curve(seed=-1), "seed must be an integer >= 0, got -1"),
        (lambda: curve(truth="E1"), "truth must be an enumerable toy"),
        (lambda: curve(decoder="greedy"), "decoder must be a decoder"),
        (lambda: curve(goal="0-1"), "goal must be a core.goals goal"),
        (lambda: mixture_model(E1, 0.5, 0, noise="pink"), "noise must be one of dirichlet, uniform, got 'pink'"),
        (lambda: mixture_model(E1, -0.1, 0), r"eps must be a number in \[0, 1\], got -0\.1"),
        (lambda: learned_model(E1, 10, 0, alpha=0.0), "alpha must be > 0 and finite, got 0.0"),
        (lambda: learned_model(E1, 10**8, 0), r"n \(training sequences\) must be an integer from 1 to 10,000,000"),
        (lambda: mixture_model(E1, 0.1, 0).logprobs([[0, 1]]), "a prefix must have length 0..1"),
    ],
)
def test_bad_arguments_raise_precise_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- grids, EOS, the Theory lab's rows ---------------------------------------------------------------


def test_grids_at_every_density():
    assert grid("mixture", 2) is MIXTURE_GRID and grid("learned", 2) is LEARNED_GRID
    assert grid("mixture", 1) == pytest.approx((1.0, 0.1, 0.01, 1e-3, 1e-4))
    assert grid("learned", 1) == (10, 100, 1000, 10000, 100000)
    four = grid("learned", 4)
    assert len(four) == 17 and four[:3] == (10, 18, 32) and four[-1] == 100000 and set(LEARNED_GRID) <= set(four)
    assert grid("mixture", 4)[::2] == pytest.approx(MIXTURE_GRID, rel=1e-12)
    with pytest.raises(ValueError, match="per_decade must be one of 1, 2, 4, got 3"):
        grid("mixture", 3)


def test_models_q_keep_eos_absorbing():
    toy = PRESETS["EOS"].build()  # p(EOS) = .4 at every step, L = 3
    eos = toy.eos_id
    for q in (mixture_model(toy, 0.5, 3), learned_model(toy, 20, 3)):
        assert q.eos_id == eos and q.transition[eos].tolist() == [0.0, 1.0]
        assert set(output_distribution(Sampling(), q, 3)) <= {(0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1)}
    table = TableDistribution({(0, 0): 0.3, (0, 1): 0.3, (1, 1): 0.4}, 2, eos_id=1)
    for q in (mixture_model(table, 0.5, 3), learned_model(table, 20, 3)):
        assert q.eos_id == 1 and q.logprobs([[1]]).exp().tolist() == [[0.0, 1.0]]
        assert sum(output_distribution(Sampling(), q, 2).values()) == pytest.approx(1.0)
    # greedy decodes q near p to aaa, while the 0-1 Bayes output is the empty output (C12)
    curve = risk_curve(toy, Greedy(), ZeroOne(), "mixture", (1e-3,), 3, seed=0)
    assert curve[0][1] == pytest.approx(1 - .216) and bayes_risk(ZeroOne(), toy, 3) == pytest.approx(.6)
    with pytest.raises(ValueError, match="eos_id must be None or a token in 0..1, got 2"):
        PrefixModel([np.full((1, 2), 0.5)], eos_id=2)


def test_risk_under_is_the_goals_own_exact_risk():
    truth = random_markov_chain(3, 0.7, 3, 3)
    r = output_distribution(Sampling(temperature=0.7), mixture_model(truth, 0.2, 1), 3)
    for goal in goals(3):
        assert risk_under(goal, truth, r, 3) == goal.exact_risk(truth, 3, r)
    memo: dict = {}
    y = next(iter(r))
    assert risk_under(Hamming(), truth, {y: 1.0}, 3, memo) == Hamming().exact_risk(truth, 3, {y: 1.0}) == memo[y]


def test_risk_rows_match_risk_table_and_estimate_mbr_with_its_runs():
    from core.mbr import MBR
    from core.risk import risk_table

    for truth in (PRESETS["E1"].build(), random_markov_chain(3, 0.7, 3, 3), PRESETS["EOS"].build()):
        n = truth.length
        gs = goals(n)
        decoders = [Greedy(), Lookahead(2), Sampling(temperature=0.5), Sampling(min_p=0.3)]
        expected = {row["decoder"]: row for row in risk_table(gs, truth, decoders, n)}
        rows = [risk_row(gs, truth, d, n) for d in decoders] + bayes_rows(gs, truth, n)
        assert [r["decoder"] for r in rows] == list(expected)
        for row in rows:
            want = expected[row["decoder"]]
            assert row["runs"] is None
            if want["output"] is not None:
                assert row["output"] == pad_after_eos(want["output"], n, truth.eos_id)
            for g in gs:
                assert row[g.name] == pytest.approx(want[g.name], abs=1e-12)
                assert row[f"{g.name} (95% low)"] == row[g.name] == row[f"{g.name} (95% high)"]
    e1 = PRESETS["E1"].build()
    mbr = risk_row([ZeroOne(), Hamming(), TV], e1, MBR(ZeroOne()), 2, seed=3, n_draws=16)
    assert mbr["runs"] == 16 and mbr["output"] is None and mbr["decoder"] == "MBR (0-1)"
    decoded = decode_outputs(e1, MBR(ZeroOne()), 2, seed=3, n_draws=16)
    assert not decoded.exact and len(decoded.runs) == 16
    assert decoded.runs == tuple(MBR(ZeroOne()).decode(e1, [], 2, seed=draw_seed(3, i)).tokens for i in range(16))
    mean = np.mean([1 - e1.prob(y) for y in decoded.runs])
    assert mbr["0-1"] == pytest.approx(mean) and mbr["0-1 (95% low)"] <= mean <= mbr["0-1 (95% high)"]
    assert mbr["TV(P, r)"] == pytest.approx(TV.between(dict(e1.support()), decoded.distribution))
