"""Streamlit-only helpers shared by every page: the sidebar (model source, prompt, steps, seed, goal),
state that survives reruns, page switches and links (session state <-> URL query parameters),
cached model loading (which sources exist and which the operator allows is ``core.sources``), error
display and token colouring. No math here: pages call ``core``.

Every page calls ``setup_page`` first, so each page file also renders on its own
(``AppTest.from_file("pages/<name>.py")``).
"""

from __future__ import annotations

import contextlib
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
PROMPTS_FILE = ROOT / "assets" / "prompts" / "prompts.json"

DEFAULT_SOURCE = "mtp"
DEFAULT_STEPS = 16
MEASURE_PROMPT = "The best way to learn a language is"  # the text a model's speed is measured on (core.cost)
MAX_TEXT_STEPS = 64  # most tokens a page decodes on a neural model (keeps every click bounded)
MAX_SEED = 2**31 - 1
GOAL_NAMES = ("0-1", "Hamming", "N-gram Hamming", "Distribution match (KL)", "Distribution match (TV)")
FALLBACK_PROMPT = {"name": "fibonacci", "text": "def fibonacci(n):\n    ", "note": ""}

# sidebar state: key -> default. Keys are also the URL query parameter names.
SIDEBAR_DEFAULTS = {
    "source": DEFAULT_SOURCE,
    "prompt": FALLBACK_PROMPT["text"],
    "steps": DEFAULT_STEPS,
    "seed": 0,
    "goal": "Hamming",
    "ngram_n": 2,
}


@dataclass(frozen=True)
class Context:
    """What the sidebar selected, resolved: the model and goal objects the page computes with."""

    source: str  # a core.sources source string: "mtp" | "smollm2" | "toy:<preset>" | "local:<path>" | "server:..."
    model: object  # a core NextTokenModel (cached with st.cache_resource)
    is_text: bool  # model has encode/decode (toys don't)
    n_heads: int  # 1 for single-head models and toys
    prompt: str  # "" for toys
    prompt_ids: tuple[int, ...]  # () for toys
    steps: int
    seed: int
    goal_name: str  # one of GOAL_NAMES
    goal: object  # a core.goals goal instance
    cost: object = None  # the model's measured core.cost.CostModel (None on pages without a model)

    @property
    def is_toy(self) -> bool:
        return self.source.startswith("toy:")

    @property
    def source_label(self) -> str:
        return source_label(self.source)


# ---- state and URL --------------------------------------------------------------------------------


def _coerce(raw: str, default):
    """A URL string as the default's type; raises ValueError when it does not parse."""
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(raw)
        return raw.lower() in ("true", "1")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def init_state(defaults: Mapping[str, object]) -> None:
    """Give every key a value: its URL query parameter the first time this session sees the key,
    else its default. Values already in session state are re-assigned so widget state survives a
    switch to another page (widgets there are new elements with the same keys)."""
    read = st.session_state.setdefault("_url_read", set())
    for key, default in defaults.items():
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
            continue
        value = default
        if key not in read and key in st.query_params:
            try:
                value = _coerce(st.query_params[key], default)
            except ValueError:
                st.warning(f"Ignored the link's {key}={st.query_params[key]!r}: not a valid {type(default).__name__}.")
        read.add(key)
        st.session_state[key] = value
    st.session_state.setdefault("_url_keys", {}).update({k: None for k in defaults})


def sync_url() -> None:
    """Write every state key a page declared with ``init_state`` to the URL, so the link reproduces
    the view. Values equal to their default are left out to keep links short."""
    declared = st.session_state.get("_url_keys", {})
    read = st.session_state.get("_url_read", set())
    params = {k: v for k, v in st.query_params.items() if k not in declared and k not in read}  # not read yet
    for key in declared:
        value = st.session_state.get(key)
        if isinstance(value, bool | int | float | str) and not _is_default(key, value):
            params[key] = str(value)
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def _is_default(key: str, value) -> bool:
    defaults = st.session_state.get("_defaults", {})
    return key in defaults and defaults[key] == value


def declare_state(defaults: Mapping[str, object]) -> None:
    """``init_state`` plus remembering the defaults (for short URLs). Pages call this for their own
    widget keys before drawing those widgets; ``setup_page`` calls it for the sidebar's."""
    st.session_state.setdefault("_defaults", {}).update(defaults)
    init_state(defaults)


# ---- models (the registry and the allow-list live in core.sources) ----------------------------------


@st.cache_resource(max_entries=6, show_spinner=False)
def load_source(source: str):
    """The NextTokenModel behind an allowed source (shared by all sessions; the models lock their
    forward passes). Failures are not cached, so a server that was down is tried again."""
    from core import sources

    return sources.load(source)


@st.cache_resource(max_entries=6, show_spinner=False)
def source_cost(source: str):
    """The model's measured ``core.cost.CostModel`` (timed once per source and process, next to the model)."""
    from core.cost import measure

    model = load_source(source)
    prompt = model.encode(MEASURE_PROMPT) if hasattr(model, "encode") and not hasattr(model, "joint") else []
    return measure(model, prompt)


_READY: set[str] = set()  # sources loaded and measured in this process (their caches hit at once)


def load_with_progress(source: str):
    """(model, cost) of an allowed source. The first time in this process it says what it is doing (importing
    torch and transformers, reading the weights, measuring the model's speed) in a status box that goes away
    once the model is ready."""
    if source in _READY:
        return load_source(source), source_cost(source)
    box = st.empty()
    with box.status(f"Loading {source_label(source)}…", expanded=True) as status:
        st.write("Importing torch and the decoders (once per server start)…")
        import core.compare  # noqa: F401 - the heavy imports, once per process
        st.write("Reading the model…")
        model = load_source(source)
        st.write("Measuring its speed on this machine (once per model), to keep every click within "
                 f"{budget_seconds():.0f} s…")
        cost = source_cost(source)
        status.update(label=f"{source_label(source)} is ready", state="complete")
    box.empty()
    _READY.add(source)
    return model, cost


def budget_seconds() -> float:
    from core.cost import budget_seconds as budget

    return budget()


def toy_presets() -> dict:
    from core.sources import toy_presets as presets

    return presets()


def available_sources() -> list[str]:
    """Sources offered in the sidebar: the shipped model, SmolLM2, every toy, and the local models and
    servers opened on the Models page this session; a link's local or server source is offered only when
    the operator's allow-list allows it."""
    from core import sources

    offered = sources.builtin_sources() + list(st.session_state.get("opened_sources", []))
    current = st.session_state.get("source")
    if isinstance(current, str) and current not in offered and sources.kind(current) in ("local", "server"):
        with contextlib.suppress(ValueError):  # else refused by _resolve with the one message that reveals nothing
            offered.append(sources.check(current))
    return offered


def source_label(source: str) -> str:
    from core.sources import label

    return label(source)


def add_source(source: str) -> str:
    """Offer an opened local model or server in the sidebar and select it; returns the source string."""
    opened = st.session_state.setdefault("opened_sources", [])
    if source not in opened:
        opened.append(source)
    st.session_state["source"] = source
    return source


PENDING_SOURCE = "_pending_source"  # a source to select before the sidebar is drawn (set after it was)


def select_source(source: str) -> None:
    """Make ``source`` the sidebar's model from the next run on (``setup_page`` applies it before drawing the
    sidebar, whose widget state cannot change once drawn)."""
    st.session_state[PENDING_SOURCE] = source


def source_info(ctx: Context) -> dict:
    """What an export says about its model (``core.sources.source_info``); never credentials."""
    from core.sources import source_info as info

    return info(ctx.source, ctx.model)


def truncation_note(ctx: Context, outputs: Mapping[str, Sequence[int]]) -> str | None:
    """For a served model: what the server's truncated rows mean for these outputs (key -> tokens)."""
    if not ctx.source.startswith("server:"):
        return None
    from core.remote import outputs_note

    return outputs_note(ctx.model, ctx.prompt_ids, outputs)


def outside_cache(write) -> None:
    """Run ``write`` (an update of an element created outside any cached function) as if no cached function
    were running: progress reported from inside ``st.cache_data`` functions must not be recorded for replay
    (Streamlit could not replay an element on a block the function did not create)."""
    import contextvars

    from streamlit.runtime.scriptrunner_utils.script_run_context import in_cached_function

    def run() -> None:
        in_cached_function.set(False)
        write()

    contextvars.copy_context().run(run)


@contextlib.contextmanager
def server_progress(ctx: Context | None, what: str):
    """While the block runs against a server, a line under the page's spinner counts the requests done."""
    if ctx is None or not ctx.source.startswith("server:"):
        yield
        return
    from core.remote import progress

    line = st.empty()
    start = getattr(ctx.model, "requests", 0)

    def show(done: int, unit: str) -> None:
        text = f"{what}: {getattr(ctx.model, 'requests', 0) - start} requests to the server so far ({unit})"
        outside_cache(lambda: line.caption(text))

    with progress(show):
        yield
    line.empty()


# ---- prompts and goals ----------------------------------------------------------------------------


@st.cache_data(show_spinner=False)
def example_prompts() -> list[dict]:
    """The example prompts shipped in assets/prompts/prompts.json ({name, text, note})."""
    try:
        prompts = json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))
        return [p for p in prompts if isinstance(p, dict) and p.get("name") and isinstance(p.get("text"), str)]
    except (OSError, ValueError):
        return [FALLBACK_PROMPT]


def make_goal(name: str, ngram_n: int = 2):
    """The core goal for a sidebar goal name."""
    from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne

    if name == "0-1":
        return ZeroOne()
    if name == "Hamming":
        return Hamming()
    if name == "N-gram Hamming":
        return NGramHamming(int(ngram_n))
    if name == "Distribution match (KL)":
        return DistributionMatch("kl")
    if name == "Distribution match (TV)":
        return DistributionMatch("tv")
    raise ValueError(f"unknown goal {name!r}; choose one of {', '.join(GOAL_NAMES)}")


# ---- sidebar --------------------------------------------------------------------------------------


def _on_example() -> None:
    chosen = st.session_state.get("example_prompt")
    for p in example_prompts():
        if p["name"] == chosen:
            st.session_state["prompt"] = p["text"]


def _on_source() -> None:
    """Switching to a toy sets steps to its length; switching back restores a text length. What a larger
    model may run is not set here: each page predicts its click's seconds from the model's measured cost and
    caps what would take too long, however the settings arrived (sidebar, link, restored session)."""
    source, previous = st.session_state["source"], st.session_state.get("_previous_source", "")
    if source.startswith("toy:"):
        with contextlib.suppress(Exception):  # the page reports the problem when it loads the source
            st.session_state["steps"] = int(load_source(source).length)
    elif previous.startswith("toy:"):
        st.session_state["steps"] = DEFAULT_STEPS


def _sidebar_defaults() -> dict:
    defaults = dict(SIDEBAR_DEFAULTS)
    prompts = example_prompts()
    if prompts:
        defaults["prompt"] = prompts[0]["text"]
    return defaults


def _draw_sidebar() -> None:
    sb = st.sidebar
    sources = available_sources()
    st.session_state["_previous_source"] = st.session_state["source"]
    if st.session_state["source"] not in sources:
        sources.append(st.session_state["source"])  # shown, then refused with an error below
    sb.selectbox("Model", sources, key="source", format_func=source_label, on_change=_on_source,
                 help="The truth P the decoders run on. Toys are small exact distributions (no text).")
    is_toy = st.session_state["source"].startswith("toy:")
    if is_toy:
        preset = toy_presets().get(st.session_state["source"][4:])
        if preset is not None:
            sb.caption(preset.description)
    else:
        examples = example_prompts()
        # the box names the example the prompt is (None: the user's own text, from typing or a link)
        shown = next((p for p in examples if p["text"] == st.session_state.get("prompt")), None)
        st.session_state["example_prompt"] = shown["name"] if shown else None
        sb.selectbox("Example prompt", [p["name"] for p in examples], key="example_prompt", on_change=_on_example,
                     placeholder="Your own prompt — or pick an example",
                     help="Loads the example into the prompt box; edit it freely.")
        if shown and shown.get("note"):
            sb.caption(shown["note"])
        sb.text_area("Prompt", key="prompt", height=140)
    sb.number_input("Steps (new tokens)", step=1, key="steps",
                    help=f"1 to the toy's length for toys; 1 to {MAX_TEXT_STEPS} for text models.")
    sb.number_input("Seed", step=1, key="seed", help="Every random number on the page follows from this seed.")
    sb.selectbox("Goal", GOAL_NAMES, key="goal",
                 help="What an output is judged by: exact answer (0-1), wrong positions (Hamming), "
                      "wrong N-token windows, or how far the decoder's output distribution is from P.")
    if st.session_state["goal"] == "N-gram Hamming":
        sb.number_input("N (window length)", step=1, key="ngram_n")


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _resolve(state) -> Context:
    """The Context for the sidebar's values; ValueError naming the first problem."""
    source = state["source"]
    if source not in available_sources():
        from core.sources import check, unknown

        check(source)  # raises: the one message for a forbidden source, or what is wrong with the allow-list
        raise unknown(source, available_sources())
    model, cost = load_with_progress(source)
    is_text = hasattr(model, "encode") and hasattr(model, "decode")
    seed = _check_int("seed", state["seed"], 0, MAX_SEED)
    if is_text:
        steps = _check_int("steps", state["steps"], 1, MAX_TEXT_STEPS)
        prompt = state["prompt"] or ""
        if not prompt.strip():
            raise ValueError("the prompt is empty: type some text or pick an example prompt")
        prompt_ids = tuple(int(t) for t in model.encode(prompt))
        if not prompt_ids:
            raise ValueError("the prompt encodes to no tokens: type some text or pick an example prompt")
        if hasattr(model, "check_room"):
            model.check_room(len(prompt_ids) + steps)
    else:
        steps = _check_int(f"steps (for {source[4:]}, a toy of length {model.length})", state["steps"], 1,
                           model.length)
        prompt, prompt_ids = "", ()
    goal_name = state["goal"]
    if goal_name not in GOAL_NAMES:
        raise ValueError(f"unknown goal {goal_name!r}; choose one of {', '.join(GOAL_NAMES)}")
    ngram_n = _check_int("N (the N-gram window)", state["ngram_n"], 1, steps) if goal_name == "N-gram Hamming" else 2
    return Context(source, model, is_text, int(getattr(model, "n_heads", 1)), prompt, prompt_ids, steps, seed,
                   goal_name, make_goal(goal_name, ngram_n), cost)


def _draw_goal_sidebar() -> None:
    st.sidebar.caption("This page builds its own toy distributions; the seed and goal below are shared.")
    st.sidebar.number_input("Seed", step=1, key="seed", help="Every random number on the page follows from this seed.")
    st.sidebar.selectbox("Goal", GOAL_NAMES, key="goal")
    if st.session_state["goal"] == "N-gram Hamming":
        st.sidebar.number_input("N (window length)", step=1, key="ngram_n")


def _resolve_goal_only(state) -> Context:
    seed = _check_int("seed", state["seed"], 0, MAX_SEED)
    if state["goal"] not in GOAL_NAMES:
        raise ValueError(f"unknown goal {state['goal']!r}; choose one of {', '.join(GOAL_NAMES)}")
    ngram_n = _check_int("N (the N-gram window)", state["ngram_n"], 1, 64) if state["goal"] == "N-gram Hamming" else 2
    return Context("", None, False, 1, "", (), 0, seed, state["goal"], make_goal(state["goal"], ngram_n))


def leave_legacy_pages_mode() -> None:
    """Streamlit runs a server's FIRST script run in its legacy multipage mode whenever a folder named
    ``pages/`` sits next to app.py (``PagesManager.uses_pages_directory``): the page file named by the
    URL then runs alone, before app.py's ``st.navigation`` could switch that mode off. Switch it off
    here and rerun, so app.py routes the same URL (its url_paths equal the file names, so the page is
    the same). A no-op in every later run and in AppTest."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def setup_page(title: str, icon: str = "", *, sidebar: str = "full") -> Context | None:
    """Draw the shared sidebar and the page title; return the resolved Context, or show an
    st.error naming the problem (and the allowed values) and return None.

    ``sidebar="goal"``: only seed and goal (pages with their own toys); the Context then has
    source "", model None and steps 0, and the page checks N-gram N against its own length."""
    leave_legacy_pages_mode()
    declare_state(_sidebar_defaults())
    pending = st.session_state.pop(PENDING_SOURCE, None)
    if pending is not None:
        add_source(pending)
    st.title(f"{icon} {title}".strip())
    if sidebar == "full":
        _draw_sidebar()
    else:
        _draw_goal_sidebar()
    sync_url()
    try:
        return _resolve(st.session_state) if sidebar == "full" else _resolve_goal_only(st.session_state)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a traceback
        show_error(exc)
        return None


def check_state(rules: Mapping[str, tuple]) -> None:
    """Reset widget values a link or an old session left outside what the widget allows: for each
    key, (name, test or allowed values, allowed in words[, default]); the default is otherwise the
    one given to ``declare_state``. Each reset is an st.error naming the value and the allowed ones,
    and the page goes on with the default."""
    defaults = st.session_state.get("_defaults", {})
    for key, (name, allowed, words, *default) in rules.items():
        value = st.session_state.get(key)
        try:
            ok = allowed(value) if callable(allowed) else value in allowed
        except (TypeError, ValueError):
            ok = False
        if not ok:
            fallback = default[0] if default else defaults.get(key)
            st.error(f"{name} must be {words}, got {value!r}; using {fallback!r} instead.")
            st.session_state[key] = fallback


def in_range(low, high, integer: bool = False):
    """A test for ``check_state``: a finite number (an integer if ``integer``) in [low, high]."""
    def test(x) -> bool:
        if isinstance(x, bool) or not isinstance(x, int | float) or (integer and not float(x).is_integer()):
            return False
        return math.isfinite(x) and low <= x <= high
    return test


# ---- compute guards: capped settings and the full computation --------------------------------------

FULL = "_full_requests"  # requests whose full computation the user asked for (page-defined, hashable keys)


def full_requested(request) -> bool:
    """Whether the user asked for the full computation of ``request`` (a page's hashable request key)."""
    return request in st.session_state.get(FULL, set())


def _ask_full(request) -> None:
    st.session_state.setdefault(FULL, set()).add(request)


def show_caps(caps: Sequence, request, full_s: float, key: str) -> None:
    """Say what was capped, why and how to ask for more: one warning per ``core.cost.Capped`` and a button that
    runs the full computation (``full_requested(request)`` is then True), its predicted time on the label."""
    if not caps:
        return
    for cap in caps:
        st.warning(cap.message())
    st.button(f"Run the full computation (predicted {full_s:.0f} s)", key=key, on_click=_ask_full, args=(request,),
              help="Runs the settings as given, however long they take; results still show as they come.")


def show_error(exc: Exception) -> None:
    """Show an exception as a message: ValueErrors say what to change; anything else gets a short
    note (never a traceback)."""
    if isinstance(exc, ValueError):
        st.error(str(exc))
    elif isinstance(exc, MemoryError):
        st.error("Out of memory: lower steps, samples or the lookahead depth.")
    else:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        st.error(f"Could not compute this view ({type(exc).__name__}{': ' + first if first else ''}). "
                 "Try other settings.")


# ---- token colouring ------------------------------------------------------------------------------

PROBABILITY_BUCKETS = (  # (lower bound of p, background colour): clamped so one rare token cannot wash out the rest
    (0.8, "#b7e4c7"),
    (0.5, "#d8f3dc"),
    (0.2, "#fff3bf"),
    (0.05, "#ffd8a8"),
    (0.0, "#ffc9c9"),
)
TOY_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def token_label(model, token_id: int) -> str:
    """A token's text (text models) or its letter (toys: 0 = A, 1 = B, ...)."""
    if hasattr(model, "token_text"):
        return model.token_text(int(token_id))
    if hasattr(model, "decode"):
        return model.decode([int(token_id)])
    return TOY_LETTERS[token_id] if 0 <= token_id < len(TOY_LETTERS) else f"<{token_id}>"


def sequence_label(model, tokens: Sequence[int]) -> str:
    """A whole output as text (text models) or letters (toys)."""
    if hasattr(model, "decode") and not hasattr(model, "joint"):
        return model.decode([int(t) for t in tokens])
    return "".join(token_label(model, t) for t in tokens)


def probability_colour(p: float) -> str:
    for low, colour in PROBABILITY_BUCKETS:
        if p >= low:
            return colour
    return PROBABILITY_BUCKETS[-1][1]


def _visible(text: str) -> str:
    """Escape a token's text for HTML, keeping whitespace visible."""
    shown = html.escape(text).replace("\n", "↵\n").replace("\t", "⇥   ")
    return shown if shown.strip() else shown.replace(" ", "·")


def token_html(model, tokens: Sequence[int], logprobs: Sequence[float], ranks: Sequence[int] | None = None,
               prefix: str = "") -> str:
    """Tokens as HTML spans coloured by their probability under the model; hovering shows p and
    rank (1 = the most likely token at that position). ``prefix`` (e.g. the prompt) is shown
    greyed in front."""
    spans = [f'<span style="color:#868e96">{_visible(prefix)}</span>'] if prefix else []
    for i, (tok, lp) in enumerate(zip(tokens, logprobs)):
        p = math.exp(lp)
        hover = f"p = {p:.3f}" + (f" · rank {int(ranks[i])}" if ranks is not None else "")
        hover += f" · token id {int(tok)}"
        spans.append(f'<span title="{html.escape(hover)}" style="background:{probability_colour(p)};'
                     f'border-radius:3px;padding:0 1px">{_visible(token_label(model, tok))}</span>')
    return ('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7;font-size:0.95em">'
            + "".join(spans) + "</div>")


def probability_legend_html() -> str:
    """A one-line key for ``token_html``'s colours."""
    items = []
    bounds = [b for b, _ in PROBABILITY_BUCKETS]
    for i, (low, colour) in enumerate(PROBABILITY_BUCKETS):
        label = f"p ≥ {low:g}" if i == 0 else f"{low:g} ≤ p < {bounds[i - 1]:g}"
        items.append(f'<span style="background:{colour};border-radius:3px;padding:0 4px">{label}</span>')
    return '<div style="font-size:0.8em">' + " ".join(items) + " · hover a token for p and rank</div>"
