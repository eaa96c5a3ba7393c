"""Choice points page (AppTest): the numbers shown equal core's, on the shipped model and on a toy."""

from __future__ import annotations

import numpy as np
from pagetest import open_page
from streamlit.testing.v1 import AppTest

from core.choice_points import choice_trace, decompose, pair_information
from core.decoders import Greedy
from core.engine import load_default
from pages import inspect_helpers as ih
from pages.common import load_source


def _page(**state) -> AppTest:
    return open_page("choice_points", **state)


def _metrics(at: AppTest) -> dict[str, float]:
    return {m.label.split()[0]: float(m.value.split()[0]) for m in at.metric}


def test_choice_points_on_the_shipped_model_match_core():
    at = _page(steps=12)
    assert not at.exception and not at.error
    engine = load_default()
    prompt = engine.encode(at.session_state["prompt"])
    tokens = Greedy().decode(engine, prompt, 12).tokens
    trace = choice_trace(engine, prompt, tokens)

    marked = trace.top_positions("entropy", 5)
    caption = at.caption[0].value
    assert all(f"step {i} " in caption for i in marked)
    assert at.markdown[0].value.count("outline:2px") == len(marked)
    assert at.markdown[0].value.count("outline:2px solid #e8590c;font-weight:bold;margin:0 3px") == len(marked)

    table = at.dataframe[0].value
    assert list(table["head"]) == ["head 2", "head 3", "head 4"]
    want = [round(h.mean_tv, 4) for h in trace.head_summary()]
    assert np.allclose(table["mean TV vs head 1"], want, atol=2e-4)

    t = at.session_state["cp_position"]
    assert t == marked[0]
    est = pair_information(engine, prompt + list(tokens[:t]), 16)
    shown = _metrics(at)
    d = est.decomposition
    assert shown["H(X)"] == round(d.h_x, 3) and shown["I(X;Y)"] == round(d.mutual_information, 3)
    assert shown["H(Y|X)"] == round(d.h_y_given_x, 3)
    assert "lower bound" in at.markdown[-1].value and f"{est.covered:.2%}" in at.markdown[-1].value
    assert f"X is the token at step {t}, Y the one after it, both under the model {ih.pair_context(t, True)}." \
        in at.markdown[-1].value

    at.selectbox(key="cp_top_k").set_value(64).run()  # more exact rows: the bound can only tighten
    assert not at.exception
    wider = _metrics(at)
    assert wider["H(X)"] == shown["H(X)"] and wider["I(X;Y)"] >= shown["I(X;Y)"] - 1e-3

    at.radio(key="cp_metric").set_value("influence").run()
    assert not at.exception
    assert all(f"step {i} " in at.caption[0].value for i in trace.top_positions("influence", 5))


def test_choice_points_on_a_toy_are_exact():
    at = _page(source="toy:Markov chain", steps=6)
    assert not at.exception and not at.error
    assert "one head" in at.info[0].value and not at.dataframe
    chain = load_source("toy:Markov chain")
    t = at.session_state["cp_position"]
    path = Greedy().decode(chain, [], 6).tokens
    p_x = chain.initial if t == 0 else chain.transition[path[t - 1]]
    want = decompose(p_x[:, None] * chain.transition)
    shown = _metrics(at)
    assert shown["H(X)"] == round(want.h_x, 3) and shown["H(Y)"] == round(want.h_y, 3)
    assert shown["I(X;Y)"] == round(want.mutual_information, 3)
    assert shown["H(X|Y)"] == round(want.h_x_given_y, 3) and shown["H(Y|X)"] == round(want.h_y_given_x, 3)
    assert "**Exact:**" in at.markdown[-1].value
    assert at.selectbox(key="cp_position").options[-1].startswith("4:")  # X, Y = steps 4, 5: the toy's end


def test_pair_context_reads_naturally():
    assert ih.pair_context(0, True) == "given only the prompt"
    assert ih.pair_context(0, False) == "at the start of the sequence"
    assert ih.pair_context(1, True) == "given the prompt and the path's first token"
    assert ih.pair_context(1, False) == "given the path's first token"
    assert ih.pair_context(5, True) == "given the prompt and the path's first 5 tokens"
    assert "first 0" not in ih.pair_context(0, True) + ih.pair_context(0, False)
