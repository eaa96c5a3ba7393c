"""Compare (home): every decoder side by side, each scored by its expected loss under the goal."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.compare import MAX_NEURAL_LOOKAHEAD, N_SAMPLES_RANGE, DecoderSettings, compare
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
                     "cmp_shown": 3, "cmp_n_samples": 64}


@st.cache_data(max_entries=64, show_spinner=False)
def cached_compare(source: str, prompt_ids: tuple[int, ...], steps: int, seed: int, goal,
                   settings: DecoderSettings, n_samples: int):
    return compare(load_source(source), prompt_ids, steps, seed, goal, settings, n_samples)


def settings_ui(is_toy: bool) -> tuple[DecoderSettings, int]:
    declare_state(SETTINGS_DEFAULTS)
    with st.expander("Decoder settings", expanded=True):
        c = st.columns(4 if is_toy else 5)
        c[0].number_input("Lookahead depth T", step=1, key="cmp_depth",
                          help="Commit the first token of the most probable T-token window."
                               + ("" if is_toy else f" At most {MAX_NEURAL_LOOKAHEAD} on neural models."))
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
                               int(s.cmp_beam), int(s.cmp_shown))
    return settings, int(s.cmp_n_samples)


def draw_outputs(ctx, result) -> None:
    st.markdown(probability_legend_html(), unsafe_allow_html=True)
    rows = list(result.rows)
    for start in range(0, len(rows), 2):
        cols = st.columns(2)
        for col, row in zip(cols, rows[start : start + 2]):
            with col.container(border=True):
                regret = "" if row.key == "bayes" else f" · regret {display_number(row.regret, 3):.3f}"
                star = "★ " if row.key == "bayes" else ""
                exact = "exact" if row.risk.exact else f"n = {row.risk.n}"
                st.markdown(f"**{star}{row.label}** — {_risk(row)}{regret} ({exact})")
                st.markdown(token_html(ctx.model, row.output.tokens, row.output.step_logprobs, row.output.ranks),
                            unsafe_allow_html=True)
                if row.note and row.note != "exact":
                    st.caption(row.note)
    if result.samples:
        with st.container(border=True):
            st.markdown(f"**{len(result.samples)} samples from P** (ancestral sampling, τ = 1)")
            for sample in result.samples:
                st.markdown(token_html(ctx.model, sample.tokens, sample.step_logprobs, sample.ranks),
                            unsafe_allow_html=True)


def _risk(row) -> str:
    r = row.risk
    if not math.isfinite(r.mean):
        return "risk ∞"
    shown = risk_text(r.mean) if 0 < 1 - r.mean < 1e-3 else f"{r.mean:.3f}"
    return f"risk {shown}" if r.exact else f"risk {shown} ± {r.ci_high - r.mean:.2g}"


def draw_scores(ctx, result, settings: DecoderSettings) -> None:
    table = pd.DataFrame(result.table())
    if not ctx.is_text:
        table["output"] = [sequence_label(ctx.model, r.output.tokens) for r in result.rows]
    st.plotly_chart(risk_bars(table["decoder"], table["risk"], table["ci_low"], table["ci_high"],
                              [r.key == "bayes" for r in result.rows], ctx.goal_name),
                    width="stretch", config=CHART_CONFIG, key="cmp_chart")
    if result.exact:
        how = "Exact: enumerated over every sequence of the toy and over each random decoder's own randomness."
    else:
        how = (f"Estimated by Monte Carlo with the model as the truth P: {result.n_samples} sampled continuations "
               "shared by all decoders, mean ± 95% confidence interval (rows marked exact need no sampling, e.g. "
               "the 0-1 risk of a fixed output is 1 − P(output)).")
    st.caption(f"**Risk** = expected loss of the decoder's output under the goal *{ctx.goal_name}*, averaged over "
               f"the truth P and the decoder's own randomness. **Regret** = risk − the Bayes "
               f"output's risk (0 = optimal). {how} Bayes output: {result.bayes_method}"
               f"{'' if result.bayes_exact else ' — approximate, so a regret can be negative'}.")
    shown = table.drop(columns=["settings"]).assign(regret=table["regret"].map(lambda x: display_number(x, 4)))
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"risk": st.column_config.NumberColumn(format="%.4f"),
                                "ci_low": st.column_config.NumberColumn("CI low", format="%.4f"),
                                "ci_high": st.column_config.NumberColumn("CI high", format="%.4f"),
                                "regret": st.column_config.NumberColumn(format="%.4f"),
                                "log P(output)": st.column_config.NumberColumn(format="%.3f")})
    c1, c2 = st.columns(2)
    c1.download_button("Download table (CSV)", table.to_csv(index=False), "compare.csv", "text/csv", key="cmp_csv")
    c2.download_button("Download results (JSON)", result.to_json(settings, ctx.prompt_ids), "compare.json",
                       "application/json", key="cmp_json")


ctx = setup_page("Compare decoders", "⚖️")
if ctx is None:
    st.stop()
st.caption("The same model, eight ways to turn its next-token probabilities into text. Which one is best depends "
           "on the goal: switch it in the sidebar and watch the ranking change.")
settings, n_samples = settings_ui(ctx.is_toy)
work = "exact risks" if ctx.is_toy else f"{n_samples} Monte Carlo samples of {ctx.steps} tokens"
try:
    with st.spinner(f"Decoding with 8 decoders and scoring each under {ctx.goal_name} ({work})…"), \
            server_progress(ctx, "Compare"):
        result = cached_compare(ctx.source, ctx.prompt_ids, ctx.steps, ctx.seed, ctx.goal, settings, n_samples)
except Exception as exc:  # noqa: BLE001 - shown as a message; the rest of the page stays
    show_error(exc)
    st.stop()
if ctx.is_text:
    st.markdown("**Prompt**")
    st.code(ctx.prompt, language=None)
note = truncation_note(ctx, {row.key: row.output.tokens for row in result.rows})
if note:
    st.info(note)
draw_outputs(ctx, result)
draw_scores(ctx, result, settings)
