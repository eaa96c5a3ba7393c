"""core.lab_cost: the labs' cost model — what it predicts from measured building blocks (structure and
scaling, never timings) — and cap_settings, which lowers settings in order until a prediction fits."""

from __future__ import annotations

import math

import pytest
from lab_costs import uniform_costs

from core.decoders import MBR, Greedy, Sampling
from core.goals import Hamming, ZeroOne
from core.lab_cost import KINDS, LabCost, Setting, cap_settings, measure, prefixes, sequences, sweep_units, toy_kind
from core.toy import PRESETS, random_markov_chain, random_table


def test_measure_times_every_block_for_both_toy_kinds():
    cost = measure()
    assert isinstance(cost, LabCost)
    numbers = [cost.overhead_s, cost.draw_s, cost.sweep_s]
    for table in (cost.output_s, cost.truth_s, cost.per_output_s, cost.model_s, cost.mbr_s):
        assert {kind for (kind, _), _ in table} == set(KINDS)
        numbers += [s for _, s in table]
    assert all(math.isfinite(s) and s >= 0 for s in numbers) and cost.overhead_s > 0
    assert {g.name for (_, g), _ in cost.truth_s} == {"0-1", "Hamming", "2-gram Hamming", "KL(P‖r)", "TV(P, r)"}


def test_sizes_kinds_and_units():
    assert sequences(PRESETS["E1"].build()) == 4 and prefixes(PRESETS["E1"].build()) == 3
    assert sequences(random_markov_chain(4, 1.0, 6, 0)) == 4096 and prefixes(random_markov_chain(4, 1.0, 6, 0)) == 1365
    big = random_markov_chain(6, 1.0, 6, 0)
    assert sequences(big) > 46656  # beyond the reference size costs grow a little faster than linearly
    assert toy_kind(big) == "chain" and toy_kind(random_table(2, 3, 0)) == "table"
    assert sweep_units((2, 3), (0.1, 1.0), 10, 8) == 10 * 8 * 2 * (4 + 9)


def test_predictions_scale_with_what_they_enumerate():
    cost = uniform_costs(1e-3, 1e-5, mbr_run_s=1e-3)
    small, large = random_markov_chain(3, 1.0, 4, 0), random_markov_chain(3, 1.0, 6, 0)
    goals = [ZeroOne(), Hamming()]
    for decoder in (Greedy(), Sampling(), MBR(Hamming())):
        assert cost.decoder_seconds(decoder, goals, large, 6, 16) > cost.decoder_seconds(decoder, goals, small, 4, 16)
    assert cost.decoder_seconds(Sampling(), goals, large, 6, 0) > cost.decoder_seconds(Greedy(), goals, large, 6, 0)
    mbr = [cost.decoder_seconds(MBR(Hamming()), goals, large, 6, runs) for runs in (16, 32, 64)]
    assert mbr[0] < mbr[1] < mbr[2]
    mixture = cost.curve_seconds(Sampling(), ZeroOne(), "mixture", 9, small, 4, 20, 64)
    learned = cost.curve_seconds(Sampling(), ZeroOne(), "learned", 9, small, 4, 20, 64)
    assert learned > 10 * mixture  # 20 fitted models per point instead of one
    assert cost.curve_seconds(Sampling(), ZeroOne(), "learned", 9, small, 4, 5, 64) < learned
    one = cost.decoder_seconds(Sampling(), [ZeroOne()], small, 4, 0)
    build = cost.overhead_s + cost.model("chain", "mixture") * sequences(small)
    assert mixture == pytest.approx(9 * (one + build) + one)
    assert cost.sampling_seconds(small, 10000) > cost.sampling_seconds(small, 10)
    assert cost.sweep_seconds((2, 8), (1.0,), 500, 8) > cost.sweep_seconds((2, 8), (1.0,), 50, 8)
    assert cost.temperature_seconds(large) > cost.temperature_seconds(small)


def linear(settings) -> float:
    return 0.1 * settings["a"] * settings["b"]


def test_cap_settings_lowers_in_order_as_little_as_needed():
    requested = {"a": 10, "b": 64}
    order = [Setting("b", "B", 16, (16, 32, 64)), Setting("a", "A", 1)]
    assert cap_settings(linear, requested, order, 100.0) == ({"a": 10, "b": 64}, [], True)
    allowed, caps, fits = cap_settings(linear, requested, order, 40.0)  # b: 64 -> 32 fits (32.0 s)
    assert allowed == {"a": 10, "b": 32} and fits and len(caps) == 1
    assert (caps[0].name, caps[0].requested, caps[0].allowed) == ("B", 64, 32)
    assert caps[0].requested_s == pytest.approx(64.0) and caps[0].allowed_s == pytest.approx(32.0)
    assert caps[0].budget_s == 40.0 and "B capped at 32 (you asked for 64)" in caps[0].message()
    allowed, caps, fits = cap_settings(linear, requested, order, 8.0)  # b to its lowest, then a: 16·5·0.1 = 8
    assert allowed == {"a": 5, "b": 16} and fits
    assert [(c.name, c.requested, c.allowed) for c in caps] == [("B", 64, 16), ("A", 10, 5)]
    assert all(c.requested_s == pytest.approx(64.0) and c.allowed_s == pytest.approx(8.0) for c in caps)
    allowed, caps, fits = cap_settings(linear, requested, order, 1.0)  # even a = 1, b = 16 takes 1.6 s
    assert allowed == {"a": 1, "b": 16} and not fits and len(caps) == 2
    allowed, caps, fits = cap_settings(linear, {"a": 1, "b": 16}, order, 1.0)  # nothing left to lower
    assert allowed == {"a": 1, "b": 16} and caps == [] and not fits
    with pytest.raises(ValueError, match="b must be one of 16, 32, 64, got 48"):
        cap_settings(linear, {"a": 1, "b": 48}, order, 1.0)
