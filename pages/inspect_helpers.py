"""Streamlit helpers shared by the Step inspector, Choice points and Speculative pages: cached calls
into ``core`` (keyed by the model source, so the model object itself is never hashed), charts and
small HTML views. No math here.
"""

from __future__ import annotations

import html
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages.common import Context, sequence_label, token_html, token_label

HEAD_COLOUR = "#4c6ef5"
PATH_COLOUR = "#f08c00"
MISS_COLOUR = "#e03131"
REST_COLOUR = "#adb5bd"
REST_LABEL = "⟨rest of the vocabulary⟩"
HIT_COLOUR = "#2f9e44"


# ---- cached core calls (argument ``source`` stands for the unhashed ``_model``) --------------------


STORED_PATHS = 64  # decoded paths the process keeps
STREAM_EVERY_S = 0.25  # a growing path is redrawn at most this often


@st.cache_resource(show_spinner=False)
def path_store() -> OrderedDict:
    """{(source, prompt ids, steps, kind, seed): Path}, shared by every session (a path is a function of these)."""
    return OrderedDict()


def decoded_path(ctx: Context, kind: str = "greedy", placeholder=None):
    """The greedy path (``kind`` "greedy") or one draw from P (τ = 1) with the sidebar seed ("sample") of
    ``ctx.steps`` tokens, decoded once per process. While it is decoded the first time, its tokens show in
    ``placeholder`` (after the prompt) as they come."""
    from core.branching import stream_path
    from core.decoders import Sampling

    key = (ctx.source, ctx.prompt_ids, ctx.steps, kind, ctx.seed if kind == "sample" else None)
    store = path_store()
    if key in store:
        return store[key]
    sampler = Sampling(temperature=1.0) if kind == "sample" else None
    path, shown = None, time.perf_counter()
    prefix = ctx.prompt if ctx.is_text else ""
    for path in stream_path(ctx.model, list(ctx.prompt_ids), ctx.steps, sampler, ctx.seed):
        if placeholder is not None and time.perf_counter() - shown >= STREAM_EVERY_S:
            placeholder.markdown(token_html(ctx.model, path.tokens, path.step_logprobs, prefix=prefix)
                                 + f"<small>decoding… {len(path.tokens)} of {ctx.steps} tokens</small>",
                                 unsafe_allow_html=True)
            shown = time.perf_counter()
    store[key] = path
    while len(store) > STORED_PATHS:
        store.popitem(last=False)
    return path


@st.cache_data(max_entries=64, show_spinner=False)
def greedy_certificate(_model, source: str, prompt_ids: tuple[int, ...], steps: int, _path):
    """Whether the greedy path (``_path``, a function of the other arguments) is certainly the mode (claims.md
    C13), from one teacher-forced pass."""
    from core.risk import greedy_certificate

    return greedy_certificate(_model, list(prompt_ids), steps, _path)


@st.cache_data(max_entries=256, show_spinner=False)
def scored_path(_model, source: str, prompt_ids: tuple[int, ...], tokens: tuple[int, ...]):
    """The Path of a given output (its per-step log-probabilities under the model)."""
    from core.choice_points import score_path

    return score_path(_model, prompt_ids, tokens)


@st.cache_data(max_entries=256, show_spinner=False)
def head_views(_model, source: str, prefix: tuple[int, ...], top_k: int):
    from core.choice_points import step_heads

    return step_heads(_model, prefix, top_k)


@st.cache_data(max_entries=32, show_spinner=False)
def path_trace(_model, source: str, prompt_ids: tuple[int, ...], tokens: tuple[int, ...]):
    from core.choice_points import choice_trace

    return choice_trace(_model, prompt_ids, tokens)


@st.cache_data(max_entries=64, show_spinner=False)
def pair_estimate(_model, source: str, prefix: tuple[int, ...], top_k: int):
    from core.choice_points import pair_information

    return pair_information(_model, prefix, top_k)


# ---- labels -------------------------------------------------------------------------------------


def visible(text: str) -> str:
    """A token's text with whitespace made visible (for chart axes and select boxes)."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def visible_html(text: str) -> str:
    """A token's text for HTML with ``white-space: pre-wrap``: line breaks kept (marked ↵), a
    whitespace-only token's spaces shown as ·."""
    shown = html.escape(text).replace("\n", "↵\n").replace("\t", "⇥   ")
    return shown if shown.strip() else shown.replace(" ", "·")


def token_name(model, token_id: int) -> str:
    return visible(token_label(model, int(token_id)))


def snippet(model, tokens: Sequence[int], limit: int = 40) -> str:
    text = visible(sequence_label(model, tokens))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def unique_labels(labels: Sequence[str], ids: Sequence[int]) -> list[str]:
    """Category labels for a chart axis: a label shared by several tokens gets its id appended."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return [f"{label} #{i}" if counts[label] > 1 else label for label, i in zip(labels, ids)]


def pair_context(t: int, is_text: bool) -> str:
    """What X (the token at step ``t``) is conditioned on, in words."""
    if t == 0:
        return "given only the prompt" if is_text else "at the start of the sequence"
    earlier = "the path's first token" if t == 1 else f"the path's first {t} tokens"
    return f"given the prompt and {earlier}" if is_text else f"given {earlier}"


def heads_note(ctx: Context) -> str | None:
    """Why only head 1 is shown, for single-head models (None for multi-head ones)."""
    if ctx.n_heads > 1:
        return None
    if ctx.source.startswith("server:"):
        k = ctx.model.caps.top_logprobs
        listed = "its whole vocabulary" if k < 0 else f"its top {k} tokens"
        return (f"{ctx.source_label} is served: the server lists {listed} per position, and the grey bar is "
                "everything else (the rest of the vocabulary, never spread over the listed tokens). One head: it "
                "only predicts the next token.")
    kind = "an exact toy distribution" if ctx.is_toy else "a next-token model"
    return (f"{ctx.source_label} is {kind} with one head: it only predicts the next token, so there are "
            "no k-tokens-ahead views. Pick the shipped multi-head model (4 heads) to see heads 2–4.")


def clicked_point(state) -> tuple[int, int] | None:
    """(token id, position) of the first clicked bar in a plotly chart's selection state (Streamlit
    1.6x: ``{"selection": {"points": [{"customdata": [id, position], ...}], ...}}``), else None."""
    points = ((state or {}).get("selection") or {}).get("points") or []
    data = points[0].get("customdata") if points else None
    if not isinstance(data, (list, tuple)) or len(data) < 2:
        return None
    try:
        return int(data[0]), int(data[1])
    except (TypeError, ValueError):
        return None


# ---- charts -------------------------------------------------------------------------------------


def head_figure(model, view, title: str, mark: int | None, position: int | None) -> go.Figure:
    """Horizontal bars of one head's top-k (most probable on top). ``mark``: the token the current
    path has at the predicted position (drawn in another colour). Each bar's customdata is
    [token id, position] so a click can force that token there."""
    ids = list(view.token_ids)
    labels = unique_labels([token_name(model, i) for i in ids], ids)
    colours = [PATH_COLOUR if i == mark else HEAD_COLOUR for i in ids]
    probs = list(view.probs)
    data = [[i, -1 if position is None else position] for i in ids]
    if hasattr(model, "rest_mass"):  # a served model: the mass the server did not list is a bar of its own
        labels, colours = labels + [REST_LABEL], colours + [REST_COLOUR]
        probs, data = probs + [max(0.0, 1.0 - view.covered)], data + [[-1, -1]]  # not clickable
    fig = go.Figure(go.Bar(
        x=probs, y=labels, orientation="h", marker_color=colours, customdata=data,
        hovertemplate="%{y}: p = %{x:.3f}<br>token id %{customdata[0]}<extra></extra>",
    ))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=90 + 22 * len(ids),
                      margin=dict(l=10, r=10, t=40, b=30), xaxis=dict(title="probability", rangemode="tozero"),
                      yaxis=dict(autorange="reversed", type="category"), clickmode="event+select")
    return fig


def trace_figure(x: Sequence[str], series: dict[str, np.ndarray], title: str, y_title: str,
                 marks: Sequence[int] = ()) -> go.Figure:
    """Per-position lines with markers; ``marks`` are highlighted positions."""
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=[None if np.isnan(v) else float(v) for v in values],
                                 mode="lines+markers", name=name, customdata=list(x),
                                 hovertemplate="step %{x} %{customdata}: %{y:.3f}<extra>" + name + "</extra>"))
    for m in marks:
        fig.add_vline(x=m, line=dict(color=PATH_COLOUR, width=1, dash="dot"))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=300, margin=dict(l=10, r=10, t=40, b=30),
                      xaxis=dict(title="step", dtick=max(1, len(x) // 16)), yaxis=dict(title=y_title),
                      legend=dict(orientation="h", y=-0.25))
    return fig


INFORMATION_COLOURS = {"H(X)": "#74c0fc", "H(Y)": "#ffa94d", "H(X|Y)": "#a5d8ff", "I(X;Y)": "#b197fc",
                       "H(Y|X)": "#ffd8a8"}


def information_figure(terms: Sequence[tuple[str, float, str]], bars: Sequence[str]) -> go.Figure:
    """Stacked horizontal bars, top to bottom in ``bars`` order; ``terms`` = (name, bits, bar), stacked
    left to right in the given order."""
    fig = go.Figure()
    for name, value, bar in terms:
        fig.add_trace(go.Bar(x=[value], y=[bar], orientation="h", name=name,
                             marker_color=INFORMATION_COLOURS.get(name, HEAD_COLOUR), marker_line=dict(width=1),
                             text=[f"{name} {value:.3f}"], textposition="inside", insidetextanchor="middle",
                             hovertemplate=f"{name} = {value:.4f} bits<extra></extra>"))
    fig.update_layout(barmode="stack", height=200, margin=dict(l=10, r=10, t=10, b=30), showlegend=False,
                      xaxis=dict(title="bits"), yaxis=dict(categoryorder="array", categoryarray=list(bars)[::-1]))
    return fig


# ---- HTML ---------------------------------------------------------------------------------------


def highlighted_html(model, tokens: Sequence[int], scores: Sequence[float], marked: Sequence[int],
                     hover: Callable[[int], str], prefix: str = "") -> str:
    """The path's tokens shaded by ``scores`` (relative to the largest) with ``marked`` positions
    boxed; ``hover(i)`` is each token's tooltip."""
    finite = [s for s in scores if np.isfinite(s)]
    top = max(finite) if finite and max(finite) > 0 else 1.0
    spans = [f'<span style="color:#868e96">{visible_html(prefix)}</span>'] if prefix else []
    marked = set(marked)
    for i, tok in enumerate(tokens):
        s = scores[i] if np.isfinite(scores[i]) else 0.0
        alpha = 0.08 + 0.6 * max(0.0, min(1.0, s / top))
        # the outline is drawn outside the span: the margin keeps it off the neighbouring characters
        box = "outline:2px solid #e8590c;font-weight:bold;margin:0 3px;" if i in marked else ""
        spans.append(f'<span title="{html.escape(hover(i))}" style="background:rgba(250,82,82,{alpha:.2f});{box}'
                     f'border-radius:3px;padding:0 1px">{visible_html(token_label(model, tok))}</span>')
    return ('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.9;font-size:0.95em">'
            + "".join(spans) + "</div>")


ROLE_STYLES = {
    "accepted": f"background:{HIT_COLOUR}33",
    "bonus": "background:#4dabf733",
    "rejected": f"background:{MISS_COLOUR}22;text-decoration:line-through;color:#868e96",
}


def passes_html(model, passes: Sequence[Sequence[tuple[int, str]]], titles: Sequence[str]) -> str:
    """Tokens grouped by forward pass (a thin box per pass), coloured by role: each pass is a list of
    (token id, "accepted" | "bonus" | "rejected")."""
    groups = []
    for tokens, title in zip(passes, titles):
        spans = "".join(f'<span style="{ROLE_STYLES[role]};border-radius:2px">'
                        f"{visible_html(token_label(model, tok))}</span>" for tok, role in tokens)
        groups.append(f'<span title="{html.escape(title)}" style="border:1px solid #adb5bd;border-radius:4px;'
                      f'padding:1px 1px">{spans}</span>')
    return ('<div style="font-family:monospace;white-space:pre-wrap;line-height:2.0;font-size:0.95em">'
            + "".join(groups) + "</div>")


def roles_legend_html() -> str:
    items = [f'<span style="{ROLE_STYLES[r]};padding:0 4px;border-radius:3px">{label}</span>'
             for r, label in (("accepted", "draft accepted"), ("bonus", "head 1's own token (bonus)"),
                              ("rejected", "draft rejected"))]
    return '<div style="font-size:0.8em">' + " ".join(items) + " · one box per forward pass</div>"


# ---- compute guards -----------------------------------------------------------------------------


def cap_setting(predict: Callable[[int], float], requested: int, low: int, name: str, budget_s: float,
                choices: Sequence[int] | None = None):
    """(the value to run, the ``core.cost.Capped`` saying why, or None): ``requested`` if ``predict`` of it fits
    ``budget_s``, else the largest value from ``low`` (or of ``choices``, ascending) that does."""
    from core.cost import Capped, fit

    if choices is None:
        capped = fit(predict, requested, min(low, requested), budget_s, name)
        return (requested, None) if capped is None else (capped.allowed, capped)
    allowed = [c for c in choices if c <= requested] or [min(choices)]
    capped = fit(lambda i: predict(allowed[i]), len(allowed) - 1, 0, budget_s, name)
    if capped is None:
        return requested, None
    value = allowed[capped.allowed]
    return value, Capped(name, requested, value, capped.requested_s, capped.allowed_s, budget_s)
