"""Shared passes give the same numbers, and held-out rows keep the Bayes output honest.

* ``estimate_risks`` equals ``estimate_risk`` per decoder; ``compare`` reports what the standalone
  calls report (decodes, ``estimate_risk``, ``estimate_regret``, ``approx_bayes_output``); a change of
  goal re-scores the same rollout.
* The Bayes output is chosen on fold A of the truth rows and scored on fold B only (the old code scored
  it on the rows it was chosen on: an in-sample minimum that made every regret >= 0).
* ``sample_groups`` equals ``sample_many`` per group; ``token_ranks_many`` (one teacher-forced ``feed``)
  equals scoring each prefix from scratch.

Where rows run in a differently shaped batch than the standalone call's (grouped draws), a float32 model
may round a row's log-probs differently in the last bits, so those numbers are compared to a relative
1e-5; the truth rollout itself always runs the same n rows, so its numbers are equal."""

from __future__ import annotations

import math

import pytest
import torch

import core.decoders as decoders_mod
from core.compare import (
    COMPARE_DRAWS,
    DecoderSettings,
    compare,
    decode_fixed,
    draw,
    lineup,
    score,
    token_ranks,
    token_ranks_many,
)
from core.decoders import Beam, Fixed, Greedy, Lookahead, Samples, Sampling, sample_groups, sample_many
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.risk import approx_bayes_output, estimate_regret, estimate_risk, estimate_risks
from core.rollout import DRAWS_STREAM, derived_seed, draw_targets, roll_out
from core.toy import random_markov_chain

GOALS = [ZeroOne(), Hamming(), NGramHamming(2), NGramHamming(3), DistributionMatch("kl"), DistributionMatch("tv")]
BATCH_REL = 1e-5  # a row's float32 log-probs may differ in the last bits with the batch around it


def decoders_for(steps: int):
    return [Greedy(), Lookahead(2, node_budget=32), Sampling(temperature=0.7), Sampling(top_k=3), Sampling(top_p=0.8),
            Beam(2), Sampling(), Fixed(tuple(range(1, steps + 1)))]


def same(a, b, rel: float = 0.0) -> None:
    for field in ("mean", "stderr", "ci_low", "ci_high"):
        x, y = getattr(a, field), getattr(b, field)
        if math.isfinite(x) or math.isfinite(y):
            assert x == pytest.approx(y, abs=1e-12, rel=rel), (field, a, b)
        else:
            assert x == y, (field, a, b)
    assert (a.n, a.n_draws, a.exact, a.note) == (b.n, b.n_draws, b.exact, b.note)


@pytest.fixture(scope="module")
def prompt(tiny_engine):
    return tiny_engine.encode("def f(x):\n    return")


@pytest.mark.parametrize("goal", GOALS, ids=lambda g: g.name)
def test_estimate_risks_equals_estimate_risk_on_the_engine(tiny_engine, prompt, goal):
    steps, n, seed = 4, 12, 5
    decs = decoders_for(steps)
    together = estimate_risks(goal, tiny_engine, decs, prompt, steps, n, seed)
    for d, est in zip(decs, together):
        same(est, estimate_risk(goal, tiny_engine, d, prompt, steps, n, seed), rel=BATCH_REL)


@pytest.mark.parametrize("goal", GOALS, ids=lambda g: g.name)
def test_estimate_risks_equals_estimate_risk_on_toys(goal):
    steps, n = 4, 40
    for seed in range(3):
        toy = random_markov_chain(3, 0.7, steps, seed)
        decs = decoders_for(steps)[:-1] + [Fixed((0, 1, 2, 0))]
        for d, est in zip(decs, estimate_risks(goal, toy, decs, [], steps, n, seed)):
            same(est, estimate_risk(goal, toy, d, [], steps, n, seed))


def test_estimate_risk_takes_given_truth_rows_and_outputs(tiny_engine, prompt):
    steps, n, seed = 4, 10, 2
    truth = sample_many(tiny_engine, prompt, steps, n, seed)
    greedy = Greedy().decode(tiny_engine, prompt, steps)
    for goal in (Hamming(), NGramHamming(2)):
        drawn = estimate_risk(goal, tiny_engine, Greedy(), prompt, steps, n, seed)
        assert estimate_risk(goal, tiny_engine, Greedy(), prompt, steps, n, seed, truth_samples=truth,
                             output=greedy) == drawn
    with pytest.raises(ValueError, match="one entry per decoder"):
        estimate_risks(Hamming(), tiny_engine, [Greedy()], prompt, steps, n, seed, outputs=[None, None])


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


def test_token_ranks_many_is_one_teacher_forced_pass(tiny_engine, prompt):
    outs = [tuple(sample_many(tiny_engine, prompt, 5, 1, s).tokens[0].tolist()) for s in range(3)]
    together = token_ranks_many(tiny_engine, prompt, outs)
    for out, (lps, ranks) in zip(outs, together):
        lp = tiny_engine.logprobs([prompt + list(out[:t]) for t in range(5)])
        chosen = lp[torch.arange(5), list(out)]
        torch.testing.assert_close(torch.tensor(lps, dtype=torch.float64), chosen.double(), rtol=BATCH_REL, atol=1e-6)
        assert list(ranks) == (1 + (lp > chosen[:, None]).sum(1)).tolist()
    with pytest.raises(ValueError, match="one length"):
        token_ranks_many(tiny_engine, prompt, [(1, 2), (3,)])


@pytest.mark.parametrize("goal", [Hamming(), NGramHamming(2)], ids=lambda g: g.name)
def test_the_bayes_output_is_chosen_on_fold_a_only(tiny_engine, prompt, goal):
    """Replacing fold B's rows changes nothing about the choice: it is independent of the rows it is
    scored on."""
    steps, n, seed = 4, 16, 7
    truth = sample_many(tiny_engine, prompt, steps, n, seed)
    other = sample_many(tiny_engine, prompt, steps, n, seed + 1)
    mixed = Samples(torch.cat([truth.tokens[:8], other.tokens[8:]]),
                    torch.cat([truth.step_logprobs[:8], other.step_logprobs[8:]]),
                    torch.cat([truth.step_warped_logprobs[:8], other.step_warped_logprobs[8:]]))
    chosen = approx_bayes_output(goal, tiny_engine, prompt, steps, n, seed)
    assert chosen == approx_bayes_output(goal, tiny_engine, prompt, steps, n, seed, truth_samples=truth)
    assert chosen == approx_bayes_output(goal, tiny_engine, prompt, steps, n, seed, truth_samples=mixed)
    assert "fold A (8 truth rows" in chosen.method and not chosen.exact


@pytest.mark.parametrize("goal", GOALS[:3] + GOALS[4:5], ids=lambda g: g.name)
def test_compare_reports_what_the_standalone_calls_report(tiny_engine, prompt, goal):
    """Compare's truth rows come in waves (issue 15; ``Drawn.truth_samples`` gives them) and each random decoder
    shows its first own draw. Every deterministic row equals its decoder's own decode and ``estimate_risk`` on the
    same truth rows; sampling from P shows its decode with the seed and is scored by the truth rows themselves;
    every other random decoder's risk is its own ``COMPARE_DRAWS`` draws (``sample_many`` with the draws' seed)
    scored on those rows; greedy's regret equals ``estimate_regret``; the Bayes output equals
    ``approx_bayes_output``'s (one wave: the same candidate tokens) and its risk is its risk on fold B alone (not on
    all rows, where it was chosen); the samples from P are the first truth rows."""
    steps, n, seed = 4, 16, 3
    settings = DecoderSettings(lookahead_depth=2, beam_width=2, shown_samples=2)
    result = compare(tiny_engine, prompt, steps, seed, goal, settings, n_samples=n)
    fixed = decode_fixed(tiny_engine, prompt, steps, settings, False)
    truth = draw(tiny_engine, prompt, steps, seed, settings, n, fixed, False, goal.pointwise).truth_samples()
    rows = {r.key: r for r in result.rows}
    for key, decoder in lineup(settings, steps, exact=False):
        own = None
        if decoder.is_random and not decoder.is_identity:
            m = COMPARE_DRAWS if goal.pointwise else 1  # distribution matching reads r, and draws one to show
            own = sample_many(tiny_engine, prompt, steps, m, derived_seed(seed, DRAWS_STREAM), decoder)
            path = own.paths()[0]
        else:
            path = decoder.decode(tiny_engine, prompt, steps, seed)
        assert rows[key].output.tokens == path.tokens
        lps, ranks = token_ranks(tiny_engine, prompt, path.tokens)
        assert rows[key].output.step_logprobs == pytest.approx(lps, rel=BATCH_REL) and rows[key].output.ranks == ranks
        if own is not None and goal.pointwise:
            rollout = roll_out(tiny_engine, prompt, steps, n, seed, targets={"d": draw_targets(own, steps, None)},
                               truth=truth.tokens)
            want = goal.estimate(rollout, rollout.columns("d", "draws", "d"))
        else:
            want = estimate_risk(goal, tiny_engine, decoder, prompt, steps, n, seed, truth_samples=truth)
        same(rows[key].risk, want, rel=BATCH_REL)
    same(rows["greedy"].regret, estimate_regret(goal, tiny_engine, Greedy(), prompt, steps, n, seed, node_budget=256,
                                                truth_samples=truth), rel=BATCH_REL)
    bayes = approx_bayes_output(goal, tiny_engine, prompt, steps, n, seed, node_budget=256, truth_samples=truth)
    assert rows["bayes"].output.tokens == bayes.tokens
    if goal.pointwise and goal.window(steps) < steps:
        fold_b = Samples(truth.tokens[8:], truth.step_logprobs[8:], truth.step_warped_logprobs[8:])
        held_out = estimate_risk(goal, tiny_engine, Fixed(bayes.tokens), prompt, steps, 8, seed, truth_samples=fold_b)
        assert rows["bayes"].risk.mean == pytest.approx(held_out.mean, rel=BATCH_REL)
        assert rows["bayes"].risk.n == rows["mbr"].risk.n == rows["greedy"].regret.n == 8
    assert [s.tokens for s in result.samples] == [p.tokens for p in truth.paths()[:2]]


def test_a_new_goal_rescores_the_same_rollout(tiny_engine, prompt, monkeypatch):
    """The deterministic decoders and the draws are computed once; each pointwise goal is one ``score``
    call on them, equal to its own ``compare``."""
    steps, n, seed = 4, 16, 1
    settings = DecoderSettings(lookahead_depth=1, beam_width=2, shown_samples=1)
    fixed = decode_fixed(tiny_engine, prompt, steps, settings, False)
    drawn = draw(tiny_engine, prompt, steps, seed, settings, n, fixed, False)
    import core.compare as compare_mod

    def no_walks(*args, **kwargs):
        raise AssertionError("score must not walk the truth rows again")

    expected = {g: compare(tiny_engine, prompt, steps, seed, g, settings, n).to_json(settings)
                for g in (Hamming(), NGramHamming(3), ZeroOne())}
    monkeypatch.setattr(compare_mod, "walk_wave", no_walks)
    monkeypatch.setattr(compare_mod, "sample_groups", no_walks)
    for goal, want in expected.items():
        got = score(tiny_engine, prompt, steps, seed, goal, settings, n, fixed, drawn, False).to_json(settings)
        assert got == want
    with pytest.raises(ValueError, match="the draws were made for pointwise goals, not for KL"):
        score(tiny_engine, prompt, steps, seed, DistributionMatch("kl"), settings, n, fixed, drawn, False)
