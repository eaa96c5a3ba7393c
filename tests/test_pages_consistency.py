"""Consistency page (AppTest): each decoder's exact risk under p as q → p, the Bayes floor, the learned
family's band, the summary of where each decoder ends up, the CSV behind the chart, bad values, MBR
(estimated from seeded runs) and the samplers of the warper chain, the EOS toy, the cost guard (caps on a
link with large settings, the full computation on request, toys too large for the budget); and the curve
chart helper (pages.charts.risk_curves)."""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest
import streamlit as st
from lab_costs import uniform_costs
from pagetest import PAGES, open_page
from streamlit.testing.v1 import AppTest

from core import lab_cost
from core.consistency import LEARNED_GRID, MIXTURE_GRID, grid
from core.decoders import Sampling
from core.goals import ZeroOne
from core.risk import exact_risk
from core.toy import PRESETS
from pages.charts import risk_curves


@pytest.fixture
def downloads(monkeypatch) -> dict:
    """{key: CSV as a DataFrame} of every st.download_button the page draws."""
    seen, original = {}, st.download_button

    def record(label, data, file_name=None, mime=None, key=None, **kw):
        seen[key] = pd.read_csv(io.StringIO(data))
        return original(label, data, file_name, mime, key=key, **kw)

    monkeypatch.setattr(st, "download_button", record)
    return seen


def chart(at) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def summary(at) -> pd.DataFrame:
    return at.dataframe[0].value.set_index("decoder")


def caption(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_default_view_is_exact_with_the_bayes_floor(downloads):
    at = open_page("consistency", timeout=120, goal="0-1")
    assert not at.exception and not at.error
    spec = chart(at)
    lines = [d for d in spec["data"] if d.get("mode") == "lines+markers"]
    assert [d["name"] for d in lines] == ["greedy", "lookahead (depth 2)", "beam (width 2)", "sampling (τ=1)",
                                         "sampling (τ=0.5)"]
    assert not [d for d in spec["data"] if d.get("fill") == "toself"]  # exact: no bands
    assert spec["layout"]["xaxis"]["type"] == "log" and spec["layout"]["xaxis"]["autorange"] == "reversed"
    assert "Bayes risk 0.64" in spec["layout"]["annotations"][0]["text"]
    assert lines[0]["y"][-1] == pytest.approx(0.67) and lines[3]["y"][-1] == pytest.approx(0.687, abs=1e-4)
    s = summary(at)
    assert s.loc["greedy", "regret at q = p"] == pytest.approx(0.03)  # C1: inconsistent for 0-1
    assert s.loc["lookahead (depth 2)", "reaches the Bayes risk"] == "yes"
    assert s.loc["greedy", "reaches the Bayes risk"] == "no"
    assert "Exact under p" in caption(at) and "seed 0" in caption(at)
    data = downloads["cs_chart_csv"]
    assert len(data) == 5 * len(MIXTURE_GRID) and data["exact"].all() and (data["low"] == data["high"]).all()
    assert list(data["bayes risk"]) == pytest.approx([0.64] * len(data))
    assert "cs_summary_csv" in downloads


def test_e2_hamming_greedy_regret_stays():
    at = open_page("consistency", timeout=120, goal="Hamming", cs_preset="E2")
    assert not at.exception and not at.error
    assert summary(at).loc["greedy", "regret at q = p"] == pytest.approx(0.34)  # C2


def test_learned_family_averages_data_sets_with_a_band(downloads):
    at = open_page("consistency", timeout=120, goal="Distribution match (KL)", cs_family="learned", cs_seeds=5)
    assert not at.exception and not at.error
    spec = chart(at)
    bands = [d["name"] for d in spec["data"] if d.get("fill") == "toself"]
    assert "sampling (τ=1) (95% band)" in bands
    assert spec["layout"]["xaxis"]["autorange"] is True
    text = caption(at)
    assert "mean over 5 independent training sets" in text and "95% t-interval" in text
    assert "Not drawn where the risk is ∞: greedy, lookahead (depth 2), beam (width 2)" in text
    data = downloads["cs_chart_csv"]
    sampler = data[data["decoder"] == "sampling (τ=1)"].set_index("x")
    assert list(sampler.index) == list(LEARNED_GRID) and not data["exact"].any()
    assert sampler.loc[10, "low"] < sampler.loc[10, "risk"] < sampler.loc[10, "high"]
    assert sampler.loc[100000, "risk"] < 1e-3 < sampler.loc[10, "risk"]  # KL → 0
    assert summary(at).loc["sampling (τ=1)", "reaches the Bayes risk"] == "yes"
    at.toggle(key="cs_log_y").set_value(True).run()
    assert not at.exception and chart(at)["layout"]["yaxis"]["type"] == "log"


def test_decoder_settings_and_choice():
    at = open_page("consistency", timeout=120, goal="0-1", cs_preset="C6 (lookahead worse)")
    at.number_input(key="cs_depth").set_value(3).run()
    at.multiselect(key="cs_decoders").set_value(["greedy", "lookahead (depth T)", "top-k", "top-p"]).run()
    assert not at.exception and not at.error
    s = summary(at)
    assert list(s.index) == ["greedy", "lookahead (depth 3)", "sampling (τ=1, top-k=2)", "sampling (τ=1, top-p=0.9)"]
    assert s.loc["greedy", "risk at q = p"] == pytest.approx(1 - .257125)


def test_markov_chain_truth():
    at = open_page("consistency", timeout=120, cs_kind="Markov chain", cs_states=3, cs_length=4, cs_family="learned",
                   cs_seeds=5)
    assert not at.exception and not at.error
    assert "3^4 = 81 outputs" in caption(at) and len(summary(at)) == 5


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"cs_family": "annealed"}, r"q approaches p by must be mixture or learned, got 'annealed'; using 'mixture'"),
        ({"cs_decoders": "greedy"}, r"Decoders must be a list of greedy, "),
        ({"cs_decoders": []}, r"choose at least one decoder"),
        ({"cs_tau": 0.0}, r"Temperature τ must be from 0.05 to 5, got 0.0"),
        ({"cs_seeds": 7}, r"Data sets per N must be one of 5, 10, 20, got 7"),
        ({"cs_density": 3}, r"Grid points per decade must be one of 1, 2, 4, got 3"),
        ({"cs_mbr_runs": 1}, r"MBR runs per model q must be one of 16, 32, 64, got 1"),
        ({"cs_min_p": 1.5}, r"min-p must be in \[0, 1\], got 1.5"),
        ({"goal": "N-gram Hamming", "ngram_n": 3}, r"N \(the N-gram window\) must be from 1 to the toy's length 2"),
    ],
)
def test_bad_values_are_messages(state, message):
    at = open_page("consistency", timeout=120, **state)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(__import__("re").search(message, e) for e in errors), errors
    assert at.title and at.title[0].value.endswith("Consistency")


def test_risk_curves_chart_helper():
    inf = math.inf
    series = {"a": [(10, 0.5, 0.4, 0.6), (100, 0.3, 0.3, 0.3)], "b": [(10, inf, inf, inf), (100, 0.2, 0.2, 0.2)]}
    fig = risk_curves(series, 0.1, "t", "N")
    names = [t.name for t in fig.data]
    assert names == ["a (95% band)", "a", "b"]
    band = fig.data[0]
    assert list(band.x) == [10, 100, 100, 10] and list(band.y) == [0.6, 0.3, 0.3, 0.4]
    assert fig.data[2].y[0] is None and fig.data[2].y[1] == 0.2  # ∞ is a gap
    assert fig.layout.xaxis.type == "log" and fig.layout.shapes[0].y0 == 0.1
    reversed_x = risk_curves({"a": [(0.1, 1.0, 1.0, 1.0)]}, None, "t", "ε", reverse_x=True)
    assert reversed_x.layout.xaxis.autorange == "reversed" and not reversed_x.layout.shapes
    logged = risk_curves({"a": [(1, 0.0, 0.0, 0.0), (10, 1e-3, 1e-4, 2e-3)]}, 0.0, "t", "N", log_y=True)
    assert logged.layout.yaxis.type == "log" and not logged.layout.shapes  # a floor of 0 has no place on it
    assert list(logged.data[1].y) == [None, 1e-3]


def test_mbr_is_estimated_from_seeded_runs(downloads):
    at = open_page("consistency", timeout=120, goal="0-1", cs_decoders=["greedy", "MBR (the sidebar goal)"])
    assert not at.exception and not at.error
    s = summary(at)
    assert list(s.index) == ["greedy", "MBR (0-1)"]
    assert s.loc["MBR (0-1)", "risk at q = p"] == pytest.approx(0.64)  # the most probable candidate: the mode BA
    assert s.loc["MBR (0-1)", "reaches the Bayes risk"] == "yes"
    assert "MBR (0-1): no enumerable output distribution, so its risks are **estimated**" in caption(at)
    assert "averages the exact risks of 64 seeded runs on q" in caption(at)
    data = downloads["cs_chart_csv"]
    mbr = data[data["decoder"] == "MBR (0-1)"]
    assert len(mbr) == len(MIXTURE_GRID) and not mbr["exact"].any() and (mbr["low"] <= mbr["risk"]).all()
    at.selectbox(key="goal").set_value("Distribution match (KL)").run()
    assert not at.exception and not at.error
    assert any(w.value.startswith("Left out MBR (the sidebar goal): MBR needs a pointwise goal") for w in at.warning)
    assert list(summary(at).index) == ["greedy"]


def test_samplers_of_the_warper_chain_are_one_entry_each():
    at = open_page("consistency", timeout=120, goal="0-1",
                   cs_decoders=["min-p", "η-cutoff", "top-nσ (not in transformers)", "repetition penalty"],
                   cs_min_p=0.7)
    assert not at.exception and not at.error
    s = summary(at)
    assert list(s.index) == ["sampling (τ=1, min-p=0.7)", "sampling (τ=1, η-cutoff=0.002)",
                             "sampling (τ=1, top-nσ=1 (not in transformers))", "sampling (τ=1, repetition penalty=1.2)"]
    e1 = PRESETS["E1"].build()
    assert s.loc["sampling (τ=1, min-p=0.7)", "risk at q = p"] == pytest.approx(
        exact_risk(ZeroOne(), e1, Sampling(min_p=0.7), 2), abs=1e-12)
    assert s.loc["sampling (τ=1, repetition penalty=1.2)", "risk at q = p"] == pytest.approx(
        exact_risk(ZeroOne(), e1, Sampling(repetition_penalty=1.2), 2), abs=1e-12)
    assert {n.label for n in at.number_input} >= {"min-p", "η-cutoff", "top-nσ (not in transformers)",
                                                 "repetition penalty"}


def test_eos_toy_keeps_eos_absorbing_and_says_outputs_are_padded():
    for family in ("mixture", "learned"):
        at = open_page("consistency", timeout=120, goal="0-1", cs_preset="EOS", cs_family=family, cs_seeds=5)
        assert not at.exception and not at.error
        s = summary(at)
        assert s.loc["greedy", "risk at q = p"] == pytest.approx(1 - .216)  # aaa
        assert s.loc["greedy", "Bayes risk"] == pytest.approx(.6)  # the empty output ⏹⏹⏹
        assert s.loc["lookahead (depth 2)", "regret at q = p"] >= 0
        assert "⏹ is EOS: an output that ends early is padded with ⏹ after its EOS" in caption(at)


# ---- the cost guard -----------------------------------------------------------------------------------


@pytest.fixture
def slow_machine(monkeypatch):
    monkeypatch.setattr(lab_cost, "measured", lambda: uniform_costs(1e-2, 1e-3))
    monkeypatch.delenv("DECODING_EXPLORER_BUDGET_S", raising=False)


def test_a_link_with_large_settings_is_capped_and_the_full_computation_runs_on_request(slow_machine, downloads):
    at = AppTest.from_file(str(PAGES / "consistency.py"), default_timeout=120)
    for key, value in {"cs_family": "learned", "cs_seeds": "20", "cs_density": "4", "goal": "0-1"}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception and not at.error
    messages = [i.value for i in at.info]
    assert any(m.startswith("Data sets per N capped at 5 (you asked for 20)") for m in messages), messages
    assert any(m.startswith("Grid points per decade capped at 2 (you asked for 4)") for m in messages), messages
    assert "mean over 5 independent training sets" in caption(at)
    assert sorted(set(downloads["cs_chart_csv"]["x"])) == list(LEARNED_GRID)
    button = at.button(key="cs_curves_full_btn")
    assert button.label.startswith("Run the full computation (predicted ")
    button.click().run()
    assert not at.exception and not at.error and not at.info
    assert "mean over 20 independent training sets" in caption(at) and "4 points per decade" in caption(at)
    assert sorted(set(downloads["cs_chart_csv"]["x"])) == list(grid("learned", 4))


def test_a_toy_too_large_for_the_budget_is_not_run_until_asked(slow_machine):
    at = AppTest.from_file(str(PAGES / "consistency.py"), default_timeout=120)
    for key, value in {"cs_kind": "Markov chain", "cs_states": "6", "cs_length": "6"}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Computing these curves is predicted to take") and "even at its smallest settings" in w
               and "over the 10 s budget per click, so it was not run" in w for w in warnings), warnings
    assert not at.get("plotly_chart") and not at.dataframe
    assert at.button(key="cs_curves_full_btn").label.startswith("Run the full computation (predicted ")
