"""The lab pages' cost guards: predicted seconds (``core.lab_cost``, measured once in this run) against the
measured seconds of the same computations, as the Theory lab and the Consistency page run them (issue 15:
no click may run longer than its prediction + 50% without showing partial results). Prints each case's
prediction, measurement and ratio measured / predicted; the goal is a ratio <= 1.5 for every case that
takes long enough to matter (>= 0.1 s). Over-prediction (ratio < 1) only caps settings earlier.

``BENCH_SMOKE=1`` runs three tiny cases (a check that the script works; its numbers mean nothing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from bench import goal, header
from core.consistency import grid, risk_curve, risk_row
from core.decoders import MBR, Greedy, Lookahead, Sampling
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.lab_cost import measure
from core.presets import PRESETS
from core.theory import greedy_optimality_sweep
from core.toy import output_distribution, random_markov_chain, random_table

SMOKE = bool(os.environ.get("BENCH_SMOKE"))
MATTERS_S = 0.1  # cases shorter than this are reported but not judged


def seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cases(cost) -> list[tuple[str, float, Callable[[], object]]]:
    """(name, predicted seconds, the computation) for the pages' typical and largest settings."""
    e1, chain5 = PRESETS["E1"].build(), random_markov_chain(4, 0.5, 5, 1)
    out = []
    toys = [("E1", e1), ("chain 4^5", chain5)]
    if not SMOKE:
        toys += [("SAT trap 2^8", PRESETS["SAT trap"].build()), ("table 3^6", random_table(3, 6, 0)),
                 ("chain 6^6", random_markov_chain(6, 0.5, 6, 1))]
    decoders = [Greedy(), Sampling(temperature=0.5)] + ([] if SMOKE else [Lookahead(2), MBR(Hamming())])
    for name, truth in toys:
        n = truth.length
        for family in ("mixture",) if SMOKE else ("mixture", "learned"):
            if family == "learned" and truth.vocab_size**n > 5000:
                continue
            for d in decoders:
                for g in (ZeroOne(), Hamming()):
                    seeds, runs, xs = 5, 16, grid(family, 1 if SMOKE else 2)
                    out.append((f"curve {family:7s} {name:12s} {d.label:22s} {g.name:7s}",
                                cost.curve_seconds(d, g, family, len(xs), truth, n, seeds, runs),
                                lambda t=truth, d=d, g=g, f=family, xs=xs, s=seeds, r=runs: [
                                    risk_curve(t, d, g, f, xs, t.length, 0, n_seeds=s, n_draws=r),
                                    risk_row([g], t, d, t.length, 0, r)]))
        goals = [ZeroOne(), Hamming()] + ([NGramHamming(2)] if n >= 3 else []) + [DistributionMatch("kl"),
                                                                                  DistributionMatch("tv")]
        table = [Greedy(), Sampling(temperature=0.5), Sampling(min_p=0.1)] + ([] if SMOKE else [MBR(ZeroOne())])
        out.append((f"table {name:12s} {len(table)} decoders x {len(goals)} goals",
                    sum(cost.decoder_seconds(d, goals, truth, n, 64) for d in table),
                    lambda t=truth, ds=table, gs=goals: [risk_row(gs, t, d, t.length, 0, 64) for d in ds]))
        out.append((f"temperature {name:12s}", cost.temperature_seconds(truth),
                    lambda t=truth: [output_distribution(Sampling(temperature=tau), t, t.length) for tau in (1, .5)]))
    chains = 50 if SMOKE else 500
    states, alphas = (2, 3, 4, 6, 8), (0.1, 0.3, 1.0, 3.0, 10.0)
    out.append((f"sweep {chains} chains per cell", cost.sweep_seconds(states, alphas, chains, 8),
                lambda: greedy_optimality_sweep(states, alphas, chains, 8, seed=0)))
    return out


def main() -> dict[str, float]:
    header("labs: predicted vs measured seconds of the Theory lab's and the Consistency page's computations")
    t = time.perf_counter()
    cost = measure()
    print(f"  measuring the lab costs took {time.perf_counter() - t:.2f} s")
    worst, results = 0.0, {}
    for name, predicted, run in cases(cost):
        real = seconds(run)
        ratio = real / predicted if predicted > 0 else float("inf")
        results[name] = ratio
        judged = real >= MATTERS_S or predicted >= MATTERS_S
        worst = max(worst, ratio) if judged else worst
        print(f"  {name}: predicted {predicted:8.3f} s, measured {real:8.3f} s, ratio {ratio:5.2f}"
              + ("" if judged else " (too short to judge)"))
    print(f"  worst measured / predicted among cases >= {MATTERS_S} s: {worst:.2f} ({goal(worst <= 1.5)}: <= 1.5)")
    return results


if __name__ == "__main__":
    main()
