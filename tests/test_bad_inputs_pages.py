"""Bad widget values on every page (AppTest): each one gives an st.error naming the setting and the
values it allows, never a traceback, and the rest of the page still renders (title, sidebar, and the
sections the bad value does not feed). Values are set through session state, which is also what a
link's query parameters or an earlier page leave behind. Toy sources and few steps keep it fast."""

from __future__ import annotations

import json

import pytest
from server_fixture import allow  # noqa: F401
from streamlit.testing.v1 import AppTest

from core.engine import DEFAULT_MODEL_DIR
from core.train import load_tokenizer

NAN = float("nan")
TOY = {"source": "toy:E1", "steps": 2}
MTP = {"source": "mtp", "steps": 2, "cmp_n_samples": 16, "cmp_depth": 1, "cmp_beam": 2, "cmp_shown": 0}
CTX = r"exceeds the model's context of 511 tokens; shorten the prompt or lower steps"

# (page, session state, regex the st.error must match, a widget the page must still draw)
CASES = [
    # ---- sidebar (shared by every page with the full sidebar) --------------------------------
    ("compare", {**MTP, "prompt": ""}, r"the prompt is empty: type some text or pick an example prompt", "steps"),
    ("compare", {**MTP, "prompt": "  \n\t "}, r"the prompt is empty", "steps"),
    ("compare", {**MTP, "prompt": "x" * 5000}, CTX, "steps"),
    (
        "compare",
        {**TOY, "steps": 0},
        r"steps \(for E1, a toy of length 2\) must be an integer from 1 to 2, got 0",
        "steps",
    ),
    ("compare", {**MTP, "steps": 10**6}, r"steps must be an integer from 1 to 64, got 1000000", "steps"),
    ("compare", {**TOY, "seed": -1}, r"seed must be an integer from 0 to 2147483647, got -1", "steps"),
    (
        "compare",
        {**TOY, "goal": "N-gram Hamming", "ngram_n": 5},
        r"N \(the N-gram window\) must be an integer from 1 to 2, got 5",
        "steps",
    ),
    (
        "compare",
        {**TOY, "source": "toy:nope"},
        r"unknown model source 'toy:nope'; allowed: mtp, smollm2, toy:E1",
        "steps",
    ),
    # a link may select only an allowed source: one message whether or not the path exists or the server answers
    ("compare", {**TOY, "source": "local:/etc/passwd"}, r"unknown model source 'local:/etc/passwd'; allowed: mtp,",
     "steps"),
    ("compare", {**TOY, "source": "local:/no/such/dir"}, r"unknown model source 'local:/no/such/dir'; allowed: mtp,",
     "steps"),
    ("step_inspector", {**TOY, "source": "server:http://127.0.0.1:9"},
     r"unknown model source 'server:http://127.0.0.1:9'; allowed: mtp,", "steps"),
    # ---- Compare's decoder settings -----------------------------------------------------------
    ("compare", {**TOY, "cmp_tau": 0.0}, r"temperature must be > 0 and finite, got 0\.0", "cmp_top_k"),
    ("compare", {**TOY, "cmp_tau": -1.0}, r"temperature must be > 0 and finite, got -1\.0", "cmp_top_k"),
    ("compare", {**TOY, "cmp_tau": NAN}, r"temperature must be > 0 and finite, got nan", "cmp_top_k"),
    ("compare", {**TOY, "cmp_top_k": 0}, r"top_k must be None or an integer >= 1, got 0", "cmp_tau"),
    ("compare", {**TOY, "cmp_top_p": 0.0}, r"top_p must be None or in \(0, 1\], got 0\.0", "cmp_tau"),
    ("compare", {**TOY, "cmp_top_p": 1.5}, r"top_p must be None or in \(0, 1\], got 1\.5", "cmp_tau"),
    ("compare", {**TOY, "cmp_depth": 3}, r"lookahead depth must be an integer from 1 to 2, got 3", "cmp_tau"),
    (
        "compare",
        {**MTP, "steps": 8, "cmp_depth": 5},
        r"lookahead depth must be an integer from 1 to 4 on a neural model \(node budget 256 per token\), got 5",
        "cmp_tau",
    ),
    ("compare", {**TOY, "cmp_beam": 0}, r"beam width must be an integer from 1 to 16, got 0", "cmp_tau"),
    ("compare", {**TOY, "cmp_shown": 11}, r"samples shown must be an integer from 0 to 10, got 11", "cmp_tau"),
    (
        "compare",
        {**MTP, "cmp_n_samples": 8},
        r"Monte Carlo samples must be an integer from 16 to 1024, got 8",
        "cmp_tau",
    ),
    ("compare", {**TOY, "cmp_mbr": 0}, r"MBR candidates must be an integer from 1 to 64, got 0", "cmp_tau"),
    # ---- Step inspector -----------------------------------------------------------------------
    (
        "step_inspector",
        {**TOY, "steps": 0},
        r"steps \(for E1, a toy of length 2\) must be an integer from 1 to 2",
        "steps",
    ),
    ("step_inspector", {**MTP, "prompt": " "}, r"the prompt is empty", "steps"),
    (
        "step_inspector",
        {**TOY, "inspector_top_k": 0},
        r"Top-k must be an integer from 3 to 20, got 0; using 8",
        "inspector_force",
    ),
    ("step_inspector", {**TOY, "inspector_top_k": 10**6}, r"Top-k must be an integer from 3 to 20", "inspector_force"),
    # ---- Choice points ------------------------------------------------------------------------
    (
        "choice_points",
        {**TOY, "steps": 5},
        r"steps \(for E1, a toy of length 2\) must be an integer from 1 to 2, got 5",
        "steps",
    ),
    ("choice_points", {**MTP, "prompt": "\n\n"}, r"the prompt is empty", "steps"),
    (
        "choice_points",
        {**TOY, "cp_top_k": 0},
        r"Top-k x's must be one of 4, 8, 16, 32, 64, got 0; using 16",
        "cp_position",
    ),
    ("choice_points", {**TOY, "cp_count": 0}, r"How many must be an integer >= 1, got 0", "cp_position"),
    # ---- Theory lab (own toys; seed and goal in the sidebar) ----------------------------------
    (
        "theory_lab",
        {"th_kind": "Markov chain", "th_alpha": 0.0},
        r"Dirichlet α must be > 0 \(from 0\.01 to 100\), got 0\.0",
        "th_alpha",
    ),
    ("theory_lab", {"th_kind": "Markov chain", "th_alpha": -2.0}, r"Dirichlet α must be > 0 .*, got -2\.0", "th_alpha"),
    ("theory_lab", {"th_kind": "Markov chain", "th_alpha": NAN}, r"Dirichlet α must be > 0 .*, got nan", "th_alpha"),
    (
        "theory_lab",
        {"th_kind": "Markov chain", "th_states": 10},
        r"States must be an integer from 2 to 6, got 10",
        "th_alpha",
    ),
    (
        "theory_lab",
        {"th_kind": "Markov chain", "th_length": 0},
        r"Length must be an integer from 1 to 6, got 0",
        "th_alpha",
    ),
    ("theory_lab", {"th_kind": "Binary tree", "th_n": 9}, r"Length n must be an integer from 1 to 4, got 9", "th_n"),
    (
        "theory_lab",
        {"th_kind": "Binary tree", "th_p_": 1.5},
        r"P\(A\) must be in \[0, 1\], got 1\.5; using 0\.6",
        "th_n",
    ),
    ("theory_lab", {"th_kind": "Binary tree", "th_p_": -0.2}, r"P\(A\) must be in \[0, 1\], got -0\.2", "th_n"),
    ("theory_lab", {"th_tau": 0.0}, r"τ must be from 0\.05 to 3, got 0\.0", "th_tau"),
    ("theory_lab", {"th_tau": -1.0}, r"τ must be from 0\.05 to 3, got -1\.0", "th_tau"),
    ("theory_lab", {"th_sampler_tau": 0.0}, r"Sampler τ must be from 0\.05 to 5, got 0\.0", "th_sampler_tau"),
    ("theory_lab", {"th_n_draws": 10**9}, r"N draws must be one of 10, 100, 1000, 10000, got 1000000000", "th_tau"),
    ("theory_lab", {"th_chains": 10**6}, r"Chains per cell must be one of 50, 200, 500, got 1000000", "th_tau"),
    ("theory_lab", {"th_preset": "nope"}, r"Preset must be one of E1, E2", "th_tau"),
    ("theory_lab", {"seed": -5}, r"seed must be an integer from 0 to 2147483647, got -5", "seed"),
    (
        "theory_lab",
        {"goal": "N-gram Hamming", "ngram_n": 5},
        r"N \(the N-gram window\) must be from 1 to the toy's length 2, got 5",
        "th_kind",
    ),
    # ---- Speculative --------------------------------------------------------------------------
    (
        "speculative",
        {**MTP, "spec_heads": 9},
        r"Heads used \(k\) must be an integer from 2 to 4, got 9; using 4",
        "spec_heads",
    ),
    ("speculative", {**MTP, "spec_heads": 1}, r"Heads used \(k\) must be an integer from 2 to 4, got 1", "spec_heads"),
    ("speculative", {**MTP, "spec_repeats": 50}, r"Timing repeats must be one of 1, 2, 3, got 50", "spec_heads"),
    ("speculative", {**MTP, "steps": 0}, r"steps must be an integer from 1 to 64, got 0", "steps"),
]


def run(page: str, state: dict) -> AppTest:
    at = AppTest.from_file(f"../pages/{page}.py", default_timeout=60)
    at.session_state["th_chains"] = 50  # keep the theory lab's heatmap small
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def assert_page_alive(at: AppTest, widget_key: str) -> None:
    """No traceback, the title and the sidebar are drawn, and so is a widget after the error."""
    assert not at.exception, [e.value for e in at.exception]
    assert at.title and at.title[0].value
    assert len(at.sidebar.children) > 0
    assert at.get("number_input") or at.get("selectbox")
    keys = {
        w.key
        for kind in (
            "number_input",
            "selectbox",
            "slider",
            "select_slider",
            "text_area",
            "text_input",
            "radio",
            "segmented_control",
        )
        for w in at.get(kind)
    }
    assert widget_key in keys, sorted(k for k in keys if k)


@pytest.mark.parametrize(
    ("page", "state", "match", "widget"),
    CASES,
    ids=[f"{c[0]}-{'-'.join(f'{k}={str(v)[:12]}' for k, v in c[1].items())}" for c in CASES],
)
def test_bad_widget_value_is_an_error_message(page, state, match, widget, allow):  # noqa: F811
    at = run(page, state)  # with nothing on the operator's allow-list (``allow`` not called)
    assert_page_alive(at, widget)
    errors = [e.value for e in at.error]
    assert any(__import__("re").search(match, e) for e in errors), errors


def test_page_recovers_after_a_bad_value():
    """Fixing the bad value brings the results back in the same session."""
    at = run("compare", {**TOY, "cmp_top_p": 1.5})
    assert at.error and not at.dataframe
    at.number_input(key="cmp_top_p").set_value(0.9).run()
    assert not at.exception and not at.error
    assert len(at.dataframe[0].value) == 9


def test_reset_values_leave_the_rest_of_the_theory_lab_working():
    at = run("theory_lab", {"th_kind": "Markov chain", "th_alpha": 0.0, "th_states": 10})
    assert not at.exception
    assert len(at.error) == 2
    assert at.session_state["th_alpha"] == 0.5 and at.session_state["th_states"] == 3
    assert len(at.dataframe[0].value) >= 5 and len(at.get("plotly_chart")) >= 3  # table, τ, samples, heatmap


def test_odd_characters_in_the_prompt_are_decoded():
    """Unknown characters are not an error: the byte-level tokenizer encodes anything."""
    at = run("compare", {**MTP, "prompt": "\x00\ufffe🦄 ꙮ\u202e"})
    assert not at.exception and not at.error
    assert len(at.dataframe[0].value) == 9


# ---- Models page: loading a local model ----------------------------------------------------------


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    file = root / "weights.txt"
    file.write_text("not a model")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 16)
    load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json").save_pretrained(str(corrupt))
    return {"missing": root / "no-such-model", "file": file, "corrupt": corrupt, "empty": "   ", "no config": root}


EXPECTED = "expected a directory saved by transformers"
MODEL_CASES = [
    ("empty", r"enter the path of a local Hugging Face model directory \(config\.json \+ \*\.safetensors \+ tokenizer"),
    ("missing", rf"does not exist; {EXPECTED} \(config\.json, \*\.safetensors, tokenizer files\) or a \.gguf file"),
    ("file", rf"is a \.txt file; {EXPECTED}"),
    ("no config", rf"has no config\.json; {EXPECTED}"),
    ("corrupt", r"weights file .*model\.safetensors is damaged or not safetensors"),
]


@pytest.mark.parametrize(("which", "match"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_models_page_load_errors(broken_models, allow, which, match):  # noqa: F811
    allow(local=[broken_models["no config"]])  # the operator allows the directory that holds them
    at = run("models", TOY)
    at.text_input(key="models_path").set_value(str(broken_models[which])).run()
    at.button(key="models_load").click().run()
    assert not at.exception
    assert any(__import__("re").search(match, e.value) for e in at.error), [e.value for e in at.error]
    assert at.session_state["source"] == "toy:E1"  # the sidebar's model is unchanged
    assert len(at.get("plotly_chart")) == 1 and at.metric  # the card and curves still render
    assert_page_alive(at, "models_path")
