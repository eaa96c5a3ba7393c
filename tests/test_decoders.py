"""Decoders against brute force on hundreds of small toys, warpers, sampling, and the neural engine."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from core.decoders import (
    Beam,
    Fixed,
    Greedy,
    Lookahead,
    Sampling,
    best_first_search,
    draw,
    sample_many,
    warp_logprobs,
)
from core.toy import PRESETS, binary_tree, output_distribution, random_markov_chain, random_table
from tests.chisq import assert_frequencies_match


def random_toys(count: int, seed: int = 0):
    """Binary and ternary toys of length <= 5: Dirichlet tables (some sparse), Markov chains, and
    binary trees with dyadic conditionals (many exact ties)."""
    rng = np.random.default_rng(seed)
    toys = []
    for i in range(count):
        kind = i % 4
        v = 2 if i % 2 else 3
        n = int(rng.integers(1, 6 if v == 2 else 5))
        s = int(rng.integers(1 << 30))
        if kind == 0:
            toys.append(random_table(v, n, s, alpha=float(rng.choice([0.3, 1.0]))))
        elif kind == 1:
            toys.append(random_table(v, n, s, alpha=0.5, zero_fraction=0.4))
        elif kind == 2:
            toys.append(random_markov_chain(v, float(rng.choice([0.3, 1.0, 3.0])), n, s))
        else:
            conds = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=2**n - 1)
            toys.append(binary_tree(conds.tolist(), n))
    return toys


def window_scores(model, prefix: list[int], depth: int) -> np.ndarray:
    """Left-to-right summed log-probs of every depth-token window after prefix, lexicographic."""
    v = model.vocab_size
    scores = np.zeros(1)
    for k in range(depth):
        windows = list(itertools.product(range(v), repeat=k))
        lp = model.logprobs([prefix + list(w) for w in windows]).double().numpy()
        scores = (scores[:, None] + lp).reshape(-1)
    return scores


def brute_force_lookahead(model, steps: int, depth: int) -> tuple[int, ...]:
    tokens: list[int] = []
    for t in range(steps):
        d = min(depth, steps - t)
        best = int(np.argmax(window_scores(model, tokens, d)))  # first maximum = smallest window
        tokens.append(best // model.vocab_size ** (d - 1))
    return tuple(tokens)


def brute_force_beam(model, steps: int, width: int) -> tuple[int, ...]:
    beams = [(0.0, ())]
    for _ in range(steps):
        lp = model.logprobs([list(b) for _, b in beams]).double()
        cands = [(s + float(lp[r, v]), r, v, b + (v,)) for r, (s, b) in enumerate(beams) for v in range(lp.shape[1])]
        cands.sort(key=lambda c: (-c[0], c[1], c[2]))
        beams = [(c[0], c[3]) for c in cands[:width]]
    return beams[0][1]


TOYS = random_toys(320)


def test_lookahead_equals_brute_force_on_320_toys():
    for toy in TOYS:
        n = toy.length
        for depth in range(1, n + 1):
            assert Lookahead(depth).decode(toy, [], n).tokens == brute_force_lookahead(toy, n, depth), (toy, depth)


def test_full_lookahead_is_the_mode_and_lookahead_1_is_greedy():
    for toy in TOYS:
        n = toy.length
        seqs, probs = toy.joint()
        full = Lookahead(n).decode(toy, [], n)
        assert toy.prob(full.tokens) == pytest.approx(probs.max(), rel=1e-12, abs=1e-300)
        assert full.logprob == pytest.approx(math.log(probs.max()), rel=1e-12)
        assert Lookahead(1).decode(toy, [], n) == Greedy().decode(toy, [], n) == Beam(1).decode(toy, [], n)


def test_beam_equals_reference_and_wide_beam_finds_the_mode():
    for toy in TOYS[:160]:
        n = toy.length
        for width in (2, 3, 5):
            assert Beam(width).decode(toy, [], n).tokens == brute_force_beam(toy, n, width)
        wide = Beam(toy.vocab_size ** (n - 1)).decode(toy, [], n)
        assert toy.prob(wide.tokens) == pytest.approx(toy.joint()[1].max(), rel=1e-12)


def test_best_first_search_budget_reports_a_valid_bound():
    toy = PRESETS["hidden path"].build()
    exact = best_first_search(toy, [], 6)
    assert exact.exact and exact.tokens == (3,) * 6 and exact.bound == exact.logprob
    cut = best_first_search(toy, [], 6, node_budget=3, batch=1)
    assert not cut.exact and cut.expansions == 3 and len(cut.tokens) == 6
    assert cut.logprob <= exact.logprob <= cut.bound
    path = Lookahead(6, node_budget=3, batch=1).decode(toy, [], 6)
    assert path.budget_exhausted and path.bound > 0
    assert path.logprob == pytest.approx(math.log(toy.prob(path.tokens)))
    assert not Lookahead(6).decode(toy, [], 6).budget_exhausted


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Sampling(temperature=0), "temperature must be > 0 and finite, got 0"),
        (lambda: Sampling(temperature=float("nan")), "temperature must be > 0 and finite, got nan"),
        (lambda: Sampling(temperature=float("inf")), "temperature must be > 0 and finite, got inf"),
        (lambda: Sampling(top_k=0), "top_k must be None or an integer >= 1, got 0"),
        (lambda: Sampling(top_k=2.5), "top_k must be None or an integer >= 1, got 2.5"),
        (lambda: Sampling(top_p=0), r"top_p must be None or in \(0, 1\], got 0"),
        (lambda: Sampling(top_p=1.5), r"top_p must be None or in \(0, 1\], got 1.5"),
        (lambda: Beam(0), "width must be an integer >= 1, got 0"),
        (lambda: Lookahead(0), "depth must be an integer >= 1, got 0"),
        (lambda: Lookahead(2, node_budget=0), "node_budget must be an integer >= 1, got 0"),
        (lambda: Sampling().decode(PRESETS["E1"].build(), [], 2), "seed must be an integer for a random decoder"),
        (lambda: Greedy().decode(PRESETS["E1"].build(), [], 3), "steps must be <= 2 for this toy of length 2"),
        (lambda: Greedy().decode(PRESETS["E1"].build(), [], 0), "steps must be an integer >= 1, got 0"),
        (lambda: warp_logprobs(torch.zeros(3), top_p=-1), r"top_p must be None or in \(0, 1\], got -1"),
    ],
)
def test_bad_parameters_raise_precise_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_warpers_on_hand_built_distributions():
    # float64: the exact definitions (float32 runs transformers' own processors: tests/test_warpers.py)
    lp = torch.tensor([0.3, 0.1, 0.1, 0.5], dtype=torch.float64).log()
    before = lp.clone()
    assert warp_logprobs(lp, top_p=0.75).exp().tolist() == pytest.approx([0.375, 0, 0, 0.625])
    assert warp_logprobs(lp, top_p=0.45).exp().tolist() == pytest.approx([0, 0, 0, 1])
    assert warp_logprobs(lp, top_k=1).exp().tolist() == pytest.approx([0, 0, 0, 1])
    # top-k keeps every token tied with the k-th value; top-p splits ties to the lower ids
    assert warp_logprobs(lp, top_k=2).exp().tolist() == pytest.approx([0.375, 0, 0, 0.625])
    assert warp_logprobs(lp, top_k=3).exp().tolist() == pytest.approx([0.3, 0.1, 0.1, 0.5])
    uniform = torch.zeros(4, dtype=torch.float64)
    assert warp_logprobs(uniform, top_p=0.5).exp().tolist() == pytest.approx([0.5, 0.5, 0, 0])
    assert warp_logprobs(uniform, temperature=0.1).exp().tolist() == pytest.approx([0.25] * 4)  # uniform stays
    sharp = warp_logprobs(lp, temperature=0.5).exp()
    assert sharp[3] > 0.5 and sharp[1] < 0.1
    assert torch.equal(lp, before)  # never in place
    assert warp_logprobs(lp, top_p=1.0).exp().tolist() == pytest.approx([0.3, 0.1, 0.1, 0.5])


def test_top_p_on_wide_rows_matches_a_full_sort():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5000, generator=g, dtype=torch.float64) * 3
    for p in (0.1, 0.5, 0.9, 0.999):
        kept = warp_logprobs(x, top_p=p) > -math.inf
        probs = x.double().softmax(-1)
        order = torch.sort(probs, descending=True, stable=True)
        above = order.values.cumsum(-1) - order.values
        expect = torch.zeros_like(kept).scatter(1, order.indices, above < p)
        assert torch.equal(kept, expect), p


def test_draw_never_picks_impossible_tokens_and_matches_probabilities():
    g = torch.Generator().manual_seed(1)
    p = torch.zeros(300, dtype=torch.float64)
    p[[0, 5, 127, 128, 129, 299]] = torch.tensor([0.1, 0.2, 0.05, 0.3, 0.15, 0.2], dtype=torch.float64)
    lp = p.log().expand(40000, -1)
    counts = torch.bincount(draw(lp, g), minlength=300)
    assert counts[p == 0].sum() == 0
    support = p > 0
    assert chisquare(counts[support].numpy(), 40000 * p[support].numpy()).pvalue > 1e-3


def test_sample_many_is_seeded_and_consistent():
    toy = random_table(3, 4, seed=2)
    a = sample_many(toy, [], 4, 500, seed=5)
    b = sample_many(toy, [], 4, 500, seed=5)
    c = sample_many(toy, [], 4, 500, seed=6)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    assert a.tokens.shape == (500, 4) and a.n == 500
    for path in a.paths()[:20]:
        assert path.logprob == pytest.approx(math.log(toy.prob(path.tokens)), rel=1e-12)
    assert torch.allclose(a.step_logprobs, a.step_warped_logprobs)  # the identity sampler
    one = Sampling().decode(toy, [], 4, seed=9)
    assert one == sample_many(toy, [], 4, 1, seed=9).paths()[0]
    assert Sampling(top_k=1).decode(toy, [], 4, seed=3).tokens == Greedy().decode(toy, [], 4).tokens


@pytest.mark.parametrize("sampler", [Sampling(), Sampling(0.6), Sampling(1.5, top_k=2), Sampling(0.9, top_p=0.7)])
def test_sampling_frequencies_pass_chi_square_against_exact_output_distribution(sampler):
    toy = random_table(3, 3, seed=12, alpha=0.7)
    r = output_distribution(sampler, toy, 3)
    n = 20000
    assert_frequencies_match(map(tuple, sample_many(toy, [], 3, n, seed=0, sampler=sampler).tokens.tolist()), r)


def test_fixed_output_is_scored_by_teacher_forcing():
    e1 = PRESETS["E1"].build()
    path = Fixed((1, 0)).decode(e1, [], 2)
    assert path.tokens == (1, 0) and path.logprob == pytest.approx(math.log(0.36))
    with pytest.raises(ValueError, match="steps must equal the fixed output's length 2, got 1"):
        Fixed((1, 0)).decode(e1, [], 1)
    with pytest.raises(ValueError, match="toys have no text"):
        path.text(e1)


class Sharpened:
    """The tiny engine with logits multiplied by ``factor`` (peaked like a trained model), counting
    ``logprobs`` calls and rows."""

    def __init__(self, engine, factor: float):
        self.engine, self.factor = engine, factor
        self.vocab_size, self.eos_id = engine.vocab_size, None
        self.calls = self.rows = 0

    def logprobs(self, prefixes):
        self.calls += 1
        self.rows += len(prefixes)
        return torch.log_softmax(self.engine.logprobs(prefixes) * self.factor, dim=-1)


def test_lookahead_on_the_engine_is_exact_and_batched(tiny_engine):
    model = Sharpened(tiny_engine, 30.0)
    prompt = tiny_engine.encode("Once upon a time")
    res = best_first_search(model, prompt, 2, batch=16)
    assert res.exact
    assert model.calls <= math.ceil((res.expansions - 1) / 16) + 1  # one call per frontier batch
    first = model.logprobs([prompt])[0].double()
    # brute force over every first token that could still win (a window scores <= its first token)
    firsts = torch.nonzero(first >= res.logprob - 1e-6).squeeze(1)
    assert 1 <= len(firsts) < 100
    second = model.logprobs([prompt + [v] for v in firsts.tolist()]).double()
    scores = first[firsts, None] + second
    best = int(torch.argmax(scores))
    assert res.tokens == (int(firsts[best // model.vocab_size]), best % model.vocab_size)
    assert res.logprob == pytest.approx(float(scores.reshape(-1)[best]), abs=1e-6)


def test_decoders_on_the_engine(tiny_engine):
    prompt = tiny_engine.encode("The cat")
    greedy = Greedy().decode(tiny_engine, prompt, 6)
    assert Lookahead(1).decode(tiny_engine, prompt, 6).tokens == greedy.tokens
    assert Beam(1).decode(tiny_engine, prompt, 6).tokens == greedy.tokens
    scored = Fixed(greedy.tokens).decode(tiny_engine, prompt, 6)
    assert scored.logprob == pytest.approx(greedy.logprob, abs=1e-4)
    assert greedy.text(tiny_engine) == tiny_engine.decode(list(greedy.tokens))
    beam = Beam(3).decode(tiny_engine, prompt, 6)
    assert beam.logprob >= greedy.logprob - 1e-6
    flat = Lookahead(3, node_budget=20).decode(tiny_engine, prompt, 3)  # a random model is nearly uniform
    assert flat.budget_exhausted and flat.bound > 0 and len(flat.tokens) == 3
    rows = sample_many(tiny_engine, prompt, 5, 64, seed=0, sampler=Sampling(0.8, top_k=50))
    assert rows.tokens.shape == (64, 5)
    assert torch.equal(rows.tokens, sample_many(tiny_engine, prompt, 5, 64, seed=0,
                                                sampler=Sampling(0.8, top_k=50)).tokens)
    # the sampler's log-probs are the warped model log-probs of the chosen tokens
    path = rows.paths()[0]
    lp = tiny_engine.logprobs([prompt + list(path.tokens[:t]) for t in range(5)])
    assert list(path.step_logprobs) == pytest.approx(lp[torch.arange(5), list(path.tokens)].tolist(), abs=1e-4)
