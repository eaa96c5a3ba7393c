"""Theory lab: small toy distributions where every risk is exact, to check the claims by enumeration.
Every section predicts its seconds first (``pages.lab_guard``) and caps its settings to its share of the
budget per click, or runs the full computation on request; the table fills in row by row."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from core.claims import Claim, all_claims, output_text
from core.compare import empirical_distribution
from core.consistency import bayes_rows, is_enumerable, risk_row
from core.decoders import MBR, Beam, Greedy, Lookahead, Sampling
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.lab_cost import Setting
from core.theory import METRICS, greedy_optimality_sweep
from core.toy import output_distribution, sequence_tempered
from pages.charts import distribution_bars, interval_heatmap, show_chart
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

SAMPLE_SIZES = (10, 100, 1000, 10000)
SWEEP_STATES = (2, 3, 4, 6, 8)
SWEEP_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0)
SWEEP_CHAINS = (50, 200, 500)
SWEEP_LENGTH = 8
SWEEP_METRICS = {name: field for field, name in METRICS.items()}
MBR_RUNS = (16, 64, 256)
MORE_SAMPLERS = {warper_label(cls): cls for cls in sampler_classes() if cls.arg() != "temperature"}  # τ has its row
SHARES = {"table": 0.4, "temperature": 0.1, "sampling": 0.15, "sweep": 0.15}  # of the budget per click; the
# claims (about 2 s, once per process) take the rest
E1 = ("Preset", "E1")
STATE = {**toy_state("th"), "th_tau": 0.5, "th_sampler_tau": 1.0, "th_n_draws": 1000,
         "th_metric": "greedy is Hamming-optimal", "th_chains": 200, "th_classroom": False, "th_class_step": 0,
         "th_more": [], "th_mbr": True, "th_mbr_runs": 64,
         **{f"th_{cls.arg()}": cls.example for cls in MORE_SAMPLERS.values()}}


def lab_goals(length: int, extra) -> list:
    goals = [ZeroOne(), Hamming()] + ([NGramHamming(2)] if length >= 3 else [])
    goals += [DistributionMatch("kl"), DistributionMatch("tv")]
    return goals + ([extra] if extra not in goals else [])


def lab_decoders(length: int, tau: float) -> list:
    depths = [d for d in (2, 3) if d <= length]
    return [Greedy(), *[Lookahead(d) for d in depths], Beam(2), Sampling(temperature=tau), Sampling()]


@st.cache_data(max_entries=512, show_spinner=False, hash_funcs=DECODER_HASH)
def table_row(spec: tuple, goals: tuple, decoder, seed: int, runs: int) -> dict:
    truth = build_toy(spec)
    return risk_row(goals, truth, decoder, truth.length, seed, runs)


@st.cache_data(max_entries=64, show_spinner=False)
def bayes_table_rows(spec: tuple, goals: tuple) -> list[dict]:
    truth = build_toy(spec)
    return bayes_rows(goals, truth, truth.length)


@st.cache_data(max_entries=1, show_spinner=False)
def claims() -> dict[str, Claim]:
    return all_claims()


def more_samplers_ui(goal) -> tuple[list, bool]:
    """The "More samplers" control: (the extra samplers, whether MBR under the sidebar goal joins)."""
    with st.expander("More samplers", expanded=bool(st.session_state.th_more)):
        chosen = st.multiselect("Samplers from transformers' warper chain (and top-nσ)", list(MORE_SAMPLERS),
                                key="th_more", help="Each joins the table as Sampling(<its parameter>) at τ = 1, "
                                                    "exact like the others.")
        cols = st.columns(4)
        for i, name in enumerate(chosen):
            cls = MORE_SAMPLERS[name]
            warper_input(cols[i % 4], cls, f"th_{cls.arg()}")
        c1, c2 = st.columns([2, 3])
        mbr = c1.toggle(f"MBR ({goal.name})", key="th_mbr", disabled=not goal.pointwise,
                        help="Minimum Bayes risk decoding under the sidebar's goal: the best of 32 ε-sampled "
                             "candidates (ε = 0.02). Not enumerable, so its risk is estimated from seeded runs.")
        c2.select_slider("MBR runs", MBR_RUNS, key="th_mbr_runs", disabled=not (mbr and goal.pointwise))
        if not goal.pointwise:
            st.caption("MBR needs a pointwise goal (0-1, Hamming or N-gram Hamming): pick one in the sidebar.")
    samplers = [warper_sampler(MORE_SAMPLERS[n], st.session_state[f"th_{MORE_SAMPLERS[n].arg()}"]) for n in chosen]
    return samplers, mbr and goal.pointwise


def band_text(row: dict, goal_col: str) -> str:
    """An estimated row's 95% band for the sidebar's goal, for the caption under the table."""
    low, high, n = row[f"{goal_col} (95% low)"], row[f"{goal_col} (95% high)"], row["runs"]
    text = f"{row['decoder']}: {goal_col} risk {row[goal_col]:.4f}, 95% band [{low:.4f}, {high:.4f}] over {n} runs"
    if low == high:  # the rule of three: an outcome never seen in n runs has probability < 3/n (95%)
        text += f" (every run scored the same: outcomes rarer than 3/{n} may be unseen)"
    return text + "."


def table_frame(rows: list[dict], truth, goals, goal_col: str) -> pd.DataFrame:
    table = pd.DataFrame([{"decoder": r["decoder"], "output": "random" if r["output"] is None else
                           output_text(truth, r["output"]), "risk is": "exact" if r["runs"] is None else "estimated",
                           **{g.name: r[g.name] for g in goals}} for r in rows])
    table = table.sort_values(goal_col, kind="stable").reset_index(drop=True)
    table.insert(3, f"regret ({goal_col})", table[goal_col] - table[goal_col].min())
    return table


def draw_table(spec, truth, ctx, tau: float) -> None:
    st.subheader("Exact risk of every decoder for every goal")
    extra, with_mbr = more_samplers_ui(ctx.goal)
    goals = tuple(lab_goals(truth.length, ctx.goal))
    cost, steps, pointwise = costs(), truth.length, sum(g.pointwise for g in goals)
    mbr = MBR(ctx.goal) if with_mbr else None

    def decoders(settings) -> list:
        return lab_decoders(steps, tau) + extra[: settings["extra"]] + ([mbr] if mbr else [])

    def predict(settings) -> float:
        return (sum(cost.decoder_seconds(d, goals, truth, steps, settings.get("runs", 0)) for d in decoders(settings))
                + pointwise * cost.decoder_seconds(Greedy(), goals, truth, steps, 0))

    requested = {"extra": len(extra), **({"runs": int(st.session_state.th_mbr_runs)} if mbr else {})}
    order = ([Setting("runs", "MBR runs", MBR_RUNS[0], MBR_RUNS)] if mbr else []) + [
        Setting("extra", "More samplers in the table", 0)]
    settings = guard("th_table", "The exact table", (spec, goals, tau, tuple(extra), mbr, ctx.seed), requested,
                     predict, order, SHARES["table"])
    if settings is None:
        return
    todo = decoders(settings)
    place, progress, rows = st.empty(), Progress("Decoders scored", len(todo) + 1), []
    for d in todo:
        seed, runs = (0, 0) if is_enumerable(d) else (ctx.seed, settings["runs"])  # exact rows: one cache entry
        rows.append(table_row(spec, goals, d, seed, runs))
        if progress.tick() and len(rows) < len(todo):
            place.dataframe(table_frame(rows, truth, goals, ctx.goal.name), hide_index=True, width="stretch")
    rows += bayes_table_rows(spec, goals)
    progress.tick()
    progress.close()
    table = table_frame(rows, truth, goals, ctx.goal.name)
    goal_cols = [g.name for g in goals]
    styled = table.style.format(precision=4).highlight_min(subset=goal_cols, color="#b2f2bb")
    place.dataframe(styled, hide_index=True, width="stretch", key="th_table")
    note = (f"Sorted by the sidebar's goal ({ctx.goal.name}). Green: the smallest risk in each column, reached by "
            "that goal's Bayes output (for KL / TV: sampling at τ = 1). Exact: enumerated over all "
            f"{truth.vocab_size}^{truth.length} sequences and over each sampler's own randomness.")
    if mbr:
        note += (f" {mbr.label} is not enumerable: its risks are **estimated**, the mean of the exact risks of "
                 f"{settings['runs']} seeded runs (seed {ctx.seed}) with the 95% t-interval of that mean for "
                 f"{ctx.goal.name}; its KL and TV are plug-in values of the runs' empirical distribution.")
        note += "".join(" " + band_text(r, ctx.goal.name) for r in rows if r["runs"] is not None)
    st.caption(" ".join(t for t in (note, eos_note(truth)) if t))
    st.download_button("Download table (CSV)", table.to_csv(index=False), "theory_table.csv", "text/csv",
                       key="th_csv")


def draw_claim_table(key: str, claim: Claim) -> None:
    frame = pd.DataFrame(list(claim.rows))
    st.dataframe(frame, hide_index=True, width="stretch", key=f"th_claim_{key}")
    st.download_button("Download these numbers (CSV)", frame.to_csv(index=False), f"claim_{key}.csv", "text/csv",
                       key=f"th_claim_csv_{key}")


def draw_claims() -> None:
    st.subheader("The claims, checked exactly")
    st.caption("Each claim of the worked examples, recomputed by enumeration every time this page runs: ✅ means its "
               "numbers come out as stated.")
    for key, claim in claims().items():
        with st.expander(f"{'✅' if claim.holds else '❌'} {claim.key}: {claim.title}"):
            st.markdown(claim.evidence)
            draw_claim_table(key, claim)


def labelled(truth, dist: dict) -> dict:
    return {output_text(truth, k): v for k, v in dist.items()}


def draw_temperature(truth, spec) -> None:
    st.subheader("Per-token temperature is not sequence-level tempering")
    tau = st.slider("τ", 0.05, 3.0, step=0.05, key="th_tau")
    if guard("th_temp", "The temperature comparison", (spec, tau), {}, lambda s: costs().temperature_seconds(truth),
             share=SHARES["temperature"]) is None:
        return
    label = lambda d: labelled(truth, d)
    p = label(output_distribution(Sampling(), truth, truth.length))
    r = label(output_distribution(Sampling(temperature=tau), truth, truth.length))
    q = label(sequence_tempered(truth, tau))
    series = {"P": p, f"per-token τ={tau:g}": r, f"sequence-level P^(1/τ)/Z, τ={tau:g}": q}
    rows = [{"output": y, "P": p.get(y, 0.0), "per-token r_τ": r.get(y, 0.0), "sequence-level P^(1/τ)/Z": q.get(y, 0.0),
             "τ": tau} for y in dict.fromkeys([*p, *r, *q])]
    show_chart(distribution_bars(series, "Output distributions"), rows, "th_temp", "temperature")
    kl, tv = DistributionMatch("kl"), DistributionMatch("tv")
    st.caption(f"Per-token sampling at τ = {tau:g}: KL(P‖r) = {kl.between(p, r):.5f}, TV = "
               f"{tv.between(p, r):.5f}. As τ → 0 per-token sampling concentrates on the greedy path, "
               "sequence-level tempering on the mode.")


def draw_sampling(truth, spec, seed: int) -> None:
    st.subheader("Sample N times: empirical vs exact")
    c1, c2 = st.columns(2)
    tau = c1.number_input("Sampler τ", min_value=0.05, max_value=5.0, step=0.1, key="th_sampler_tau")
    c2.select_slider("N draws", SAMPLE_SIZES, key="th_n_draws")
    settings = guard("th_sampling", "Sampling N times", (spec, float(tau), seed),
                     {"draws": int(st.session_state.th_n_draws)},
                     lambda s: costs().sampling_seconds(truth, s["draws"]),
                     [Setting("draws", "N draws", SAMPLE_SIZES[0], SAMPLE_SIZES)], SHARES["sampling"])
    if settings is None:
        return
    n = settings["draws"]
    sampler = Sampling(temperature=float(tau))
    label = lambda d: labelled(truth, d)
    exact = label(output_distribution(sampler, truth, truth.length))
    with st.spinner(f"Drawing {n} samples…"):
        seen = label(empirical_distribution(truth, sampler, truth.length, int(n), seed))
    rows = [{"output": y, "exact r": exact.get(y, 0.0), f"fraction of {n} draws": seen.get(y, 0.0), "τ": tau,
             "seed": seed} for y in dict.fromkeys([*exact, *seen])]
    show_chart(distribution_bars({"exact output distribution r": exact, f"{n} draws (seed {seed})": seen},
                                 f"Sampling at τ = {tau:g}"), rows, "th_hist", "sampling")
    if eos_note(truth):
        st.caption(eos_note(truth))


@st.cache_data(max_entries=8, show_spinner=False)
def sweep(n_chains: int, seed: int):
    return greedy_optimality_sweep(SWEEP_STATES, SWEEP_ALPHAS, n_chains=n_chains, length=SWEEP_LENGTH, seed=seed)


def draw_sweep(seed: int) -> None:
    st.subheader("How often is greedy optimal? Random Markov chains")
    c1, c2 = st.columns(2)
    metric = c1.selectbox("Fraction of chains where", list(SWEEP_METRICS), key="th_metric")
    c2.select_slider("Chains per cell", SWEEP_CHAINS, key="th_chains")
    settings = guard("th_sweep", "The greedy-optimality sweep", seed, {"chains": int(st.session_state.th_chains)},
                     lambda s: costs().sweep_seconds(SWEEP_STATES, SWEEP_ALPHAS, s["chains"], SWEEP_LENGTH),
                     [Setting("chains", "Chains per cell", SWEEP_CHAINS[0], SWEEP_CHAINS)], SHARES["sweep"])
    if settings is None:
        return
    n_chains = settings["chains"]
    cells = len(SWEEP_STATES) * len(SWEEP_ALPHAS)
    with st.spinner(f"Drawing {n_chains} chains for each of {cells} cells…"):
        result = sweep(int(n_chains), seed)
    field = SWEEP_METRICS[metric]
    low, high = result.interval(field)
    fig = interval_heatmap(getattr(result, field), low, high, result.alphas, result.n_states,
                           f"{metric} ({result.n_chains} chains per cell)", "Dirichlet α", "#states",
                           "fraction of chains")
    show_chart(fig, result.rows(), "th_heat", "greedy_optimality")
    st.caption(f"Each cell: the fraction of {result.n_chains} random chains (length {result.length}, initial and "
               f"transition rows ~ Dirichlet(α·1), seed {seed}; {cells * result.n_chains:,} chains in all) and, in "
               "brackets, its 95% Wilson interval. Peaked rows (small α) make greedy's local choices globally right; "
               "flatter rows and more states make them fail.")


# ---- classroom: one claim per screen, each with the section it talks about ---------------------


def classroom_steps(seed: int) -> list[tuple[str, str, Callable[[], None]]]:
    """(headline, evidence, draw the section it points to) for every step of the walkthrough."""
    c = claims()
    e1 = build_toy(E1)
    table = lambda key: lambda: draw_claim_table(key, c[key])
    steps = [(c[k].title, c[k].evidence, table(k)) for k in ("E1", "E2", "temperature")]
    steps.append(("Try it: per-token temperature vs sequence-level tempering on E1.",
                  "Move τ: per-token sampling piles onto the greedy path AA as τ → 0, sequence-level tempering "
                  "P(y)^(1/τ)/Z onto the mode BA; only τ = 1 gives back P.", lambda: draw_temperature(e1, E1)))
    steps.append(("Sample N times vs theory.",
                  "Draw N sequences from E1 at τ: the fractions approach the exact output distribution r as N grows "
                  "(at τ = 1, r = P).", lambda: draw_sampling(e1, E1, seed)))
    steps += [(c[k].title, c[k].evidence, table(k)) for k in ("C1/C2", "C6", "C7", "C8", "C11", "C12", "C13", "C14")]
    steps.append(("Greedy is optimal less often as #states and α grow.",
                  "On random Markov chains, the fraction on which greedy is Hamming-optimal falls from left to right "
                  "(flatter rows) and from top to bottom (more states); each cell shows its 95% interval.",
                  lambda: draw_sweep(seed)))
    return steps


def _move(delta: int, n: int) -> None:
    st.session_state.th_class_step = min(max(st.session_state.th_class_step + delta, 0), n - 1)


def draw_classroom(seed: int) -> None:
    steps = classroom_steps(seed)
    i = min(int(st.session_state.th_class_step), len(steps) - 1)
    headline, evidence, section = steps[i]
    st.markdown(f"<div style='font-size:2.4em;font-weight:700;line-height:1.2'>{i + 1}. {headline}</div>"
                f"<div style='font-size:1.6em;margin-top:0.6em'>{evidence}</div>", unsafe_allow_html=True)
    c1, c2, c3 = st.columns([1, 1, 4])
    c1.button("◀ Previous", key="th_prev", on_click=_move, args=(-1, len(steps)), disabled=i == 0)
    c2.button("Next ▶", key="th_next", on_click=_move, args=(1, len(steps)), disabled=i == len(steps) - 1)
    c3.progress((i + 1) / len(steps), text=f"step {i + 1} of {len(steps)}")
    section()


STATE_RULES = {
    **toy_rules("th"),
    "th_tau": ("τ", in_range(0.05, 3.0), "from 0.05 to 3"),
    "th_sampler_tau": ("Sampler τ", in_range(0.05, 5.0), "from 0.05 to 5"),
    "th_n_draws": ("N draws", SAMPLE_SIZES, "one of " + ", ".join(map(str, SAMPLE_SIZES))),
    "th_metric": ("Fraction of chains where", tuple(SWEEP_METRICS), "one of " + ", ".join(SWEEP_METRICS)),
    "th_chains": ("Chains per cell", SWEEP_CHAINS, "one of " + ", ".join(map(str, SWEEP_CHAINS))),
    "th_classroom": ("Classroom mode", (True, False), "True or False"),
    "th_class_step": ("Classroom step", in_range(0, 99, True), "an integer >= 0"),
    "th_more": ("More samplers", lambda v: isinstance(v, list) and all(n in MORE_SAMPLERS for n in v),
                "a list of " + ", ".join(MORE_SAMPLERS)),
    "th_mbr": ("MBR", (True, False), "True or False"),
    "th_mbr_runs": ("MBR runs", MBR_RUNS, "one of " + ", ".join(map(str, MBR_RUNS))),
    **{f"th_{cls.arg()}": warper_rule(cls) for cls in MORE_SAMPLERS.values()},
}

ctx = setup_page("Theory lab", "🧪", sidebar="goal")
if ctx is None:
    st.stop()
declare_state(STATE)
check_state(STATE_RULES)
if st.toggle("Classroom mode", key="th_classroom", help="Step through the claims with large fonts, each with the "
                                                         "table or chart it talks about."):
    try:
        draw_classroom(ctx.seed)
    except Exception as exc:  # noqa: BLE001
        show_error(exc)
    st.stop()
try:
    spec = toy_ui("th", "E3 and E4 are claims about E1 (sampling and temperature below).")
    truth = build_toy(spec)
    check_goal_fits(ctx.goal, truth.length)
except Exception as exc:  # noqa: BLE001
    show_error(exc)
    st.stop()

for draw in (lambda: draw_table(spec, truth, ctx, float(st.session_state.th_tau)), draw_claims,
             lambda: draw_temperature(truth, spec), lambda: draw_sampling(truth, spec, ctx.seed),
             lambda: draw_sweep(ctx.seed)):
    try:
        draw()
    except Exception as exc:  # noqa: BLE001 - one failing section does not hide the others
        show_error(exc)
