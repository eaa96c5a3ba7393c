"""Speculative: self-speculative decoding with the extra heads (heads 2..k draft, head 1 verifies), in two
modes. Greedy: the output equals plain greedy decoding. Sampling: drafts are drawn from each head's warped
distribution and verified by rejection sampling, so the output is distributed exactly as ancestral
sampling with the same sampler. Both show drafts per forward pass, tokens per forward, acceptance per head
and the measured wall-clock speed-up."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from core.decoders import Sampling
from core.speculative_sample import compare_sampling_speed
from pages import inspect_helpers as ih
from pages.common import Context, check_state, declare_state, in_range, setup_page, show_error

RUNS = "spec_runs"  # {(source, prompt ids, steps, heads, repeats): SpeedComparison}
SAMPLING_RUNS = "spec_sampling_runs"  # {(source, prompt ids, steps, seed, heads, repeats, τ, top-p): SamplingSpeed}
REPEATS = (1, 2, 3)
MODES = ("greedy", "sampling")


def run_key(ctx: Context) -> tuple:
    return ctx.source, ctx.prompt_ids, ctx.steps, int(st.session_state["spec_heads"]), \
        int(st.session_state["spec_repeats"])


def sampling_key(ctx: Context) -> tuple:
    return (*run_key(ctx), ctx.seed, float(st.session_state["spec_temperature"]),
            float(st.session_state["spec_top_p"]))


def on_measure_again(ctx: Context) -> None:
    st.session_state.get(RUNS, {}).pop(run_key(ctx), None)
    st.session_state.get(SAMPLING_RUNS, {}).pop(sampling_key(ctx), None)


def pass_roles(trace, rejected: bool = True) -> list[tuple[int, str]]:
    kept = [(t, "accepted") for t in trace.drafted[: trace.accepted]]
    bonus = [] if trace.bonus is None else [(trace.bonus, "bonus")]
    dropped = [(t, "rejected") for t in trace.drafted[trace.accepted:]] if rejected else []
    return [*kept, *bonus, *dropped]


def draw_passes(ctx: Context, result) -> None:
    traces = result.traces
    st.markdown(ih.passes_html(ctx.model, [pass_roles(tr, rejected=False) for tr in traces],
                               [f"pass {i}: {len(tr.committed)} token(s)" for i, tr in enumerate(traces)]),
                unsafe_allow_html=True)
    st.markdown(ih.roles_legend_html(), unsafe_allow_html=True)
    with st.expander(f"Every forward pass ({len(traces)}), with the rejected drafts"):
        titles = ["prompt pass" if not tr.fed else f"pass {i}: {tr.accepted}/{len(tr.drafted)} drafts kept"
                  + (", then a token from norm(max(0, p − q))" if getattr(tr, "resampled", False) else "")
                  for i, tr in enumerate(traces)]
        lines = [ih.passes_html(ctx.model, [pass_roles(tr)], [title]) for tr, title in zip(traces, titles)]
        st.markdown("".join(f"<div><b>{t}</b>{line}</div>" for t, line in zip(titles, lines)), unsafe_allow_html=True)


def committed_histogram(result) -> go.Figure:
    fig = go.Figure(go.Histogram(x=[len(tr.committed) for tr in result.traces[1:]], marker_color=ih.HEAD_COLOUR,
                                 xbins=dict(start=0.5, end=result.heads + 0.5, size=1)))
    fig.update_layout(title=dict(text="Tokens committed per verification pass", font=dict(size=13)), height=300,
                      margin=dict(l=10, r=10, t=40, b=30), xaxis=dict(title="tokens", dtick=1),
                      yaxis=dict(title="passes"), bargap=0.1)
    return fig


def acceptance_figure(heads: list[str], bars: dict[str, tuple[tuple[float, ...], str]]) -> go.Figure:
    fig = go.Figure([go.Bar(x=heads, y=list(values), name=name, marker_color=colour)
                     for name, (values, colour) in bars.items()])
    fig.update_layout(title=dict(text="Acceptance per drafting head", font=dict(size=13)), height=300,
                      margin=dict(l=10, r=10, t=40, b=30), yaxis=dict(title="share", range=[0, 1]),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def draw_stats(ctx: Context, result) -> None:
    left, right = st.columns(2)
    left.plotly_chart(committed_histogram(result), key="spec_hist")
    heads = [f"head {j}" for j in range(2, result.heads + 1)]
    right.plotly_chart(acceptance_figure(heads, {
        "kept / verified": (result.acceptance_per_head, ih.HIT_COLOUR),
        "kept / reached (earlier drafts kept)": (result.conditional_acceptance_per_head, "#94d82d")}),
        key="spec_accept")
    st.dataframe(
        [{"head": h, "drafts verified": n, "kept / verified": _rounded(a), "kept / reached": _rounded(c)}
         for h, n, a, c in zip(heads, result.drafts_offered, result.acceptance_per_head,
                               result.conditional_acceptance_per_head)],
        hide_index=True, key="spec_table", placeholder="—")  # "—", not a grey "None", where no draft got there


def draw_greedy(ctx: Context) -> None:
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


def draw_sampling(ctx: Context) -> None:
    left, right = st.columns(2)
    left.slider("Temperature τ", 0.1, 2.0, step=0.05, key="spec_temperature",
                help="Applied to head 1 (the model) and to every drafting head alike.")
    right.slider("top-p", 0.05, 1.0, step=0.05, key="spec_top_p",
                 help="Nucleus cut, applied after the temperature to head 1 and to the drafting heads; 1 = off.")
    sampler = Sampling(float(st.session_state["spec_temperature"]), top_p=float(st.session_state["spec_top_p"]))
    runs = st.session_state.setdefault(SAMPLING_RUNS, {})
    key = sampling_key(ctx)
    if key not in runs:
        with st.spinner("Timing ancestral and speculative sampling on the same prompt…"):
            runs[key] = compare_sampling_speed(ctx.model, list(ctx.prompt_ids), ctx.steps, ctx.seed, sampler,
                                               key[3], key[4])
    cmp = runs[key]
    result = cmp.result
    cols = st.columns(4)
    cols[0].metric("Tokens per forward", f"{result.tokens_per_forward:.2f}",
                   help=f"{len(result.tokens)} tokens in {result.forwards} model passes; ancestral sampling needs one "
                        "per token.")
    cols[1].metric("Model passes", f"{result.forwards} vs {len(result.tokens)}",
                   help=f"Speculative vs ancestral sampling for these {len(result.tokens)} tokens; plus "
                        f"{result.draft_passes} cheap head-only draft passes.")
    cols[2].metric("Wall-clock speed-up", f"{cmp.speedup:.2f}×",
                   help="Ancestral time per token / speculative time per token, medians of the repeats, measured in "
                        "this request.")
    cols[3].metric("Output distribution", "= ancestral",
                   help="Exactly the distribution of ancestral sampling with the same sampler (rejection sampling); "
                        "this is one draw of it, not the same draw as ancestral sampling with this seed.")
    st.caption(f"{sampler.label}, seed {ctx.seed}. Each pass feeds head 1's next token and the drafts of heads "
               "2..k, drawn from their own warped distributions q; head 1 keeps a draft with probability "
               "min(1, p/q) and, at the first rejection, draws a replacement from norm(max(0, p − q)); if every "
               "draft is kept it draws a bonus token. So the output is distributed exactly as ancestral sampling. "
               f"Ancestral {cmp.ancestral_seconds * 1000:.0f} ms for {cmp.ancestral_tokens} tokens · speculative "
               f"{cmp.speculative_seconds * 1000:.0f} ms for {len(result.tokens)} tokens (median of {cmp.repeats} "
               "after a warm-up, same request; per-token times compared, since both stop at EOS). A reached draft of "
               "head k is kept with probability 1 − TV(q_k, p): the expected rate shown per head.")
    draw_passes(ctx, result)
    left, right = st.columns(2)
    left.plotly_chart(committed_histogram(result), key="spec_hist")
    heads = [f"head {j}" for j in range(2, result.heads + 1)]
    right.plotly_chart(acceptance_figure(heads, {
        "kept / reached": (result.conditional_acceptance_per_head, ih.HIT_COLOUR),
        "expected: mean 1 − TV(q, p)": (result.expected_acceptance_per_head, "#94d82d")}), key="spec_accept")
    st.dataframe(
        [{"head": h, "drafts reached": n, "kept / reached": _rounded(c), "expected 1 − TV": _rounded(e),
          "kept / offered": _rounded(a)}
         for h, n, c, e, a in zip(heads, result.drafts_reached, result.conditional_acceptance_per_head,
                                  result.expected_acceptance_per_head, result.acceptance_per_head)],
        hide_index=True, key="spec_table", placeholder="—")


def _rounded(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def draw(ctx: Context) -> None:
    if ctx.n_heads < 2:
        kind = "an exact toy distribution" if ctx.is_toy else "a model"
        st.info(f"{ctx.source_label} is {kind} with a single head. Self-speculative decoding needs extra heads "
                "that draft the tokens after the next one (heads 2..k), which head 1 then verifies in one forward "
                "pass. Pick the shipped multi-head model (4 heads) in the sidebar.")
        return
    declare_state({"spec_mode": "greedy", "spec_heads": ctx.n_heads, "spec_repeats": 3, "spec_temperature": 1.0,
                   "spec_top_p": 1.0})
    check_state({"spec_mode": ("Mode", MODES, "greedy or sampling"),
                 "spec_heads": ("Heads used (k)", in_range(2, ctx.n_heads, True),
                                f"an integer from 2 to {ctx.n_heads}"),
                 "spec_repeats": ("Timing repeats", REPEATS, "one of " + ", ".join(map(str, REPEATS))),
                 "spec_temperature": ("Temperature τ", in_range(0.1, 2.0), "a number from 0.1 to 2"),
                 "spec_top_p": ("top-p", in_range(0.05, 1.0), "a number from 0.05 to 1")})
    st.radio("Mode", MODES, key="spec_mode", horizontal=True,
             help="Greedy: the output equals greedy decoding. Sampling: the output is a draw from the sampler, "
                  "distributed exactly as ancestral sampling (rejection sampling against head 1).")
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
    if st.session_state["spec_mode"] == "sampling":
        draw_sampling(ctx)
    else:
        draw_greedy(ctx)


ctx = setup_page("Speculative decoding", "⚡")
if ctx is not None:
    try:
        draw(ctx)
    except ImportError:
        st.error("Self-speculative decoding (core/speculative.py) is not available in this checkout.")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a traceback
        show_error(exc)
