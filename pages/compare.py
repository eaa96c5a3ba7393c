"""Compare (home): every decoder side by side, each scored by its expected loss under the goal.

Progressive: the prompt and the deterministic decoders' outputs show first (greedy before the rest), then the
Monte Carlo risks fill in wave by wave (16, 32, 64, ... truth rows), the intervals narrowing. Every click is
predicted in seconds from the model's measured cost; what would take longer than the budget is capped, said,
and offered in full. A Stop button keeps the rows computed so far ("partial, n = k of N"), and Continue
resumes. Partial waves live in a process-wide store keyed by the request without its n, so nothing computed
is lost when a widget interrupts a run."""

from __future__ import annotations

import streamlit as st

from pages.common import setup_page

ctx = setup_page("Compare decoders", "⚖️")  # the page shell first: the heavy imports below run after it
if ctx is None:
    st.stop()

import math  # noqa: E402
from collections import OrderedDict  # noqa: E402

import pandas as pd  # noqa: E402

from core.compare import (  # noqa: E402
    EXTRA_ARGS,
    FIRST_WAVE,
    FIXED_KEYS,
    MAX_NEURAL_LOOKAHEAD,
    MBR_CANDIDATES_RANGE,
    MBR_CITATIONS,
    N_SAMPLES_RANGE,
    DecoderSettings,
    check_request,
    decode_one,
    draw_waves,
    is_exact_model,
    plan,
    score,
)
from core.estimators import SMALL_DRAWS, SMALL_N  # noqa: E402
from core.warpers import CHAIN  # noqa: E402
from pages.charts import CHART_CONFIG, display_number, risk_bars, risk_text  # noqa: E402
from pages.common import (  # noqa: E402
    budget_seconds,
    declare_state,
    full_requested,
    load_source,
    probability_legend_html,
    sequence_label,
    server_progress,
    show_caps,
    show_error,
    source_info,
    token_html,
    truncation_note,
)

SETTINGS_DEFAULTS = {"cmp_depth": 2, "cmp_tau": 0.7, "cmp_top_k": 5, "cmp_top_p": 0.9, "cmp_beam": 4,
                     "cmp_shown": 3, "cmp_n_samples": 64, "cmp_mbr": 32, "cmp_extra": ""}
EXTRA_DEFAULTS = {f"cmp_x_{cls.arg()}": cls.example for cls in CHAIN}
WARPERS = {cls.arg(): cls for cls in CHAIN}
FIXED_ORDER = ("greedy", "beam", "lookahead")  # cheapest first: greedy shows within a second
STORED_REQUESTS = 8  # requests whose waves the process keeps
STOPPED = "cmp_stopped"  # requests (without n) the user stopped, in session state


@st.cache_data(max_entries=64, show_spinner=False)
def cached_fixed(source: str, prompt_ids: tuple[int, ...], steps: int, key: str, depth: int, width: int):
    """One deterministic decoder's output (no seed): greedy, lookahead (depth) or beam search (width)."""
    model = load_source(source)
    settings = DecoderSettings(lookahead_depth=depth, beam_width=width)
    return decode_one(model, prompt_ids, steps, settings, is_exact_model(model), key)


@st.cache_resource(show_spinner=False)
def draws_store() -> OrderedDict:
    """{request without n: the ``Drawn`` with the most waves computed so far}, shared by every session (the same
    request gives the same bytes, so any session's waves serve every other)."""
    return OrderedDict()


@st.cache_data(max_entries=64, show_spinner=False)
def cached_score(source: str, prompt_ids: tuple[int, ...], steps: int, seed: int, goal, settings: DecoderSettings,
                 n: int, _fixed, _drawn):
    """The goal's scores of the request for ``n`` truth rows (``_drawn`` holds exactly n)."""
    model = load_source(source)
    return score(model, prompt_ids, steps, seed, goal, settings, n, _fixed, _drawn, is_exact_model(model))


# ---- settings -----------------------------------------------------------------------------------


def _on_extra() -> None:
    st.session_state["cmp_extra"] = ",".join(st.session_state.get("cmp_extra_pick", []))


def _extra_title(arg: str) -> str:
    cls = WARPERS[arg]
    return cls.title + ("" if cls.in_transformers else " (not in transformers)")


def more_samplers() -> tuple[tuple[str, float], ...]:
    """The collapsed "More samplers" expander: any warper of ``core.warpers.CHAIN`` as an extra row, each with
    its parameter (a link carries them as cmp_extra=min_p,top_n_sigma and cmp_x_min_p=0.1)."""
    declare_state(EXTRA_DEFAULTS)
    chosen = [a for a in str(st.session_state["cmp_extra"]).split(",") if a in EXTRA_ARGS]
    st.session_state["cmp_extra_pick"] = chosen
    with st.expander("More samplers", expanded=False):
        st.multiselect("Add samplers (each is one more row: that warper alone, at temperature 1)", list(EXTRA_ARGS),
                       key="cmp_extra_pick", on_change=_on_extra, format_func=_extra_title,
                       help="The warpers in transformers' order; top-nσ is llama.cpp's (not in transformers).")
        cols = st.columns(3)
        for i, arg in enumerate(chosen):
            cls = WARPERS[arg]
            cols[i % 3].number_input(f"{_extra_title(arg)} ({arg})", key=f"cmp_x_{arg}",
                                     step=1 if cls.integer else None, format=None if cls.integer else "%g",
                                     help=f"{cls.help} Allowed: {cls.allowed()}.")
    return tuple((arg, st.session_state[f"cmp_x_{arg}"]) for arg in chosen)


def settings_ui(is_toy: bool) -> tuple[DecoderSettings, int]:
    declare_state(SETTINGS_DEFAULTS)
    with st.expander("Decoder settings", expanded=True):
        c = st.columns(4 if is_toy else 5)
        c[0].number_input("Lookahead depth T", step=1, key="cmp_depth",
                          help="Commit the first token of the most probable T-token window."
                               + ("" if is_toy else f" At most {MAX_NEURAL_LOOKAHEAD} on neural models."))
        lo, hi = MBR_CANDIDATES_RANGE
        c[0].number_input("MBR candidates", step=8, key="cmp_mbr",
                          help=f"ε-sampled candidates (ε = 0.02: tokens with p ≥ 0.02) MBR chooses from, besides the "
                               f"other decoders' outputs ({lo}–{hi}). {MBR_CITATIONS}.")
        c[1].number_input("Temperature τ", step=0.1, key="cmp_tau", format="%.2f", help="> 0; 1 leaves P unchanged.")
        c[2].number_input("top-k", step=1, key="cmp_top_k", help="Keep the k most likely tokens (≥ 1).")
        c[2].number_input("top-p", step=0.05, key="cmp_top_p", format="%.2f",
                          help="Keep the smallest set with mass ≥ p, p in (0, 1].")
        c[3].number_input("Beam width", step=1, key="cmp_beam")
        c[3].number_input("Samples shown", step=1, key="cmp_shown", help="Draws from P (τ = 1) shown as text.")
        if not is_toy:
            lo, hi = N_SAMPLES_RANGE
            c[4].number_input("Monte Carlo samples", step=64, key="cmp_n_samples",
                              help=f"Truth rows for the risk estimates ({lo}–{hi}). More rows narrow the "
                                   "confidence intervals (∝ 1/√n) and cost proportionally more time.")
    extra = more_samplers()
    s = st.session_state
    settings = DecoderSettings(int(s.cmp_depth), float(s.cmp_tau), int(s.cmp_top_k), float(s.cmp_top_p),
                               int(s.cmp_beam), int(s.cmp_shown), int(s.cmp_mbr), extra=extra)
    return settings, int(s.cmp_n_samples)


# ---- drawing ------------------------------------------------------------------------------------


def _interval(e, decimals: int = 3) -> str:
    """"0.123 ± 0.045" (or the exact value, or "∞")."""
    if not math.isfinite(e.mean):
        return "∞"
    shown = risk_text(e.mean) if 0 < 1 - e.mean < 1e-3 else f"{display_number(e.mean, decimals):.{decimals}f}"
    return shown if e.exact else f"{shown} ± {e.half_width:.2g}"


def row_caption(result, row) -> str:
    if row.key == "bayes":
        flag = "exact" if result.bayes_exact else "approximate"
        return f"Bayes output: {result.bayes_method} ({flag})."
    if row.key == "mbr":
        flag = "exact expected losses" if result.mbr_exact else "approximate: estimated expected losses"
        return (f"MBR: {result.mbr_method} ({flag}). The unconstrained optimum of the same expected losses is the "
                f"Bayes output (★). {MBR_CITATIONS}.")
    return row.note if row.note not in ("", "exact") else ""


def _card(title: str, html: str, caption: str = "") -> None:
    with st.container(border=True):
        st.markdown(title)
        st.markdown(html, unsafe_allow_html=True)
        if caption:
            st.caption(caption)


def draw_fixed_preview(fixed: dict) -> None:
    """The deterministic decoders' outputs as they finish, before any risk is known."""
    st.markdown(probability_legend_html(), unsafe_allow_html=True)
    cols = st.columns(2)
    for i, (key, path) in enumerate(fixed.items()):
        with cols[i % 2]:
            _card(f"**{key}** — risk: computing…", token_html(ctx.model, path.tokens, path.step_logprobs))


def draw_outputs(result) -> None:
    st.markdown(probability_legend_html(), unsafe_allow_html=True)
    rows = list(result.rows)
    for start in range(0, len(rows), 2):
        cols = st.columns(2)
        for col, row in zip(cols, rows[start : start + 2]):
            with col:
                regret = "" if row.key == "bayes" else f" · regret {_interval(row.regret)}"
                star = "★ " if row.key == "bayes" else ""
                _card(f"**{star}{row.label}** — risk {_interval(row.risk)}{regret} ({row.risk.describe_n()})",
                      token_html(ctx.model, row.output.tokens, row.output.step_logprobs, row.output.ranks),
                      row_caption(result, row))
    if result.samples:
        with st.container(border=True):
            st.markdown(f"**{len(result.samples)} samples from P** (ancestral sampling, τ = 1: the first truth rows)")
            for sample in result.samples:
                st.markdown(token_html(ctx.model, sample.tokens, sample.step_logprobs, sample.ranks),
                            unsafe_allow_html=True)


def how_text(result) -> str:
    if result.exact:
        return ("Exact: enumerated over every sequence of the toy and over each random decoder's own randomness "
                "(MBR samples its candidates and references; its pick is scored exactly).")
    n, a = result.n_samples, result.n_select
    draws = next((r.risk.n_draws for r in result.rows if r.risk.n_draws), 0)
    return (f"Estimated by Monte Carlo with the model as the truth P, from one rollout of {n} sampled continuations "
            f"(truth rows): a fixed output is scored against every truth row (Rao-Blackwellised; exact for 0-1: "
            f"1 − P(output)); each random decoder's {draws or 'own'} own draws against every truth row "
            "(two-sample interval); sampling from P by pairing truth rows with each other. The Bayes output and "
            f"MBR's pick are chosen on {a} of the truth rows (fold A: the first half of every wave) and scored on the "
            f"other {n - a}; each regret is the paired difference on those {n - a} held-out rows with its own "
            "interval, so it need not equal the difference of the risks shown, and it is negative where a decoder "
            "beats an approximate Bayes output. Intervals: 95% Student-t, clipped to the loss's range.")


def draw_scores(result, settings: DecoderSettings, final: bool) -> None:
    table = pd.DataFrame(result.table())
    if not ctx.is_text:
        table["output"] = [sequence_label(ctx.model, r.output.tokens) for r in result.rows]
    st.plotly_chart(risk_bars(table["decoder"], table["risk"], table["ci_low"], table["ci_high"],
                              [r.key == "bayes" for r in result.rows], ctx.goal_name),
                    width="stretch", config=CHART_CONFIG, key=f"cmp_chart_{result.n_samples}_{final}")
    st.caption(f"**Risk** = expected loss of the decoder's output under the goal *{ctx.goal_name}*, averaged over "
               "the truth P and the decoder's own randomness. **Regret** = risk − the Bayes output's risk "
               f"(0 = optimal). {how_text(result)} Outputs that end with EOS are scored padded with EOS after it.")
    if result.small_n:
        st.info(f"Few rows: the intervals of {', '.join(result.small_n)} rest on fewer than {SMALL_N} independent "
                f"truth rows (or {SMALL_DRAWS} draws), so they are wide and lean on the t approximation. Raise the "
                "Monte Carlo samples for useful intervals.")
    shown = table.drop(columns=["settings"])
    for col in ("regret", "regret_low", "regret_high"):
        shown[col] = shown[col].map(lambda x: display_number(x, 4))
    number = st.column_config.NumberColumn
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"risk": number(format="%.4f"), "ci_low": number("CI low", format="%.4f"),
                                "ci_high": number("CI high", format="%.4f"), "regret": number(format="%.4f"),
                                "regret_low": number("regret CI low", format="%.4f"),
                                "regret_high": number("regret CI high", format="%.4f"),
                                "log P(output)": number(format="%.3f")})
    if final:
        info = source_info(ctx)
        c1, c2 = st.columns(2)
        c1.download_button("Download table (CSV)", pd.DataFrame(result.table(info)).to_csv(index=False),
                           "compare.csv", "text/csv", key="cmp_csv")
        c2.download_button("Download results (JSON)", result.to_json(settings, ctx.prompt_ids, info),
                           "compare.json", "application/json", key="cmp_json")


def draw_result(result, settings: DecoderSettings, final: bool) -> None:
    if result.certificate is not None:
        (st.success if result.certificate.holds else st.caption)(result.certificate.text())
    note = truncation_note(ctx, {row.key: row.output.tokens for row in result.rows})
    if note:
        st.info(note)
    draw_outputs(result)
    draw_scores(result, settings, final)


# ---- computing ----------------------------------------------------------------------------------


def _stop(request) -> None:
    st.session_state.setdefault(STOPPED, set()).add(request)


def _continue(request) -> None:
    st.session_state.setdefault(STOPPED, set()).discard(request)


def compute_fixed(steps: int, settings: DecoderSettings, show) -> dict:
    fixed = {}
    for key in FIXED_ORDER:
        fixed[key] = cached_fixed(ctx.source, ctx.prompt_ids, steps, key, settings.lookahead_depth,
                                  settings.beam_width)
        show(fixed)
    return {key: fixed[key] for key in FIXED_KEYS}


def compute(steps: int, settings: DecoderSettings, n_requested: int, status, outputs) -> None:
    """Fixed decoders, then the waves of truth rows up to ``n_requested``, redrawing after each; Stop keeps what
    is done (then the result is the request for that many rows, marked partial), Continue resumes."""
    with outputs.container():
        st.caption("Decoding with greedy, beam search and lookahead…")
    fixed = compute_fixed(steps, settings, lambda f: _preview(outputs, f))
    request = (ctx.source, ctx.prompt_ids, steps, ctx.seed, settings, ctx.goal.pointwise)
    st.session_state["cmp_request"] = request  # what Stop and Continue refer to (the request without its n)
    store = draws_store()
    stored = store.get(request)
    done_n = 0 if stored is None else stored.n
    n_target = n_requested
    stopped = request in st.session_state.get(STOPPED, set())
    if stopped:
        if done_n < FIRST_WAVE and not ctx.is_toy:
            with status.container():
                st.info(f"Stopped before the first {FIRST_WAVE} truth rows were done.")
                st.button("Continue", key="cmp_continue", on_click=_continue, args=(request,))
            return
        n_target = min(n_target, done_n)
    work = n_target > done_n and not ctx.is_toy
    if work:
        with status.container():
            st.caption(f"Monte Carlo: drawing {n_target} truth rows of {steps} tokens in waves of 16, 32, 64, …; "
                       "the risks below fill in as rows accumulate.")
            st.button("Stop", key="cmp_stop", on_click=_stop, args=(request,),
                      help="Keep the rows computed so far (a partial result) and stop; Continue resumes.")
    model = ctx.model
    result = None
    for drawn in draw_waves(model, ctx.prompt_ids, steps, ctx.seed, settings, n_target, fixed, ctx.is_toy,
                            ctx.goal.pointwise, done=stored):
        if drawn.n > done_n:
            store[request] = drawn
            store.move_to_end(request)
            while len(store) > STORED_REQUESTS:
                store.popitem(last=False)
        last = drawn.n >= n_target or ctx.is_toy
        if not last and drawn.n <= done_n:
            continue  # reused waves: only the result they lead to is drawn
        result = cached_score(ctx.source, ctx.prompt_ids, steps, ctx.seed, ctx.goal, settings, drawn.n, fixed, drawn)
        with outputs.container():
            if not ctx.is_toy and result.n_samples < n_requested:
                st.info(f"Partial: n = {result.n_samples} of {n_requested} truth rows"
                        + (" (stopped)." if stopped and last else "; more are on the way."))
            draw_result(result, settings, final=last)
    status.empty()
    if stopped and result is not None and result.n_samples >= n_requested:
        _continue(request)  # nothing left to stop
    if stopped and result is not None and result.n_samples < n_requested:
        with status.container():
            st.button(f"Continue ({n_requested - result.n_samples} more truth rows)", key="cmp_continue",
                      on_click=_continue, args=(request,))


def _preview(outputs, fixed: dict) -> None:
    with outputs.container():
        draw_fixed_preview(fixed)


def main() -> None:
    st.caption("The same model, many ways to turn its next-token probabilities into text. Which one is best depends "
               "on the goal: switch it in the sidebar and watch the ranking change.")
    settings, n_samples = settings_ui(ctx.is_toy)
    try:
        check_request(ctx.model, ctx.prompt_ids, ctx.steps, ctx.seed, settings, n_samples)
        ctx.goal.loss_range(ctx.steps)
        window = ctx.goal.window(ctx.steps) if ctx.goal.pointwise else 1
        asked = (ctx.source, ctx.prompt_ids, ctx.steps, settings, n_samples)
        budget = math.inf if full_requested(asked) else budget_seconds()
        chosen = plan(ctx.cost, len(ctx.prompt_ids), ctx.steps, settings, n_samples, budget, ctx.goal.pointwise,
                      ctx.is_toy, min_steps=window)
    except Exception as exc:  # noqa: BLE001 - shown as a message; the rest of the page stays
        show_error(exc)
        st.stop()
    if ctx.is_text:
        st.markdown("**Prompt**")
        st.code(ctx.prompt, language=None)
    show_caps(chosen.caps, asked, chosen.full_s, key="cmp_full")
    status, outputs = st.empty(), st.empty()
    try:
        with server_progress(ctx, "Compare"):
            compute(chosen.steps, chosen.settings, chosen.n_samples, status, outputs)
    except Exception as exc:  # noqa: BLE001 - shown as a message; the rest of the page stays
        show_error(exc)


main()
