"""core.cost: predictions from measured timings, and fitting a setting into a budget (no timed asserts:
the cost models here are given, except one smoke test that ``measure`` returns a sane model)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.compare import LOOKAHEAD_CALLS, lookahead_token_s
from core.cost import DEFAULT_BUDGET_S, SEARCH_BUDGET, Capped, CostModel, budget_seconds, fit, measure
from core.decoders import Lookahead
from core.toy import PRESETS

LOCAL = CostModel("local", (1, 16, 64), (0.004, 0.008, 0.014), 0.0002)


def test_step_interpolates_and_extrapolates_along_the_last_slope():
    assert LOCAL.step(1) == 0.004 and LOCAL.step(0) == 0.004
    assert LOCAL.step(16) == pytest.approx(0.008)
    assert LOCAL.step(40) == pytest.approx(0.008 + 0.006 * 24 / 48)
    assert LOCAL.step(128) == pytest.approx(0.014 + 0.006 / 48 * 64)
    assert LOCAL.walk(64, 10, prompt=20) == pytest.approx(0.004 + 0.0002 * 20 + 10 * 0.014)
    assert LOCAL.forwards(5, 16) == pytest.approx(0.04)


def test_a_server_costs_requests():
    server = CostModel("server", (1,), (0.05,), 0.0, request_s=0.05, concurrency=4)
    assert server.step(1) == 0.05 and server.step(8) == pytest.approx(0.1)


def test_fit_finds_the_largest_setting_within_the_budget():
    predict = lambda n: 0.1 * n  # noqa: E731
    assert fit(predict, 50, 16, 10.0, "samples") is None
    capped = fit(predict, 256, 16, 10.0, "Monte Carlo samples")
    assert isinstance(capped, Capped) and capped.allowed == 100 and capped.requested == 256
    assert capped.requested_s == pytest.approx(25.6) and capped.allowed_s == pytest.approx(10.0)
    assert "Monte Carlo samples capped at 100 (you asked for 256)" in capped.message()
    assert "Run the full computation" in capped.message()
    assert fit(lambda n: 100.0, 64, 16, 10.0, "x").allowed == 16  # nothing fits: the lowest value


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv("DECODING_EXPLORER_BUDGET_S", "3.5")
    assert budget_seconds() == 3.5
    for bad in ("", "abc", "-1", "inf", "0"):
        monkeypatch.setenv("DECODING_EXPLORER_BUDGET_S", bad)
        assert budget_seconds() == DEFAULT_BUDGET_S


def test_bad_cost_models_are_refused():
    with pytest.raises(ValueError, match="rows and step_s"):
        CostModel("local", (1, 2), (0.1,), 0.0)
    with pytest.raises(ValueError, match="ascending"):
        CostModel("local", (4, 2), (0.1, 0.2), 0.0)


def test_measure_gives_a_sane_model(tiny_engine):
    toy = measure(PRESETS["E1"].build())
    assert toy.kind == "toy" and all(t >= 0 for t in toy.step_s)
    local = measure(tiny_engine, [1, 2, 3])
    assert local.kind == "local" and local.rows[0] == 1 and list(local.step_s) == sorted(local.step_s)
    assert local.step(1000) >= local.step(1) > 0


def test_lookahead_is_predicted_from_the_model_s_own_search_probe(tiny_engine):
    """A peaked model prunes its search (the typical call counts are a floor); a flat one, like a randomly
    initialised model, expands to the node budget, and its prediction follows the probe, never past the budget."""
    local = measure(tiny_engine, [1, 2, 3])
    assert 1 <= local.search_calls <= SEARCH_BUDGET / Lookahead.batch + 1 and local.search_call_s > 0
    call = LOCAL.step(4) + LOCAL.token_s
    peaked = replace(LOCAL, search_calls=2.0, search_call_s=0.001)
    assert lookahead_token_s(peaked, 2, 256, 4) == pytest.approx(LOOKAHEAD_CALLS[2] * call)
    assert lookahead_token_s(peaked, 4, 256, 4) == pytest.approx(LOOKAHEAD_CALLS[4] * call)
    flat = replace(LOCAL, search_calls=65.0, search_call_s=0.02)  # 64 expansions + 1 to complete greedily
    assert lookahead_token_s(flat, 2, 256, 4) == pytest.approx(65 * 0.02)
    assert lookahead_token_s(flat, 4, 256, 4) == pytest.approx(67 * 0.02)  # at most the budget + completion
    assert lookahead_token_s(flat, 1, 256, 4) == pytest.approx(0.02)  # depth 1: one call per token
    assert lookahead_token_s(LOCAL, 2, 256, 4) == pytest.approx(LOOKAHEAD_CALLS[2] * call)  # not measured
