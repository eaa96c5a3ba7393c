"""Speculative: greedy speculative decoding on every model — drafts verified by the model in one forward pass,
output equal to greedy. Drafts come from prompt lookup on any model (n-gram matches in the prompt and the
text so far, as transformers' ``prompt_lookup_num_tokens``) and, on the shipped multi-head model, from its
extra heads too, side by side. Sampling mode (heads only): drafts drawn from each head and verified by
rejection sampling, so the output is distributed exactly as ancestral sampling. Each shows tokens per
forward, acceptance per draft position and the measured wall-clock speed-up; the timing runs are predicted
from the source's measured cost model and capped to the page's budget in seconds."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from core.cost import budget_seconds, fit
from core.decoders import Greedy, Sampling
from core.prompt_lookup import prompt_lookup_decode, server_verification
from core.speculative import predict_seconds, self_speculative, time_against_greedy
from core.speculative_sample import compare_sampling_speed
from pages import inspect_helpers as ih
from pages.common import Context, check_state, declare_state, in_range, server_progress, setup_page, show_error

RUNS = "spec_runs"  # {run key: GreedySpeed | SamplingSpeed | (LookupResult, greedy tokens) on a server}
FULL = "spec_full"  # run keys the user asked to run uncapped ("Run the full computation")
REPEATS = (1, 2, 3)
MODES = ("greedy", "sampling")
MAX_LOOKUP_TOKENS = 10
MAX_NGRAM = 4


# ---- settings, prediction and caps ---------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner="Measuring what this model's forward passes cost…")
def cost_model(_model, source: str, _prompt: tuple[int, ...]):
    """``core.cost.measure`` of the source, once per source (timed on the first prompt seen)."""
    from core.cost import measure

    return measure(_model, _prompt)


def lookup_settings() -> tuple[int, int]:
    return int(st.session_state["spec_lookup_tokens"]), int(st.session_state["spec_lookup_ngram"])


def drafter_label(name: str) -> str:
    if name == "heads":
        return f"Heads 2..{int(st.session_state['spec_heads'])}"
    n, m = lookup_settings()
    return f"Prompt lookup (N = {n}, n-gram ≤ {m})"


def drafters(ctx: Context, mode: str) -> list[tuple[str, int, bool]]:
    """(name, most drafts per pass, drafting runs the model) of each speculative decoder the page times."""
    heads = [("heads", int(st.session_state["spec_heads"]) - 1, True)] if ctx.n_heads >= 2 else []
    return heads if mode == "sampling" else [*heads, ("lookup", lookup_settings()[0], False)]


def run_key(ctx: Context, mode: str, steps: int, repeats: int) -> tuple:
    extra = (ctx.seed, float(st.session_state["spec_temperature"]), float(st.session_state["spec_top_p"])) \
        if mode == "sampling" else ()
    return (mode, ctx.source, ctx.prompt_ids, steps, repeats, *[d[:2] for d in drafters(ctx, mode)], *extra)


def plan(ctx: Context, mode: str, on_server: bool) -> tuple[int, int, list, float, float]:
    """(steps, repeats, caps, predicted seconds, predicted seconds of the full computation): the requested
    setting when it fits ``budget_seconds()`` or the user asked for it in full, else fewer timing repeats,
    then fewer steps."""
    cost = cost_model(ctx.model, ctx.source, ctx.prompt_ids)
    shape = [(n, head) for _, n, head in drafters(ctx, mode)]
    repeats = 1 if on_server else int(st.session_state["spec_repeats"])

    def predict(steps: int, reps: int) -> float:
        return predict_seconds(cost, len(ctx.prompt_ids), steps, reps, shape)

    full_s = predict(ctx.steps, repeats)
    if run_key(ctx, mode, ctx.steps, repeats) in st.session_state.get(FULL, set()):
        return ctx.steps, repeats, [], full_s, full_s
    budget, caps, steps = budget_seconds(), [], ctx.steps
    if not on_server and (cap := fit(lambda r: predict(steps, r), repeats, 1, budget, "Timing repeats")):
        caps.append(cap)
        repeats = cap.allowed
    if cap := fit(lambda s: predict(s, repeats), steps, 1, budget, "Steps (new tokens) on this page"):
        caps.append(cap)
        steps = cap.allowed
    return steps, repeats, caps, predict(steps, repeats), full_s


def ask_full(key: tuple) -> None:
    st.session_state.setdefault(FULL, set()).add(key)


def show_caps(ctx: Context, mode: str, caps: list, predicted: float, full_s: float) -> None:
    """Say what was capped and why, with the button that runs the full computation (its predicted time on it)."""
    if not caps:
        return
    what = " and ".join(f"{c.name} capped at {c.allowed} (you asked for {c.requested})" for c in caps)
    st.warning(f"{what}: the full computation is predicted to take {_seconds(full_s)} on this machine, over the "
               f"{_seconds(caps[0].budget_s)} budget per click (the capped one about {_seconds(predicted)}). The "
               "prediction assumes no draft is kept (one verification pass per token), so it errs on the long side.")
    repeats = 1 if ctx.source.startswith("server:") else int(st.session_state["spec_repeats"])
    st.button(f"Run the full computation (predicted {_seconds(full_s)})", key="spec_run_full", on_click=ask_full,
              args=(run_key(ctx, mode, ctx.steps, repeats),))


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def on_measure_again() -> None:
    st.session_state[RUNS] = {}


# ---- drawing ------------------------------------------------------------------------------------


def pass_roles(trace, rejected: bool = True) -> list[tuple[int, str]]:
    kept = [(t, "accepted") for t in trace.drafted[: trace.accepted]]
    bonus = [] if trace.bonus is None else [(trace.bonus, "bonus")]
    dropped = [(t, "rejected") for t in trace.drafted[trace.accepted:]] if rejected else []
    return [*kept, *bonus, *dropped]


def draw_passes(ctx: Context, result, slug: str = "") -> None:
    traces = result.traces
    st.markdown(ih.passes_html(ctx.model, [pass_roles(tr, rejected=False) for tr in traces],
                               [f"pass {i}: {len(tr.committed)} token(s)" for i, tr in enumerate(traces)]),
                unsafe_allow_html=True)
    st.markdown(ih.roles_legend_html(), unsafe_allow_html=True)
    with st.expander(f"Every forward pass ({len(traces)}), with the rejected drafts"):
        titles = [("prompt pass" if not tr.fed or i == 0 else f"pass {i}")
                  + (f": {tr.accepted}/{len(tr.drafted)} drafts kept" if tr.drafted or i else "")
                  + (", then a token from norm(max(0, p − q))" if getattr(tr, "resampled", False) else "")
                  for i, tr in enumerate(traces)]
        lines = [ih.passes_html(ctx.model, [pass_roles(tr)], [title]) for tr, title in zip(traces, titles)]
        st.markdown("".join(f"<div><b>{t}</b>{line}</div>" for t, line in zip(titles, lines)), unsafe_allow_html=True)


def committed_histogram(result) -> go.Figure:
    verifying = [tr for tr in result.traces if tr.fed]
    fig = go.Figure(go.Histogram(x=[len(tr.committed) for tr in verifying], marker_color=ih.HEAD_COLOUR,
                                 xbins=dict(start=0.5, end=result.positions + 1.5, size=1)))
    fig.update_layout(title=dict(text="Tokens committed per verification pass", font=dict(size=13)), height=300,
                      margin=dict(l=10, r=10, t=40, b=30), xaxis=dict(title="tokens", dtick=1),
                      yaxis=dict(title="passes"), bargap=0.1)
    return fig


def acceptance_figure(labels: list[str], bars: dict[str, tuple[tuple[float, ...], str]], title: str) -> go.Figure:
    fig = go.Figure([go.Bar(x=labels, y=list(values), name=name, marker_color=colour)
                     for name, (values, colour) in bars.items()])
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=300,
                      margin=dict(l=10, r=10, t=40, b=30), yaxis=dict(title="share", range=[0, 1]),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def position_labels(name: str, result) -> list[str]:
    if name == "heads":
        return [f"head {j}" for j in range(2, result.positions + 2)]
    return [f"draft {i}" for i in range(1, result.positions + 1)]


def draw_stats(name: str, result) -> None:
    labels = position_labels(name, result)
    left, right = st.columns(2)
    left.plotly_chart(committed_histogram(result), key=f"spec_hist_{name}")
    right.plotly_chart(acceptance_figure(labels, {
        "kept / verified": (result.acceptance_per_position, ih.HIT_COLOUR),
        "kept / reached (earlier drafts kept)": (result.conditional_acceptance_per_position, "#94d82d")},
        "Acceptance per drafting head" if name == "heads" else "Acceptance per draft position"),
        key=f"spec_accept_{name}")
    column = "head" if name == "heads" else "draft position"
    st.dataframe(
        [{column: h, "drafts verified": n, "kept / verified": _rounded(a), "kept / reached": _rounded(c)}
         for h, n, a, c in zip(labels, result.drafts_offered, result.acceptance_per_position,
                               result.conditional_acceptance_per_position)],
        hide_index=True, key=f"spec_table_{name}", placeholder="—")  # "—", not a grey "None", where none got there


def summary_row(name: str, result, speedup: float | None, same: bool) -> dict:
    return {"drafts from": drafter_label(name), "tokens / forward": round(result.tokens_per_forward, 2),
            "model passes": result.forwards,
            "draft passes": getattr(result, "draft_passes", None),  # prompt lookup runs no model to draft
            "passes with drafts": f"{result.passes_with_drafts} of {len(result.traces)}",
            "drafts kept": _rounded(result.acceptance, 2),
            "speed-up": None if speedup is None else f"{speedup:.2f}×",
            "= greedy": "✅" if same else "❌"}


def draw_metrics(result, speedup: float, same: bool, passes_help: str) -> None:
    """Four metrics in a 2 x 2 grid (the drafters stand side by side)."""
    top, bottom = st.columns(2), st.columns(2)
    top[0].metric("Tokens per forward", f"{result.tokens_per_forward:.2f}",
                  help=f"{len(result.tokens)} tokens in {result.forwards} model passes; greedy needs one per token.")
    top[1].metric("Model passes", f"{result.forwards} vs {len(result.tokens)}", help=passes_help)
    bottom[0].metric("Wall-clock speed-up", f"{speedup:.2f}×",
                     help="Greedy time / this decoder's time, median of the repeats, measured in this request.")
    bottom[1].metric("Output equals greedy", "✅ yes" if same else "❌ no",
                     help="Token for token, the same output as plain greedy decoding.")


def draw_greedy(ctx: Context) -> None:
    on_server = ctx.source.startswith("server:")
    if on_server:
        draw_server(ctx)
        return
    steps, repeats, caps, predicted, full_s = plan(ctx, "greedy", False)
    show_caps(ctx, "greedy", caps, predicted, full_s)
    runs = st.session_state.setdefault(RUNS, {})
    key = run_key(ctx, "greedy", steps, repeats)
    if key not in runs:
        k = int(st.session_state["spec_heads"])
        n, m = lookup_settings()
        prompt = list(ctx.prompt_ids)
        decoders = {"lookup": lambda: prompt_lookup_decode(ctx.model, prompt, steps, n, m)}
        if ctx.n_heads >= 2:
            decoders = {"heads": lambda: self_speculative(ctx.model, prompt, steps, heads=k), **decoders}
        with st.spinner(f"Timing greedy and speculative decoding on the same prompt (predicted {predicted:.1f} s)…"):
            runs[key] = time_against_greedy(ctx.model, prompt, steps, decoders, repeats)
    speed = runs[key]
    names = [name for name, _ in speed.results]
    st.dataframe([summary_row(name, speed.result(name), speed.speedup(name), speed.same_output(name))
                  for name in names], hide_index=True, key="spec_summary", placeholder="—")
    st.caption(f"Greedy {speed.greedy_seconds * 1000:.0f} ms for {len(speed.greedy_tokens)} tokens; "
               + "; ".join(f"{drafter_label(n).split(' (')[0].lower()} {s * 1000:.0f} ms" for n, s in speed.seconds)
               + f" (median of {speed.repeats} after a warm-up, same prompt, same request). Tokens per forward is a "
               "property of the model, the prompt and the drafts; the wall-clock speed-up depends on the hardware "
               "and its load (this machine is shared, so timings are noisy). A verification pass feeds 1 + the drafts "
               "and costs more than a one-token step, so the wall-clock speed-up is normally below tokens per forward, "
               "most of all on a CPU. Prompt lookup copies the tokens that followed the last n-gram's earlier "
               "occurrence in the prompt or the output: it shines where text repeats itself (code reusing its names).")
    for name in names:
        if not speed.same_output(name):
            st.warning(f"{drafter_label(name)}: the output differs from greedy decoding's, which speculative "
                       "decoding reproduces exactly (near-ties are decided on greedy's own path).")
    columns = st.columns(len(names))
    for col, name in zip(columns, names):
        with col:
            result = speed.result(name)
            st.markdown(f"**{drafter_label(name)}**")
            help_ = (f"Model passes vs greedy's for these tokens; plus {result.draft_passes} cheap head-only draft "
                     "passes." if name == "heads" else
                     "Model passes vs greedy's for these tokens; the lookup itself runs no model.")
            draw_metrics(result, speed.speedup(name), speed.same_output(name), help_)
    tabs = st.tabs([drafter_label(name) for name in names]) if len(names) > 1 else [st.container()]
    for tab, name in zip(tabs, names):
        with tab:
            draw_passes(ctx, speed.result(name), name)
            draw_stats(name, speed.result(name))


def draw_server(ctx: Context) -> None:
    """A served model: prompt lookup verified one request per draft block where the server allows it; counted
    in requests (the app caches every row a server returns, so a second, timed run would read that cache)."""
    why_not = server_verification(ctx.model)
    if why_not:
        st.info(f"Speculative decoding is not available for {ctx.source_label}: {why_not}. Prompt lookup needs the "
                "rows after every drafted token from one request, or it saves nothing.")
        return
    steps, _, caps, predicted, full_s = plan(ctx, "greedy", True)
    show_caps(ctx, "greedy", caps, predicted, full_s)
    runs = st.session_state.setdefault(RUNS, {})
    key = run_key(ctx, "greedy", steps, 1)
    if key not in runs:
        n, m = lookup_settings()
        with st.spinner(f"Prompt lookup and greedy decoding on the server (predicted {predicted:.1f} s)…"), \
                server_progress(ctx, "Verifying drafts"):
            result = prompt_lookup_decode(ctx.model, list(ctx.prompt_ids), steps, n, m)
            runs[key] = (result, tuple(Greedy().decode(ctx.model, list(ctx.prompt_ids), steps).tokens))
    result, greedy = runs[key]
    same = tuple(result.tokens) == greedy
    st.dataframe([summary_row("lookup", result, None, same)], hide_index=True, key="spec_summary", placeholder="—")
    cols = st.columns(3)
    cols[0].metric("Tokens per request", f"{result.tokens_per_forward:.2f}",
                   help=f"{len(result.tokens)} tokens in {result.forwards} verification requests.")
    cols[1].metric("Requests", f"{result.forwards} vs {len(greedy)}",
                   help="One request per draft block (the server returns the rows after every fed token at once) "
                        "vs greedy's one per token, counted on an empty row cache.")
    cols[2].metric("Output equals greedy", "✅ yes" if same else "❌ no")
    st.caption("On a server the saving is in requests: each verification sends the prompt, the output so far and "
               "the drafts once and reads back the next-token rows after every position (prompt log-probs, or several "
               "prompts in one request). No wall-clock speed-up is shown: the app caches every row a server returns, "
               "so a second run would be timed against that cache. Serving engines run the same idea next to the "
               "weights (vLLM's n-gram speculative decoding, llama.cpp's lookup decoding).")
    draw_passes(ctx, result, "lookup")
    draw_stats("lookup", result)


def draw_sampling(ctx: Context) -> None:
    left, right = st.columns(2)
    left.slider("Temperature τ", 0.1, 2.0, step=0.05, key="spec_temperature",
                help="Applied to head 1 (the model) and to every drafting head alike.")
    right.slider("top-p", 0.05, 1.0, step=0.05, key="spec_top_p",
                 help="Nucleus cut, applied after the temperature to head 1 and to the drafting heads; 1 = off.")
    sampler = Sampling(float(st.session_state["spec_temperature"]), top_p=float(st.session_state["spec_top_p"]))
    steps, repeats, caps, predicted, full_s = plan(ctx, "sampling", False)
    show_caps(ctx, "sampling", caps, predicted, full_s)
    runs = st.session_state.setdefault(RUNS, {})
    key = run_key(ctx, "sampling", steps, repeats)
    if key not in runs:
        with st.spinner(f"Timing ancestral and speculative sampling on the same prompt (predicted {predicted:.1f} s)…"):
            runs[key] = compare_sampling_speed(ctx.model, list(ctx.prompt_ids), steps, ctx.seed, sampler,
                                               int(st.session_state["spec_heads"]), repeats)
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
    heads = position_labels("heads", result)
    right.plotly_chart(acceptance_figure(heads, {
        "kept / reached": (result.conditional_acceptance_per_head, ih.HIT_COLOUR),
        "expected: mean 1 − TV(q, p)": (result.expected_acceptance_per_head, "#94d82d")},
        "Acceptance per drafting head"), key="spec_accept")
    st.dataframe(
        [{"head": h, "drafts reached": n, "kept / reached": _rounded(c), "expected 1 − TV": _rounded(e),
          "kept / offered": _rounded(a)}
         for h, n, c, e, a in zip(heads, result.drafts_reached, result.conditional_acceptance_per_head,
                                  result.expected_acceptance_per_head, result.acceptance_per_head)],
        hide_index=True, key="spec_table", placeholder="—")


def _rounded(x: float, digits: int = 4) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def draw_settings(ctx: Context) -> str:
    """The widgets; returns the mode ("greedy" on single-head models)."""
    multi = ctx.n_heads >= 2
    mode = "greedy"
    if multi:
        st.radio("Mode", MODES, key="spec_mode", horizontal=True,
                 help="Greedy: the output equals greedy decoding; drafts from the heads and from prompt lookup, side "
                      "by side. Sampling: drafts from the heads, the output a draw from the sampler, distributed "
                      "exactly as ancestral sampling (rejection sampling against head 1).")
        mode = st.session_state["spec_mode"]
    timed = not ctx.source.startswith("server:")  # a server's rows are cached: counted in requests, not timed
    widths = ([3] if multi else []) + ([3, 3] if mode == "greedy" else []) + ([2, 2] if timed else [])
    cols = iter(st.columns(widths, vertical_alignment="bottom"))
    if multi:
        next(cols).slider("Heads used (k)", 2, ctx.n_heads, key="spec_heads",
                          help="Head 1 verifies; heads 2..k draft. At most k tokens per forward pass.")
    if mode == "greedy":
        next(cols).slider("Lookup drafts (N)", 1, MAX_LOOKUP_TOKENS, key="spec_lookup_tokens",
                          help="Prompt lookup: at most this many tokens copied per pass (transformers' "
                               "prompt_lookup_num_tokens; its usual value is 10).")
        next(cols).slider("Longest n-gram matched (M)", 1, MAX_NGRAM, key="spec_lookup_ngram",
                          help="Prompt lookup matches the last M tokens, then M−1, … down to 1, and copies what "
                               "followed their first earlier occurrence (max_matching_ngram_size; default 2).")
    if timed:
        next(cols).selectbox("Timing repeats", REPEATS, key="spec_repeats",
                             help="After one untimed warm-up each, every decoder runs this many times, alternating; "
                                  "the median run of each counts.")
        next(cols).button("Re-measure", on_click=on_measure_again)
    return mode


def draw(ctx: Context) -> None:
    if ctx.is_toy:
        st.info(f"{ctx.source_label} is an exact toy distribution: its probabilities are a table, with no forward "
                "pass to save. Speculative decoding saves a neural model's forward passes — pick the shipped "
                "multi-head model (4 heads: drafts from its heads and from prompt lookup) or SmolLM2 (one head: "
                "prompt lookup) in the sidebar.")
        return
    declare_state({"spec_mode": "greedy", "spec_heads": max(2, ctx.n_heads), "spec_repeats": 3,
                   "spec_temperature": 1.0, "spec_top_p": 1.0, "spec_lookup_tokens": MAX_LOOKUP_TOKENS,
                   "spec_lookup_ngram": 2})
    rules = {"spec_mode": ("Mode", MODES, "greedy or sampling"),
             "spec_repeats": ("Timing repeats", REPEATS, "one of " + ", ".join(map(str, REPEATS))),
             "spec_temperature": ("Temperature τ", in_range(0.1, 2.0), "a number from 0.1 to 2"),
             "spec_top_p": ("top-p", in_range(0.05, 1.0), "a number from 0.05 to 1"),
             "spec_lookup_tokens": ("Lookup drafts (N)", in_range(1, MAX_LOOKUP_TOKENS, True),
                                    f"an integer from 1 to {MAX_LOOKUP_TOKENS}"),
             "spec_lookup_ngram": ("Longest n-gram matched (M)", in_range(1, MAX_NGRAM, True),
                                   f"an integer from 1 to {MAX_NGRAM}")}
    if ctx.n_heads >= 2:
        rules["spec_heads"] = ("Heads used (k)", in_range(2, ctx.n_heads, True), f"an integer from 2 to {ctx.n_heads}")
    check_state(rules)
    if ctx.n_heads < 2:
        st.caption(f"{ctx.source_label} has a single head, so the drafts come from prompt lookup: the tokens that "
                   "followed an earlier occurrence of the last few tokens, in the prompt or the output so far. The "
                   "shipped multi-head model also drafts with its extra heads.")
    mode = draw_settings(ctx)
    if mode == "sampling":
        draw_sampling(ctx)
    else:
        draw_greedy(ctx)


ctx = setup_page("Speculative decoding", "⚡")
if ctx is not None:
    try:
        draw(ctx)
    except ImportError:
        st.error("Speculative decoding (core/speculative.py) is not available in this checkout.")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a traceback
        show_error(exc)
