"""Toy distributions: construction, validation, enumeration, marginals, presets (claims.md E1-E4)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from core.decoders import Beam, Greedy, Lookahead, Sampling
from core.goals import Hamming, ZeroOne
from core.risk import bayes_output
from core.toy import (
    PRESETS,
    MarkovChain,
    TableDistribution,
    binary_tree,
    cnf_distribution,
    output_distribution,
    random_markov_chain,
    random_table,
    sequence_tempered,
)

A, B = 0, 1


def approx(d: dict, **kw) -> dict:
    return {k: pytest.approx(v, **kw) for k, v in d.items()}


def test_e1_e2_joints():
    e1, e2 = PRESETS["E1"].build(), PRESETS["E2"].build()
    assert dict(e1.support()) == approx({(A, A): 0.33, (A, B): 0.27, (B, A): 0.36, (B, B): 0.04}, abs=1e-12)
    assert dict(e2.support()) == approx({(A, A): 0.33, (A, B): 0.27, (B, B): 0.40}, abs=1e-12)
    assert e2.prob((B, A)) == 0.0
    lp = e2.logprobs([[], [A], [B]])
    assert lp.dtype == torch.float64 and lp.shape == (3, 2)
    assert lp.exp().tolist() == [pytest.approx([0.6, 0.4]), pytest.approx([0.55, 0.45]), pytest.approx([0.0, 1.0])]
    assert lp[2, A] == -math.inf


def test_binary_tree_list_form_equals_dict_form():
    cond = {(): 0.3, (0,): 0.2, (1,): 0.9, (0, 0): 0.5, (0, 1): 0.1, (1, 0): 1.0, (1, 1): 0.0}
    as_list = [cond[p] for p in [(), (0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)]]
    t1, t2 = binary_tree(cond, 3), binary_tree(as_list, 3)
    assert dict(t1.support()) == dict(t2.support())
    assert t1.prob((1, 0, 0)) == pytest.approx(0.7 * 0.9 * 1.0)  # P(B) P(A|B) P(A|BA)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: binary_tree({(): 0.5}, 2), "every prefix of length 0..1"),
        (lambda: binary_tree([0.5, 0.5], 2), r"2\^n - 1 = 3"),
        (lambda: binary_tree([0.5, 1.5, 0.5], 2), r"in \[0, 1\], got 1.5"),
        (lambda: binary_tree([0.5], 0), "n must be an integer in 1..8, got 0"),
        (lambda: TableDistribution({(0,): 0.5, (1,): 0.4}, 2), r"sum to 1 \(within 1e-09\), got 0.9"),
        (lambda: TableDistribution({(0,): 1.1, (1,): -0.1}, 2), "must be >= 0 and finite, got -0.1"),
        (lambda: TableDistribution({(0,): 0.5, (1, 0): 0.5}, 2), "one length"),
        (lambda: TableDistribution({(0,): 0.5, (3,): 0.5}, 2), "outside the vocabulary 0..1"),
        (lambda: TableDistribution({(0,): 1.0}, 0), "vocab_size must be an integer >= 1, got 0"),
        (lambda: TableDistribution({}, 2), "at least one sequence"),
        (lambda: MarkovChain([0.5, 0.5], [[1.0, 0.0]], 3), r"shape \(2, 2\) to match initial, got \(1, 2\)"),
        (lambda: MarkovChain([0.5, 0.5], [[1.0, 0.0], [0.5, 0.6]], 3), r"transition rows must sum to 1 .*\(row 1\)"),
        (lambda: MarkovChain([0.5, 0.6], [[1.0, 0.0], [0.5, 0.5]], 3), "initial must sum to 1"),
        (lambda: MarkovChain([1.5, -0.5], [[1.0, 0.0], [0.5, 0.5]], 3), ">= 0"),
        (lambda: MarkovChain([1.0, 0.0], [[1.0, 0.0], [0.5, 0.5]], 0), "length must be an integer >= 1, got 0"),
        (lambda: random_markov_chain(3, 0.0, 4, 0), "alpha must be > 0 and finite, got 0.0"),
        (lambda: random_markov_chain(3, float("nan"), 4, 0), "alpha must be > 0 and finite, got nan"),
        (lambda: random_markov_chain(0, 1.0, 4, 0), "n_states must be an integer >= 1, got 0"),
        (lambda: random_table(2, 3, 0, zero_fraction=1.0), r"zero_fraction must be in \[0, 1\)"),
        (lambda: cnf_distribution([(1, 5)], 3, 1.0), r"literals ±1..±3"),
    ],
)
def test_bad_parameters_raise_precise_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_prefix_validation_and_zero_mass_prefix():
    e2 = PRESETS["E2"].build()
    with pytest.raises(ValueError, match="length 0..1"):
        e2.logprobs([[A, A]])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        e2.logprobs([[5]])
    chain = random_markov_chain(3, 1.0, 2, seed=0)
    with pytest.raises(ValueError, match="length 0..1"):
        chain.logprobs([[0, 1]])
    # a table's conditional below a prefix of probability zero is uniform
    t = TableDistribution({(0, 0): 0.5, (0, 1): 0.5}, 2)
    assert t.logprobs([[1]]).exp().tolist() == [[0.5, 0.5]]


def test_random_markov_chain_is_seeded_dirichlet():
    c1, c2 = random_markov_chain(4, 0.5, 3, seed=11), random_markov_chain(4, 0.5, 3, seed=11)
    rng = np.random.default_rng(11)
    init = rng.dirichlet(np.full(4, 0.5))
    trans = rng.dirichlet(np.full(4, 0.5), size=4)
    assert np.array_equal(c1.initial, init) and np.array_equal(c1.transition, trans)
    assert np.array_equal(c1.transition, c2.transition)
    assert not np.array_equal(random_markov_chain(4, 0.5, 3, seed=12).initial, init)


def test_markov_chain_enumeration_and_marginals_match_the_table():
    for seed in range(5):
        chain = random_markov_chain(3, 0.7, 4, seed=seed)
        table = TableDistribution(dict(chain.support()), 3)
        seqs, probs = chain.joint()
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert [tuple(s) for s in seqs.tolist()] == sorted(tuple(s) for s in seqs.tolist())
        for s, p in itertools.islice(chain.support(), 20):
            assert chain.prob(s) == pytest.approx(p, rel=1e-12)
        for n in range(1, 5):
            assert np.allclose(chain.window_marginals(n), table.window_marginals(n), atol=1e-14)
        assert np.allclose(chain.state_marginals(), chain.window_marginals(1))
        # the toy's conditionals reproduce its probabilities
        lp = chain.logprobs([list(s[:t]) for s in seqs[:5].tolist() for t in range(4)]).reshape(5, 4, 3)
        steps = lp.gather(2, torch.as_tensor(seqs[:5])[:, :, None]).squeeze(2).sum(1).exp()
        assert np.allclose(steps.numpy(), probs[:5], rtol=1e-12)


def test_enumeration_is_guarded():
    chain = random_markov_chain(10, 1.0, 7, seed=0)
    with pytest.raises(ValueError, match="over the enumeration limit"):
        chain.joint()
    with pytest.raises(ValueError, match="window length n must be an integer in 1..7"):
        chain.window_marginals(8)
    assert chain.window_marginals(2).shape == (6, 10, 10)  # marginals need no enumeration


def test_e4_output_distribution_and_sequence_tempering():
    e1 = PRESETS["E1"].build()
    r = output_distribution(Sampling(temperature=0.5), e1, 2)
    assert r == approx({(A, A): 0.4147, (A, B): 0.2776, (B, A): 0.3039, (B, B): 0.0038}, abs=5e-5)
    assert output_distribution(Sampling(), e1, 2) == approx(dict(e1.support()), abs=1e-12)  # E3: r = P
    assert output_distribution(Greedy(), e1, 2) == {(A, A): 1.0}
    cold = output_distribution(Sampling(temperature=0.02), e1, 2)
    assert cold[(A, A)] > 0.999  # per-token temperature -> greedy (AA), not the mode (BA)
    tempered = sequence_tempered(e1, 0.5)
    assert tempered == approx({(A, A): 0.3479, (A, B): 0.2329, (B, A): 0.4141, (B, B): 0.0051}, abs=5e-5)
    assert max(sequence_tempered(e1, 0.02).items(), key=lambda kv: kv[1])[0] == (B, A)  # -> the mode
    with pytest.raises(ValueError, match="tau must be > 0 and finite, got 0"):
        sequence_tempered(e1, 0)


def test_output_distribution_of_truncated_sampler_enumerates_warped_tree():
    toy = random_table(3, 3, seed=4)
    sampler = Sampling(temperature=0.8, top_k=2, top_p=0.9)
    r = output_distribution(sampler, toy, 3)
    assert sum(r.values()) == pytest.approx(1.0, abs=1e-12)
    for y, q in r.items():  # r(y) = product of the warped conditionals
        lp = toy.logprobs([list(y[:t]) for t in range(3)])
        assert q == pytest.approx(math.exp(sum(float(sampler.warp(lp[t])[y[t]]) for t in range(3))), rel=1e-12)


def test_hidden_path_preset_defeats_cheap_decoders():
    toy = PRESETS["hidden path"].build()
    mode = (3,) * 6
    assert max(toy.support(), key=lambda sp: sp[1]) == (mode, pytest.approx(0.13))
    assert Greedy().decode(toy, [], 6).tokens == (0,) * 6
    for depth in range(1, 6):
        assert Lookahead(depth).decode(toy, [], 6).tokens == (0,) * 6
    assert Lookahead(6).decode(toy, [], 6).tokens == mode
    for width in (1, 2, 3):
        assert Beam(width).decode(toy, [], 6).tokens != mode
    assert Beam(4).decode(toy, [], 6).tokens == mode


def test_sat_trap_preset_mode_is_the_unique_satisfying_assignment():
    toy = PRESETS["SAT trap"].build()
    probs = dict(toy.support())
    best = max(probs, key=probs.get)
    assert best == (1,) * 8 and sorted(probs.values())[-2] < probs[best]
    assert Greedy().decode(toy, [], 8).tokens[0] == 0
    for depth in range(1, 5):
        assert Lookahead(depth).decode(toy, [], 8).tokens != best
    assert Lookahead(5).decode(toy, [], 8).tokens == best


def test_every_preset_builds_and_is_a_distribution():
    for name, preset in PRESETS.items():
        toy = preset.build()
        assert preset.name == name and preset.description
        assert (toy.eos_id is not None) == (name == "EOS")  # only the C12 toy has an EOS
        assert sum(p for _, p in toy.support()) == pytest.approx(1.0, abs=1e-9)


def test_markov_chain_preset_has_three_winners():
    chain = PRESETS["Markov chain"].build()
    assert Greedy().decode(chain, [], 6).tokens == (1, 0, 0, 0, 0, 0)
    assert bayes_output(ZeroOne(), chain, 6) == (1, 2, 2, 2, 2, 2)
    assert bayes_output(Hamming(), chain, 6) == (1, 0, 2, 2, 2, 2)
    assert chain.prob((1, 2, 2, 2, 2, 2)) == pytest.approx(0.337, abs=5e-4)
    assert chain.prob((1, 0, 0, 0, 0, 0)) == pytest.approx(0.098, abs=5e-4)
