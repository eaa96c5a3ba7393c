"""Theory lab page (AppTest): E1's exact table (with MBR estimated from seeded runs and the samplers of the
warper chain, exact), goal switching, toy editing, the EOS toy shown padded, the claims section, classroom
mode walking through every section it names, a CSV behind every chart, and the cost guards (caps on a link
with huge settings, the full computation on request)."""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest
import streamlit as st
from lab_costs import uniform_costs
from streamlit.testing.v1 import AppTest

from core import lab_cost
from core.decoders import Sampling
from core.goals import ZeroOne
from core.risk import exact_risk
from core.toy import PRESETS

PAGE = "../pages/theory_lab.py"


@pytest.fixture
def at() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["th_chains"] = 50  # keep the heatmap sweep small
    at.session_state["goal"] = "0-1"  # the tests start from the sequence goal (the app's default is Hamming)
    return at.run()


@pytest.fixture
def downloads(monkeypatch) -> dict:
    """{key: (file name, CSV as a DataFrame)} of every st.download_button the page draws."""
    seen, original = {}, st.download_button

    def record(label, data, file_name=None, mime=None, key=None, **kw):
        seen[key] = (file_name, pd.read_csv(io.StringIO(data)) if str(file_name).endswith(".csv") else data)
        return original(label, data, file_name, mime, key=key, **kw)

    monkeypatch.setattr(st, "download_button", record)
    return seen


def table(at: AppTest):
    return at.dataframe[0].value.set_index("decoder")


def chart_keys(at: AppTest) -> list[str]:
    return [c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")]


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
    assert t.index[0] in ("lookahead (depth 2)", "beam (width 2)", "Bayes output (0-1)", "MBR (0-1)")  # by 0-1 risk
    mbr = t.loc["MBR (0-1)"]  # the most probable of 32 ε-sampled candidates: the mode BA in every run
    assert mbr["output"] == "random" and mbr["0-1"] == pytest.approx(0.64)
    assert mbr["risk is"] == "estimated"
    assert (t.drop(index="MBR (0-1)")["risk is"] == "exact").all()
    band = ("MBR (0-1): 0-1 risk 0.6400, 95% band [0.6400, 0.6400] over 64 runs (every run scored the same: "
            "outcomes rarer than 3/64 may be unseen).")
    assert any("MBR (0-1) is not enumerable: its risks are **estimated**, the mean of the exact risks of 64 seeded "
               "runs (seed 0)" in c.value and band in c.value for c in at.caption)


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
    assert len(table(at)) == 10  # greedy, lookahead 2 and 3, beam, two samplers, MBR, three Bayes outputs
    at.selectbox(key="goal").set_value("N-gram Hamming").run()
    at.number_input(key="ngram_n").set_value(9).run()
    assert not at.exception
    assert "must be from 1 to the toy's length 5" in at.error[0].value


def test_claim_toys_are_presets(at):
    at.selectbox(key="th_preset").set_value("C6 (lookahead worse)").run()
    t = table(at)
    assert t.loc["greedy", "output"] == "ABA" and t.loc["lookahead (depth 2)", "output"] == "BAA"
    assert t.loc["lookahead (depth 2)", "0-1"] == pytest.approx(1 - .2025)


def test_claims_section_shows_every_claim_checked(at):
    titles = [e.label for e in at.expander if e.label[0] in "✅❌"]
    assert len(titles) == 11 and all(t.startswith("✅") for t in titles)
    assert any("C12: With EOS, the 0-1 mode is the empty output" in t for t in titles)
    assert any("C6: Looking further ahead is not monotonically better" in t for t in titles)
    c6 = next(d.value for d in at.dataframe if "tree" in d.value.columns)
    assert list(c6["output"]) == ["ABA", "BAA", "ABA", "BAB", "ABA", "ABA"]
    markdown = " ".join(m.value for m in at.markdown)
    assert "BAA (P 0.2025)" in markdown and "Violations (certified but not the mode): 0." in markdown
    assert "0.216 (L = 3), 0.0778 (L = 5), 0.00605 (L = 10)" in markdown
    c12 = next(d.value for d in at.dataframe if "P(mode)" in d.value.columns)
    assert list(c12["mode (0-1)"]) == ["⏹⏹⏹", "⏹" * 5, "⏹" * 10] and list(c12["greedy"])[0] == "aaa"


def test_classroom_mode_walks_through_every_section_it_names(at):
    at.toggle(key="th_classroom").set_value(True).run()
    assert not at.exception and not at.error
    seen = []
    while True:
        slide = at.markdown[0].value
        charts, frames = chart_keys(at), [d.value for d in at.dataframe]
        seen.append((slide, charts, len(frames)))
        assert not at.exception and not at.error, slide
        assert charts or frames, f"no section drawn under: {slide}"
        if at.button(key="th_next").disabled:
            break
        at.button(key="th_next").click().run()
    assert len(seen) == 14
    assert "Greedy is not the mode" in seen[0][0] and "0.64" in seen[0][0] and "0.71" in seen[0][0]
    assert "Three goals, three winners" in seen[1][0]
    by_title = {s[0].split("</div>")[0]: s for s in seen}
    temperature = next(s for t, s in by_title.items() if "per-token temperature vs sequence-level" in t)
    assert temperature[1] == ["th_temp"]  # the τ slider's chart, not hidden
    sampling = next(s for t, s in by_title.items() if "Sample N times" in t)
    assert sampling[1] == ["th_hist"]
    assert "Greedy is optimal less often" in seen[-1][0] and seen[-1][1] == ["th_heat"]
    assert any("Looking further ahead" in s[0] and s[2] == 1 for s in seen)  # C6 with its table
    at.button(key="th_prev").click().run()
    assert "Sampling is quantitatively consistent" in at.markdown[0].value


def test_every_chart_has_a_csv(downloads):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["th_chains"] = 50
    at.run()
    assert not at.exception
    assert chart_keys(at) == ["th_temp", "th_hist", "th_heat"]
    assert {"th_temp_csv", "th_hist_csv", "th_heat_csv"} <= set(downloads)
    temp = downloads["th_temp_csv"][1].set_index("output")
    assert temp.loc["AA", "per-token r_τ"] == pytest.approx(0.4147, abs=1e-4)  # E4 at τ = .5
    assert temp.loc["BA", "sequence-level P^(1/τ)/Z"] == pytest.approx(0.4141, abs=1e-4)
    heat = downloads["th_heat_csv"][1]
    assert len(heat) == 25 and set(heat["n_chains"]) == {50}
    assert (heat["greedy is a mode (95% low)"] <= heat["greedy is a mode"]).all()
    hist = downloads["th_hist_csv"][1]
    assert hist["exact r"].sum() == pytest.approx(1.0) and hist["fraction of 1000 draws"].sum() == pytest.approx(1.0)
    assert all(f"th_claim_csv_{k}" in downloads for k in ("E1", "C6", "C11", "C14"))


def test_greedy_optimality_heatmap_has_equal_cells_and_intervals(at):
    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert spec["layout"]["xaxis"]["type"] == "category" and spec["layout"]["yaxis"]["type"] == "category"
    assert spec["data"][0]["x"] == ["0.1", "0.3", "1.0", "3.0", "10.0"] and spec["data"][0]["y"][0] == "2"
    assert spec["data"][0]["colorbar"]["title"]["text"] == "fraction of chains"
    assert spec["data"][0]["textfont"]["size"] >= 12
    assert "50 chains per cell" in spec["layout"]["title"]["text"]
    assert all("[" in cell and "]" in cell for row in spec["data"][0]["text"] for cell in row)
    assert any("95% Wilson interval" in c.value and "1,250 chains in all" in c.value for c in at.caption)


def test_more_samplers_join_the_table_exactly(at):
    at.multiselect(key="th_more").set_value(["min-p", "top-nσ (not in transformers)"]).run()
    at.number_input(key="th_min_p").set_value(0.7).run()
    assert not at.exception and not at.error
    t = table(at)
    e1 = PRESETS["E1"].build()
    min_p = t.loc["sampling (τ=1, min-p=0.7)"]
    assert min_p["risk is"] == "exact"
    assert min_p["0-1"] == pytest.approx(exact_risk(ZeroOne(), e1, Sampling(min_p=0.7), 2), abs=1e-12)
    assert "sampling (τ=1, top-nσ=1 (not in transformers))" in t.index  # llama.cpp's top-nσ at its example n = 1
    assert t.loc["sampling (τ=1, min-p=0.7)", "KL(P‖r)"] == math.inf  # min-p cuts B after A (.45 < .7 · .55)
    at.multiselect(key="th_more").set_value([]).run()
    assert "sampling (τ=1, min-p=0.7)" not in table(at).index


def test_mbr_follows_the_goal_and_needs_a_pointwise_one(at):
    at.selectbox(key="goal").set_value("Hamming").run()
    assert "MBR (Hamming)" in table(at).index and table(at).loc["MBR (Hamming)", "Hamming"] == pytest.approx(0.71)
    at.selectbox(key="goal").set_value("Distribution match (KL)").run()
    assert not at.exception and not at.error
    assert not any(d.startswith("MBR") for d in table(at).index)
    assert any("MBR needs a pointwise goal" in c.value for c in at.caption)


def test_eos_toy_outputs_are_shown_padded(at):
    at.selectbox(key="th_preset").set_value("EOS").run()
    assert not at.exception and not at.error
    t = table(at)
    assert t.loc["greedy", "output"] == "aaa" and t.loc["greedy", "0-1"] == pytest.approx(1 - .216)
    assert t.loc["Bayes output (0-1)", "output"] == "⏹⏹⏹" and t.loc["Bayes output (0-1)", "0-1"] == pytest.approx(.6)
    assert t.loc["Bayes output (Hamming)", "output"] == "a⏹⏹"
    captions = " ".join(c.value for c in at.caption)
    assert "⏹ is EOS: an output that ends early is padded with ⏹ after its EOS" in captions
    assert "(so ⏹⏹⏹ is the empty output)" in captions


# ---- cost guards ------------------------------------------------------------------------------------

SLOW = uniform_costs(1e-3, 1e-4)  # a machine some 10x slower than a laptop: huge settings must be capped


@pytest.fixture
def slow_machine(monkeypatch):
    monkeypatch.setattr(lab_cost, "measured", lambda: SLOW)
    monkeypatch.delenv("DECODING_EXPLORER_BUDGET_S", raising=False)


def infos(at) -> list[str]:
    return [i.value for i in at.info]


def test_a_link_with_huge_settings_is_capped_and_the_full_computation_runs_on_request(slow_machine):
    at = AppTest.from_file(PAGE, default_timeout=120)
    for key, value in {"th_chains": "500", "th_n_draws": "10000", "th_kind": "Markov chain", "th_states": "4",
                       "th_length": "5", "goal": "0-1", "th_mbr_runs": "256"}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception and not at.error
    messages = infos(at)
    assert any(m.startswith("Chains per cell capped at 200 (you asked for 500)") for m in messages), messages
    assert any(m.startswith("N draws capped at 1000 (you asked for 10000)") for m in messages), messages
    mbr = next(m for m in messages if m.startswith("MBR runs capped at "))
    assert "(you asked for 256)" in mbr and "over the 4 s budget per click" in mbr  # the table's share: 40%
    runs = int(mbr.split()[4])
    assert runs in (16, 64)
    assert all("Use “Run the full computation” to run it anyway." in m for m in messages)
    heat = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert "200 chains per cell" in heat["layout"]["title"]["text"]  # computed at the cap
    assert table(at).loc["MBR (0-1)", "risk is"] == "estimated"
    assert any(f"over {runs} runs" in c.value for c in at.caption)
    hist = next(c for c in at.get("plotly_chart") if "1000 draws" in c.proto.spec)  # N draws at the cap
    assert hist
    button = at.button(key="th_sweep_full_btn")
    assert button.label.startswith("Run the full computation (predicted ")
    button.click().run()
    assert not at.exception and not at.error
    heat = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert "500 chains per cell" in heat["layout"]["title"]["text"]
    assert not any(m.startswith("Chains per cell capped") for m in infos(at))
    assert any("running the full computation you asked for" in c.value for c in at.caption)
    assert any(m.startswith("N draws capped at 1000") for m in infos(at))  # other sections keep their caps
    at.select_slider(key="th_chains").set_value(200).run()  # another request: the guard applies again
    at.select_slider(key="th_chains").set_value(500).run()
    assert any(m.startswith("Chains per cell capped at 200") for m in infos(at))


def test_a_section_that_cannot_fit_is_not_run_until_asked(slow_machine, monkeypatch):
    monkeypatch.setenv("DECODING_EXPLORER_BUDGET_S", "0.05")
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["goal"] = "0-1"
    at.run()
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("The exact table is predicted to take") and "so it was not run" in w for w in warnings)
    assert not [d for d in at.dataframe if "risk is" in d.value.columns]
    at.button(key="th_table_full_btn").click().run()
    assert not at.exception and table(at).loc["greedy", "0-1"] == pytest.approx(0.67)
