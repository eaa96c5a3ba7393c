"""Theory lab page (AppTest): E1's exact table, goal switching, toy editing, classroom mode."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

PAGE = "../pages/theory_lab.py"


@pytest.fixture
def at() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["th_chains"] = 50  # keep the heatmap sweep small
    at.session_state["goal"] = "0-1"  # the tests start from the sequence goal (the app's default is Hamming)
    return at.run()


def table(at: AppTest):
    return at.dataframe[0].value.set_index("decoder")


def test_e1_exact_table(at):
    assert not at.exception and not at.error
    t = table(at)
    assert t.loc["greedy", "output"] == "AA"
    assert t.loc["greedy", "0-1"] == pytest.approx(0.67) and t.loc["greedy", "Hamming"] == pytest.approx(0.71)
    assert t.loc["Bayes output (0-1)", "output"] == "BA"
    assert t.loc["Bayes output (0-1)", "0-1"] == pytest.approx(0.64)
    assert t.loc["Bayes output (0-1)", "Hamming"] == pytest.approx(0.91)
    assert t.loc["sampling (τ=0.5)", "KL(P‖r)"] == pytest.approx(0.07270, abs=1e-5)  # E4
    assert t.loc["sampling (τ=1)", "0-1"] == pytest.approx(0.687)  # E3
    assert t.index[0] in ("lookahead (depth 2)", "beam (width 2)", "Bayes output (0-1)")  # sorted by 0-1 risk


def test_goal_switch_changes_the_table(at):
    before = at.dataframe[0].value
    at.selectbox(key="goal").set_value("Hamming").run()
    after = at.dataframe[0].value
    assert not at.exception
    assert list(before["decoder"]) != list(after["decoder"])
    assert "regret (Hamming)" in after.columns and after.iloc[0]["Hamming"] == pytest.approx(0.71)


def test_binary_tree_editor(at):
    at.segmented_control(key="th_kind").set_value("Binary tree").run()
    assert not at.exception
    at.slider(key="th_p_1").set_value(0.0).run()  # E2: P(A|B) = 0
    t = table(at)
    assert t.loc["Bayes output (0-1)", "output"] == "BB" and t.loc["Bayes output (Hamming)", "output"] == "AB"
    assert t.loc["Bayes output (Hamming)", "Hamming"] == pytest.approx(0.73)


def test_markov_chain_and_ngram_goal_check(at):
    at.segmented_control(key="th_kind").set_value("Markov chain").run()
    assert not at.exception and not at.error
    assert len(table(at)) == 9  # greedy, lookahead 2 and 3, beam, two samplers, three Bayes outputs
    at.selectbox(key="goal").set_value("N-gram Hamming").run()
    at.number_input(key="ngram_n").set_value(9).run()
    assert not at.exception
    assert "must be from 1 to the toy's length 5" in at.error[0].value


def test_classroom_mode(at):
    at.toggle(key="th_classroom").set_value(True).run()
    assert not at.exception
    assert "Greedy is not the mode" in at.markdown[-1].value and "0.64" in at.markdown[-1].value
    at.button(key="th_next").click().run()
    assert "The mode is not Hamming-optimal" in at.markdown[-1].value and "0.71" in at.markdown[-1].value


def test_greedy_optimality_heatmap_has_equal_cells(at):
    import json

    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert spec["layout"]["xaxis"]["type"] == "category" and spec["layout"]["yaxis"]["type"] == "category"
    assert spec["data"][0]["x"] == ["0.1", "0.3", "1.0", "3.0", "10.0"] and spec["data"][0]["y"][0] == "2"
    assert spec["data"][0]["colorbar"]["title"]["text"] == "fraction of chains"
    assert spec["data"][0]["textfont"]["size"] >= 12
