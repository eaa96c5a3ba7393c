"""Models page (AppTest): the shipped model's card and training curves, loading a local model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from transformers import GPT2Config, GPT2LMHeadModel

from core.engine import DEFAULT_MODEL_DIR
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


def test_load_errors_are_messages():
    at = run_page()
    at.button(key="models_load").click().run()
    assert not at.exception
    assert "enter the path" in at.error[0].value
    at.text_input(key="models_path").set_value("/no/such/model").run()
    at.button(key="models_load").click().run()
    assert not at.exception
    assert "does not exist" in at.error[0].value


def test_loaded_model_becomes_a_source(gpt2_dir):
    at = run_page()
    at.text_input(key="models_path").set_value(str(gpt2_dir)).run()
    at.button(key="models_load").click().run()
    assert not at.exception and not at.error
    assert at.session_state["source"] == f"local:{gpt2_dir}"
    assert f"Local: {gpt2_dir.name}" in at.selectbox(key="source").options
    assert "Loaded" in at.success[0].value


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
