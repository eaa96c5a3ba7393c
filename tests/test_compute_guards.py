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
    """The knobs a page offers stay inside the budgets (the tables in test_bad_inputs*.py check that
    values outside them are refused with a message)."""
    from pages.common import MAX_TEXT_STEPS

    lo, hi = core_compare.N_SAMPLES_RANGE
    assert MAX_TEXT_STEPS * hi <= core_compare.MC_TOKEN_BUDGET  # Hamming / 0-1 / KL at the largest setting
    assert core_compare.MAX_NEURAL_LOOKAHEAD <= 4 and core_compare.NEURAL_NODE_BUDGET <= 1024
    assert core_compare.BAYES_NODE_BUDGET <= 4096
