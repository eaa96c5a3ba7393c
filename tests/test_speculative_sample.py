"""Sampled self-speculative decoding: exactly the sampler's output distribution (chi-square over 20k draws
on a toy-backed multi-head model), per-head acceptance against 1 − TV, bookkeeping on the tiny engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from multihead_toy import MultiHeadToy

from core.decoders import Greedy, Sampling
from core.protocol import pad_after_eos
from core.speculative import self_speculative, speculative_sample
from core.speculative_sample import SpeculativeSampleResult, compare_sampling_speed
from core.toy import MarkovChain, output_distribution, random_table
from tests.chisq import assert_frequencies_match
from tests.conftest import make_tiny_engine

N = 20000


def _eos_chain() -> MarkovChain:
    rng = np.random.default_rng(11)
    trans = rng.dirichlet(np.full(3, 0.8), size=3)
    trans[2] = [0.0, 0.0, 1.0]
    return MarkovChain([0.5, 0.35, 0.15], trans, 5, eos_id=2)


@pytest.mark.parametrize(("toy", "sampler"), [
    (random_table(3, 4, seed=4, alpha=0.8), Sampling()),
    (_eos_chain(), Sampling(0.7, top_p=0.9, repetition_penalty=1.5)),
], ids=["table, ancestral", "EOS chain, warped"])
def test_output_distribution_is_the_samplers_exactly(toy, sampler):
    model = MultiHeadToy(toy, n_heads=4)
    steps = toy.length
    r = output_distribution(sampler, toy, steps)
    outputs = []
    hits = {i: [0, 0.0] for i in range(3)}  # per drafting head: kept among reached, sum of 1 − TV
    forwards = 0
    for seed in range(N):
        res = speculative_sample(model, [], steps, seed, sampler)
        outputs.append(pad_after_eos(res.tokens, steps, toy.eos_id))
        forwards += res.forwards
        for t in res.traces:
            for i, e in enumerate(t.expected):
                hits[i][0] += t.accepted > i
                hits[i][1] += e
    assert_frequencies_match(outputs, r)
    for kept, mean in hits.values():  # acceptance of reached drafts is Bernoulli(1 − TV) each time
        if mean > 50:
            assert abs(kept - mean) < 4 * math.sqrt(mean)
    assert forwards < N * steps  # drafts were accepted: fewer passes than ancestral sampling's one per token


def test_a_deterministic_sampler_gives_greedy_self_speculative_decoding():
    engine = make_tiny_engine()
    prompt = engine.encode("The cat sat")
    greedy = Greedy().decode(engine, prompt, 10).tokens
    for heads in (2, 4):
        res = speculative_sample(engine, prompt, 10, seed=3, sampler=Sampling(top_k=1), heads=heads)
        spec = self_speculative(engine, prompt, 10, heads=heads)
        assert res.tokens == greedy == spec.tokens
        assert res.forwards <= spec.forwards  # its last pass may draft up to the end instead of keeping a bonus
        assert all(e in (0.0, 1.0) for t in res.traces for e in t.expected)


def _check_bookkeeping(res: SpeculativeSampleResult, steps: int, k: int, eos: int | None) -> None:
    assert 1 <= len(res.tokens) <= steps and (len(res.tokens) == steps or res.tokens[-1] == eos)
    assert res.forwards == len(res.traces) and res.draft_passes == res.forwards - 1
    assert tuple(x for t in res.traces for x in t.committed) == res.tokens
    assert res.traces[0].fed == () and res.traces[0].bonus == res.tokens[0]
    for prev, t in zip(res.traces, res.traces[1:]):
        assert t.fed == (prev.bonus, *t.drafted) and 1 <= len(t.drafted) <= k - 1
        assert 0 <= t.accepted <= len(t.drafted)
        assert len(t.expected) == min(t.accepted + 1, len(t.drafted)) or res.tokens[-1] == eos
        assert all(0.0 <= e <= 1.0 + 1e-9 for e in t.expected)
        assert t.resampled == (t.bonus is not None and t.accepted < len(t.drafted))
    last = res.traces[-1].bonus
    assert last is None or last == eos or len(res.tokens) == steps  # a last bonus ends the output
    assert 1.0 <= res.tokens_per_forward <= k
    for n, reached, a, c, e in zip(res.drafts_offered, res.drafts_reached, res.acceptance_per_head,
                                   res.conditional_acceptance_per_head, res.expected_acceptance_per_head):
        assert reached <= n
        assert math.isnan(a) == (n == 0) and math.isnan(c) == math.isnan(e) == (reached == 0)


def test_bookkeeping_on_the_engine_and_seeded():
    engine = make_tiny_engine()
    prompt = engine.encode("Once upon a time")
    for sampler in (Sampling(), Sampling(0.8, top_k=5, repetition_penalty=1.3), Sampling(min_p=0.5)):
        for heads in (2, 3, 4):
            res = speculative_sample(engine, prompt, 9, 1, sampler, heads)
            _check_bookkeeping(res, 9, heads, engine.eos_id)
            assert res.heads == heads and res == speculative_sample(engine, prompt, 9, 1, sampler, heads)


def test_stops_after_eos():
    engine = make_tiny_engine()
    w0 = engine.model.wte.weight[0].detach()
    with torch.no_grad():
        engine.model.ln_f.bias += 7.5 * w0 / w0.dot(w0)  # EOS (0) likely at every position
    prompt = engine.encode("Once")
    ended = 0
    for seed in range(12):
        res = speculative_sample(engine, prompt, 12, seed)
        _check_bookkeeping(res, 12, 4, 0)
        ended += res.tokens[-1] == 0
        assert 0 not in res.tokens[:-1]
    assert ended >= 3


def test_speed_comparison_reports_both_timings():
    engine = make_tiny_engine()
    cmp = compare_sampling_speed(engine, engine.encode("The"), 6, 0, Sampling(), heads=3, repeats=1)
    assert cmp.ancestral_seconds > 0 and cmp.speculative_seconds > 0 and cmp.speedup > 0
    assert cmp.result == speculative_sample(engine, engine.encode("The"), 6, 0, Sampling(), 3)


@pytest.mark.parametrize(("call", "message"), [
    (lambda e: speculative_sample(random_table(2, 3, seed=0), [], 2, 0), "needs a model with extra heads"),
    (lambda e: speculative_sample(e, [1], 0, 0), "steps must be an integer >= 1, got 0"),
    (lambda e: speculative_sample(e, [1], 3, 1.5), "seed must be an integer"),
    (lambda e: speculative_sample(e, [1], 3, 0, heads=5), r"heads must be an integer in \[2, 4\], got 5"),
    (lambda e: speculative_sample(e, [1], 3, 0, heads=1), r"heads must be an integer in \[2, 4\], got 1"),
    (lambda e: speculative_sample(e, [1], 3, 0, sampler=Greedy()), "sampler must be a Sampling, got Greedy"),
    (lambda e: speculative_sample(e, [-1], 3, 0), r"prompt token ids must be in \[0, 8192\), got -1"),
    (lambda e: speculative_sample(e, [1], 500, 0), "exceeds the model's context"),
])
def test_bad_calls_raise_precise_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_tiny_engine())
