"""What the lab pages' exact computations cost on this machine, so the Theory lab and the Consistency
page can predict a click's seconds before running it and cap what would take too long (issue 15).

The labs run no neural model: their cost is enumeration on toys (every output of a sampler, every
sequence of the truth scored under a goal), seeded runs of decoders that cannot be enumerated (MBR),
draws, and the greedy-optimality sweep. ``measure`` times each of those building blocks once on small
reference toys (about 0.2 s; ``measured`` caches it for the process) and ``LabCost`` predicts a
computation's seconds from them, linearly in what it enumerates. ``cap_settings`` lowers a page's
settings, in the page's order of preference, until the prediction fits a budget (``core.cost.fit``
for each), saying what it capped (``core.cost.Capped``).

Predictions are deliberately on the safe side where a count is unknown before running (e.g. MBR's
distinct outputs are taken as min(runs, sequences)). Timings never change a number a page shows:
they only decide which request runs.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from core.cost import Capped, fit

REFERENCE_STATES, REFERENCE_LENGTH = 4, 6  # the reference chain: 4^6 = 4096 sequences
REFERENCE_TABLE = (4, 5)  # a table of 4^5 = 1024 sequences, for building models q per prefix
REPEATS = 2  # each timing is the fastest of this many runs


@dataclass(frozen=True)
class LabCost:
    """Measured seconds of the labs' building blocks.

    Attributes:
        overhead_s: one decoder run on one model, or one scoring call, on a tiny toy (fixed costs).
        output_s: per output of a sampler's enumerated output distribution.
        score_s: per truth sequence, scoring an output distribution under a goal: ((goal, s), ...);
            goals not listed cost the largest listed.
        model_s: per truth sequence, building one model q (a mixture or a fitted model).
        mbr_s: per step of one MBR run (32 candidates, as many references).
        draw_s: per token of a seeded draw ("sample N times").
        sweep_s: per unit of the greedy-optimality sweep (chains x length x states², summed over cells).
    """

    overhead_s: float
    output_s: float
    score_s: tuple[tuple[object, float], ...]
    model_s: float
    mbr_s: float
    draw_s: float
    sweep_s: float

    def score(self, goal) -> float:
        """Seconds per truth sequence of scoring one output distribution under ``goal``."""
        known = dict(self.score_s)
        return known.get(goal, max(known.values(), default=0.0))

    # ---- predictions ------------------------------------------------------------------------------

    def decoder_seconds(self, decoder, goals: Sequence, sequences: int, steps: int, runs: int) -> float:
        """One decoder run on one model and its risks under every goal of ``goals``: an enumerable
        decoder's output distribution (samplers: every output) scored once per goal; a decoder that
        cannot be enumerated (MBR) run ``runs`` times and each distinct output scored."""
        n = max(1, int(sequences))
        if decoder.is_random and not hasattr(decoder, "warp"):
            distinct = min(int(runs), n)
            scoring = sum(self.score(g) * n * (distinct if g.pointwise else 1) for g in goals)
            return self.overhead_s * (1 + len(goals)) + runs * steps * self.mbr_s + scoring
        enumerate_s = self.output_s * n if decoder.is_random else 0.0
        return self.overhead_s * (1 + len(goals)) + enumerate_s + sum(self.score(g) * n for g in goals)

    def curve_seconds(self, decoder, goal, family: str, points: int, sequences: int, steps: int, n_seeds: int,
                      runs: int) -> float:
        """A consistency curve of ``points`` models q (``n_seeds`` fitted models per point for the learned
        family) plus the decoder's risk at q = p."""
        models = points * (n_seeds if family == "learned" else 1)
        one = self.decoder_seconds(decoder, [goal], sequences, steps, runs)
        return models * (one + self.model_s * max(1, sequences)) + one

    def temperature_seconds(self, sequences: int) -> float:
        """Two enumerated output distributions, the sequence-tempered one and their divergences."""
        return 3 * (self.overhead_s + self.output_s * max(1, sequences))

    def sampling_seconds(self, sequences: int, steps: int, draws: int) -> float:
        """A sampler's exact output distribution next to ``draws`` seeded draws of ``steps`` tokens."""
        return self.overhead_s + self.output_s * max(1, sequences) + self.draw_s * draws * steps

    def sweep_seconds(self, n_states: Sequence[int], alphas: Sequence[float], n_chains: int, length: int) -> float:
        return self.overhead_s + self.sweep_s * sweep_units(n_states, alphas, n_chains, length)


def sweep_units(n_states: Sequence[int], alphas: Sequence[float], n_chains: int, length: int) -> int:
    """The sweep's work: chains x length x states², summed over the (states, α) cells."""
    return n_chains * length * len(alphas) * sum(v * v for v in n_states)


# ---- measuring ----------------------------------------------------------------------------------


def _fastest(run: Callable[[], object]) -> float:
    run()  # warm-up: first-call allocations and caches
    best = math.inf
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def measure() -> LabCost:
    """Time the labs' building blocks on reference toys (about 0.2 s on 2 cores)."""
    from core.compare import empirical_distribution
    from core.consistency import learned_model, mixture_model
    from core.decoders import Greedy, Sampling
    from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
    from core.mbr import MBR
    from core.theory import greedy_optimality_sweep
    from core.toy import PRESETS, output_distribution, random_markov_chain, random_table

    chain = random_markov_chain(REFERENCE_STATES, 1.0, REFERENCE_LENGTH, seed=0)
    n, steps = REFERENCE_STATES**REFERENCE_LENGTH, REFERENCE_LENGTH
    tiny = PRESETS["E1"].build()
    overhead = _fastest(lambda: Greedy().decode(tiny, [], 2))
    output = _fastest(lambda: output_distribution(Sampling(), chain, steps)) / n
    r = output_distribution(Sampling(), chain, steps)
    goals = (ZeroOne(), Hamming(), NGramHamming(2), DistributionMatch("kl"), DistributionMatch("tv"))
    score = tuple((g, _fastest(lambda g=g: g.exact_risk(chain, steps, r)) / n) for g in goals)
    table = random_table(*REFERENCE_TABLE, seed=0)
    size = REFERENCE_TABLE[0] ** REFERENCE_TABLE[1]
    model = max(_fastest(lambda: mixture_model(table, 0.1, 0)), _fastest(lambda: learned_model(table, 1000, 0))) / size
    mbr = MBR(Hamming())
    mbr_step = _fastest(lambda: mbr.decode(chain, [], steps, seed=1)) / steps
    draws = 256
    draw = _fastest(lambda: empirical_distribution(chain, Sampling(), steps, draws, 0)) / (draws * steps)
    states, alphas, chains, length = (2, 4, 8), (1.0,), 100, 8
    sweep = _fastest(lambda: greedy_optimality_sweep(states, alphas, chains, length, seed=0))
    return LabCost(overhead, output, score, model, mbr_step, draw, sweep / sweep_units(states, alphas, chains, length))


@functools.cache
def measured() -> LabCost:
    """``measure()``, once per process."""
    return measure()


# ---- capping settings to a budget ---------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A setting a page may lower to fit its budget: ``key`` in the settings, ``name`` in words, the
    lowest value it may be capped to, and its allowed values (``choices``, ascending) when it has a
    fixed list."""

    key: str
    name: str
    low: int
    choices: tuple[int, ...] | None = None


def cap_settings(predict: Callable[[Mapping[str, int]], float], requested: Mapping[str, int],
                 order: Sequence[Setting], budget_s: float) -> tuple[dict[str, int], list[Capped], bool]:
    """(the settings to run, what was capped, whether they fit ``budget_s``): lower each setting of
    ``order`` in turn, as little as makes ``predict(settings)`` fit (``core.cost.fit``; a setting with
    ``choices`` moves along them), until it fits or every setting is at its lowest. ``predict`` must not
    decrease in any setting. Every ``Capped`` states the requested and the capped prediction of the
    whole computation."""
    current = dict(requested)
    caps: list[Capped] = []
    for s in order:
        if predict(current) <= budget_s:
            break
        value = current[s.key]
        if s.choices is not None:
            if value not in s.choices:
                raise ValueError(f"{s.key} must be one of {', '.join(map(str, s.choices))}, got {value!r}")
            at = lambda i, s=s: predict({**current, s.key: s.choices[i]})  # noqa: E731
            index = s.choices.index(value)
            capped = fit(at, index, min(index, s.choices.index(s.low)), budget_s, s.name)
            if capped is not None:
                caps.append(replace(capped, requested=value, allowed=s.choices[capped.allowed]))
                current[s.key] = s.choices[capped.allowed]
        else:
            at = lambda v, s=s: predict({**current, s.key: v})  # noqa: E731
            capped = fit(at, value, min(value, s.low), budget_s, s.name)
            if capped is not None:
                caps.append(capped)
                current[s.key] = capped.allowed
    full, allowed = predict(requested), predict(current)
    return current, [replace(c, requested_s=full, allowed_s=allowed) for c in caps], allowed <= budget_s
