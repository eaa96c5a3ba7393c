"""Models: the shipped model's card and training curves; load a local Hugging Face model; connect to a server."""

from __future__ import annotations

import json
import re

import streamlit as st

from core import sources
from core.engine import DEFAULT_MODEL_DIR
from pages.charts import CHART_CONFIG, curves
from pages.common import (
    add_source,
    declare_state,
    load_source,
    load_with_progress,
    select_source,
    setup_page,
    show_error,
    source_label,
)


@st.cache_data(show_spinner=False)
def model_card() -> str:
    return (DEFAULT_MODEL_DIR / "README.md").read_text(encoding="utf-8")


def demote_headings(markdown: str, levels: int = 3) -> str:
    """Markdown headings ``levels`` deeper (at most h6), outside fenced code blocks, so an embedded
    document's "# Title" sits below the page's own st.subheader (h3) sections."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        heading = None if fenced else re.match(r"(#{1,6})(\s)", line)
        if heading:
            line = "#" * min(6, len(heading.group(1)) + levels) + line[len(heading.group(1)):]
        lines.append(line)
    return "\n".join(lines)


@st.cache_data(show_spinner=False)
def train_log() -> dict:
    return json.loads((DEFAULT_MODEL_DIR / "train_log.json").read_text(encoding="utf-8"))


def draw_training(log: dict) -> None:
    c = st.columns(4)
    c[0].metric("Parameters", f"{log['parameters'] / 1e6:.1f} M")
    c[1].metric("Tokens seen", f"{log['tokens_seen'] / 1e6:.0f} M")
    c[2].metric("Training time", f"{log['train_seconds']:.0f} s", help=log.get("device", ""))
    c[3].metric("Head 1, held out", f"{log['val_bits_per_byte'][0]:.2f} bits/byte")
    history = log["history"]
    n_heads = len(history[0]["val_loss"])
    tokens = [h["tokens"] / 1e6 for h in history]
    series = {f"head {k + 1} (token t+{k + 1})": (tokens, [h["val_loss"][k] for h in history]) for k in range(n_heads)}
    names = ("bigram baseline (head 1)", "skip-bigram baseline (head 2)")
    baselines = dict(zip(names, log.get("baseline_nats_per_token", [])))
    st.plotly_chart(curves(series, baselines, "Validation loss per head", "tokens seen (millions)",
                           "loss (nats / token)"), width="stretch", config=CHART_CONFIG, key="models_curves")
    st.caption("Head k predicts the token k positions ahead from the same trunk state, so later heads have more to "
               "guess and a higher loss. Dashed: count-based baselines on the same data (bigram for the next token, "
               "skip-bigram for the one after).")


def load_local(path: str, allow_large: bool) -> str:
    """Load ``path`` (a transformers directory or a .gguf file) with progress (reading it, measuring its speed)
    and make it the sidebar's model from the next run on; returns its source. A path outside the operator's
    allow-list gets the one message that reveals nothing."""
    path = path.strip()
    if not path:
        raise ValueError("enter the path of a local Hugging Face model directory (config.json + *.safetensors + "
                         "tokenizer files) or a .gguf file")
    source = sources.check(f"local:{path}")
    if allow_large:
        sources.allow_large(source)  # load_source then loads it despite the memory warning
    load_with_progress(source)
    select_source(source)
    return source


def _report(key: str, action) -> None:
    """Run a button's action in its callback (before the rerun, so it may change the sidebar's model) and
    keep its message, or its error, for the rerun to show under ``key``."""
    try:
        st.session_state[key] = ("ok", action())
    except Exception as exc:  # noqa: BLE001 - shown as a message on the rerun
        st.session_state[key] = ("error", exc)


def _on_load() -> None:
    st.session_state["models_loading"] = True  # loaded in the page's run, where its progress can show


def _load_requested() -> None:
    """The Load button's work, in the page's run (so the loading progress shows); the page then reruns with the
    model selected in the sidebar and says so."""
    if not st.session_state.pop("models_loading", False):
        return

    def load() -> str:
        source = load_local(st.session_state.models_path, bool(st.session_state.models_allow_large))
        return f"Loaded: it is now the sidebar's model ({source_label(source)})."

    _report("models_result", load)
    if st.session_state["models_result"][0] == "ok":
        st.rerun()


def draw_loader() -> None:
    st.subheader("Load a local model")
    st.caption("A directory saved by Hugging Face `transformers` (config.json, *.safetensors, tokenizer files) or a "
               ".gguf file, inside a directory the operator allows (`DECODING_EXPLORER_LOCAL_MODELS`). Safetensors "
               "and GGUF only: no pickled weights, no remote code, no network. Once loaded it is selectable in the "
               "sidebar as a model (one head: it predicts only the next token).")
    declare_state({"models_path": "", "models_allow_large": False})
    st.text_input("Path", key="models_path", placeholder="/path/to/model-directory or /path/to/model.gguf")
    st.checkbox("Load even if it may not fit in memory", key="models_allow_large")
    st.button("Load model", key="models_load", type="primary", on_click=_on_load)
    _load_requested()
    show_result("models_result")
    opened = [s for s in st.session_state.get("opened_sources", []) if s.startswith("local:")]
    if opened:
        st.markdown("**Loaded this session:** " + ", ".join(f"`{s[6:]}`" for s in opened))


def show_result(key: str) -> None:
    kind, result = st.session_state.pop(key, (None, None))
    if kind == "ok":
        st.success(result)
    elif kind == "error":
        show_error(result)


def _on_list_models() -> None:
    try:
        models = sources.list_server_models(st.session_state.server_url)
        if not models:
            raise ValueError("the server lists no models this explorer may open")
        st.session_state.server_models = models
        st.session_state.server_model = models[0]
    except Exception as exc:  # noqa: BLE001 - shown as a message on the rerun
        st.session_state.server_models = []
        st.session_state.server_result = ("error", exc)


def _on_connect() -> None:
    def connect() -> str:
        source = sources.check(sources.server_source(st.session_state.server_url, st.session_state.server_model))
        load_source(source)  # connects: checks every capability against the server's own generation
        return f"Connected: it is now the sidebar's model ({source_label(add_source(source))})."

    _report("server_result", connect)


def draw_server() -> None:
    st.subheader("Connect to a server")
    st.caption("Any model a vLLM, SGLang or llama.cpp server hosts, through its OpenAI-compatible `/v1/completions` "
               "log-probabilities. Only servers the operator allows (`DECODING_EXPLORER_SERVERS` or the sources "
               "config) can be opened; API keys come from environment variables named there, never from this page.")
    allowed = sources.AllowList.from_environment().servers
    declare_state({"server_url": allowed[0].url if allowed else ""})
    st.session_state.setdefault("server_models", [])
    st.text_input("Base URL", key="server_url", placeholder="http://gpu-host:8000")
    st.button("List models", key="server_list", on_click=_on_list_models)
    if st.session_state.server_models:
        st.selectbox("Model", st.session_state.server_models, key="server_model")
        st.button("Connect", key="server_connect", type="primary", on_click=_on_connect)
    show_result("server_result")
    if st.session_state.get("source", "").startswith("server:"):
        model = load_source(st.session_state.source)
        st.markdown("**Connected server:** " + " · ".join(model.caps.lines()))


setup_page("Models", "📦")  # the full sidebar, so a loaded model shows up as its source
st.subheader("The shipped multi-head model")
try:
    st.markdown(demote_headings(model_card()))
    draw_training(train_log())
except (OSError, KeyError, ValueError, IndexError) as exc:
    show_error(ValueError(f"could not read the shipped model's card or training log: {exc}"))
st.subheader("SmolLM2-135M-Instruct")
st.markdown("A real pretrained English + code model with one head (Apache-2.0, HuggingFaceTB), offered in the sidebar "
            "as a second model so the decoders can be compared on a model trained on far more text.")
draw_loader()
try:
    draw_server()
except Exception as exc:  # noqa: BLE001 - e.g. a malformed allow-list: a message, never a traceback
    show_error(exc)
