"""Issue 15 on the pages (AppTest, injected cost models, no timing): what a click would cost is predicted from the
model's measured cost; settings that would take longer than the budget are capped however they arrived (here: a
link), the page says what and why, and "Run the full computation" runs them as asked. Compare keeps the rows it
computed when stopped ("partial, n = k of N") and continues from them. Exports name their source."""

from __future__ import annotations

import pytest
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest

import pages.common as common
from core.compare import DecoderSettings, plan
from core.cost import CostModel
from core.engine import load_default

SLOW = CostModel("local", (1, 16, 64), (0.04, 0.1, 0.24), 0.0035, token_s=0.004, row_token_s=4e-5, sort_row_s=3e-3)
PAGES = "../pages/{}.py"


@pytest.fixture
def cost(monkeypatch):
    """Make every source cost ``SLOW`` (set ``cost.model`` to change it) and the budget ``cost.budget`` seconds."""
    class Injected:
        model = SLOW

        @property
        def budget(self) -> float:
            return float(common.budget_seconds())

        @budget.setter
        def budget(self, seconds: float) -> None:
            monkeypatch.setenv("DECODING_EXPLORER_BUDGET_S", str(seconds))

    injected = Injected()
    monkeypatch.setattr(common, "source_cost", lambda source: injected.model)
    return injected


def link(page: str, **params) -> AppTest:
    at = AppTest.from_file(PAGES.format(page), default_timeout=180)
    for key, value in params.items():
        at.query_params[key] = str(value)
    return at.run()


def table(at: AppTest):
    return at.dataframe[0].value.set_index("decoder")


def full_button(at: AppTest):
    return next(b for b in at.button if b.label.startswith("Run the full computation (predicted "))


def test_compare_caps_a_link_s_rows_and_runs_them_in_full_on_request(cost):
    prompt = "def fibonacci(n):\n    "
    length = len(load_default().encode(prompt))
    budget = plan(SLOW, length, 3, DecoderSettings(), 32, 1e9).predicted_s + 0.01  # 32 rows fit, 64 do not
    cost.budget = budget
    want = plan(SLOW, length, 3, DecoderSettings(), 64, budget)
    assert want.n_samples == 32 and want.predicted_s <= budget
    at = link("compare", prompt=prompt, steps=3, cmp_n_samples=64, seed=5)
    assert not at.exception and not at.error
    assert [w.value for w in at.warning] == [c.message() for c in want.caps]
    assert at.warning[0].value.startswith("Monte Carlo samples capped at 32 (you asked for 64)")
    assert full_button(at).label == f"Run the full computation (predicted {want.full_s:.0f} s)"
    assert table(at).loc["greedy", "n"] == "n = 32"
    full_button(at).click().run()
    assert not at.exception and not at.error and not at.warning
    assert table(at).loc["greedy", "n"] == "n = 64"


def test_a_smollm2_link_is_capped_to_the_budget(cost):
    """The issue's link: SmolLM2 at the defaults (16 steps x 64 rows) arrives from a URL, not the sidebar; the
    prediction decides the rows and steps, whatever the link says."""
    cost.budget = 4.0
    prompt = "The best way to learn a language is"
    at = link("compare", source="smollm2", prompt=prompt)
    assert not at.exception and not at.error
    names = [w.value.split(" capped at ")[0] for w in at.warning]
    assert names[:2] == ["Monte Carlo samples", "Steps"]
    assert at.session_state["steps"] == 16 and at.session_state["cmp_n_samples"] == 64  # the link's values stay
    t = table(at)
    assert len(t) == 9 and t.loc["greedy", "n"] == "n = 16"


def test_compare_stops_keeps_the_rows_and_continues(cost):
    cost.model = CostModel("local", (1,), (1e-6,), 0.0)  # nothing is capped
    at = link("compare", steps=3, cmp_n_samples=16, seed=9137)
    assert not at.exception and table(at).loc["greedy", "n"] == "n = 16"
    request = at.session_state["cmp_request"]
    at.session_state["cmp_stopped"] = {request}  # what the Stop button's callback records mid-run
    at.number_input(key="cmp_n_samples").set_value(64).run()
    assert not at.exception and not at.error
    assert at.session_state["cmp_request"] == request  # the same request, more rows asked
    assert any(i.value == "Partial: n = 16 of 64 truth rows (stopped)." for i in at.info)
    assert table(at).loc["greedy", "n"] == "n = 16"
    resume = next(b for b in at.button if b.label.startswith("Continue"))
    assert resume.label == "Continue (48 more truth rows)"
    resume.click().run()
    assert not at.exception and not any(i.value.startswith("Partial") for i in at.info)
    assert table(at).loc["greedy", "n"] == "n = 64"


def test_extra_samplers_and_exports_that_name_their_source(cost, monkeypatch):
    saved = {}
    original = DeltaGenerator.download_button

    def record(self, label, data, *args, **kwargs):
        saved[label] = data
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", record)
    at = AppTest.from_file(PAGES.format("compare"), default_timeout=60)
    for key, value in {"source": "toy:E1", "steps": 2, "cmp_extra": "min_p,top_n_sigma", "cmp_x_min_p": 0.3}.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception and not at.error
    t = table(at)
    assert t.loc["sampling (τ=1, min-p=0.3)", "risk"] == pytest.approx(0.8926)
    assert "sampling (τ=1, top-nσ=1 (not in transformers))" in t.index
    assert at.multiselect(key="cmp_extra_pick").value == ["min_p", "top_n_sigma"]
    assert '"source": "toy:E1"' in saved["Download results (JSON)"]
    assert "source,source_kind,source_label" in saved["Download table (CSV)"].splitlines()[0]


def test_step_inspector_caps_a_link_s_steps(cost):
    cost.budget = 1.0
    at = link("step_inspector", steps=64)
    assert not at.exception and not at.error
    assert at.warning[0].value.startswith("Steps capped at ") and "(you asked for 64)" in at.warning[0].value
    full_button(at).click().run()
    assert not at.exception and not at.error and not at.warning
    assert at.slider(key="inspector_step").max == 63


def test_choice_points_caps_the_pair_s_top_k(cost):
    cost.model = CostModel("local", (1, 16, 64), (0.001, 0.4, 1.6), 0.0)  # rows are dear, steps cheap
    cost.budget = 3.0
    at = link("choice_points", steps=4, cp_top_k=64)
    assert not at.exception and not at.error
    assert at.warning[0].value.startswith("Top-k x's capped at 16 (you asked for 64)")
    assert "top-16 values of X" in " ".join(m.value for m in at.markdown) or any(
        "16 most likely x's" in m.value for m in at.markdown)
    full_button(at).click().run()
    assert not at.exception and not at.error and not at.warning
