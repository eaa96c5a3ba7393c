"""Compare (home): every decoder side by side, each scored by its expected loss under the goal."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.compare import (
    MAX_NEURAL_LOOKAHEAD,
    MBR_CANDIDATES_RANGE,
    MBR_CITATIONS,
    N_SAMPLES_RANGE,
    DecoderSettings,
    check_request,
    decode_fixed,
    draw,
    is_exact_model,
    score,
)
from core.estimators import SMALL_DRAWS, SMALL_N
from core.rollout import sampler_draws
from pages.charts import CHART_CONFIG, display_number, risk_bars, risk_text
from pages.common import (
    declare_state,
    load_source,
    probability_legend_html,
    sequence_label,
    server_progress,
    setup_page,
    show_error,
    token_html,
    truncation_note,
)

SETTINGS_DEFAULTS = {"cmp_depth": 2, "cmp_tau": 0.7, "cmp_top_k": 5, "cmp_top_p": 0.9, "cmp_beam": 4,
                     "cmp_shown": 3, "cmp_n_samples": 64, "cmp_mbr": 32}


# Three caches: the deterministic decoders do not depend on the seed, the draws and the truth rollout
# depend on the goal's family only (so switching among 0-1, Hamming and N-gram, or between KL and TV,
# only re-scores), and the goal's scores are small.
@st.cache_data(max_entries=32, show_spinner=False)
def cached_fixed(source: str, prompt_ids: tuple[int, ...], steps: int, settings: DecoderSettings):
    model = load_source(source)
    return decode_fixed(model, prompt_ids, steps, settings, is_exact_model(model))


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_draws(source: str, prompt_ids: tuple[int, ...], steps: int, seed: int, settings: DecoderSettings,
                 n_samples: int, pointwise: bool):
    """The truth rollout and every random draw (tensors of a few MB: kept, not copied), shared by the
    goals of one family (pointwise, or distribution matching)."""
    model = load_source(source)
    fixed = cached_fixed(source, prompt_ids, steps, settings)
    return draw(model, prompt_ids, steps, seed, settings, n_samples, fixed, is_exact_model(model), pointwise)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_compare(source: str, prompt_ids: tuple[int, ...], steps: int, seed: int, goal,
                   settings: DecoderSettings, n_samples: int):
    model = load_source(source)
    fixed = cached_fixed(source, prompt_ids, steps, settings)
    drawn = cached_draws(source, prompt_ids, steps, seed, settings, n_samples, goal.pointwise)
    return score(model, prompt_ids, steps, seed, goal, settings, n_samples, fixed, drawn, is_exact_model(model))


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
    s = st.session_state
    settings = DecoderSettings(int(s.cmp_depth), float(s.cmp_tau), int(s.cmp_top_k), float(s.cmp_top_p),
                               int(s.cmp_beam), int(s.cmp_shown), int(s.cmp_mbr))
    return settings, int(s.cmp_n_samples)


def run(ctx, settings: DecoderSettings, n_samples: int):
    """Validate, then compute stage by stage with a progress bar (each stage cached)."""
    check_request(ctx.model, ctx.prompt_ids, ctx.steps, ctx.seed, settings, n_samples)
    work = "exact risks" if ctx.is_toy else f"{n_samples} Monte Carlo truth rows of {ctx.steps} tokens"
    bar = st.progress(0.0, text="Decoding with greedy, lookahead and beam search…")
    cached_fixed(ctx.source, ctx.prompt_ids, ctx.steps, settings)
    bar.progress(0.4, text=f"Sampling: every random decoder's draws and {work}…")
    cached_draws(ctx.source, ctx.prompt_ids, ctx.steps, ctx.seed, settings, n_samples, ctx.goal.pointwise)
    bar.progress(0.8, text=f"Scoring every decoder under {ctx.goal_name}…")
    result = cached_compare(ctx.source, ctx.prompt_ids, ctx.steps, ctx.seed, ctx.goal, settings, n_samples)
    bar.empty()
    return result


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


def draw_outputs(ctx, result) -> None:
    st.markdown(probability_legend_html(), unsafe_allow_html=True)
    rows = list(result.rows)
    for start in range(0, len(rows), 2):
        cols = st.columns(2)
        for col, row in zip(cols, rows[start : start + 2]):
            with col.container(border=True):
                regret = "" if row.key == "bayes" else f" · regret {_interval(row.regret)}"
                star = "★ " if row.key == "bayes" else ""
                st.markdown(f"**{star}{row.label}** — risk {_interval(row.risk)}{regret} ({row.risk.describe_n()})")
                st.markdown(token_html(ctx.model, row.output.tokens, row.output.step_logprobs, row.output.ranks),
                            unsafe_allow_html=True)
                caption = row_caption(result, row)
                if caption:
                    st.caption(caption)
    if result.samples:
        with st.container(border=True):
            st.markdown(f"**{len(result.samples)} samples from P** (ancestral sampling, τ = 1)")
            for sample in result.samples:
                st.markdown(token_html(ctx.model, sample.tokens, sample.step_logprobs, sample.ranks),
                            unsafe_allow_html=True)


def how_text(result) -> str:
    if result.exact:
        return ("Exact: enumerated over every sequence of the toy and over each random decoder's own randomness "
                "(MBR samples its candidates and references; its pick is scored exactly).")
    n, a = result.n_samples, result.n_select
    return (f"Estimated by Monte Carlo with the model as the truth P, from one rollout of {n} sampled continuations "
            f"(truth rows): a fixed output is scored against every truth row (Rao-Blackwellised; exact for 0-1: "
            f"1 − P(output)); each random decoder's {sampler_draws(n)} own draws against every truth row "
            "(two-sample interval); sampling from P by pairing truth rows with each other. The Bayes output and "
            f"MBR's pick are chosen on the first {a} truth rows and scored on the other {n - a}; each regret is the "
            f"paired difference on those {n - a} held-out rows with its own interval, so it need not equal the "
            "difference of the risks shown, and it is negative where a decoder beats an approximate Bayes output. "
            "Intervals: 95% Student-t, clipped to the loss's range.")


def draw_scores(ctx, result, settings: DecoderSettings) -> None:
    table = pd.DataFrame(result.table())
    if not ctx.is_text:
        table["output"] = [sequence_label(ctx.model, r.output.tokens) for r in result.rows]
    st.plotly_chart(risk_bars(table["decoder"], table["risk"], table["ci_low"], table["ci_high"],
                              [r.key == "bayes" for r in result.rows], ctx.goal_name),
                    width="stretch", config=CHART_CONFIG, key="cmp_chart")
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
    c1, c2 = st.columns(2)
    c1.download_button("Download table (CSV)", table.to_csv(index=False), "compare.csv", "text/csv", key="cmp_csv")
    c2.download_button("Download results (JSON)", result.to_json(settings, ctx.prompt_ids), "compare.json",
                       "application/json", key="cmp_json")


ctx = setup_page("Compare decoders", "⚖️")
if ctx is None:
    st.stop()
st.caption("The same model, many ways to turn its next-token probabilities into text. Which one is best depends "
           "on the goal: switch it in the sidebar and watch the ranking change.")
settings, n_samples = settings_ui(ctx.is_toy)
try:
    with server_progress(ctx, "Compare"):
        result = run(ctx, settings, n_samples)
except Exception as exc:  # noqa: BLE001 - shown as a message; the rest of the page stays
    show_error(exc)
    st.stop()
if ctx.is_text:
    st.markdown("**Prompt**")
    st.code(ctx.prompt, language=None)
if result.certificate is not None:
    (st.success if result.certificate.holds else st.caption)(result.certificate.text())
note = truncation_note(ctx, {row.key: row.output.tokens for row in result.rows})
if note:
    st.info(note)
draw_outputs(ctx, result)
draw_scores(ctx, result, settings)
