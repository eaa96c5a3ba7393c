"""Consistency: each decoder's exact risk under the truth p as the model q approaches p. The page predicts
its seconds first (``pages.lab_guard``: MBR runs, data sets per N and grid density are capped to the
budget, or the full computation runs on request) and the curves fill in point by point."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from core.consistency import (
    DENSITIES,
    FAMILIES,
    LEARNED_ALPHA,
    N_DRAWS,
    N_SEEDS,
    NOISES,
    bayes_risk,
    decoded_risk,
    grid,
    is_enumerable,
    risk_curve,
)
from core.decoders import MBR, Beam, Greedy, Lookahead, Sampling
from core.lab_cost import Setting
from pages.charts import risk_curves, show_chart
from pages.common import check_state, declare_state, in_range, setup_page, show_error
from pages.lab_guard import Progress, costs, guard
from pages.toy_picker import (
    DECODER_HASH,
    build_toy,
    check_goal_fits,
    eos_note,
    sampler_classes,
    toy_rules,
    toy_state,
    toy_ui,
    warper_input,
    warper_label,
    warper_rule,
    warper_sampler,
)

SEED_CHOICES = (5, 10, 20)
MBR_RUNS = (16, 32, 64)
SAMPLERS = {warper_label(cls): cls for cls in sampler_classes()}
LEGACY_KEYS = {"temperature": "cs_tau", "top_k": "cs_top_k", "top_p": "cs_top_p"}  # kept: links use them
PARAM_KEYS = {name: LEGACY_KEYS.get(cls.arg(), f"cs_{cls.arg()}") for name, cls in SAMPLERS.items()}
MBR_NAME = "MBR (the sidebar goal)"

# The decoders the page offers: name -> how to build it from the page's settings (session state) and the goal.
# Adding a decoder is one entry here; decoders that cannot be enumerated (MBR) are estimated from seeded runs.
DECODERS: dict[str, Callable] = {
    "greedy": lambda s, goal: Greedy(),
    "lookahead (depth T)": lambda s, goal: Lookahead(int(s.cs_depth)),
    "beam (width w)": lambda s, goal: Beam(int(s.cs_beam)),
    "sampling (τ = 1)": lambda s, goal: Sampling(),
    **{name: (lambda s, goal, name=name: warper_sampler(SAMPLERS[name], s[PARAM_KEYS[name]])) for name in SAMPLERS},
    MBR_NAME: lambda s, goal: MBR(goal),
}
DEFAULT_DECODERS = ["greedy", "lookahead (depth T)", "beam (width w)", "sampling (τ = 1)", "temperature τ"]
FAMILY_LABELS = {"mixture": "perturbation: q = (1 − ε)·p + ε·noise", "learned": "learning from N sequences"}
NOISE_LABELS = {"dirichlet": "a fixed random conditional per prefix / state", "uniform": "uniform"}
GENERIC = [name for name, key in PARAM_KEYS.items() if key not in LEGACY_KEYS.values()]
STATE = {**toy_state("cs"), "cs_family": "mixture", "cs_noise": "dirichlet", "cs_seeds": 10,
         "cs_decoders": DEFAULT_DECODERS, "cs_log_y": False, "cs_depth": 2, "cs_beam": 2, "cs_tau": 0.5,
         "cs_top_k": 2, "cs_top_p": 0.9, "cs_density": 2, "cs_mbr_runs": N_DRAWS,
         **{PARAM_KEYS[name]: SAMPLERS[name].example for name in GENERIC}}
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
    "cs_density": ("Grid points per decade", DENSITIES, "one of " + ", ".join(map(str, DENSITIES))),
    "cs_mbr_runs": ("MBR runs per model q", MBR_RUNS, "one of " + ", ".join(map(str, MBR_RUNS))),
    **{PARAM_KEYS[name]: warper_rule(SAMPLERS[name]) for name in GENERIC},
}


@st.cache_data(max_entries=4096, show_spinner=False, hash_funcs=DECODER_HASH)
def point(spec: tuple, decoder, goal, family: str, noise: str, x: float, n_seeds: int, seed: int, runs: int):
    """(x, risk, low, high) of the decoder run on the model q of ``family`` at x."""
    truth = build_toy(spec)
    return risk_curve(truth, decoder, goal, family, (x,), truth.length, seed, n_seeds=n_seeds, noise=noise,
                      n_draws=runs)[0]


@st.cache_data(max_entries=512, show_spinner=False, hash_funcs=DECODER_HASH)
def at_p(spec: tuple, decoder, goal, seed: int, runs: int) -> float:
    """The decoder's risk when it decodes p itself (exact, or estimated like the curve's points)."""
    truth = build_toy(spec)
    return decoded_risk(truth, truth, decoder, goal, truth.length, seed, runs)[0]


@st.cache_data(max_entries=64, show_spinner=False)
def floor(spec: tuple, goal) -> float:
    truth = build_toy(spec)
    return bayes_risk(goal, truth, truth.length)


def settings_ui() -> tuple[str, str, list[str]]:
    family = st.segmented_control("q approaches p by", FAMILIES, format_func=FAMILY_LABELS.get, key="cs_family",
                                  required=True)
    c2, c3 = st.columns(2)
    if family == "mixture":
        c2.selectbox("Noise", NOISES, format_func=NOISE_LABELS.get, key="cs_noise",
                     help="What q mixes into p at every prefix: uniform noise never reorders a conditional's tokens "
                          "(so it cannot move greedy); random noise can, for large ε.")
    else:
        c2.select_slider("Data sets per N", SEED_CHOICES, key="cs_seeds",
                         help="Each point averages the exact risk over this many independent training sets.")
    c3.select_slider("Grid points per decade", DENSITIES, key="cs_density",
                     help="More points draw smoother curves and cost proportionally more time.")
    with st.expander("Decoders", expanded=True):
        chosen = st.multiselect("Decoders", list(DECODERS), key="cs_decoders", label_visibility="collapsed")
        inputs = [name for name in chosen if name not in ("greedy", "sampling (τ = 1)")]
        cols = st.columns(5)
        for i, name in enumerate(inputs):
            parameter_input(cols[i % 5], name)
    s = st.session_state
    return family, s.cs_noise, chosen


def parameter_input(container, name: str) -> None:
    """The input of one chosen decoder's parameter."""
    if name == "lookahead (depth T)":
        container.number_input("Lookahead depth T", min_value=1, max_value=8, step=1, key="cs_depth")
    elif name == "beam (width w)":
        container.number_input("Beam width w", min_value=1, max_value=16, step=1, key="cs_beam")
    elif name == MBR_NAME:
        container.select_slider("MBR runs per model q", MBR_RUNS, key="cs_mbr_runs",
                                help="MBR cannot be enumerated: each point averages the exact risks of this many "
                                     "seeded runs.")
    elif PARAM_KEYS[name] == "cs_tau":
        container.number_input("Temperature τ", min_value=0.05, max_value=5.0, step=0.05, key="cs_tau", format="%.2f")
    elif PARAM_KEYS[name] == "cs_top_k":
        container.number_input("top-k", min_value=1, max_value=16, step=1, key="cs_top_k")
    elif PARAM_KEYS[name] == "cs_top_p":
        container.number_input("top-p", min_value=0.05, max_value=1.0, step=0.05, key="cs_top_p", format="%.2f")
    else:
        warper_input(container, SAMPLERS[name], PARAM_KEYS[name])


def build_decoders(chosen: list[str], goal) -> tuple[list, list[str]]:
    """(the chosen decoders, a note for each one that cannot run under this goal)."""
    decoders, skipped = [], []
    for name in chosen:
        try:
            decoders.append(DECODERS[name](st.session_state, goal))
        except ValueError as exc:
            skipped.append(f"{name}: {exc}")
    return decoders, skipped


def explain(truth, family: str, noise: str, n_seeds: int, seed: int, infinite: list[str], bayes: float,
            sampled: list[str], runs: int, x_range: str) -> str:
    size = f"{truth.vocab_size}^{truth.length} = {truth.vocab_size ** truth.length}"
    text = (f"**Exact under p**: each point is the decoder's output distribution on q (enumerated over all {size} "
            "outputs and the decoder's own randomness), scored under p by the goal's own exact risk. ")
    if family == "mixture":
        how = ("a fixed random conditional per prefix (per state for Markov chains) drawn from Dirichlet(1, …, 1) "
               f"with seed {seed}") if noise == "dirichlet" else "the uniform conditional"
        text += f"q_ε = (1 − ε)·p + ε·noise at every step, noise = {how}; {x_range}. "
    else:
        text += (f"q = add-{LEARNED_ALPHA:g} counts per prefix (per state for Markov chains) on N sequences drawn from "
                 f"p, {x_range}. Each point is the **mean over {n_seeds} independent training sets** (seeds "
                 f"derived from {seed}); the band is the 95% t-interval of that mean over the {n_seeds} sets. ")
    if sampled:
        text += (f"{', '.join(sampled)}: no enumerable output distribution, so its risks are **estimated**: each point "
                 f"averages the exact risks of {runs} seeded runs on q (band: their 95% t-interval; under KL / TV "
                 "the divergence of the runs' empirical distribution, a plug-in value). ")
    text += f"Dashed green: the Bayes risk {bayes:.4f}, the least any decoder can reach under p."
    if infinite:
        text += f" Not drawn where the risk is ∞: {', '.join(infinite)}."
    return " ".join(t for t in (text, eos_note(truth)) if t)


def predict(truth, decoders, goal, family: str, settings) -> float:
    cost = costs()
    points = len(grid(family, settings["density"]))
    seeds, runs = settings.get("seeds", N_SEEDS), settings.get("runs", N_DRAWS)
    return (sum(cost.curve_seconds(d, goal, family, points, truth, truth.length, seeds, runs) for d in decoders)
            + cost.decoder_seconds(Greedy(), [goal], truth, truth.length, 0))


def chart(series: dict, bayes: float, family: str, log_y: bool):
    x_title = "ε (noise weight, log scale; q → p to the right)" if family == "mixture" else "N training sequences (log)"
    return risk_curves(series, bayes, f"{ctx.goal.name}: risk under p of each decoder run on q", x_title,
                       reverse_x=family == "mixture", log_y=log_y)


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
    check_goal_fits(ctx.goal, truth.length)
    family, noise, chosen = settings_ui()
    decoders, skipped = build_decoders(chosen, ctx.goal)
    for note in skipped:
        st.warning(f"Left out {note}")
    if not decoders:
        raise ValueError("choose at least one decoder" + (" that works with this goal" if skipped else ""))
except Exception as exc:  # noqa: BLE001
    show_error(exc)
    st.stop()

s = st.session_state
requested = {"density": int(s.cs_density), **({"seeds": int(s.cs_seeds)} if family == "learned" else {}),
             **({"runs": int(s.cs_mbr_runs)} if not all(map(is_enumerable, decoders)) else {})}
order = [Setting(*x) for x in (("runs", "MBR runs per model q", MBR_RUNS[0], MBR_RUNS),
                               ("seeds", "Data sets per N", SEED_CHOICES[0], SEED_CHOICES),
                               ("density", "Grid points per decade", DENSITIES[0], DENSITIES)) if x[0] in requested]
request = (spec, tuple(map(repr, decoders)), ctx.goal, family, noise, ctx.seed)
settings = guard("cs_curves", "Computing these curves", request, requested,
                 lambda c: predict(truth, decoders, ctx.goal, family, c), order)
if settings is None:
    st.stop()
xs = grid(family, settings["density"])
n_seeds, runs = settings.get("seeds", N_SEEDS), settings.get("runs", N_DRAWS)
log_y = st.toggle("Log scale for the risk", key="cs_log_y",
                  help="Shows how fast the risk falls (e.g. sampling's KL(P‖r) shrinks like ε²); a Bayes risk of 0 "
                       "is not drawn on it.")
try:
    bayes = floor(spec, ctx.goal)
    place, progress = st.empty(), Progress("Models q scored, for every decoder", len(xs) + 1)
    at_q_p = {d.label: at_p(spec, d, ctx.goal, ctx.seed, runs if not is_enumerable(d) else N_DRAWS)
              for d in decoders}  # the truth itself: one model
    progress.tick()
    series: dict[str, list] = {d.label: [] for d in decoders}
    for i, x in enumerate(xs):
        for d in decoders:
            series[d.label].append(point(spec, d, ctx.goal, family, noise if family == "mixture" else NOISES[0], x,
                                         n_seeds if family == "learned" else N_SEEDS, ctx.seed,
                                         runs if not is_enumerable(d) else N_DRAWS))
        if progress.tick() and i < len(xs) - 1:  # partial curves, filling point by point
            place.plotly_chart(chart(series, bayes, family, log_y), key=f"cs_chart_partial_{i}")
    progress.close()
except Exception as exc:  # noqa: BLE001
    show_error(exc)
    st.stop()

exact = {d.label: family == "mixture" and is_enumerable(d) for d in decoders}
rows = [{"decoder": label, "family": family, "x": x, "risk": r, "low": lo, "high": hi, "exact": exact[label],
         "bayes risk": bayes, "goal": ctx.goal.name} for label, points in series.items() for x, r, lo, hi in points]
with place.container():
    show_chart(chart(series, bayes, family, log_y), rows, "cs_chart", f"consistency_{family}")
infinite = [label for label, points in series.items() if any(r == float("inf") for _, r, _, _ in points)]
sampled = [d.label for d in decoders if not is_enumerable(d)]
x_range = (f"ε runs from 1 down to 10⁻⁴, {settings['density']} points per decade" if family == "mixture" else
           f"N from 10 to 10⁵, {settings['density']} points per decade")
st.caption(explain(truth, family, noise, n_seeds, ctx.seed, infinite, bayes, sampled, runs, x_range))

st.subheader("Where each decoder ends up")
summary = pd.DataFrame([{"decoder": label, f"risk at the closest q ({'ε' if family == 'mixture' else 'N'} = "
                         f"{points[-1][0]:g})": points[-1][1], "risk at q = p": at_q_p[label], "Bayes risk": bayes,
                         "regret at q = p": at_q_p[label] - bayes,
                         "reaches the Bayes risk": "yes" if at_q_p[label] - bayes < 1e-9 else "no"}
                        for label, points in series.items()])
st.dataframe(summary, hide_index=True, width="stretch", key="cs_summary")
st.caption("Regret = risk − Bayes risk. A decoder whose regret at q = p is positive is inconsistent for this goal: "
           "no amount of data or accuracy in q fixes it. (At q = p itself ties in p's conditionals break to the lowest "
           "token; q near p may break them otherwise."
           + (" MBR's risk at q = p is estimated like its points." if sampled else "") + ")")
st.download_button("Download this table (CSV)", summary.to_csv(index=False), "consistency_summary.csv", "text/csv",
                   key="cs_summary_csv")
