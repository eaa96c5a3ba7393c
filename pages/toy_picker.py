"""What the lab pages (Theory lab, Consistency) let a user pick: an exact toy — a named toy (the presets
and the claim toys), a binary tree edited by its conditionals, or a random Markov chain — and samplers
from the warper chain (``core.warpers.CHAIN``), each with its parameter. Widgets only; toys and samplers
come from core. Each page passes its own key prefix, so the two pages keep separate choices. Outputs are
shown with ``core.claims.output_text`` (EOS as ⏹, an output that ended padded with it); ``eos_note`` says so."""

from __future__ import annotations

import itertools
import math

import streamlit as st

from core.claims import EOS_MARK, named_toys
from core.decoders import MBR, Sampling
from core.toy import binary_tree, random_markov_chain
from core.warpers import CHAIN
from pages.common import check_state, in_range

# st.cache_data hashes a dataclass by its fields (dataclasses.asdict), so MBR(ZeroOne()) and MBR(Hamming())
# would share an entry: cached lab functions that take a decoder hash MBR by its repr, which names its goal.
DECODER_HASH = {MBR: repr}

KINDS = ("Preset", "Binary tree", "Markov chain")
TREE_DEFAULTS = {(): 0.6, (0,): 0.55, (1,): 0.9}  # E1
MAX_TREE_N = 4
MAX_STATES = 6
MAX_CHAIN_LENGTH = 6


def prefix_name(prefix: tuple[int, ...]) -> str:
    return "P(A)" if not prefix else f"P(A|{''.join('AB'[t] for t in prefix)})"


def toy_state(p: str) -> dict:
    """Widget keys (with the page's prefix ``p``) and their defaults, for ``declare_state``."""
    return {f"{p}_kind": "Preset", f"{p}_preset": "E1", f"{p}_n": 2, f"{p}_states": 3, f"{p}_alpha": 0.5,
            f"{p}_length": 5, f"{p}_chain_seed": 7}


def toy_rules(p: str) -> dict:
    """``check_state`` rules for the keys of ``toy_state``."""
    names = tuple(named_toys())
    return {
        f"{p}_kind": ("Toy", KINDS, "Preset, Binary tree or Markov chain"),
        f"{p}_preset": ("Preset", names, "one of " + ", ".join(names)),
        f"{p}_n": ("Length n", in_range(1, MAX_TREE_N, True), f"an integer from 1 to {MAX_TREE_N}"),
        f"{p}_states": ("States", in_range(2, MAX_STATES, True), f"an integer from 2 to {MAX_STATES}"),
        f"{p}_alpha": ("Dirichlet α", in_range(0.01, 100.0), "> 0 (from 0.01 to 100)"),
        f"{p}_length": ("Length", in_range(1, MAX_CHAIN_LENGTH, True), f"an integer from 1 to {MAX_CHAIN_LENGTH}"),
        f"{p}_chain_seed": ("Chain seed", in_range(0, 2**31 - 1, True), "an integer from 0 to 2147483647"),
    }


@st.cache_resource(max_entries=32, show_spinner=False)
def build_toy(spec: tuple):
    """The toy for a spec from ``toy_ui`` (shared by sessions; toys are immutable)."""
    kind = spec[0]
    if kind == "Preset":
        return named_toys()[spec[1]][1]()
    if kind == "Binary tree":
        return binary_tree(dict(spec[2]), spec[1])
    return random_markov_chain(*spec[1:])


def toy_ui(p: str, note: str = "") -> tuple:
    """Draw the toy editor (keys prefixed ``p``); return a hashable spec of the toy for ``build_toy``.
    ``note`` is appended to a preset's description."""
    kind = st.segmented_control("Toy", KINDS, key=f"{p}_kind", required=True)
    if kind == "Preset":
        toys = named_toys()
        name = st.selectbox("Preset", list(toys), key=f"{p}_preset")
        st.caption(f"{toys[name][0]} {note}".strip())
        return ("Preset", name)
    if kind == "Binary tree":
        n = st.slider("Length n", 1, MAX_TREE_N, key=f"{p}_n")
        prefixes = [q for k in range(n) for q in itertools.product((0, 1), repeat=k)]
        cols = st.columns(min(4, len(prefixes)))
        for i, prefix in enumerate(prefixes):
            key, default = f"{p}_p_{''.join(map(str, prefix))}", TREE_DEFAULTS.get(prefix, 0.5)
            st.session_state.setdefault(key, default)
            check_state({key: (prefix_name(prefix), in_range(0.0, 1.0), "in [0, 1]", default)})
            cols[i % len(cols)].slider(prefix_name(prefix), 0.0, 1.0, step=0.01, key=key)
        return ("Binary tree", n, tuple((q, st.session_state[f"{p}_p_{''.join(map(str, q))}"]) for q in prefixes))
    c = st.columns(4)
    c[0].slider("States", 2, MAX_STATES, key=f"{p}_states")
    c[1].number_input("Dirichlet α", min_value=0.01, max_value=100.0, step=0.1, key=f"{p}_alpha")
    c[2].slider("Length", 1, MAX_CHAIN_LENGTH, key=f"{p}_length")
    c[3].number_input("Chain seed", min_value=0, step=1, key=f"{p}_chain_seed")
    s = st.session_state
    return ("Markov chain", int(s[f"{p}_states"]), float(s[f"{p}_alpha"]), int(s[f"{p}_length"]),
            int(s[f"{p}_chain_seed"]))


def check_goal_fits(goal, length: int) -> None:
    """ValueError when the sidebar's goal cannot score outputs of a toy of ``length`` tokens (an N-gram
    window longer than the toy)."""
    if goal.pointwise:
        try:
            goal.window(length)
        except ValueError:
            raise ValueError(f"N (the N-gram window) must be from 1 to the toy's length {length}, got "
                             f"{st.session_state.get('ngram_n')}") from None


# ---- outputs --------------------------------------------------------------------------------------


def eos_note(truth) -> str:
    """A sentence for toys with an EOS token (else ""): outputs are padded after EOS."""
    if getattr(truth, "eos_id", None) is None:
        return ""
    return (f"{EOS_MARK} is EOS: an output that ends early is padded with {EOS_MARK} after its EOS, up to the toy's "
            f"length {truth.length} (so {EOS_MARK * truth.length} is the empty output), and every goal scores it so "
            "padded.")


# ---- samplers from the warper chain -----------------------------------------------------------------


def warper_label(cls) -> str:
    """A warper's sampler in words, e.g. "min-p", "top-nσ (not in transformers)"."""
    title = "temperature τ" if cls.arg() == "temperature" else cls.title
    return title if cls.in_transformers else f"{title} (not in transformers)"


def warper_value_ok(cls, value) -> bool:
    """Whether ``value`` is a valid parameter of the warper (its own bounds)."""
    try:
        cls(value)
    except (TypeError, ValueError):
        return False
    return True


def warper_rule(cls) -> tuple:
    """A ``check_state`` rule for the warper's parameter."""
    return (warper_label(cls), lambda v: warper_value_ok(cls, v), cls.allowed().removeprefix("None or "))


def warper_input(container, cls, key: str) -> None:
    """A number input for the warper's parameter (its bounds, its help)."""
    low, high, low_in, high_in = cls.bounds
    if cls.integer:
        step, fmt = 1, "%d"
    else:
        step, fmt = 10 ** math.floor(math.log10(abs(cls.example))) / 10, "%g"
    container.number_input(warper_label(cls), min_value=low if low_in else None,
                           max_value=high if high_in and math.isfinite(high) else None, step=step, format=fmt,
                           key=key, help=cls.help)


def warper_sampler(cls, value) -> Sampling:
    """``Sampling`` with this one warper at ``value`` (τ = 1 otherwise)."""
    return Sampling(**{cls.arg(): int(value) if cls.integer else float(value)})


def sampler_classes() -> list:
    """The warpers in the order the pages offer them: temperature, top-k, top-p, then the rest of ``CHAIN``."""
    first = [c for c in CHAIN if c.arg() in ("temperature", "top_k", "top_p")]
    return sorted(first, key=lambda c: ("temperature", "top_k", "top_p").index(c.arg())) + [
        c for c in CHAIN if c not in first]
