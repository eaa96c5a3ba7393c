"""Models page (AppTest): the shipped model's card and training curves, loading a local model (only from
where the operator's allow-list allows), connecting to a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from server_fixture import allow, llama_server, remote_smollm2  # noqa: F401
from streamlit.testing.v1 import AppTest
from transformers import GPT2Config, GPT2LMHeadModel

from core.engine import DEFAULT_MODEL_DIR
from core.toy import PRESETS
from core.train import load_tokenizer

PAGE = "../pages/models.py"
PAGE_FILE = Path(__file__).resolve().parent.parent / "pages" / "models.py"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 saved by transformers, with the shipped tokenizer."""
    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    tok = load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json")
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                     eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["source"] = "toy:E1"
    at.session_state["steps"] = 2
    return at.run()


def test_card_and_training_curves():
    at = run_page()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric] == ["10.1 M", "655 M", "420 s", "0.74 bits/byte"]
    card = next(m.value for m in at.markdown if "default multi-token-prediction model" in m.value)  # the model card
    headings = [line.split(" ", 1) for line in card.splitlines() if line.startswith("#")]
    assert headings[0] == ["####", "Decoding Explorer default multi-token-prediction model"]
    assert ["#####", "Model"] in headings and ["#####", "Data"] in headings
    assert all(len(h) > 3 for h, _ in headings)  # all smaller than the page's own st.subheader (h3)
    assert len(at.get("plotly_chart")) == 1


def test_load_errors_are_messages(allow, tmp_path):  # noqa: F811
    at = run_page()
    at.button(key="models_load").click().run()
    assert not at.exception
    assert "enter the path" in at.error[0].value
    allow(local=[tmp_path])
    at.text_input(key="models_path").set_value(str(tmp_path / "no-such-model")).run()
    at.button(key="models_load").click().run()
    assert not at.exception
    assert "does not exist" in at.error[0].value  # inside an allowed directory: the real reason


def forbidden_message(at, path) -> str:
    at.text_input(key="models_path").set_value(str(path)).run()
    at.button(key="models_load").click().run()
    assert not at.exception and len(at.error) == 1
    return at.error[0].value.replace(str(path), "<path>")

BUILTIN = ", ".join(["mtp", "smollm2", *(f"toy:{name}" for name in PRESETS)])
FORBIDDEN = (f"unknown model source 'local:<path>'; allowed: {BUILTIN} (local models and servers the operator allows "
             "are opened on the Models page)")


def test_paths_outside_the_allow_list_get_one_message_that_reveals_nothing(allow, gpt2_dir, tmp_path):  # noqa: F811
    allow(local=[tmp_path / "allowed"])
    at = run_page()
    messages = {forbidden_message(at, p) for p in (gpt2_dir, tmp_path / "missing", "/etc", "/etc/passwd",
                                                   tmp_path / "allowed" / ".." / gpt2_dir.name)}
    assert messages == {FORBIDDEN}
    assert at.session_state["source"] == "toy:E1"


def test_a_link_to_a_forbidden_local_path_gets_the_same_message(allow, gpt2_dir):  # noqa: F811
    for path in (gpt2_dir, "/no/such/dir"):
        at = AppTest.from_file(PAGE, default_timeout=120)
        at.session_state["source"] = f"local:{path}"  # as ?source=local:<path> sets it
        at.run()
        assert not at.exception
        assert [e.value.replace(str(path), "<path>") for e in at.error] == [FORBIDDEN]


def test_loaded_model_becomes_a_source(allow, gpt2_dir):  # noqa: F811
    allow(local=[gpt2_dir.parent])
    at = run_page()
    at.text_input(key="models_path").set_value(str(gpt2_dir)).run()
    at.button(key="models_load").click().run()
    assert not at.exception and not at.error
    assert at.session_state["source"] == f"local:{gpt2_dir}"
    assert f"Local: {gpt2_dir.name}" in at.selectbox(key="source").options
    assert "Loaded" in at.success[0].value


def test_load_even_if_it_may_not_fit_in_memory_loads_and_stays_loaded(allow, gpt2_dir, monkeypatch,  # noqa: F811
                                                                         tmp_path):
    """The override used to load the model, drop it and load it again without the override (which failed)."""
    import shutil

    import core.hf

    gpt2_dir = Path(shutil.copytree(gpt2_dir, tmp_path / "big-gpt2"))  # a path no other test has loaded (cached)
    allow(local=[tmp_path])
    monkeypatch.setattr(core.hf, "_available_memory", lambda: 1_000)  # every model now looks too large
    at = run_page()
    at.text_input(key="models_path").set_value(str(gpt2_dir)).run()
    at.button(key="models_load").click().run()
    assert "may exhaust memory" in at.error[0].value and at.session_state["source"] == "toy:E1"
    at.checkbox(key="models_allow_large").check().run()
    at.button(key="models_load").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["source"] == f"local:{gpt2_dir}" and "Loaded" in at.success[0].value
    at.run()  # the sidebar keeps using it on later runs
    assert not at.exception and not at.error


def test_connect_to_an_allowed_server(allow, llama_server, remote_smollm2):  # noqa: F811
    allow(servers=[llama_server])
    at = run_page()
    assert at.text_input(key="server_url").value == llama_server
    at.button(key="server_list").click().run()
    assert not at.exception and not at.error
    model = at.selectbox(key="server_model")
    assert model.options == [remote_smollm2.model_id]
    at.button(key="server_connect").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["source"] == f"server:{remote_smollm2.model_id}@{llama_server}"
    assert "Connected" in at.success[0].value
    shown = " ".join(m.value for m in at.markdown)
    assert "server: llama-cpp-python" in shown and "shifted by one" in shown


def test_a_server_outside_the_allow_list_gets_one_message(allow, llama_server):  # noqa: F811
    allow(servers=["http://10.0.0.1:8000"])
    at = run_page()
    at.text_input(key="server_url").set_value(llama_server).run()
    at.button(key="server_list").click().run()
    assert not at.exception
    assert at.error[0].value.startswith(f"unknown model source 'server:{llama_server}'; allowed: mtp, smollm2")


def test_demote_headings_skips_code_blocks():
    import ast

    source = Path(PAGE_FILE).read_text(encoding="utf-8")
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "demote_headings")
    namespace: dict = {"re": re}
    exec(compile(ast.Module([node], []), PAGE_FILE, "exec"), namespace)
    demote = namespace["demote_headings"]
    md = "# Title\n## Part\ntext #1\n```\n# a shell comment\n```\n###### Deep\n#hashtag"
    assert demote(md).splitlines() == ["#### Title", "##### Part", "text #1", "```", "# a shell comment", "```",
                                       "###### Deep", "#hashtag"]
