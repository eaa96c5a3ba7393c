"""The Step inspector and Compare pages against a real llama.cpp server (AppTest): a server source runs
like any other model, its truncated rows are said and drawn, and a link to a server outside the
allow-list gets the one message."""

from __future__ import annotations

import json

import pytest
from pagetest import open_page
from server_fixture import allow, llama_server, remote_smollm2  # noqa: F401

from core.toy import PRESETS

PROMPT = "The capital of France is"


@pytest.fixture
def served(allow, llama_server, remote_smollm2):  # noqa: F811
    """The session state of a link to the server's SmolLM2 (allowed), with small settings."""
    allow(servers=[llama_server])
    return {"source": f"server:{remote_smollm2.model_id}@{llama_server}", "prompt": PROMPT, "steps": 2}


def test_step_inspector_on_a_server(served, remote_smollm2):  # noqa: F811
    at = open_page("step_inspector", timeout=300, **served)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("the grey bar is everything else" in i.value for i in at.info)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    bars = chart["data"][0]
    assert bars["y"][-1] == "⟨rest of the vocabulary⟩" and bars["customdata"][-1] == [-1, -1]
    listed = sum(bars["x"][:-1])
    assert bars["x"][-1] == pytest.approx(1 - listed, abs=1e-6)  # the mass the chart does not list
    assert bars["y"][0] == "␣Paris"
    at.selectbox(key="inspector_force").set_value(bars["customdata"][1][0]).run()  # force the runner-up
    assert not at.exception and not at.error
    assert len(at.radio(key="inspector_branch").options) == 2


def test_compare_on_a_server(served):
    at = open_page("compare", timeout=600, **served, cmp_n_samples=16, cmp_depth=1, cmp_beam=2, cmp_shown=1)
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert len(table) == 9 and table.loc[table["decoder"] == "greedy", "output"].item() == " Paris."
    note = next(i.value for i in at.info if "The server listed its top 20 tokens" in i.value)
    assert "Greedy: exact" in note and "truth rows are the server's own samples" in note
    assert "Monte Carlo" in " ".join(c.value for c in at.caption)

BUILTIN = ", ".join(["mtp", "smollm2", *(f"toy:{name}" for name in PRESETS)])


def test_a_link_to_a_server_outside_the_allow_list_gets_one_message(allow, llama_server):  # noqa: F811
    allow(servers=["http://10.0.0.1:8000"])
    at = open_page("compare", source=f"server:{llama_server}", prompt=PROMPT, steps=2)
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"unknown model source 'server:{llama_server}'; allowed: {BUILTIN} (local models and servers the operator "
        "allows are opened on the Models page)"]


def test_a_malformed_allow_list_is_named_not_hidden(allow, monkeypatch, tmp_path):  # noqa: F811
    config = tmp_path / "sources.json"
    config.write_text("{not json")
    monkeypatch.setenv("DECODING_EXPLORER_CONFIG", str(config))
    at = open_page("compare", source="local:/srv/model", prompt=PROMPT, steps=2)
    assert not at.exception
    assert [e.value for e in at.error] == [f"the sources config {config} is not valid JSON "
                                           "(Expecting property name enclosed in double quotes: line 1 column 2 "
                                           "(char 1))"]
    at = open_page("models", source="toy:E1", steps=2)  # the Models page says so too, and still renders
    assert not at.exception and any("is not valid JSON" in e.value for e in at.error) and at.metric
