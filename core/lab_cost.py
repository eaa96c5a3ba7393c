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
import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from core.cost import Capped, fit

REFERENCE_STATES, REFERENCE_LENGTH = 4, 6  # the reference toys: a chain and a table of 4^6 = 4096 sequences
REPEATS = 3  # each timing is the median of this many runs (after one warm-up run)
GROWTH = 0.3  # beyond the reference size, per-sequence costs grow like (N / 4096)^GROWTH (allocations, caches)
KINDS = ("chain", "table")  # Markov chains score Hamming / N-gram goals from marginals; tables enumerate


@dataclass(frozen=True)
class LabCost:
    """Measured seconds of the labs' building blocks, per toy kind (``toy_kind``: "chain" or "table").

    Every per-kind field is a tuple of ((kind, what), seconds) pairs (hashable, printable). With N the
    toy's sequences (``sequences``):

    Attributes:
        overhead_s: fixed cost of one decoder run, one scoring call or building one model q (a tiny toy).
        output_s: ((kind, "output"), s) and ((kind, "prefix"), s): a sampler's enumerated output
            distribution costs s per output plus s per prefix it extends (binary toys have as many
            prefixes as outputs, wider ones fewer).
        truth_s: ((kind, goal), s): per truth sequence, the part of scoring an output distribution under
            a goal that enumerates the truth (once per call, e.g. 0-1 and KL on every toy).
        per_output_s: ((kind, goal), s): per output in the scored distribution.
        model_s: ((kind, family), s): per truth sequence, building one model q of the family.
        mbr_s: ((kind, (references, "run")), s) and ((kind, (references, "step")), s): one MBR run (32
            candidates; with ``references`` True as many references, which every goal but 0-1 needs) costs s
            per run plus s per step, on a model like a toy of ``kind`` (for tables: the models q the
            Consistency page builds from them, which look prefixes up one by one).
        draw_s: per token of a seeded draw ("sample N times").
        sweep_s: per unit of the greedy-optimality sweep (``sweep_units``).
    Goals a field does not list cost the largest listed for the kind.
    """

    overhead_s: float
    output_s: tuple[tuple[tuple[str, str], float], ...]
    truth_s: tuple[tuple[tuple[str, object], float], ...]
    per_output_s: tuple[tuple[tuple[str, object], float], ...]
    model_s: tuple[tuple[tuple[str, str], float], ...]
    mbr_s: tuple[tuple[tuple[str, str], float], ...]
    draw_s: float
    sweep_s: float

    @staticmethod
    def _lookup(table, kind: str, key) -> float:
        known = {k: t for (kd, k), t in table if kd == kind}
        return known[key] if key in known else max(known.values(), default=0.0)

    def score(self, kind: str, goal, outputs: int, truth_sequences: int) -> float:
        """Seconds of scoring a distribution over ``outputs`` outputs under ``goal`` on a toy of ``kind``."""
        return (self.overhead_s + self._lookup(self.truth_s, kind, goal) * truth_sequences
                + self._lookup(self.per_output_s, kind, goal) * outputs)

    def enumerate(self, truth) -> float:
        """Seconds of enumerating a sampler's output distribution on a model like the toy ``truth``."""
        kind = toy_kind(truth)
        return (self._lookup(self.output_s, kind, "output") * sequences(truth)
                + self._lookup(self.output_s, kind, "prefix") * prefixes(truth))

    def model(self, kind: str, family: str) -> float:
        """Seconds per truth sequence of building one model q of ``family`` like a toy of ``kind``."""
        return self._lookup(self.model_s, kind, family)

    # ---- predictions (``truth``: the toy, for its size and kind) ------------------------------------

    def decoder_seconds(self, decoder, goals: Sequence, truth, steps: int, runs: int) -> float:
        """One decoder run on one model like ``truth`` and its risks under every goal of ``goals``: an
        enumerable decoder's output distribution (samplers: every output) scored once per goal; a decoder
        that cannot be enumerated (MBR) run ``runs`` times and each distinct output scored."""
        n, kind = sequences(truth), toy_kind(truth)
        if decoder.is_random and not hasattr(decoder, "warp"):
            distinct = min(int(runs), n)
            refs = decoder.goal.needs_references(steps)
            fixed, per_step = (self._lookup(self.mbr_s, kind, (refs, what)) for what in ("run", "step"))
            scoring = sum(distinct * self.score(kind, g, 1, n) if g.pointwise else self.score(kind, g, distinct, n)
                          for g in goals)
            return self.overhead_s + runs * (fixed + per_step * steps) + scoring
        outputs = n if decoder.is_random else 1
        enumerate_s = self.enumerate(truth) if decoder.is_random else 0.0
        return self.overhead_s + enumerate_s + sum(self.score(kind, g, outputs, n) for g in goals)

    def curve_seconds(self, decoder, goal, family: str, points: int, truth, steps: int, n_seeds: int,
                      runs: int) -> float:
        """A consistency curve of ``points`` models q (``n_seeds`` fitted models per point for the learned
        family) plus the decoder's risk at q = p."""
        models = points * (n_seeds if family == "learned" else 1)
        one = self.decoder_seconds(decoder, [goal], truth, steps, runs)
        build = self.overhead_s + self.model(toy_kind(truth), family) * sequences(truth)
        return models * (one + build) + one

    def temperature_seconds(self, truth) -> float:
        """Two enumerated output distributions, the sequence-tempered one and their divergences."""
        return 3 * (self.overhead_s + self.enumerate(truth))

    def sampling_seconds(self, truth, draws: int) -> float:
        """A sampler's exact output distribution next to ``draws`` seeded draws of the toy's length."""
        return self.overhead_s + self.enumerate(truth) + self.draw_s * draws * truth.length

    def sweep_seconds(self, n_states: Sequence[int], alphas: Sequence[float], n_chains: int, length: int) -> float:
        return self.overhead_s + self.sweep_s * sweep_units(n_states, alphas, n_chains, length)


def sequences(truth) -> int:
    """The sequences an exact computation on the toy enumerates, V^length (an upper bound on its support),
    weighted by (N / 4096)^GROWTH beyond the reference size: the N of the per-sequence costs."""
    n = max(1, int(truth.vocab_size) ** int(truth.length))
    reference = REFERENCE_STATES**REFERENCE_LENGTH
    return n if n <= reference else round(n * (n / reference) ** GROWTH)


def prefixes(truth) -> int:
    """The prefixes an enumeration extends: Σ_t V^t for t < length (weighted like ``sequences``)."""
    v, n = int(truth.vocab_size), sequences(truth)
    return n if v <= 1 else max(1, round((n - 1) / (v - 1)))


def toy_kind(truth) -> str:
    """"chain" for Markov chains (marginals by recursion), "table" for every other toy (enumerated)."""
    from core.toy import MarkovChain

    return "chain" if isinstance(truth, MarkovChain) else "table"


def sweep_units(n_states: Sequence[int], alphas: Sequence[float], n_chains: int, length: int) -> int:
    """The sweep's work: chains x length x states², summed over the (states, α) cells."""
    return n_chains * length * len(alphas) * sum(v * v for v in n_states)


# ---- measuring ----------------------------------------------------------------------------------


def _typical(run: Callable[[], object]) -> float:
    """Median seconds of ``REPEATS`` runs after a warm-up run (first-call allocations and caches)."""
    run()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure() -> LabCost:
    """Time the labs' building blocks on reference toys (about 0.2 s on 2 cores, after the imports)."""
    from core.compare import empirical_distribution
    from core.consistency import FAMILIES, learned_model, mixture_model
    from core.decoders import Greedy, Sampling
    from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
    from core.mbr import MBR
    from core.theory import greedy_optimality_sweep
    from core.toy import PRESETS, output_distribution, random_markov_chain, random_table

    v, steps = REFERENCE_STATES, REFERENCE_LENGTH
    n = v**steps
    toys = {"chain": random_markov_chain(v, 1.0, steps, seed=0), "table": random_table(v, steps, seed=0)}
    tiny = PRESETS["E1"].build()
    overhead = max(_typical(lambda: Greedy().decode(tiny, [], 2)), _typical(lambda: mixture_model(tiny, 0.1, 0)))
    build = {"mixture": lambda toy: mixture_model(toy, 0.1, 0), "learned": lambda toy: learned_model(toy, 1000, 0)}
    goals = (ZeroOne(), Hamming(), NGramHamming(2), DistributionMatch("kl"), DistributionMatch("tv"))
    binary = {"chain": random_markov_chain(2, 1.0, 2 * steps, seed=0), "table": random_table(2, 2 * steps, seed=0)}
    output, truth, per_output, model = [], [], [], []
    for kind, toy in toys.items():
        wide = _typical(lambda toy=toy: output_distribution(Sampling(), toy, steps))
        narrow = _typical(lambda toy=binary[kind]: output_distribution(Sampling(), toy, 2 * steps))
        wide_prefixes, narrow_prefixes = (n - 1) // (v - 1), n - 1  # binary toy: 2^12 = 4096 outputs too
        per_prefix = max(narrow - wide, 0.0) / (narrow_prefixes - wide_prefixes)
        output += [((kind, "output"), max(wide - per_prefix * wide_prefixes, 0.0) / n), ((kind, "prefix"), per_prefix)]
        full = output_distribution(Sampling(), toy, steps)
        point = {next(iter(full)): 1.0}
        for g in goals:
            one = _typical(lambda g=g, toy=toy, r=point: g.exact_risk(toy, steps, r))
            every = _typical(lambda g=g, toy=toy, r=full: g.exact_risk(toy, steps, r))
            truth.append(((kind, g), one / n))
            per_output.append(((kind, g), max(every - one, 0.0) / n))
        model += [((kind, f), _typical(lambda f=f, toy=toy: build[f](toy)) / n) for f in FAMILIES]
    mbr_s = []
    shorts = {"chain": random_markov_chain(v, 1.0, 2, seed=0),
              "table": mixture_model(random_table(v, 2, seed=0), 0.1, 0)}
    longs = {"chain": toys["chain"], "table": mixture_model(toys["table"], 0.1, 0)}
    for kind, refs in itertools.product(KINDS, (False, True)):
        mbr = MBR(Hamming() if refs else ZeroOne())
        short = _typical(lambda m=shorts[kind], mbr=mbr: mbr.decode(m, [], 2, seed=1))
        long = _typical(lambda m=longs[kind], mbr=mbr: mbr.decode(m, [], steps, seed=1))
        per_step = max(long - short, 0.0) / (steps - 2)
        mbr_s += [((kind, (refs, "run")), max(short - 2 * per_step, 0.0)), ((kind, (refs, "step")), per_step)]
    draws = 256
    draw = _typical(lambda: empirical_distribution(toys["chain"], Sampling(), steps, draws, 0)) / (draws * steps)
    states, alphas, chains, length = (2, 4, 8), (1.0,), 100, 8
    sweep = _typical(lambda: greedy_optimality_sweep(states, alphas, chains, length, seed=0))
    units = sweep_units(states, alphas, chains, length)
    return LabCost(overhead, tuple(output), tuple(truth), tuple(per_output), tuple(model), tuple(mbr_s), draw,
                   sweep / units)


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
    decrease in any setting. Settings already at their lowest are left out of the caps. Every ``Capped``
    states the requested and the capped prediction of the whole computation."""
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
            if capped is not None and capped.allowed != index:
                caps.append(replace(capped, requested=value, allowed=s.choices[capped.allowed]))
                current[s.key] = s.choices[capped.allowed]
        else:
            at = lambda v, s=s: predict({**current, s.key: v})  # noqa: E731
            capped = fit(at, value, min(value, s.low), budget_s, s.name)
            if capped is not None and capped.allowed != value:
                caps.append(capped)
                current[s.key] = capped.allowed
    full, allowed = predict(requested), predict(current)
    return current, [replace(c, requested_s=full, allowed_s=allowed) for c in caps], allowed <= budget_s
