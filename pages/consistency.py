"""Consistency: each decoder's exact risk under the truth p as the model q approaches p."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from core.consistency import (
    FAMILIES,
    LEARNED_ALPHA,
    N_DRAWS,
    NOISES,
    bayes_risk,
    decoded_risk,
    default_grid,
    is_enumerable,
    risk_curve,
)
from core.decoders import Beam, Greedy, Lookahead, Sampling
from pages.charts import risk_curves, show_chart
from pages.common import check_state, declare_state, in_range, setup_page, show_error
from pages.toy_picker import build_toy, check_goal_fits, toy_rules, toy_state, toy_ui

MAX_SEQUENCES = 512  # largest toy (V^n sequences) the page draws curves for: every point enumerates them all
SEED_CHOICES = (5, 10, 20)

# The decoders the page offers: name -> how to build it from the page's settings (session state) and the goal.
# Adding a decoder is one entry here (e.g. "MBR": lambda s, goal: MBR(goal)); decoders that cannot be enumerated
# are estimated from seeded runs by risk_curve.
DECODERS: dict[str, Callable] = {
    "greedy": lambda s, goal: Greedy(),
    "lookahead (depth T)": lambda s, goal: Lookahead(int(s.cs_depth)),
    "beam (width w)": lambda s, goal: Beam(int(s.cs_beam)),
    "sampling (τ = 1)": lambda s, goal: Sampling(),
    "temperature τ": lambda s, goal: Sampling(temperature=float(s.cs_tau)),
    "top-k": lambda s, goal: Sampling(top_k=int(s.cs_top_k)),
    "top-p": lambda s, goal: Sampling(top_p=float(s.cs_top_p)),
}
FAMILY_LABELS = {"mixture": "perturbation: q = (1 − ε)·p + ε·noise", "learned": "learning from N sequences"}
NOISE_LABELS = {"dirichlet": "a fixed random conditional per prefix / state", "uniform": "uniform"}
STATE = {**toy_state("cs"), "cs_family": "mixture", "cs_noise": "dirichlet", "cs_seeds": 10,
         "cs_decoders": list(DECODERS)[:5], "cs_log_y": False, "cs_depth": 2, "cs_beam": 2, "cs_tau": 0.5,
         "cs_top_k": 2, "cs_top_p": 0.9}
STATE_RULES = {
    **toy_rules("cs"),
    "cs_family": ("q approaches p by", FAMILIES, "mixture or learned"),
    "cs_noise": ("Noise", NOISES, "dirichlet or uniform"),
    "cs_seeds": ("Data sets per N", SEED_CHOICES, "one of " + ", ".join(map(str, SEED_CHOICES))),
    "cs_decoders": ("Decoders", lambda v: isinstance(v, list) and all(d in DECODERS for d in v),
                    "a list of " + ", ".join(DECODERS)),
    "cs_log_y": ("Log scale for the risk", (True, False), "True or False"),
    "cs_depth": ("Lookahead depth T", in_range(1, 8, True), "an integer from 1 to 8"),
    "cs_beam": ("Beam width w", in_range(1, 16, True), "an integer from 1 to 16"),
    "cs_tau": ("Temperature τ", in_range(0.05, 5.0), "from 0.05 to 5"),
    "cs_top_k": ("top-k", in_range(1, 16, True), "an integer from 1 to 16"),
    "cs_top_p": ("top-p", in_range(0.05, 1.0), "from 0.05 to 1"),
}


@st.cache_data(max_entries=256, show_spinner=False)
def curve(spec: tuple, decoder, goal, family: str, noise: str, n_seeds: int, seed: int):
    """(the decoder's curve, its risk at q = p: exact, or estimated like the curve's points)."""
    truth = build_toy(spec)
    points = risk_curve(truth, decoder, goal, family, default_grid(family), truth.length, seed, n_seeds=n_seeds,
                        noise=noise)
    return points, decoded_risk(truth, truth, decoder, goal, truth.length, seed)[0]


@st.cache_data(max_entries=64, show_spinner=False)
def floor(spec: tuple, goal) -> float:
    truth = build_toy(spec)
    return bayes_risk(goal, truth, truth.length)


def settings_ui() -> tuple[str, str, int, list[str]]:
    c1, c2 = st.columns([3, 2])
    family = c1.segmented_control("q approaches p by", FAMILIES, format_func=FAMILY_LABELS.get, key="cs_family",
                                  required=True)
    if family == "mixture":
        c2.selectbox("Noise", NOISES, format_func=NOISE_LABELS.get, key="cs_noise",
                     help="What q mixes into p at every prefix: uniform noise never reorders a conditional's tokens "
                          "(so it cannot move greedy); random noise can, for large ε.")
    else:
        c2.select_slider("Data sets per N", SEED_CHOICES, key="cs_seeds",
                         help="Each point averages the exact risk over this many independent training sets.")
    with st.expander("Decoders", expanded=True):
        chosen = st.multiselect("Decoders", list(DECODERS), key="cs_decoders", label_visibility="collapsed")
        c = st.columns(5)
        c[0].number_input("Lookahead depth T", min_value=1, max_value=8, step=1, key="cs_depth")
        c[1].number_input("Beam width w", min_value=1, max_value=16, step=1, key="cs_beam")
        c[2].number_input("Temperature τ", min_value=0.05, max_value=5.0, step=0.05, key="cs_tau", format="%.2f")
        c[3].number_input("top-k", min_value=1, max_value=16, step=1, key="cs_top_k")
        c[4].number_input("top-p", min_value=0.05, max_value=1.0, step=0.05, key="cs_top_p", format="%.2f")
    s = st.session_state
    return family, s.cs_noise, int(s.cs_seeds), chosen


def explain(truth, family: str, noise: str, n_seeds: int, seed: int, infinite: list[str], bayes: float,
            sampled: list[str]) -> str:
    size = f"{truth.vocab_size}^{truth.length} = {truth.vocab_size ** truth.length}"
    text = (f"**Exact under p**: each point is the decoder's output distribution on q (enumerated over all {size} "
            "outputs and the decoder's own randomness), scored under p. ")
    if family == "mixture":
        how = ("a fixed random conditional per prefix (per state for Markov chains) drawn from Dirichlet(1, …, 1) "
               f"with seed {seed}") if noise == "dirichlet" else "the uniform conditional"
        text += f"q_ε = (1 − ε)·p + ε·noise at every step, noise = {how}; ε runs from 1 down to 10⁻⁴. "
    else:
        text += (f"q = add-{LEARNED_ALPHA:g} counts per prefix (per state for Markov chains) on N sequences drawn from "
                 f"p, N from 10 to 10⁵. Each point is the **mean over {n_seeds} independent training sets** (seeds "
                 f"derived from {seed}); the band is the 95% t-interval of that mean over the {n_seeds} sets. ")
    if sampled:
        text += (f"{', '.join(sampled)}: no enumerable output distribution, so each point averages the exact risks "
                 f"of {N_DRAWS} seeded runs on q (band: their 95% t-interval). ")
    text += f"Dashed green: the Bayes risk {bayes:.4f}, the least any decoder can reach under p."
    if infinite:
        text += f" Not drawn where the risk is ∞: {', '.join(infinite)}."
    return text


ctx = setup_page("Consistency", "📉", sidebar="goal")
if ctx is None:
    st.stop()
st.caption("Trauger & Tewari's question: as next-token prediction q converges to the truth p, does a decoder's risk "
           "converge to the Bayes risk? A decoder is *consistent* for a goal when it does. Read each chart left to "
           "right: q gets closer to p. Greedy's regret stays positive for 0-1 and Hamming (try E1 and E2); τ = 1 "
           "sampling's KL goes to 0.")
declare_state(STATE)
check_state(STATE_RULES)
try:
    spec = toy_ui("cs")
    truth = build_toy(spec)
    if truth.vocab_size**truth.length > MAX_SEQUENCES:
        raise ValueError(f"this toy has {truth.vocab_size}^{truth.length} = {truth.vocab_size ** truth.length:,} "
                         f"sequences; the Consistency page draws curves for toys of at most {MAX_SEQUENCES:,} "
                         "(every point enumerates them all): pick a shorter or smaller toy")
    check_goal_fits(ctx.goal, truth.length)
    family, noise, n_seeds, chosen = settings_ui()
    decoders = [DECODERS[name](st.session_state, ctx.goal) for name in chosen]
    if not decoders:
        raise ValueError("choose at least one decoder")
except Exception as exc:  # noqa: BLE001
    show_error(exc)
    st.stop()

try:
    with st.spinner(f"Exact risks of {len(decoders)} decoders on {len(default_grid(family))} models q…"):
        results = {d.label: curve(spec, d, ctx.goal, family, noise, n_seeds, ctx.seed) for d in decoders}
        bayes = floor(spec, ctx.goal)
except Exception as exc:  # noqa: BLE001
    show_error(exc)
    st.stop()

x_title = "ε (noise weight, log scale; q → p to the right)" if family == "mixture" else "N training sequences (log)"
series = {label: points for label, (points, _) in results.items()}
exact = {d.label: family == "mixture" and is_enumerable(d) for d in decoders}
rows = [{"decoder": label, "family": family, "x": x, "risk": r, "low": lo, "high": hi, "exact": exact[label],
         "bayes risk": bayes, "goal": ctx.goal.name} for label, points in series.items() for x, r, lo, hi in points]
log_y = st.toggle("Log scale for the risk", key="cs_log_y",
                  help="Shows how fast the risk falls (e.g. sampling's KL(P‖r) shrinks like ε²); a Bayes risk of 0 "
                       "is not drawn on it.")
fig = risk_curves(series, bayes, f"{ctx.goal.name}: risk under p of each decoder run on q", x_title,
                  reverse_x=family == "mixture", log_y=log_y)
show_chart(fig, rows, "cs_chart", f"consistency_{family}")
infinite = [label for label, points in series.items() if any(r == float("inf") for _, r, _, _ in points)]
sampled = [d.label for d in decoders if not is_enumerable(d)]
st.caption(explain(truth, family, noise, n_seeds, ctx.seed, infinite, bayes, sampled))

st.subheader("Where each decoder ends up")
summary = pd.DataFrame([{"decoder": label, f"risk at the closest q ({'ε' if family == 'mixture' else 'N'} = "
                         f"{points[-1][0]:g})": points[-1][1], "risk at q = p": at_p, "Bayes risk": bayes,
                         "regret at q = p": at_p - bayes, "reaches the Bayes risk": "yes" if at_p - bayes < 1e-9
                         else "no"} for label, (points, at_p) in results.items()])
st.dataframe(summary, hide_index=True, width="stretch", key="cs_summary")
st.caption("Regret = risk − Bayes risk. A decoder whose regret at q = p is positive is inconsistent for this goal: "
           "no amount of data or accuracy in q fixes it. (At q = p itself ties in p's conditionals break to the lowest "
           "token; q near p may break them otherwise.)")
st.download_button("Download this table (CSV)", summary.to_csv(index=False), "consistency_summary.csv", "text/csv",
                   key="cs_summary_csv")
