"""Compare page (AppTest): exact numbers on a toy, goal switching, bad input as st.error, and one
run on the shipped model with a few tokens."""

from __future__ import annotations

import pytest
from pagetest import open_page
from streamlit.testing.v1 import AppTest

PAGE = "../pages/compare.py"


def run_page(**state) -> AppTest:
    return open_page("compare", timeout=120, **state)


def table(at: AppTest):
    return at.dataframe[0].value.set_index("decoder")


def test_toy_exact_risks_and_goal_switch():
    at = run_page(source="toy:E1", steps=2, goal="0-1")
    assert not at.exception and not at.error
    t = table(at)
    assert t.loc["greedy", "risk"] == pytest.approx(0.67)
    assert t.loc["Bayes output (0-1)", "risk"] == pytest.approx(0.64)
    assert t.loc["Bayes output (0-1)", "output"] == "BA"
    assert t.loc["greedy", "regret"] == pytest.approx(0.03)
    assert any("Exact: enumerated" in c.value for c in at.caption)
    at.selectbox(key="goal").set_value("Hamming").run()
    t = table(at)
    assert t.loc["Bayes output (Hamming)", "output"] == "AA"
    assert t.loc["lookahead (depth 2)", "risk"] == pytest.approx(0.91)
    assert t.loc["greedy", "regret"] == pytest.approx(0.0)
    assert "goal" not in at.query_params  # Hamming is the default goal: links leave it out
    at.selectbox(key="goal").set_value("0-1").run()
    assert at.query_params["goal"] == "0-1"


def test_bad_inputs_show_errors_not_tracebacks():
    at = run_page(source="toy:E1", steps=2)
    at.number_input(key="cmp_tau").set_value(0.0).run()
    assert not at.exception
    assert "temperature must be > 0" in at.error[0].value
    at.number_input(key="cmp_tau").set_value(0.7).run()
    at.number_input(key="cmp_top_p").set_value(1.5).run()
    assert "top_p must be None or in (0, 1]" in at.error[0].value
    at.number_input(key="cmp_top_p").set_value(0.9).run()
    at.number_input(key="steps").set_value(0).run()
    assert not at.exception
    assert "steps (for E1, a toy of length 2) must be an integer from 1 to 2, got 0" in at.error[0].value


def test_switching_to_a_toy_sets_its_length():
    at = run_page(prompt="  ", steps=0, goal="0-1")  # shipped model, bad input: no compute happens
    assert not at.exception
    assert at.error[0].value == "steps must be an integer from 1 to 64, got 0"
    at.number_input(key="steps").set_value(8).run()
    assert not at.exception
    assert "prompt is empty" in at.error[0].value
    at.selectbox(key="source").set_value("toy:E2").run()
    assert not at.exception and not at.error
    assert at.session_state["steps"] == 2
    assert table(at).loc["Bayes output (0-1)", "output"] == "BB"


def test_link_reproduces_the_view():
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["source"] = "toy:E1"
    at.query_params["steps"] = "2"
    at.query_params["goal"] = "Hamming"
    at.query_params["cmp_depth"] = "1"
    at.run()
    assert not at.exception and not at.error
    t = table(at)
    assert "lookahead (depth 1)" in t.index and t.loc["Bayes output (Hamming)", "risk"] == pytest.approx(0.71)


def test_shipped_model_few_tokens():
    at = run_page(steps=3, cmp_n_samples=16, cmp_depth=1, cmp_beam=2, cmp_shown=1)
    assert not at.exception and not at.error
    t = table(at)
    assert len(t) == 9 and (t["ci_low"] <= t["risk"]).all() and (t["risk"] <= t["ci_high"]).all()
    assert any("Monte Carlo" in c.value and "16 sampled" in c.value for c in at.caption)
    assert at.code[0].value  # the prompt is shown


def test_monte_carlo_page_says_how_it_estimated():
    """Issue 11: the split into fold A (choosing the Bayes output and MBR) and fold B (scoring them), the
    regret's own interval, the small-n warning, MBR's references, the greedy certificate, EOS padding."""
    at = run_page(prompt="import numpy as", steps=2, cmp_n_samples=16, cmp_depth=1, cmp_beam=2, cmp_shown=0)
    assert not at.exception and not at.error
    t = table(at)
    assert {"regret", "regret_low", "regret_high", "n"} <= set(t.columns)
    assert (t["regret_low"] <= t["regret"]).all() and (t["regret"] <= t["regret_high"]).all()
    assert t.loc["MBR (Hamming)", "n"] == "n = 8" and t.loc["greedy", "n"] == "n = 16"
    captions = " ".join(c.value for c in at.caption)
    assert "chosen on 8 of the truth rows (fold A: the first half of every wave) and scored on the other 8" in captions
    assert "paired difference" in captions and "Student-t" in captions and "padded with EOS" in captions
    assert "Eikema & Aziz 2020" in captions and "Bertsch et al. 2023" in captions and "ε = 0.02" in captions
    assert "so a regret can be negative" not in captions
    assert any("Few rows" in i.value for i in at.info)
    assert any(s.value.startswith("Greedy is exactly the mode — certified, no search needed") for s in at.success)
    at.selectbox(key="goal").set_value("Distribution match (TV)").run()
    assert not at.exception and not at.error
    assert "MBR (Hamming)" not in table(at).index and len(table(at)) == 8


def test_navigation_declares_every_page_in_order():
    """AppTest cannot drive st.navigation, so check app.py's declaration: Compare first, then the
    order of issue 5 (Consistency from issue 13), and every page file exists. No page file is the
    default: / is a hidden page forwarding to Compare, so /compare itself opens Compare (issue 13)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    calls = [n for n in ast.walk(ast.parse((root / "app.py").read_text())) if isinstance(n, ast.Call)
             and getattr(n.func, "attr", "") == "Page" and isinstance(n.args[0], ast.Constant)]
    pages = [(c.args[0].value, {k.arg: getattr(k.value, "value", None) for k in c.keywords}) for c in calls]
    assert [kw["title"] for _, kw in pages] == ["Compare", "Step inspector", "Choice points", "Theory lab",
                                               "Consistency", "Speculative", "Models"]
    assert not any(kw.get("default") for _, kw in pages)
    assert all((root / path).is_file() for path, _ in pages)


def test_compare_runs_on_the_pretrained_smollm2():
    """Issue 7: the Compare page on SmolLM2-135M (real English; `make` installs it), greedy says Paris."""
    at = run_page(source="smollm2", prompt="The capital of France is", steps=2, cmp_n_samples=16, goal="Hamming")
    assert not at.exception and not at.error
    t = table(at)
    assert len(t) == 9  # seven decoders, MBR and the Bayes output
    assert "Paris" in t.loc["greedy", "output"]
    assert (t["risk"] >= 0).all() and (t["risk"] <= 2).all()  # Hamming over 2 tokens


def test_switching_to_smollm2_keeps_the_page_responsive(monkeypatch):
    """Issue 15: switching models no longer rewrites the settings; the page predicts the click's seconds from
    the model's measured cost (here an injected slow one) and caps what would take too long."""
    import pages.common as common
    from core.cost import CostModel

    slow = CostModel("local", (1, 16, 64), (0.04, 0.1, 0.24), 0.0035, token_s=0.004, row_token_s=4e-5, sort_row_s=3e-3)
    monkeypatch.setattr(common, "source_cost", lambda source: slow)
    monkeypatch.setenv("DECODING_EXPLORER_BUDGET_S", "4")
    at = run_page(source="toy:E1", steps=2)
    at.selectbox(key="source").set_value("smollm2").run()
    assert not at.exception and not at.error
    assert at.session_state["steps"] == 16 and at.session_state["cmp_n_samples"] == 64
    assert [w.value.split(" capped at ")[0] for w in at.warning][:2] == ["Monte Carlo samples", "Steps"]
    assert len(table(at)) == 9
