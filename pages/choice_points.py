"""Choice points: per-position entropy and probability along a path, what the lookahead heads said
before head 1 did, and for two consecutive tokens H(X) + H(Y) = H(X|Y) + 2·I(X;Y) + H(Y|X).

The path shows token by token while it is decoded; the pair's top-k and then the steps are capped when the
model's measured cost predicts a click over the budget (with the full computation on request)."""

from __future__ import annotations

import dataclasses
import math

import streamlit as st

from pages.common import setup_page

ctx = setup_page("Choice points", "🔀")  # the page shell first: the heavy imports below run after it

from core.choice_points import predict_pair, predict_path, predict_trace  # noqa: E402
from pages import inspect_helpers as ih  # noqa: E402
from pages.common import (  # noqa: E402
    Context,
    budget_seconds,
    check_state,
    declare_state,
    full_requested,
    in_range,
    show_caps,
    show_error,
)

PATHS = {"greedy": "Greedy path", "sample": "Sampled path (τ = 1, sidebar seed)"}
METRIC_LABELS = {
    "entropy": "Entropy of head 1 (how open the choice was)",
    "surprise": "Surprise −log₂ p of the chosen token",
    "influence": "Influence: how much the token changed the prediction of the next one (head 2 vs head 1)",
}
TOP_K_CHOICES = (4, 8, 16, 32, 64)


def guarded(ctx: Context) -> tuple[Context, int]:
    """(the Context to run, the pair's top-k): the top-k, then the steps, capped when the page's work (the path,
    its per-position tables, the pair's batched continuations) is predicted over the budget, saying so, with
    the full computation on request."""
    top_k = int(st.session_state["cp_top_k"])
    asked = ("choice_points", ctx.source, ctx.prompt_ids, ctx.steps, top_k)
    if ctx.is_toy or full_requested(asked):
        return ctx, top_k
    length, budget = len(ctx.prompt_ids), budget_seconds()

    def seconds(steps: int, k: int) -> float:
        return predict_path(ctx.cost, length, steps) + predict_trace(ctx.cost, steps, ctx.n_heads) + predict_pair(
            ctx.cost, k)

    k, cap_k = ih.cap_setting(lambda k: seconds(ctx.steps, k), top_k, TOP_K_CHOICES[0], "Top-k x's", budget,
                              TOP_K_CHOICES)
    steps, cap_steps = ih.cap_setting(lambda s: seconds(s, k), ctx.steps, 1, "Steps", budget)
    caps = [c for c in (cap_k, cap_steps) if c is not None]
    show_caps(caps, asked, seconds(ctx.steps, top_k), key="cp_full")
    return dataclasses.replace(ctx, steps=steps), k


def pair_positions(ctx: Context) -> list[int]:
    """Steps t whose next two tokens (t, t+1) the model can score (toys end at their length)."""
    last = ctx.steps - 1 if ctx.is_text else min(ctx.steps, ctx.model.length - 1) - 1
    return list(range(max(0, last) + 1)) if last >= 0 else []


def draw_path(ctx: Context, tokens, trace, metric: str, count: int) -> tuple[int, ...]:
    marked = trace.top_positions(metric, count)
    infl = trace.influence

    def hover(i: int) -> str:
        extra = "" if math.isnan(infl[i]) else f" · influence {infl[i]:.3f}"
        return (f"step {i} · p = {trace.chosen_prob[i]:.3f} · H = {trace.entropy_bits[i]:.2f} bits · "
                f"surprise {trace.surprise_bits[i]:.2f} bits{extra}")

    st.markdown(ih.highlighted_html(ctx.model, tokens, trace.metric(metric), marked, hover,
                                    prefix=ctx.prompt if ctx.is_text else ""), unsafe_allow_html=True)
    names = ", ".join(f"step {i} “{ih.token_name(ctx.model, tokens[i])}”" for i in marked)
    st.caption(f"Shaded by {METRIC_LABELS[metric].split(':')[0].lower()}; boxed: the top {len(marked)} — {names}. "
               "Hover a token for its numbers.")
    labels = [ih.token_name(ctx.model, t) for t in tokens]
    st.plotly_chart(ih.trace_figure(labels, {"entropy H (bits)": trace.entropy_bits,
                                             "surprise −log₂ p (bits)": trace.surprise_bits},
                                    "Head 1 along the path", "bits", marked), key="cp_trace")
    return marked


def draw_heads(ctx: Context, tokens, trace) -> None:
    st.subheader("What the heads said before head 1")
    note = ih.heads_note(ctx)
    if note:
        st.info(note)
        return
    st.markdown("Head k predicts the token at step t from the prefix ending k − 1 tokens earlier than head 1's. "
                "Total variation TV(head k, head 1) is the probability mass that knowing those k − 1 tokens "
                "moved; high values after a token mean that token was a choice the later text depends on.")
    labels = [ih.token_name(ctx.model, t) for t in tokens]
    series = {f"head {k + 1}": trace.head_tv[k] for k in range(1, trace.head_tv.shape[0])}
    st.plotly_chart(ih.trace_figure(labels, series, "TV(head k, head 1) for the token at each step", "TV"),
                    key="cp_heads")
    st.dataframe(
        [{"head": f"head {h.head}", "predicts from": f"{h.head - 1} token(s) earlier", "positions": h.positions,
          "mean TV vs head 1": round(h.mean_tv, 4), "top-1 agrees with head 1": f"{h.top1_agreement:.1%}",
          "mean p(chosen token)": round(h.mean_chosen_prob, 4)} for h in trace.head_summary()],
        hide_index=True, key="cp_head_table")


def draw_pair(ctx: Context, tokens, marked: tuple[int, ...], top_k: int) -> None:
    st.subheader("Two consecutive tokens: H(X) + H(Y) = H(X|Y) + 2·I(X;Y) + H(Y|X)")
    positions = pair_positions(ctx)
    if not positions:
        st.info("This toy is too short for two consecutive tokens after the path's start.")
        return
    st.session_state.setdefault("cp_position", marked[0] if marked and marked[0] in positions else positions[0])
    if st.session_state["cp_position"] not in positions:
        st.session_state["cp_position"] = positions[0]
    left, right = st.columns([3, 1])
    with left:
        t = st.selectbox("X = the token at step", positions, key="cp_position",
                         format_func=lambda i: f"{i}: “{ih.token_name(ctx.model, tokens[i])}”"
                                               + (" (boxed above)" if i in marked else ""))
    with right:
        st.selectbox("Top-k x's", TOP_K_CHOICES, key="cp_top_k",
                     help="How many values of X get their exact continuation p(y|x): one batched "
                          "forward pass of this many prefixes.")
    est = ih.pair_estimate(ctx.model, ctx.source, (*ctx.prompt_ids, *tokens[:t]), int(top_k))
    d = est.decomposition
    cols = st.columns(5)
    approx = "" if est.exact else " (≈)"
    cols[0].metric("H(X) bits (exact)", f"{d.h_x:.3f}")
    cols[1].metric("H(Y) bits" + approx, f"{d.h_y:.3f}")
    cols[2].metric("I(X;Y) bits" + ("" if est.exact else " (≥)"), f"{d.mutual_information:.3f}")
    cols[3].metric("H(X|Y) bits" + approx, f"{d.h_x_given_y:.3f}")
    cols[4].metric("H(Y|X) bits" + approx, f"{d.h_y_given_x:.3f}")
    first, second = "H(X) + H(Y)", "H(X|Y) + 2I + H(Y|X)"
    terms = [("H(X)", d.h_x, first), ("H(Y)", d.h_y, first), ("H(X|Y)", d.h_x_given_y, second),
             ("I(X;Y)", d.mutual_information, second), ("I(X;Y)", d.mutual_information, second),
             ("H(Y|X)", d.h_y_given_x, second)]
    st.plotly_chart(ih.information_figure(terms, [first, second]), key="cp_pair")
    head2 = "" if est.h_y_head2 is None else (
        f" For comparison, head 2's own prediction of Y (made without seeing X) has entropy "
        f"**{est.h_y_head2:.3f} bits**.")
    if est.exact:
        exactness = (f"**Exact:** the top-{len(est.x_ids)} values of X hold all of its probability, so every term "
                     "is computed from the model's full joint p(x) p(y|x).")
    else:
        exactness = (
            f"**What is exact:** p(x) over the whole vocabulary (so H(X) is exact) and p(y|x) for the "
            f"{len(est.x_ids)} most likely x's, which cover **{est.covered:.2%}** of X's probability. "
            f"**What is approximate:** the remaining {1 - est.covered:.2%} is one remainder bucket assumed to "
            "continue like the top x's on average and to tell nothing about Y, so I(X;Y) shown is a lower bound "
            "on the model's, and H(Y), H(X|Y), H(Y|X) are estimates; raise top-k to tighten them.")
    st.markdown(
        f"X is the token at step {t}, Y the one after it, both under the model {ih.pair_context(t, ctx.is_text)}. "
        f"{exactness}{head2} Two-token prediction is trained on H(X) + H(Y), which counts the mutual "
        "information twice: the part of X that constrains what comes next (Gloeckle et al. 2024, §5.2). "
        f"Identity check: left − right = {d.residual:.1e} bits.")


def draw(ctx: Context) -> None:
    declare_state({"cp_path": "greedy", "cp_metric": "entropy", "cp_count": 5, "cp_top_k": 16})
    metrics = ["entropy", "surprise"] + (["influence"] if ctx.n_heads > 1 else [])
    check_state({"cp_path": ("Path", tuple(PATHS), "one of " + ", ".join(PATHS)),
                 "cp_metric": ("Highlight by", tuple(metrics), "one of " + ", ".join(metrics)),
                 "cp_top_k": ("Top-k x's", TOP_K_CHOICES, "one of " + ", ".join(map(str, TOP_K_CHOICES))),
                 "cp_count": ("How many", in_range(1, 10**9, True), "an integer >= 1")})
    ctx, top_k = guarded(ctx)
    st.session_state["cp_count"] = min(int(st.session_state["cp_count"]), ctx.steps)
    left, mid, right = st.columns([2, 3, 1])
    with left:
        kind = st.radio("Path", list(PATHS), key="cp_path", format_func=PATHS.get)
    with mid:
        metric = st.radio("Highlight by", metrics, key="cp_metric", format_func=METRIC_LABELS.get)
    with right:
        count = st.number_input("How many", min_value=1, max_value=ctx.steps, step=1, key="cp_count")
    path_view = st.empty()
    tokens = ih.decoded_path(ctx, kind, path_view).tokens
    with st.spinner("Scoring the path with every head…"):
        trace = ih.path_trace(ctx.model, ctx.source, ctx.prompt_ids, tokens)
    with path_view.container():
        marked = draw_path(ctx, tokens, trace, metric, int(count))
    draw_heads(ctx, tokens, trace)
    draw_pair(ctx, tokens, marked, top_k)


if ctx is not None:
    try:
        draw(ctx)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a traceback
        show_error(exc)
