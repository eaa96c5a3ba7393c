"""Compute guards (issue 7): every request has a budget (search nodes, Monte Carlo samples x tokens,
steps, enumeration size), and when a search budget runs out the page says so and shows the bound.
Budgets are forced tiny here so they are hit on purpose."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import compare as core_compare
from core.decoders import Lookahead
from core.goals import ZeroOne
from core.risk import approx_bayes_output
from core.toy import hidden_path


def test_lookahead_reports_an_exhausted_budget_with_its_bound():
    truth = hidden_path()
    exact = Lookahead(5).decode(truth, [], 6)
    cut = Lookahead(5, node_budget=2).decode(truth, [], 6)
    assert not exact.budget_exhausted and exact.bound == 0.0
    assert cut.budget_exhausted and cut.bound > 0.0
    assert cut.logprob <= exact.logprob + 1e-12


def test_mode_search_says_when_its_budget_ran_out(tiny_engine):
    res = approx_bayes_output(ZeroOne(), tiny_engine, [1, 2], 3, 16, 0, node_budget=1)
    assert not res.exact
    assert "best-first search hit its budget of 1 nodes" in res.method and "log P(mode) ≤" in res.method


@pytest.fixture
def tiny_budgets(monkeypatch):
    monkeypatch.setattr(core_compare, "NEURAL_NODE_BUDGET", 1)
    monkeypatch.setattr(core_compare, "BAYES_NODE_BUDGET", 1)
    st.cache_data.clear()  # no cached result computed under the real budgets
    yield
    st.cache_data.clear()


def test_compare_page_says_when_a_budget_is_hit(tiny_budgets):
    at = AppTest.from_file("../pages/compare.py", default_timeout=120)
    for key, value in {
        "source": "mtp",
        "steps": 3,
        "seed": 4242,
        "goal": "0-1",
        "cmp_depth": 2,
        "cmp_beam": 2,
        "cmp_n_samples": 16,
        "cmp_shown": 0,
    }.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception and not at.error
    captions = [c.value for c in at.caption]
    assert any(
        "node budget of 1 per token reached: the output is the best found" in c and "nats of the exact" in c
        for c in captions
    ), captions
    assert any("best-first search hit its budget of 1 nodes" in c and "approximate" in c for c in captions), captions


def test_budgets_are_explicit_and_bounded():
    """The knobs a page offers stay inside the search budgets (the tables in test_bad_inputs*.py check that
    values outside them are refused with a message); Monte Carlo work is bounded by predicted seconds instead
    of a token count (issue 15): at the largest settings a slow model's plan stays within the budget."""
    from core.cost import CostModel
    from pages.common import MAX_TEXT_STEPS

    assert core_compare.MAX_NEURAL_LOOKAHEAD <= 4 and core_compare.NEURAL_NODE_BUDGET <= 1024
    assert core_compare.BAYES_NODE_BUDGET <= 4096
    slow = CostModel("local", (1, 16, 64), (0.04, 0.1, 0.24), 0.0035, token_s=0.004, row_token_s=4e-5,
                     sort_row_s=3e-3)
    largest = core_compare.DecoderSettings(lookahead_depth=4, beam_width=core_compare.MAX_BEAM_WIDTH, shown_samples=10,
                                           mbr_candidates=core_compare.MBR_CANDIDATES_RANGE[1],
                                           extra=tuple((a, 0.5) for a in ("min_p", "typical_p", "eta_cutoff")))
    lo, hi = core_compare.N_SAMPLES_RANGE
    chosen = core_compare.plan(slow, 50, MAX_TEXT_STEPS, largest, hi, 10.0)
    assert chosen.full_s > 100 and chosen.n_samples == lo and chosen.steps < MAX_TEXT_STEPS
    assert chosen.predicted_s <= 10.0
