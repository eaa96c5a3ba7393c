"""Step inspector: every head's top-k at one step of the path; click a bar (or pick a token) to force
it and branch; the branches form a tree with undo.

The greedy path shows token by token while it is decoded; the steps are capped when the model's measured cost
predicts a click over the budget (with the full computation on request)."""

from __future__ import annotations

import dataclasses

import streamlit as st

from pages.common import setup_page

ctx = setup_page("Step inspector", "🔬")  # the page shell first: the heavy imports below run after it

from core.branching import BranchTree, branch  # noqa: E402
from core.choice_points import predict_path, predict_trace, predict_views  # noqa: E402
from pages import inspect_helpers as ih  # noqa: E402
from pages.common import (  # noqa: E402
    Context,
    budget_seconds,
    check_state,
    declare_state,
    full_requested,
    in_range,
    probability_legend_html,
    show_caps,
    show_error,
    token_html,
)

TREES = "inspector_trees"  # {(source, prompt ids, steps): BranchTree}
ERROR = "inspector_error"  # a message from a callback, shown on the next run
TOP_K_RANGE = (3, 20)


def tree_key(ctx: Context) -> tuple:
    return ctx.source, ctx.prompt_ids, ctx.steps


def current_tree(ctx: Context, placeholder=None) -> BranchTree:
    trees = st.session_state.setdefault(TREES, {})
    key = tree_key(ctx)
    if key not in trees:
        trees[key] = BranchTree.root(ih.decoded_path(ctx, "greedy", placeholder).tokens)
    return trees[key]


def set_tree(ctx: Context, tree: BranchTree) -> None:
    st.session_state[TREES][tree_key(ctx)] = tree


def force(ctx: Context, position: int, token: int) -> None:
    """Branch: force ``token`` at ``position`` of the current path, continue greedily."""
    try:
        tree = branch(current_tree(ctx), ctx.model, list(ctx.prompt_ids), int(position), int(token))
    except Exception as exc:  # noqa: BLE001 - shown on the page by the next run
        st.session_state[ERROR] = exc
        return
    set_tree(ctx, tree)
    st.session_state["inspector_step"] = min(int(position) + 1, ctx.steps - 1)


def on_force_select(ctx: Context, position: int) -> None:
    token = st.session_state.get("inspector_force")
    st.session_state["inspector_force"] = None
    if token is not None:
        force(ctx, position, token)


def on_bar_click(ctx: Context, chart_key: str) -> None:
    clicked = ih.clicked_point(st.session_state.get(chart_key))
    if clicked is not None and 0 <= clicked[1] < ctx.steps:
        force(ctx, clicked[1], clicked[0])


def on_undo(ctx: Context) -> None:
    tree = current_tree(ctx)
    if tree.can_undo:
        set_tree(ctx, tree.undo())


def on_goto(ctx: Context) -> None:
    set_tree(ctx, current_tree(ctx).goto(int(st.session_state["inspector_branch"])))


def branch_label(ctx: Context, tree: BranchTree, index: int, depth: int) -> str:
    b = tree.branches[index]
    indent = "\u2003" * depth + ("↳ " if depth else "")
    if b.parent is None:
        return f"{indent}#0 root: greedy · {ih.snippet(ctx.model, b.tokens)}"
    return (f"{indent}#{index} step {b.position}: forced “{ih.token_name(ctx.model, b.forced)}” · "
            f"{ih.snippet(ctx.model, b.tokens[b.position:])}")


def capped_steps(ctx: Context) -> Context:
    """The Context to run: its steps capped when the first view of the page (the greedy path, its scores and the
    heads' views) is predicted over the budget, saying so, with the full computation on request."""
    asked = ("inspector", ctx.source, ctx.prompt_ids, ctx.steps)
    if ctx.is_toy or full_requested(asked):
        return ctx
    length = len(ctx.prompt_ids)

    def seconds(steps: int) -> float:
        return (predict_path(ctx.cost, length, steps) + 2 * predict_trace(ctx.cost, steps, 1)
                + predict_views(ctx.cost))

    steps, cap = ih.cap_setting(seconds, ctx.steps, 1, "Steps", budget_seconds())
    if cap is None:
        return ctx
    show_caps([cap], asked, cap.requested_s, key="inspector_full")
    return dataclasses.replace(ctx, steps=steps)


def draw(ctx: Context) -> None:
    path_view = st.empty()
    tree = current_tree(ctx, path_view)
    path = tree.path
    declare_state({"inspector_step": 0, "inspector_top_k": 8})
    if not 0 <= st.session_state["inspector_step"] < ctx.steps:  # steps changed, or a stale link
        st.session_state["inspector_step"] = 0
    lo, hi = TOP_K_RANGE
    check_state({"inspector_top_k": ("Top-k", in_range(lo, hi, True), f"an integer from {lo} to {hi}")})

    scored = ih.scored_path(ctx.model, ctx.source, ctx.prompt_ids, path)
    prompt_text = ctx.prompt if ctx.is_text else ""
    path_view.markdown(token_html(ctx.model, path, scored.step_logprobs, prefix=prompt_text), unsafe_allow_html=True)
    st.markdown(probability_legend_html(), unsafe_allow_html=True)
    st.caption(f"Branch #{tree.current} of {len(tree.branches)} · log P(path) = {scored.logprob:.3f} nats")
    cert = ih.greedy_certificate(ctx.model, ctx.source, ctx.prompt_ids, ctx.steps,
                                 ih.decoded_path(ctx, "greedy"))
    (st.success if cert.holds else st.caption)(f"The greedy path (branch #0): {cert.text()}")

    left, right = st.columns([3, 1])
    with left:
        if ctx.steps > 1:
            st.slider("Step", 0, ctx.steps - 1, key="inspector_step",
                      help="Which position to inspect: the heads' predictions after the prompt and the path's "
                           "first `step` tokens.")
        step = int(st.session_state["inspector_step"])
    with right:
        st.slider("Top-k", *TOP_K_RANGE, key="inspector_top_k")
    top_k = int(st.session_state["inspector_top_k"])

    prefix = (*ctx.prompt_ids, *path[:step])
    views = ih.head_views(ctx.model, ctx.source, prefix, top_k)
    st.markdown(f"**Step {step}** — the path has “{ih.token_name(ctx.model, path[step])}” here. "
                "Click a bar to force that token at the position its head predicts and continue greedily.")
    note = ih.heads_note(ctx)
    if note:
        st.info(note)

    cols = st.columns(min(2, len(views)))
    for view in views:
        position = step + view.head - 1
        inside = position < ctx.steps
        mark = path[position] if inside else None
        title = (f"Head {view.head} → step {position}"
                 f"{'' if inside else ' (past the path)'} · H = {view.entropy_bits:.2f} bits · "
                 f"top-{len(view.token_ids)} covers {view.covered:.1%}")
        chart_key = f"inspector_head_{view.head}"
        with cols[(view.head - 1) % len(cols)]:
            st.plotly_chart(ih.head_figure(ctx.model, view, title, mark, position if inside else None),
                            key=chart_key, on_select=(lambda k=chart_key: on_bar_click(ctx, k)) if inside else "ignore",
                            selection_mode="points", config={"displayModeBar": False})

    head1 = views[0]
    p_of = dict(zip(head1.token_ids, head1.probs))
    st.selectbox(f"Force a token at step {step} (head 1's top-{len(head1.token_ids)})", head1.token_ids, index=None,
                 key="inspector_force", placeholder="choose a token to branch…",
                 format_func=lambda t: f"{ih.token_name(ctx.model, t)}  (p = {p_of[t]:.3f})",
                 on_change=on_force_select, args=(ctx, step))

    st.subheader("Branches")
    outline = tree.outline()
    depth = {i: d for d, i in outline}
    st.session_state["inspector_branch"] = tree.current
    st.radio("View branch", [i for _, i in outline], key="inspector_branch", on_change=on_goto, args=(ctx,),
             format_func=lambda i: branch_label(ctx, tree, i, depth[i]),
             label_visibility="collapsed")
    st.button("↶ Undo", on_click=on_undo, args=(ctx,), disabled=not tree.can_undo,
              help="Go back to before your last branch or branch switch.")


if ctx is not None:
    error = st.session_state.pop(ERROR, None)
    if error is not None:
        show_error(error)
    try:
        draw(capped_steps(ctx))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a traceback
        show_error(exc)
