"""Shared passes give the same numbers: ``estimate_risks`` equals ``estimate_risk`` per decoder,
``sample_groups`` equals ``sample_many`` per group, ``token_ranks_many`` equals ``token_ranks``,
``approx_bayes_output`` on given truth rows equals drawing them, and ``compare`` reports what the
separate calls report (tiny random engine and toys, every goal).

Where rows run in a larger batch than the separate call's (grouped draws, N-gram forks of several
targets), a float32 model may round a row's log-probs differently in the last bit (seen: 1e-6 on
the tiny engine; the shipped engine on CPU measured bitwise equal), so those numbers are compared to
a relative 1e-5; tokens, ranks and everything computed on the same batch must be equal."""

from __future__ import annotations

import math

import pytest
import torch

import core.decoders as decoders_mod
import core.risk as risk_mod
from core.compare import DecoderSettings, compare, lineup, token_ranks, token_ranks_many
from core.decoders import Beam, Fixed, Greedy, Lookahead, Sampling, sample_groups, sample_many
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.risk import (
    WindowMarginals,
    _derived_seed,
    _sampled_window_marginals,
    approx_bayes_output,
    estimate_risk,
    estimate_risks,
)
from core.toy import random_markov_chain

GOALS = [ZeroOne(), Hamming(), NGramHamming(2), NGramHamming(3), DistributionMatch("kl"), DistributionMatch("tv")]


def decoders_for(steps: int):
    return [Greedy(), Lookahead(2), Sampling(temperature=0.7), Sampling(top_k=3), Sampling(top_p=0.8), Beam(2),
            Sampling(), Fixed(tuple(range(1, steps + 1)))]


BATCH_REL = 1e-5  # a row's float32 log-probs may differ in the last bit with the batch around it


def same(a, b, tol: float = 1e-12, rel: float = 0.0) -> None:
    for field in ("mean", "stderr", "ci_low", "ci_high"):
        x, y = getattr(a, field), getattr(b, field)
        if math.isfinite(x) or math.isfinite(y):
            assert x == pytest.approx(y, abs=tol, rel=rel), (field, a, b)
        else:
            assert x == y, (field, a, b)
    assert (a.n, a.exact, a.note) == (b.n, b.exact, b.note)


@pytest.fixture(scope="module")
def prompt(tiny_engine):
    return tiny_engine.encode("def f(x):\n    return")


@pytest.mark.parametrize("goal", GOALS, ids=lambda g: g.name)
@pytest.mark.parametrize("shared_truth", [False, True])
def test_estimate_risks_equals_estimate_risk_on_the_engine(tiny_engine, prompt, goal, shared_truth):
    steps, n, seed = 4, 12, 5
    decs = decoders_for(steps)
    truth = sample_many(tiny_engine, prompt, steps, n, seed) if shared_truth else None
    together = estimate_risks(goal, tiny_engine, decs, prompt, steps, n, seed, truth_samples=truth)
    for d, est in zip(decs, together):
        # same batch (fixed outputs' first-token hits, samplers' divergences): equal; grouped draws or
        # forks of several targets: equal up to the model's batch rounding
        batched = not isinstance(goal, DistributionMatch) and (d.is_random or goal.window(steps) > 1)
        same(est, estimate_risk(goal, tiny_engine, d, prompt, steps, n, seed, truth_samples=truth),
             rel=BATCH_REL if batched else 0.0)


@pytest.mark.parametrize("goal", GOALS, ids=lambda g: g.name)
def test_estimate_risks_equals_estimate_risk_on_toys(goal):
    steps, n = 4, 40
    for seed in range(3):
        toy = random_markov_chain(3, 0.7, steps, seed)
        decs = decoders_for(steps)[:-1] + [Fixed((0, 1, 2, 0))]
        together = estimate_risks(goal, toy, decs, [], steps, n, seed)
        for d, est in zip(decs, together):
            same(est, estimate_risk(goal, toy, d, [], steps, n, seed))


def test_ngram_forks_in_chunks_give_the_same_numbers(tiny_engine, prompt, monkeypatch):
    steps, n, seed = 5, 8, 1
    decs = decoders_for(steps)
    whole = estimate_risks(NGramHamming(3), tiny_engine, decs, prompt, steps, n, seed)
    monkeypatch.setattr(risk_mod, "FORK_ROWS", 2 * n)  # two targets per fork, the last chunk shorter
    chunked = estimate_risks(NGramHamming(3), tiny_engine, decs, prompt, steps, n, seed)
    for a, b in zip(whole, chunked):
        same(a, b, tol=0.0)


def test_estimate_risks_takes_given_outputs_and_draws(tiny_engine, prompt):
    steps, n, seed = 4, 10, 2
    decs = [Greedy(), Sampling(top_k=4)]
    greedy = Greedy().decode(tiny_engine, prompt, steps)
    drawn = sample_many(tiny_engine, prompt, steps, n, _derived_seed(seed), decs[1])
    given = estimate_risks(Hamming(), tiny_engine, decs, prompt, steps, n, seed, outputs=[greedy, None],
                           draws=[None, drawn])
    for a, b in zip(given, estimate_risks(Hamming(), tiny_engine, decs, prompt, steps, n, seed)):
        same(a, b, tol=0.0)
    with pytest.raises(ValueError, match="one entry per decoder"):
        estimate_risks(Hamming(), tiny_engine, decs, prompt, steps, n, seed, outputs=[None])


def test_sample_groups_equals_sample_many(tiny_engine, prompt):
    groups = [(5, 3, None), (1, 3, Sampling(top_k=2)), (4, 9, Sampling(temperature=0.5, top_p=0.7)), (2, 0, None)]
    for model, pre in [(tiny_engine, prompt), (random_markov_chain(4, 0.5, 6, 0), [])]:
        for got, (n, seed, sampler) in zip(sample_groups(model, pre, 6, groups), groups):
            want = sample_many(model, pre, 6, n, seed, sampler)
            assert torch.equal(got.tokens, want.tokens)
            torch.testing.assert_close(got.step_logprobs, want.step_logprobs, rtol=BATCH_REL, atol=0)
            torch.testing.assert_close(got.step_warped_logprobs, want.step_warped_logprobs, rtol=BATCH_REL, atol=0)
    seen = []
    sample_groups(tiny_engine, prompt, 3, groups[:2], observe=lambda t, lp, tok: seen.append((t, lp.shape, len(tok))))
    assert seen == [(t, (5, tiny_engine.vocab_size), 5) for t in range(3)]  # the first group's rows
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        sample_groups(tiny_engine, prompt, 3, [(0, 1, None)])
    with pytest.raises(ValueError, match="groups"):
        sample_groups(tiny_engine, prompt, 3, [])


def test_sample_groups_split_into_walks_of_group_rows(tiny_engine, prompt, monkeypatch):
    groups = [(3, 1, None), (2, 2, Sampling(top_k=3)), (4, 3, None), (1, 4, None)]
    whole = sample_groups(tiny_engine, prompt, 3, groups)
    monkeypatch.setattr(decoders_mod, "GROUP_ROWS", 5)  # walks of [3, 2], [4, 1]
    seen = []
    split = sample_groups(tiny_engine, prompt, 3, groups, observe=lambda t, lp, tok: seen.append(len(tok)))
    assert seen == [3, 3, 3]
    for a, b in zip(whole, split):
        assert torch.equal(a.tokens, b.tokens)
        torch.testing.assert_close(a.step_logprobs, b.step_logprobs, rtol=BATCH_REL, atol=0)


def test_token_ranks_many_equals_token_ranks(tiny_engine, prompt):
    outs = [tuple(sample_many(tiny_engine, prompt, 5, 1, s).tokens[0].tolist()) for s in range(3)]
    assert token_ranks_many(tiny_engine, prompt, outs) == [token_ranks(tiny_engine, prompt, o) for o in outs]
    with pytest.raises(ValueError, match="one length"):
        token_ranks_many(tiny_engine, prompt, [(1, 2), (3,)])


@pytest.mark.parametrize("goal", [Hamming(), NGramHamming(2)], ids=lambda g: g.name)
def test_approx_bayes_output_on_given_truth_rows(tiny_engine, prompt, goal):
    steps, n, seed = 4, 16, 7
    truth = sample_many(tiny_engine, prompt, steps, n, seed)
    assert (approx_bayes_output(goal, tiny_engine, prompt, steps, n, seed, truth_samples=truth)
            == approx_bayes_output(goal, tiny_engine, prompt, steps, n, seed))


@pytest.mark.parametrize("goal", GOALS[:3] + GOALS[4:5], ids=lambda g: g.name)
def test_compare_reports_what_the_separate_calls_report(tiny_engine, prompt, goal):
    """The shared passes change no number: every row equals its decoder's own decode, token_ranks and
    estimate_risk on the truth rows sample_many draws; the samples from P equal their own draw."""
    steps, n, seed = 4, 16, 3
    settings = DecoderSettings(lookahead_depth=2, beam_width=2, shown_samples=2)
    result = compare(tiny_engine, prompt, steps, seed, goal, settings, n_samples=n)
    truth = sample_many(tiny_engine, prompt, steps, n, seed)
    rows = {r.key: r for r in result.rows}
    for key, decoder in lineup(settings, steps, exact=False):
        path = decoder.decode(tiny_engine, prompt, steps, seed)
        assert rows[key].output.tokens == path.tokens
        assert (rows[key].output.step_logprobs, rows[key].output.ranks) == token_ranks(tiny_engine, prompt,
                                                                                         path.tokens)
        same(rows[key].risk, estimate_risk(goal, tiny_engine, decoder, prompt, steps, n, seed, truth_samples=truth,
                                           output=None if decoder.is_random else path), rel=BATCH_REL)
    if isinstance(goal, DistributionMatch):
        bayes = Sampling()
        assert rows["bayes"].output.tokens == bayes.decode(tiny_engine, prompt, steps, seed).tokens
    else:
        bayes = Fixed(approx_bayes_output(goal, tiny_engine, prompt, steps, n, seed, node_budget=256).tokens)
        assert rows["bayes"].output.tokens == bayes.tokens
    same(rows["bayes"].risk, estimate_risk(goal, tiny_engine, bayes, prompt, steps, n, seed, truth_samples=truth),
         rel=BATCH_REL)
    shown = sample_many(tiny_engine, prompt, steps, 2, seed + 1).paths()
    assert [s.tokens for s in result.samples] == [p.tokens for p in shown]
    assert [(s.step_logprobs, s.ranks) for s in result.samples] == [token_ranks(tiny_engine, prompt, p.tokens)
                                                                      for p in shown]


def test_window_marginals_fed_by_a_sampling_walk_equal_the_teacher_forced_ones(tiny_engine, prompt):
    steps, n, seed = 4, 16, 2
    acc = WindowMarginals(tiny_engine.vocab_size, steps, 2, n)
    sample_groups(tiny_engine, prompt, steps, [(n, seed, None)], observe=acc.observe)
    est, cands, m = acc.result()
    want = _sampled_window_marginals(tiny_engine, prompt, steps, 2, n, seed)
    assert m == want[2] and (cands == want[1]).all() and (est == want[0]).all()
    res = approx_bayes_output(NGramHamming(2), tiny_engine, prompt, steps, n, seed, marginals=acc)
    assert res == approx_bayes_output(NGramHamming(2), tiny_engine, prompt, steps, n, seed)
    with pytest.raises(ValueError, match="marginals must be of 4 steps, window 1"):
        approx_bayes_output(Hamming(), tiny_engine, prompt, steps, n, seed, marginals=acc)
    with pytest.raises(ValueError, match="in order"):
        WindowMarginals(tiny_engine.vocab_size, steps, 2, n).observe(1, torch.zeros(n, 3), torch.zeros(n))
    with pytest.raises(ValueError, match="all 4 steps"):
        WindowMarginals(tiny_engine.vocab_size, steps, 2, n).result()
