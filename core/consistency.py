"""Consistency: as a next-token model q approaches the truth p, does a decoder's risk approach the
Bayes risk? (Trauger & Tewari's question; the app's Consistency page.)

A truth is an enumerable toy p (a table, a binary tree, a Markov chain). Two families of models q
approach it, indexed by x:

* ``"mixture"``, x = ε in (0, 1]: q_ε(· | prefix) = (1 − ε)·p(· | prefix) + ε·noise(· | prefix). The
  noise is one fixed conditional per prefix (tables, trees) or per state (Markov chains: q stays a
  chain), drawn from Dirichlet(1, ..., 1) with ``numpy.random.default_rng(seed)`` level by level in
  lexicographic prefix order (chains: the initial distribution, then the transition rows), or the
  uniform conditional with ``noise="uniform"``. Uniform noise never changes the order of a
  conditional's tokens, so it cannot move greedy; random noise can, for large ε. Exact: low == high.
* ``"learned"``, x = N: q is next-token prediction trained on N sequences drawn i.i.d. from p, i.e.
  add-α counts (α = ``LEARNED_ALPHA``, Krichevsky–Trofimov) per prefix (tables, trees) or per state
  (chains: initial counts and transition counts). The risk depends on the data, so each point is the
  mean over ``n_seeds`` independent data sets (data set i for N drawn with seed
  ``data_seed(seed, N, i)``), and (low, high) is the 95% Student-t interval for that mean
  (mean ± t_{.975, n_seeds-1}·sd/√n_seeds), clipped at 0 below. Each data set's risk is exact.

The risk of a decoder at x is exact under p: the decoder's output distribution r on q
(``core.toy.output_distribution``: a point mass for deterministic decoders, enumerated for
samplers), scored under p by the goal's own exact risk of an output distribution
(``goal.exact_risk(p, steps, r)``: pointwise goals Σ_ŷ r(ŷ)·E_p loss(ŷ, Y), distribution matching the
divergence between p and r), through ``risk_under``. ``core.risk.exact_risk`` instead scores a decoder
under the model it decodes; here decoding and scoring use different distributions.

With an EOS id (e.g. the C12 toy) outputs are padded with EOS after their first EOS, as every goal
scores them, and the models q keep EOS absorbing: after EOS they emit EOS for sure, like p.

Adding a decoder needs nothing here: anything with ``decode``/``is_random`` works. Deterministic
decoders and samplers with ``warp`` are exact; other random decoders (MBR) are run ``n_draws`` times
per model and their risk estimated (see ``risk_curve``). ``risk_row`` scores one decoder on the truth
itself under several goals at once (the Theory lab's table).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from core.decoders import Fixed, Sampling
from core.protocol import pad_after_eos, point_mass
from core.risk import bayes_output, exact_risk
from core.toy import ENUMERATION_LIMIT, MarkovChain, output_distribution

FAMILIES = ("mixture", "learned")
NOISES = ("dirichlet", "uniform")
LEARNED_ALPHA = 0.5  # add-1/2 smoothing of the counts (Krichevsky–Trofimov)
N_SEEDS = 20  # data sets per N in the learned family
N_DRAWS = 64  # runs per model q of a random decoder whose output distribution is not enumerable
MAX_N = 10**7  # largest training-set size on a learned grid
DECADES = 4  # ε from 1 to 1e-4, N from 10 to 1e5
DENSITIES = (1, 2, 4)  # grid points per decade a page may ask for
MIXTURE_GRID = tuple(10 ** (-k / 2) for k in range(2 * DECADES + 1))  # ε = 1 … 1e-4, two points per decade
LEARNED_GRID = tuple(round(10 ** (1 + k / 2)) for k in range(2 * DECADES + 1))  # N = 10 … 1e5, two per decade


def default_grid(family: str) -> tuple:
    """The page's grid for a family: ε from 1 to 1e-4, or N from 10 to 10^5, two points per decade."""
    _check_family(family)
    return MIXTURE_GRID if family == "mixture" else LEARNED_GRID


def grid(family: str, per_decade: int = 2) -> tuple:
    """ε from 1 to 1e-4 (mixture) or N from 10 to 10^5 (learned, rounded), ``per_decade`` points per
    decade (one of ``DENSITIES``), evenly on a log scale; ``default_grid`` at 2."""
    _check_family(family)
    if per_decade not in DENSITIES:
        raise ValueError(f"per_decade must be one of {', '.join(map(str, DENSITIES))}, got {per_decade!r}")
    if per_decade == 2:
        return default_grid(family)
    ks = range(per_decade * DECADES + 1)
    if family == "mixture":
        return tuple(10 ** (-k / per_decade) for k in ks)
    return tuple(round(10 ** (1 + k / per_decade)) for k in ks)


# ---- models q -----------------------------------------------------------------------------------


class PrefixModel:
    """A model over sequences of one fixed length, given by its next-token distribution after every
    prefix: ``levels[t]`` is [V^t, V], row i the distribution after the prefix whose base-V digits
    (first token most significant) are i. A ``NextTokenModel`` the decoders and
    ``output_distribution`` accept, like the toys. With an ``eos_id``, every prefix that contains EOS
    continues with EOS for sure (whatever its level says), as a toy's does."""

    def __init__(self, levels: Sequence[np.ndarray], eos_id: int | None = None):
        self.vocab_size = int(levels[0].shape[1])
        self.length = len(levels)
        if eos_id is not None and not (isinstance(eos_id, int | np.integer) and 0 <= eos_id < self.vocab_size):
            raise ValueError(f"eos_id must be None or a token in 0..{self.vocab_size - 1}, got {eos_id!r}")
        self.eos_id = None if eos_id is None else int(eos_id)
        with np.errstate(divide="ignore"):
            self._logcond = [torch.from_numpy(np.log(np.asarray(level, dtype=np.float64))) for level in levels]
        self._ended = None if eos_id is None else point_mass(self._logcond[0][0], self.eos_id)

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] float64 log q(. | prefix); prefixes are the tokens so far (length 0..length-1)."""
        rows = []
        for prefix in prefixes:
            if len(prefix) >= self.length or any(not 0 <= t < self.vocab_size for t in prefix):
                raise ValueError(f"a prefix must have length 0..{self.length - 1} and tokens in "
                                 f"0..{self.vocab_size - 1}, got {tuple(prefix)}")
            if self._ended is not None and self.eos_id in prefix:
                rows.append(self._ended)
                continue
            index = 0
            for t in prefix:
                index = index * self.vocab_size + int(t)
            rows.append(self._logcond[len(prefix)][index])
        return torch.stack(rows)

    def __repr__(self) -> str:
        return f"PrefixModel(vocab_size={self.vocab_size}, length={self.length})"


def _truth_levels(truth) -> list[np.ndarray]:
    """p's conditionals after every prefix, as ``PrefixModel`` levels (a table's prefixes of
    probability zero get its uniform row)."""
    v, n = truth.vocab_size, truth.length
    if sum(v**t for t in range(n)) * v > ENUMERATION_LIMIT:
        raise ValueError(f"the truth has too many prefixes ({v}^{n - 1} at the last step) for exact curves; "
                         "use a shorter length or fewer tokens")
    return [truth.logprobs([list(p) for p in itertools.product(range(v), repeat=t)]).double().exp().numpy()
            for t in range(n)]


def mixture_model(truth, eps: float, seed: int, noise: str = "dirichlet"):
    """q_ε = (1 − ε)·p + ε·noise after every prefix (a ``MarkovChain`` for chain truths: per state,
    else a ``PrefixModel``); see the module docstring for the noise."""
    _check_truth(truth)
    if not (isinstance(eps, int | float) and not isinstance(eps, bool) and 0 <= eps <= 1):
        raise ValueError(f"eps must be a number in [0, 1], got {eps!r}")
    _check_seed(seed)
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")
    rng = np.random.default_rng(seed)
    v = truth.vocab_size

    def draw(rows: int) -> np.ndarray:
        return rng.dirichlet(np.ones(v), size=rows) if noise == "dirichlet" else np.full((rows, v), 1.0 / v)

    if isinstance(truth, MarkovChain):
        init, trans = draw(1)[0], draw(v)
        return _chain_like(truth, (1 - eps) * truth.initial + eps * init, (1 - eps) * truth.transition + eps * trans)
    return PrefixModel([(1 - eps) * p + eps * draw(len(p)) for p in _truth_levels(truth)], truth.eos_id)


def _chain_like(truth, initial: np.ndarray, transition: np.ndarray) -> MarkovChain:
    """A chain q of the truth's length, EOS id and token names; with an EOS id its EOS row absorbs."""
    if truth.eos_id is not None:
        transition = transition.copy()
        transition[truth.eos_id] = np.eye(truth.vocab_size)[truth.eos_id]
    return MarkovChain(initial, transition, truth.length, eos_id=truth.eos_id, token_names=truth.token_names)


def learned_model(truth, n: int, seed: int, alpha: float = LEARNED_ALPHA):
    """q fitted by add-``alpha`` counts on ``n`` sequences drawn from p with
    ``numpy.random.default_rng(seed)``: per state for chain truths (a ``MarkovChain``), per prefix
    otherwise (a ``PrefixModel``; prefixes never seen get the uniform row)."""
    _check_truth(truth)
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise ValueError(f"n (training sequences) must be an integer from 1 to {MAX_N:,}, got {n!r}")
    _check_seed(seed)
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be > 0 and finite, got {alpha!r}")
    seqs, probs = truth.joint()
    counts = np.random.default_rng(seed).multinomial(int(n), probs / probs.sum())
    v, length = truth.vocab_size, truth.length
    smooth = lambda c: (c + alpha) / (c.sum(axis=-1, keepdims=True) + v * alpha)
    if isinstance(truth, MarkovChain):
        init, trans = np.zeros(v), np.zeros((v, v))
        np.add.at(init, seqs[:, 0], counts)
        for t in range(1, length):
            np.add.at(trans, (seqs[:, t - 1], seqs[:, t]), counts)
        return _chain_like(truth, smooth(init), smooth(trans))
    levels = []
    for t in range(length):
        index = seqs[:, :t] @ (v ** np.arange(t - 1, -1, -1)) if t else np.zeros(len(seqs), dtype=np.int64)
        c = np.zeros((v**t, v))
        np.add.at(c, (index, seqs[:, t]), counts)
        levels.append(smooth(c))
    return PrefixModel(levels, truth.eos_id)


def data_seed(seed: int, n: int, i: int) -> int:
    """The seed of the learned family's data set i at training size n, for the curve's ``seed``
    (independent across n and i)."""
    return int(np.random.SeedSequence([seed, n, i]).generate_state(1)[0])


def draw_seed(seed: int, i: int) -> int:
    """The seed of draw i of a decoder that is not enumerable (independent of the data seeds)."""
    return int(np.random.SeedSequence([seed, 0, i, 1]).generate_state(1)[0])


# ---- risk under p of a decoder run on q ---------------------------------------------------------


def risk_under(goal, truth, r: Mapping[tuple[int, ...], float], steps: int, memo: dict | None = None) -> float:
    """The exact risk under the toy ``truth`` of outputs of ``steps`` tokens distributed as ``r``
    ({output: probability}, outputs padded after EOS; e.g. a decoder's output distribution on another
    model q): the goal's own ``exact_risk`` of an output distribution (pointwise goals:
    Σ_ŷ r(ŷ)·E_p loss(ŷ, Y); distribution matching: the divergence between p's distribution of its first
    ``steps`` tokens and r). ``memo``: a dict to pass again to calls with the same goal, truth and steps;
    the risks of point masses are kept there (a seeded decoder's runs repeat their outputs)."""
    if memo is not None and len(r) == 1:
        (y, w), = r.items()
        if w == 1.0:
            if y not in memo:
                memo[y] = goal.exact_risk(truth, steps, {y: 1.0})
            return memo[y]
    return goal.exact_risk(truth, steps, r)


def bayes_risk(goal, truth, steps: int) -> float:
    """The smallest risk any decoder reaches under the toy ``truth``: the Bayes output's for pointwise
    goals, 0 for distribution matching (sampling from p itself)."""
    if not goal.pointwise:
        return exact_risk(goal, truth, Sampling(), steps)
    return exact_risk(goal, truth, Fixed(bayes_output(goal, truth, steps)), steps)


def is_enumerable(decoder) -> bool:
    """Whether ``output_distribution`` gives the decoder's output distribution exactly: deterministic
    decoders, and random ones that expose their per-step distribution (``warp``, as ``Sampling``)."""
    return not decoder.is_random or hasattr(decoder, "warp")


def _mean_band(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the 95% Student-t interval of the mean of i.i.d. values, clipped at 0."""
    mean = float(values.mean())
    if not math.isfinite(mean):
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(values) - 1)) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, max(mean - half, 0.0), mean + half


@dataclass(frozen=True)
class Decoded:
    """What a decoder outputs on a model: its exact output distribution (``runs`` None), or the outputs
    of ``runs`` seeded runs (``draw_seed(seed, i)``) with their empirical distribution. Outputs are
    padded after EOS."""

    distribution: dict[tuple[int, ...], float]
    runs: tuple[tuple[int, ...], ...] | None = None

    @property
    def exact(self) -> bool:
        return self.runs is None


def decode_outputs(model, decoder, steps: int, seed: int = 0, n_draws: int = N_DRAWS) -> Decoded:
    """``decoder``'s outputs of ``steps`` tokens on ``model``: exact when ``is_enumerable(decoder)``,
    else ``n_draws`` seeded runs."""
    if is_enumerable(decoder):
        return Decoded(output_distribution(decoder, model, steps))
    eos = getattr(model, "eos_id", None)
    runs = tuple(pad_after_eos(decoder.decode(model, [], steps, seed=draw_seed(seed, i)).tokens, steps, eos)
                 for i in range(n_draws))
    return Decoded({y: c / n_draws for y, c in sorted(Counter(runs).items())}, runs)


def score_outputs(goal, truth, decoded: Decoded, steps: int, memo: dict | None = None) -> tuple[float, float, float]:
    """(risk, low, high) under the toy ``truth`` of ``decoded`` outputs: exact (low == high) for an
    exact distribution; for seeded runs under a pointwise goal the mean of the runs' exact risks with
    its 95% t-interval, and under distribution matching the divergence of the runs' empirical
    distribution (a plug-in estimate, low == high). ``memo`` as in ``risk_under``."""
    memo = {} if memo is None else memo
    if decoded.exact or not goal.pointwise:
        risk = risk_under(goal, truth, decoded.distribution, steps, memo)
        return risk, risk, risk
    return _mean_band(np.array([risk_under(goal, truth, {y: 1.0}, steps, memo) for y in decoded.runs]))


def decoded_risk(truth, model, decoder, goal, steps: int, seed: int = 0, n_draws: int = N_DRAWS,
                 memo: dict | None = None) -> tuple[float, float, float]:
    """(risk, low, high): the risk under the toy ``truth`` of ``decoder`` run on ``model`` (a q, or the
    truth itself). Exact (low == high) when ``is_enumerable(decoder)``; otherwise the mean over
    ``n_draws`` seeded runs (``draw_seed(seed, i)``) of their exact risks with its 95% t-interval, or for
    distribution matching the divergence of the runs' empirical distribution (low == high). ``memo``
    as in ``risk_under``."""
    return score_outputs(goal, truth, decode_outputs(model, decoder, steps, seed, n_draws), steps, memo)


def risk_row(goals: Sequence, truth, decoder, steps: int, seed: int = 0, n_draws: int = N_DRAWS,
             label: str | None = None) -> dict:
    """One row of the Theory lab's table: ``decoder`` run on the toy ``truth`` itself and scored under
    every goal of ``goals`` (its outputs computed once). Keys: "decoder" (``label`` or the decoder's),
    "output" (the tokens, or None for a random decoder), "runs" (None when exact, else ``n_draws``:
    the seeded runs behind an estimate), and per goal its name (the risk) and "<name> (95% low)" /
    "<name> (95% high)" (equal to the risk where it is exact or a plug-in)."""
    decoded = decode_outputs(truth, decoder, steps, seed, n_draws)
    row = {"decoder": label or decoder.label, "output": None if decoder.is_random else next(iter(decoded.distribution)),
           "runs": None if decoded.exact else len(decoded.runs)}
    for goal in goals:
        risk, low, high = score_outputs(goal, truth, decoded, steps)
        row.update({goal.name: risk, f"{goal.name} (95% low)": low, f"{goal.name} (95% high)": high})
    return row


def bayes_rows(goals: Sequence, truth, steps: int) -> list[dict]:
    """``risk_row`` of every pointwise goal's Bayes output, labelled "Bayes output (<goal>)"."""
    return [risk_row(goals, truth, Fixed(bayes_output(g, truth, steps)), steps, label=f"Bayes output ({g.name})")
            for g in goals if g.pointwise]


def risk_curve(truth, decoder, goal, family: str, grid: Sequence[float], steps: int, seed: int, *,
               n_seeds: int = N_SEEDS, noise: str = "dirichlet",
               n_draws: int = N_DRAWS) -> list[tuple[float, float, float, float]]:
    """(x, risk, low, high) for every x of ``grid``, in its order: the risk under the toy ``truth`` of
    ``decoder``'s ``steps``-token output when it decodes the model q of ``family`` at x (see the
    module docstring). ``"mixture"``: x = ε in (0, 1], exact, so low == high == risk (noise drawn with
    ``seed``). ``"learned"``: x = N training sequences (an integer from 1 to 10^7); risk = the mean
    over ``n_seeds`` (>= 2) data sets and (low, high) its 95% t-interval, clipped at 0.

    A random decoder whose output distribution cannot be enumerated (``is_enumerable`` False, e.g.
    MBR) is run ``n_draws`` times per model q (seeds ``draw_seed(seed, i)``, the same at every x):
    pointwise risks are then the mean of the draws' exact risks, with their 95% t-interval as the band
    (mixture family) or inside each data set's value (learned family); distribution matching scores
    the draws' empirical distribution (a plug-in estimate, shown with low == high)."""
    _check_truth(truth)
    _check_family(family)
    if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or not 1 <= steps <= truth.length:
        raise ValueError(f"steps must be an integer from 1 to the truth's length {truth.length}, got {steps!r}")
    _check_seed(seed)
    if not (hasattr(decoder, "decode") and hasattr(decoder, "is_random")):
        raise ValueError(f"decoder must be a decoder (with decode and is_random), got {decoder!r}")
    if not hasattr(goal, "pointwise"):
        raise ValueError(f"goal must be a core.goals goal, got {goal!r}")
    grid = _check_grid(family, grid)
    for name, value in (("n_seeds", n_seeds), ("n_draws", n_draws)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2 (a band needs a spread), got {value!r}")
    memo: dict = {}  # the same goal, truth and steps throughout: point masses' risks are shared
    risk_of = lambda q: decoded_risk(truth, q, decoder, goal, steps, seed, n_draws, memo)
    if family == "mixture":
        return [(eps, *risk_of(mixture_model(truth, eps, seed, noise))) for eps in grid]
    out = []
    for n in grid:
        risks = np.array([risk_of(learned_model(truth, n, data_seed(seed, n, i)))[0] for i in range(n_seeds)])
        out.append((float(n), *_mean_band(risks)))
    return out


# ---- checks -------------------------------------------------------------------------------------


def _check_truth(truth) -> None:
    if not (hasattr(truth, "joint") and hasattr(truth, "length")):
        raise ValueError(f"truth must be an enumerable toy (TableDistribution or MarkovChain), got {truth!r}")


def _check_family(family) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")


def _check_seed(seed) -> None:
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def _check_grid(family: str, grid) -> tuple:
    try:
        grid = tuple(grid)
    except TypeError:
        raise ValueError(f"grid must be a non-empty list of numbers, got {grid!r}") from None
    if not grid:
        raise ValueError("grid must be a non-empty list of numbers, got an empty one")
    for x in grid:
        if family == "mixture" and not (isinstance(x, int | float) and not isinstance(x, bool) and 0 < x <= 1):
            raise ValueError(f"a mixture grid holds ε values in (0, 1], got {x!r}")
        if family == "learned" and (not isinstance(x, int | np.integer) or isinstance(x, bool) or not 1 <= x <= MAX_N):
            raise ValueError(f"a learned grid holds training-set sizes N, integers from 1 to {MAX_N:,}, got {x!r}")
    return tuple(float(x) for x in grid) if family == "mixture" else tuple(int(x) for x in grid)
