"""Issue 15: Compare's truth rows in prefix-stable waves (a partial result is the request with fewer rows, byte for
byte; a stopped computation continues where it stopped), its Monte Carlo numbers against the exact ones on a toy
hidden behind the neural code path, predicted seconds and the caps that keep a click within a budget (injected
cost models: no timing here), extra samplers, and exports that name their source."""

from __future__ import annotations

import json
import math

import pytest
import torch

from core.compare import (
    COMPARE_DRAWS,
    DecoderSettings,
    compare,
    decode_fixed,
    draw,
    draw_waves,
    lineup,
    partial_sizes,
    plan,
    predict,
    score,
    wave_sizes,
)
from core.cost import CostModel
from core.decoders import Sampling, sample_many
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.risk import exact_risk
from core.rollout import DRAWS_STREAM, WAVES_STREAM, derived_seed
from core.toy import PRESETS, random_markov_chain

STEPS, SEED = 3, 11
SETTINGS = DecoderSettings(lookahead_depth=2, beam_width=2, shown_samples=2, mbr_candidates=8,
                           extra=(("min_p", 0.05), ("top_n_sigma", 1.5)))
FAST = CostModel("local", (1, 16, 64, 256), (0.003, 0.007, 0.02, 0.07), 0.0001, token_s=0.001, row_token_s=2e-5,
                 sort_row_s=2e-4)
SLOW = CostModel("local", (1, 16, 64), (0.04, 0.1, 0.24), 0.0035, token_s=0.004, row_token_s=4e-5, sort_row_s=3e-3)


@pytest.fixture(scope="module")
def prompt(tiny_engine):
    return tiny_engine.encode("def f(x):\n    return")


@pytest.fixture(scope="module")
def fixed(tiny_engine, prompt):
    return decode_fixed(tiny_engine, prompt, STEPS, SETTINGS, False)


def test_wave_sizes_double_and_end_at_n():
    assert wave_sizes(16) == [16] and wave_sizes(17) == [16, 1]
    assert wave_sizes(64) == [16, 16, 32] and wave_sizes(100) == [16, 16, 32, 36]
    assert partial_sizes(1024) == [16, 32, 64, 128, 256, 512, 1024] and partial_sizes(40) == [16, 32, 40]


@pytest.mark.parametrize("goal", [Hamming(), ZeroOne(), DistributionMatch("kl")], ids=lambda g: g.name)
def test_a_partial_result_is_the_request_with_fewer_rows(tiny_engine, prompt, fixed, goal):
    """After the waves of n rows the result is ``compare`` of n rows, byte for byte, and continuing a stopped
    request gives the bytes of the request computed at once."""
    partial = list(draw_waves(tiny_engine, prompt, STEPS, SEED, SETTINGS, 64, fixed, False, goal.pointwise))
    assert [d.n for d in partial] == [16, 32, 64]
    for drawn in partial:
        got = score(tiny_engine, prompt, STEPS, SEED, goal, SETTINGS, 64, fixed, drawn, False).to_json(SETTINGS)
        assert got == compare(tiny_engine, prompt, STEPS, SEED, goal, SETTINGS, drawn.n).to_json(SETTINGS)
    stopped = draw(tiny_engine, prompt, STEPS, SEED, SETTINGS, 32, fixed, False, goal.pointwise)
    resumed = list(draw_waves(tiny_engine, prompt, STEPS, SEED, SETTINGS, 64, fixed, False, goal.pointwise,
                              done=stopped))
    assert resumed[0].waves[0] is stopped.waves[0] and resumed[1].waves[1] is stopped.waves[1]  # not walked again
    assert (score(tiny_engine, prompt, STEPS, SEED, goal, SETTINGS, 64, fixed, resumed[-1], False).to_json(SETTINGS)
            == compare(tiny_engine, prompt, STEPS, SEED, goal, SETTINGS, 64).to_json(SETTINGS))


def test_waves_are_seeded_draws_and_join_the_folds_wave_by_wave(tiny_engine, prompt, fixed):
    """Wave w's truth rows are ``sample_many`` with ``derived_seed(seed, WAVES_STREAM, w)``; each random decoder's
    own draws are ``sample_many`` with the draws' seed (the first one is shown); fold A is the first half of every
    wave, paired row by row with fold B."""
    drawn = draw(tiny_engine, prompt, STEPS, SEED, SETTINGS, 40, fixed, False)
    assert [w.n for w in drawn.waves] == [16, 16, 8]
    for w, wave in enumerate(drawn.waves):
        want = sample_many(tiny_engine, prompt, STEPS, wave.n, derived_seed(SEED, WAVES_STREAM, w))
        assert torch.equal(wave.tokens, want.tokens)
    r = drawn.rollout
    a, b = [w.tokens[: w.n // 2] for w in drawn.waves], [w.tokens[w.n // 2 :] for w in drawn.waves]
    assert torch.equal(r.tokens, torch.cat(a + b)) and r.n_select == 20
    torch.testing.assert_close(r.pair_hits[:, 0], drawn.waves[0].pair_hits[:, 0])  # row 0 pairs with row 20 = 8
    for key, decoder in lineup(SETTINGS, STEPS, False):
        if decoder.is_random and not decoder.is_identity:
            own = sample_many(tiny_engine, prompt, STEPS, COMPARE_DRAWS, derived_seed(SEED, DRAWS_STREAM), decoder)
            assert torch.equal(r.columns(f"draws:{key}", "draws").tokens, own.tokens)
            assert drawn.shown[key].tokens == own.paths()[0].tokens
    assert [p.tokens for p in drawn.samples] == [tuple(t) for t in drawn.waves[0].tokens[:2].tolist()]


class Hidden:
    """A toy without its exact tables, so Compare treats it as a neural model (Monte Carlo)."""

    def __init__(self, toy):
        self.toy, self.vocab_size, self.eos_id = toy, toy.vocab_size, getattr(toy, "eos_id", None)

    def logprobs(self, prefixes):
        return self.toy.logprobs(prefixes).float()


@pytest.mark.parametrize("goal", [Hamming(), NGramHamming(2), DistributionMatch("tv")], ids=lambda g: g.name)
def test_monte_carlo_risks_cover_the_exact_ones(goal):
    """On a random Markov chain, every Monte Carlo risk (4 waves, 256 truth rows) lies within twice its 95%
    half-width of the exact risk (about 4 standard errors: a miss is a bug, not bad luck)."""
    toy = random_markov_chain(3, 1.0, 4, seed=2)
    settings = DecoderSettings(lookahead_depth=2, beam_width=2, shown_samples=0, mbr_candidates=8,
                               extra=(("min_p", 0.3),))
    exact = {r.key: r.risk.mean for r in compare(toy, [], 4, 0, goal, settings).rows}
    mc = compare(Hidden(toy), [], 4, 0, goal, settings, 256)
    assert mc.n_samples == 256 and not mc.exact
    for row in mc.rows:
        if row.key in ("mbr", "bayes") or not math.isfinite(exact[row.key]):
            continue  # chosen on the truth rows (not the same output as the exact one), or infinite
        slack = 2 * row.risk.half_width + 1e-6
        assert abs(row.risk.mean - exact[row.key]) <= slack, (row.label, row.risk, exact[row.key])


def test_extra_samplers_are_rows_named_by_their_warper():
    toy = PRESETS["E1"].build()
    result = compare(toy, [], 2, 0, Hamming(), DecoderSettings(extra=(("min_p", 0.3), ("top_n_sigma", 1.0))))
    rows = {r.key: r for r in result.rows}
    assert rows["extra:min_p"].label == "sampling (τ=1, min-p=0.3)"
    assert "not in transformers" in rows["extra:top_n_sigma"].label
    assert rows["extra:min_p"].risk.mean == pytest.approx(exact_risk(Hamming(), toy, Sampling(min_p=0.3), 2))
    assert [r.key for r in result.rows][-2:] == ["mbr", "bayes"]
    for extra, message in [((("top_z", 1.0),), "extra sampler must be one of repetition_penalty"),
                           ((("min_p", 0.1), ("min_p", 0.2)), "extra sampler min_p is given twice"),
                           ((("min_p", 2.0),), "min_p must be None or in"),
                           ((("top_k", 0),), "top_k must be")]:
        with pytest.raises(ValueError, match=message):
            lineup(DecoderSettings(extra=extra), 2, True)


def test_exports_name_their_source():
    toy = PRESETS["E1"].build()
    result = compare(toy, [], 2, 0, Hamming(), DecoderSettings())
    info = {"source": "toy:E1", "kind": "toy", "label": "Toy: E1 (exact)", "name": "E1", "revision": "exact toy"}
    doc = json.loads(result.to_json(DecoderSettings(), (), info))
    assert doc["source"] == info
    row = result.table(info)[0]
    assert row["source"] == "toy:E1" and row["source_name"] == "E1" and row["source_revision"] == "exact toy"
    assert "source" not in result.table()[0] and json.loads(result.to_json())["source"] is None


# ---- predicted seconds and caps (injected cost models) ------------------------------------------------


def test_predictions_grow_with_the_work():
    base = predict(FAST, 10, 16, DecoderSettings(), 64)
    assert len(base.waves) == 3 and base.waves[0] > base.waves[1]  # the first wave also draws every decoder's draws
    assert predict(FAST, 10, 16, DecoderSettings(), 256).total > base.total
    assert predict(FAST, 10, 32, DecoderSettings(), 64).total > base.total
    assert predict(FAST, 10, 16, DecoderSettings(lookahead_depth=4), 64).fixed["lookahead"] > base.fixed["lookahead"]
    assert predict(FAST, 10, 16, DecoderSettings(extra=(("top_p", 0.5),)), 64).waves[0] > base.waves[0]  # a sort
    assert predict(SLOW, 10, 16, DecoderSettings(), 64).total > 5 * base.total
    server = CostModel("server", (1,), (0.05,), 0.0, request_s=0.05, concurrency=4)
    assert predict(server, 10, 16, DecoderSettings(), 64).total > 0


def test_plan_caps_rows_then_steps_to_fit_the_budget():
    settings = DecoderSettings()
    fits = plan(FAST, 10, 16, settings, 64, 10.0)
    assert not fits.capped and fits.n_samples == 64 and fits.predicted_s == fits.full_s <= 10.0
    budget = predict(SLOW, 10, 16, settings, 32).total + 0.01  # 32 rows fit, 64 do not
    rows = plan(SLOW, 10, 16, settings, 64, budget)
    assert (rows.steps, rows.n_samples) == (16, 32) and rows.predicted_s <= budget < rows.full_s
    (cap,) = rows.caps
    assert (cap.name, cap.requested, cap.allowed) == ("Monte Carlo samples", 64, 32)
    assert cap.message().startswith("Monte Carlo samples capped at 32 (you asked for 64)")
    both = plan(SLOW, 10, 64, settings, 1024, 5.0)
    assert both.n_samples == 16 and both.steps < 64 and both.predicted_s <= 5.0
    assert [c.name for c in both.caps] == ["Monte Carlo samples", "Steps"]
    assert both.n_samples in partial_sizes(1024)  # the full computation continues from the capped one
    floor = plan(SLOW, 10, 64, DecoderSettings(lookahead_depth=4), 1024, 0.001, min_steps=3)
    assert floor.steps == 3 and floor.n_samples == 16 and floor.settings.lookahead_depth == 3  # not below N
    assert [c.name for c in floor.caps] == ["Monte Carlo samples", "Steps", "Lookahead depth"]
    toy = plan(SLOW, 0, 2, settings, 64, 0.001, exact=True)
    assert not toy.capped and toy.steps == 2
