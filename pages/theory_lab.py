"""Theory lab: small toy distributions where every risk is exact, to check the claims by enumeration."""

from __future__ import annotations

import itertools

import pandas as pd
import streamlit as st

from core.compare import empirical_distribution
from core.decoders import Beam, Greedy, Lookahead, Sampling
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.risk import risk_table
from core.theory import greedy_optimality_sweep
from core.toy import PRESETS, binary_tree, output_distribution, random_markov_chain, sequence_tempered
from pages.charts import CHART_CONFIG, distribution_bars, heatmap
from pages.common import check_state, declare_state, in_range, sequence_label, setup_page, show_error

TREE_DEFAULTS = {(): 0.6, (0,): 0.55, (1,): 0.9}  # E1
MAX_TREE_N = 4
SAMPLE_SIZES = (10, 100, 1000, 10000)
SWEEP_STATES = (2, 3, 4, 6, 8)
SWEEP_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0)
SWEEP_CHAINS = (50, 200, 500)
SWEEP_METRICS = {"greedy is Hamming-optimal": "greedy_is_hamming_optimal", "greedy is a mode": "greedy_is_mode",
                 "mode is Hamming-optimal": "mode_is_hamming_optimal"}
STATE = {"th_kind": "Preset", "th_preset": "E1", "th_n": 2, "th_states": 3, "th_alpha": 0.5, "th_length": 5,
         "th_chain_seed": 7, "th_tau": 0.5, "th_sampler_tau": 1.0, "th_n_draws": 1000, "th_metric":
         "greedy is Hamming-optimal", "th_chains": 200, "th_classroom": False, "th_class_step": 0}


def prefix_name(prefix: tuple[int, ...]) -> str:
    return "P(A)" if not prefix else f"P(A|{''.join('AB'[t] for t in prefix)})"


@st.cache_resource(max_entries=32, show_spinner=False)
def build_toy(spec: tuple):
    kind = spec[0]
    if kind == "Preset":
        return PRESETS[spec[1]].build()
    if kind == "Binary tree":
        return binary_tree(dict(spec[2]), spec[1])
    return random_markov_chain(*spec[1:])


def toy_ui() -> tuple:
    """Draw the toy editor; return a hashable spec of the toy."""
    kind = st.segmented_control("Toy", ["Preset", "Binary tree", "Markov chain"], key="th_kind", required=True)
    if kind == "Preset":
        name = st.selectbox("Preset", list(PRESETS), key="th_preset")
        st.caption(PRESETS[name].description + " E3 and E4 are claims about E1 (sampling and temperature below).")
        return ("Preset", name)
    if kind == "Binary tree":
        n = st.slider("Length n", 1, MAX_TREE_N, key="th_n")
        prefixes = [p for k in range(n) for p in itertools.product((0, 1), repeat=k)]
        cols = st.columns(min(4, len(prefixes)))
        for i, prefix in enumerate(prefixes):
            key = f"th_p_{''.join(map(str, prefix))}"
            st.session_state.setdefault(key, TREE_DEFAULTS.get(prefix, 0.5))
            check_state({key: (prefix_name(prefix), in_range(0.0, 1.0), "in [0, 1]", TREE_DEFAULTS.get(prefix, 0.5))})
            cols[i % len(cols)].slider(prefix_name(prefix), 0.0, 1.0, step=0.01, key=key)
        return ("Binary tree", n, tuple((p, st.session_state[f"th_p_{''.join(map(str, p))}"]) for p in prefixes))
    c = st.columns(4)
    c[0].slider("States", 2, 6, key="th_states")
    c[1].number_input("Dirichlet α", min_value=0.01, max_value=100.0, step=0.1, key="th_alpha")
    c[2].slider("Length", 1, 6, key="th_length")
    c[3].number_input("Chain seed", min_value=0, step=1, key="th_chain_seed")
    s = st.session_state
    return ("Markov chain", int(s.th_states), float(s.th_alpha), int(s.th_length), int(s.th_chain_seed))


def lab_goals(length: int, extra) -> list:
    goals = [ZeroOne(), Hamming()] + ([NGramHamming(2)] if length >= 3 else [])
    goals += [DistributionMatch("kl"), DistributionMatch("tv")]
    return goals + ([extra] if extra not in goals else [])


def lab_decoders(length: int, tau: float) -> list:
    depths = [d for d in (2, 3) if d <= length]
    return [Greedy(), *[Lookahead(d) for d in depths], Beam(2), Sampling(temperature=tau), Sampling()]


@st.cache_data(max_entries=64, show_spinner=False)
def exact_table(spec: tuple, goal, tau: float) -> list[dict]:
    truth = build_toy(spec)
    return risk_table(lab_goals(truth.length, goal), truth, lab_decoders(truth.length, tau), truth.length)


def draw_table(spec, truth, ctx, tau: float) -> None:
    st.subheader("Exact risk of every decoder for every goal")
    rows = exact_table(spec, ctx.goal, tau)
    table = pd.DataFrame(rows)
    table["output"] = [("random" if o is None else sequence_label(truth, o)) for o in table["output"]]
    goal_col = ctx.goal.name
    table = table.sort_values(goal_col, kind="stable").reset_index(drop=True)
    table.insert(2, f"regret ({goal_col})", table[goal_col] - table[goal_col].min())
    goal_cols = [c for c in table.columns if c not in ("decoder", "output") and not c.startswith("regret")]
    styled = table.style.format(precision=4).highlight_min(subset=goal_cols, color="#b2f2bb")
    st.dataframe(styled, hide_index=True, width="stretch", key="th_table")
    st.caption(f"Sorted by the sidebar's goal ({goal_col}). Green: the smallest risk in each column, reached by that "
               "goal's Bayes output (for KL / TV: sampling at τ = 1). Exact: enumerated over all "
               f"{truth.vocab_size}^{truth.length} sequences and over each sampler's own randomness.")
    st.download_button("Download table (CSV)", table.to_csv(index=False), "theory_table.csv", "text/csv",
                       key="th_csv")


def draw_temperature(truth) -> None:
    st.subheader("Per-token temperature is not sequence-level tempering")
    tau = st.slider("τ", 0.05, 3.0, step=0.05, key="th_tau")
    label = lambda d: {sequence_label(truth, k): v for k, v in d.items()}
    p = label(output_distribution(Sampling(), truth, truth.length))
    r = label(output_distribution(Sampling(temperature=tau), truth, truth.length))
    q = label(sequence_tempered(truth, tau))
    st.plotly_chart(distribution_bars({"P": p, f"per-token τ={tau:g}": r, f"sequence-level P^(1/τ)/Z, τ={tau:g}": q},
                                      "Output distributions"), width="stretch", config=CHART_CONFIG, key="th_temp")
    kl, tv = DistributionMatch("kl"), DistributionMatch("tv")
    st.caption(f"Per-token sampling at τ = {tau:g}: KL(P‖r) = {kl.between(p, r):.5f}, TV = "
               f"{tv.between(p, r):.5f}. As τ → 0 per-token sampling concentrates on the greedy path, "
               "sequence-level tempering on the mode.")


def draw_sampling(truth, seed: int) -> None:
    st.subheader("Sample N times: empirical vs exact")
    c1, c2 = st.columns(2)
    tau = c1.number_input("Sampler τ", min_value=0.05, max_value=5.0, step=0.1, key="th_sampler_tau")
    n = c2.select_slider("N draws", SAMPLE_SIZES, key="th_n_draws")
    sampler = Sampling(temperature=float(tau))
    label = lambda d: {sequence_label(truth, k): v for k, v in d.items()}
    exact = label(output_distribution(sampler, truth, truth.length))
    with st.spinner(f"Drawing {n} samples…"):
        seen = label(empirical_distribution(truth, sampler, truth.length, int(n), seed))
    st.plotly_chart(distribution_bars({"exact output distribution r": exact, f"{n} draws (seed {seed})": seen},
                                      f"Sampling at τ = {tau:g}"), width="stretch", config=CHART_CONFIG, key="th_hist")


@st.cache_data(max_entries=8, show_spinner=False)
def sweep(n_chains: int, seed: int):
    return greedy_optimality_sweep(SWEEP_STATES, SWEEP_ALPHAS, n_chains=n_chains, length=8, seed=seed)


def draw_sweep(seed: int) -> None:
    st.subheader("How often is greedy optimal? Random Markov chains")
    c1, c2 = st.columns(2)
    metric = c1.selectbox("Fraction of chains where", list(SWEEP_METRICS), key="th_metric")
    n_chains = c2.select_slider("Chains per cell", SWEEP_CHAINS, key="th_chains")
    with st.spinner(f"Drawing {n_chains} chains for each of {len(SWEEP_STATES) * len(SWEEP_ALPHAS)} cells…"):
        result = sweep(int(n_chains), seed)
    st.plotly_chart(heatmap(getattr(result, SWEEP_METRICS[metric]), result.alphas, result.n_states, metric,
                            "Dirichlet α", "#states", "fraction of chains"), width="stretch", config=CHART_CONFIG,
                    key="th_heat")
    st.caption(f"Chains of length {result.length}, initial and transition rows ~ Dirichlet(α·1), seed {seed}. "
               "Peaked rows (small α) make greedy's local choices globally right; flatter rows and more states "
               "make them fail.")


def _e1_rows() -> dict:
    rows = exact_table(("Preset", "E1"), ZeroOne(), 0.5)
    return {r["decoder"]: r for r in rows}


def _claims() -> list[tuple[str, str]]:
    """(headline, evidence) for each claim, numbers computed exactly on the presets."""
    e1 = _e1_rows()
    g, m, h = e1["greedy"], e1["Bayes output (0-1)"], e1["Bayes output (Hamming)"]
    e2 = {r["decoder"]: r for r in exact_table(("Preset", "E2"), ZeroOne(), 0.5)}
    e2m, e2h = e2["Bayes output (0-1)"], e2["Bayes output (Hamming)"]
    e1_truth = build_toy(("Preset", "E1"))
    r = output_distribution(Sampling(temperature=0.5), e1_truth, 2)
    p = output_distribution(Sampling(), e1_truth, 2)
    seq = lambda t: sequence_label(e1_truth, t)
    return [
        ("Greedy is not the mode.",
         f"E1: greedy picks {seq(g['output'])} (0-1 risk {g['0-1']:.2f}); the mode {seq(m['output'])} has "
         f"0-1 risk {m['0-1']:.2f}."),
        ("The mode is not Hamming-optimal.",
         f"E1: the mode's Hamming risk is {m['Hamming']:.2f}; the per-position marginal mode "
         f"{seq(h['output'])} has {h['Hamming']:.2f}. No single output is best for both goals."),
        ("Three goals, three winners.",
         f"E2: greedy {seq(e2['greedy']['output'])}, mode {seq(e2m['output'])} (0-1 risk {e2m['0-1']:.2f}), "
         f"Hamming-optimal {seq(e2h['output'])} (Hamming risk {e2h['Hamming']:.2f})."),
        ("Looking ahead is not monotonically better.",
         f"E1: lookahead depth 2 wins for 0-1 ({e1['lookahead (depth 2)']['0-1']:.2f} vs greedy {g['0-1']:.2f}) "
         f"but loses for Hamming ({e1['lookahead (depth 2)']['Hamming']:.2f} vs {g['Hamming']:.2f})."),
        ("Only τ = 1 sampling matches the distribution.",
         f"E1 at τ = 1: KL(P‖r) = {DistributionMatch('kl').between(p, p):.3f}. At τ = 0.5: KL = "
         f"{DistributionMatch('kl').between(p, r):.4f}, TV = {DistributionMatch('tv').between(p, r):.4f}."),
        ("Per-token temperature goes to greedy, not to the mode.",
         "As τ → 0 per-token sampling piles onto the greedy path; sequence-level tempering P(y)^(1/τ)/Z piles "
         "onto the mode. Try the τ slider below with classroom mode off."),
        ("No fast decoder finds the mode of every distribution.",
         "Hidden path and SAT trap presets: greedy, lookahead and narrow beams all miss the mode; finding it "
         "can take exponential search."),
        ("Greedy is optimal less often as #states and α grow.",
         "See the heatmap below (classroom mode off): the fraction of random Markov chains on which greedy is "
         "Hamming-optimal falls from left to right and from top to bottom."),
    ]


def _move(delta: int, n: int) -> None:
    st.session_state.th_class_step = min(max(st.session_state.th_class_step + delta, 0), n - 1)


def draw_classroom() -> None:
    claims = _claims()
    i = min(int(st.session_state.th_class_step), len(claims) - 1)
    headline, evidence = claims[i]
    st.markdown(f"<div style='font-size:2.4em;font-weight:700;line-height:1.2'>{i + 1}. {headline}</div>"
                f"<div style='font-size:1.6em;margin-top:0.6em'>{evidence}</div>", unsafe_allow_html=True)
    c1, c2, c3 = st.columns([1, 1, 4])
    c1.button("◀ Previous", key="th_prev", on_click=_move, args=(-1, len(claims)), disabled=i == 0)
    c2.button("Next ▶", key="th_next", on_click=_move, args=(1, len(claims)), disabled=i == len(claims) - 1)
    c3.progress((i + 1) / len(claims), text=f"claim {i + 1} of {len(claims)}")


STATE_RULES = {
    "th_kind": ("Toy", ("Preset", "Binary tree", "Markov chain"), "Preset, Binary tree or Markov chain"),
    "th_preset": ("Preset", tuple(PRESETS), "one of " + ", ".join(PRESETS)),
    "th_n": ("Length n", in_range(1, MAX_TREE_N, True), f"an integer from 1 to {MAX_TREE_N}"),
    "th_states": ("States", in_range(2, 6, True), "an integer from 2 to 6"),
    "th_alpha": ("Dirichlet α", in_range(0.01, 100.0), "> 0 (from 0.01 to 100)"),
    "th_length": ("Length", in_range(1, 6, True), "an integer from 1 to 6"),
    "th_chain_seed": ("Chain seed", in_range(0, 2**31 - 1, True), "an integer from 0 to 2147483647"),
    "th_tau": ("τ", in_range(0.05, 3.0), "from 0.05 to 3"),
    "th_sampler_tau": ("Sampler τ", in_range(0.05, 5.0), "from 0.05 to 5"),
    "th_n_draws": ("N draws", SAMPLE_SIZES, "one of " + ", ".join(map(str, SAMPLE_SIZES))),
    "th_metric": ("Fraction of chains where", tuple(SWEEP_METRICS), "one of " + ", ".join(SWEEP_METRICS)),
    "th_chains": ("Chains per cell", SWEEP_CHAINS, "one of " + ", ".join(map(str, SWEEP_CHAINS))),
    "th_classroom": ("Classroom mode", (True, False), "True or False"),
    "th_class_step": ("Classroom step", in_range(0, 99, True), "an integer >= 0"),
}

ctx = setup_page("Theory lab", "🧪", sidebar="goal")
if ctx is None:
    st.stop()
declare_state(STATE)
check_state(STATE_RULES)
try:
    spec = toy_ui()
    truth = build_toy(spec)
    if isinstance(ctx.goal, NGramHamming) and ctx.goal.n > truth.length:
        raise ValueError(f"N (the N-gram window) must be from 1 to the toy's length {truth.length}, got {ctx.goal.n}")
except Exception as exc:  # noqa: BLE001
    show_error(exc)
    st.stop()

if st.toggle("Classroom mode", key="th_classroom", help="Step through the claims with large fonts."):
    draw_classroom()
    st.stop()

for draw in (lambda: draw_table(spec, truth, ctx, float(st.session_state.th_tau)), lambda: draw_temperature(truth),
             lambda: draw_sampling(truth, ctx.seed), lambda: draw_sweep(ctx.seed)):
    try:
        draw()
    except Exception as exc:  # noqa: BLE001 - one failing section does not hide the others
        show_error(exc)
