"""Speculative: greedy self-speculative decoding with the extra heads (heads 2..k draft, head 1
verifies) — drafts per forward pass, tokens per forward, acceptance per head, and the measured
wall-clock speed-up against plain greedy decoding with the same output."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from pages import inspect_helpers as ih
from pages.common import Context, check_state, declare_state, in_range, setup_page, show_error

RUNS = "spec_runs"  # {(source, prompt ids, steps, heads, repeats): SpeedComparison}
REPEATS = (1, 2, 3)


def run_key(ctx: Context) -> tuple:
    return ctx.source, ctx.prompt_ids, ctx.steps, int(st.session_state["spec_heads"]), \
        int(st.session_state["spec_repeats"])


def on_measure_again(ctx: Context) -> None:
    st.session_state.get(RUNS, {}).pop(run_key(ctx), None)


def pass_roles(trace) -> list[tuple[int, str]]:
    kept = [(t, "accepted") for t in trace.drafted[: trace.accepted]]
    dropped = [(t, "rejected") for t in trace.drafted[trace.accepted:]]
    return [*kept, (trace.bonus, "bonus"), *dropped]


def draw_passes(ctx: Context, result) -> None:
    traces = result.traces
    st.markdown(ih.passes_html(ctx.model, [[(t, "accepted") for t in tr.drafted[: tr.accepted]]
                                           + [(tr.bonus, "bonus")] for tr in traces],
                               [f"pass {i}: {len(tr.committed)} token(s)" for i, tr in enumerate(traces)]),
                unsafe_allow_html=True)
    st.markdown(ih.roles_legend_html(), unsafe_allow_html=True)
    with st.expander(f"Every forward pass ({len(traces)}), with the rejected drafts"):
        titles = ["prompt pass" if not tr.fed else f"pass {i}: {tr.accepted}/{len(tr.drafted)} drafts kept"
                  for i, tr in enumerate(traces)]
        lines = [ih.passes_html(ctx.model, [pass_roles(tr)], [title]) for tr, title in zip(traces, titles)]
        st.markdown("".join(f"<div><b>{t}</b>{line}</div>" for t, line in zip(titles, lines)), unsafe_allow_html=True)


def draw_stats(ctx: Context, result) -> None:
    left, right = st.columns(2)
    with left:
        fig = go.Figure(go.Histogram(x=[len(tr.committed) for tr in result.traces[1:]], marker_color=ih.HEAD_COLOUR,
                                     xbins=dict(start=0.5, end=result.heads + 0.5, size=1)))
        fig.update_layout(title=dict(text="Tokens committed per verification pass", font=dict(size=13)), height=300,
                          margin=dict(l=10, r=10, t=40, b=30), xaxis=dict(title="tokens", dtick=1),
                          yaxis=dict(title="passes"), bargap=0.1)
        st.plotly_chart(fig, key="spec_hist")
    with right:
        heads = [f"head {j}" for j in range(2, result.heads + 1)]
        fig = go.Figure([
            go.Bar(x=heads, y=list(result.acceptance_per_head), name="kept / verified", marker_color=ih.HIT_COLOUR),
            go.Bar(x=heads, y=list(result.conditional_acceptance_per_head), name="kept / reached (earlier drafts kept)",
                   marker_color="#94d82d"),
        ])
        fig.update_layout(title=dict(text="Acceptance per drafting head", font=dict(size=13)), height=300,
                          margin=dict(l=10, r=10, t=40, b=30), yaxis=dict(title="share", range=[0, 1]),
                          legend=dict(orientation="h", y=-0.2))
        st.plotly_chart(fig, key="spec_accept")
    st.dataframe(
        [{"head": h, "drafts verified": n, "kept / verified": None if math.isnan(a) else round(a, 4),
          "kept / reached": None if math.isnan(c) else round(c, 4)}
         for h, n, a, c in zip(heads, result.drafts_offered, result.acceptance_per_head,
                               result.conditional_acceptance_per_head)],
        hide_index=True, key="spec_table", placeholder="—")  # "—", not a grey "None", where no draft got there


def draw(ctx: Context) -> None:
    if ctx.n_heads < 2:
        kind = "an exact toy distribution" if ctx.is_toy else "a model"
        st.info(f"{ctx.source_label} is {kind} with a single head. Self-speculative decoding needs extra heads "
                "that draft the tokens after the next one (heads 2..k), which head 1 then verifies in one forward "
                "pass. Pick the shipped multi-head model (4 heads) in the sidebar.")
        return
    declare_state({"spec_heads": ctx.n_heads, "spec_repeats": 3})
    check_state({"spec_heads": ("Heads used (k)", in_range(2, ctx.n_heads, True),
                                f"an integer from 2 to {ctx.n_heads}"),
                 "spec_repeats": ("Timing repeats", REPEATS, "one of " + ", ".join(map(str, REPEATS)))})
    left, mid, right = st.columns([5, 3, 2], vertical_alignment="bottom")
    with left:
        st.slider("Heads used (k)", 2, ctx.n_heads, key="spec_heads",
                  help="Head 1 verifies; heads 2..k draft. At most k tokens per forward pass.")
    with mid:
        st.selectbox("Timing repeats", REPEATS, key="spec_repeats",
                     help="After one untimed warm-up each, both decoders run this many times, alternating; "
                          "the median run of each counts.")
    with right:
        st.button("Re-measure", on_click=on_measure_again, args=(ctx,))
    runs = st.session_state.setdefault(RUNS, {})
    key = run_key(ctx)
    if key not in runs:
        with st.spinner("Timing greedy and self-speculative decoding on the same prompt…"):
            runs[key] = ih.compare_speed(ctx.model, ctx.prompt_ids, ctx.steps, key[3], key[4])
    cmp = runs[key]
    result = cmp.result

    cols = st.columns(4)
    cols[0].metric("Tokens per forward", f"{result.tokens_per_forward:.2f}",
                   help=f"{len(result.tokens)} tokens in {result.forwards} model passes; greedy needs one per token.")
    cols[1].metric("Model passes", f"{result.forwards} vs {ctx.steps}",
                   help=f"Self-speculative vs greedy; plus {result.draft_passes} cheap head-only draft passes.")
    cols[2].metric("Wall-clock speed-up", f"{cmp.speedup:.2f}×",
                   help="Greedy time / self-speculative time, median of the repeats, measured in this request.")
    cols[3].metric("Output equals greedy", "✅ yes" if cmp.same_output else "❌ no",
                   help="Token for token, the same output as plain greedy decoding with head 1.")
    st.caption(f"Greedy {cmp.greedy_seconds * 1000:.0f} ms · self-speculative {cmp.speculative_seconds * 1000:.0f} ms "
               f"for {ctx.steps} tokens (median of {cmp.repeats} after a warm-up, same prompt, same request). "
               "Tokens per forward is a property of the model and prompt; the wall-clock speed-up depends on the "
               "hardware and its load (this machine is shared, so timings are noisy). A verification pass feeds k "
               "tokens and costs more than a one-token step, so the wall-clock speed-up is normally below tokens per "
               "forward, most of all on a CPU.")
    if not cmp.same_output:
        st.warning("The outputs differ: self-speculative decoding should reproduce greedy decoding exactly "
                   "(up to floating-point near-ties).")
    draw_passes(ctx, result)
    draw_stats(ctx, result)


ctx = setup_page("Speculative decoding", "⚡")
if ctx is not None:
    try:
        draw(ctx)
    except ImportError:
        st.error("Self-speculative decoding (core/speculative.py) is not available in this checkout.")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a traceback
        show_error(exc)
