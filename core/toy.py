"""Exact toy distributions over fixed-length token sequences, and the presets the pages show.

A toy is a ``NextTokenModel`` whose prefixes are the tokens generated so far (no prompt, length
0..length-1) and which can also be enumerated, so every decoder, goal and risk can be checked
exactly. Two kinds:

* ``TableDistribution``: an explicit table {sequence: probability}.
* ``MarkovChain``: an initial distribution and a transition matrix, with exact marginals by the
  forward recursion (no enumeration needed for the Hamming / N-gram Bayes outputs).

Log-probabilities are float64 and ``-inf`` for impossible tokens. A table's conditional at a
prefix of probability zero is undefined; it is taken as uniform (only decoders that wander onto
impossible prefixes, e.g. a wide beam, ever see it, and their joint probability stays zero).

References: the worked examples E1-E4 are in ../shared/claims.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

ENUMERATION_LIMIT = 1 << 20  # most sequences (or dense table cells) any exact computation enumerates
SUM_TOLERANCE = 1e-9


def _check_size(what: str, size: int) -> None:
    if size > ENUMERATION_LIMIT:
        raise ValueError(
            f"{what} needs {size:,} entries, over the enumeration limit of {ENUMERATION_LIMIT:,}; "
            "use a shorter length or fewer states"
        )


def _check_probabilities(name: str, p: np.ndarray) -> None:
    """p: [..., V]; every row must be a distribution."""
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name} must hold finite probabilities >= 0, got min {np.nanmin(p)!r}")
    sums = p.sum(axis=-1)
    bad = np.abs(sums - 1.0) > SUM_TOLERANCE
    if np.any(bad):
        where = np.argwhere(np.atleast_1d(bad))[0]
        row = "" if p.ndim == 1 else f" (row {int(where[0])})"
        got = float(np.atleast_1d(sums)[where[0]])
        raise ValueError(f"{name} must sum to 1 (within {SUM_TOLERANCE:g}){row}, got {got!r}")


def _check_int(name: str, value, low: int = 1) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_alpha(alpha) -> None:
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be > 0 and finite, got {alpha!r}")


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.minimum(np.log(p), 0.0)  # a ratio of masses may exceed 1 by an ulp


class _Toy:
    """What both toys share: protocol attributes, prefix checks, enumeration helpers."""

    vocab_size: int
    length: int
    eos_id = None

    def joint(self) -> tuple[np.ndarray, np.ndarray]:
        """(sequences [N, length] int64, probabilities [N] float64) of every sequence with positive
        probability, in lexicographic order. Guarded by ``ENUMERATION_LIMIT``."""
        raise NotImplementedError

    def support(self) -> Iterator[tuple[tuple[int, ...], float]]:
        """(sequence, probability) for every sequence with positive probability, lexicographically."""
        seqs, probs = self.joint()
        for s, p in zip(seqs.tolist(), probs.tolist()):
            yield tuple(s), p

    def window_marginals(self, n: int) -> np.ndarray:
        """[length-n+1, V, ..., V] (n token axes): P(Y_t..Y_{t+n-1} = w) for every window start t."""
        n_windows = self._check_window(n)
        _check_size(f"window marginals of {n} tokens", n_windows * self.vocab_size**n)
        seqs, probs = self.joint()
        out = np.zeros((n_windows,) + (self.vocab_size,) * n)
        for t in range(n_windows):
            np.add.at(out[t], tuple(seqs[:, t + k] for k in range(n)), probs)
        return out

    def _check_window(self, n: int) -> int:
        if not isinstance(n, int | np.integer) or not 1 <= n <= self.length:
            raise ValueError(f"window length n must be an integer in 1..{self.length}, got {n!r}")
        return self.length - n + 1

    def _check_sequence(self, seq: Sequence[int]) -> tuple[int, ...]:
        seq = tuple(int(t) for t in seq)
        if len(seq) != self.length:
            raise ValueError(f"sequence must have length {self.length}, got {len(seq)}")
        return seq

    def _check_prefix(self, prefix: Sequence[int]) -> tuple[int, ...]:
        prefix = tuple(int(t) for t in prefix)
        if len(prefix) >= self.length:
            raise ValueError(
                f"a toy prefix is the tokens so far (no prompt), of length 0..{self.length - 1}; "
                f"got length {len(prefix)}"
            )
        bad = [t for t in prefix if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token {bad[0]} is outside the vocabulary 0..{self.vocab_size - 1}")
        return prefix


class TableDistribution(_Toy):
    """An explicit distribution over sequences of one fixed length.

    Args:
        probs: {sequence: probability}; sequences are tuples of token ids in 0..vocab_size-1, all of
            one length >= 1; probabilities are >= 0 and sum to 1 within 1e-9. Missing sequences
            have probability 0.
        vocab_size: number of token ids.
    """

    def __init__(self, probs: Mapping[Sequence[int], float], vocab_size: int):
        _check_int("vocab_size", vocab_size)
        if not probs:
            raise ValueError("probs must hold at least one sequence")
        table = {tuple(int(t) for t in s): float(p) for s, p in probs.items()}
        first = next(iter(table))
        for s, p in table.items():
            if len(s) != len(first):
                raise ValueError(f"all sequences must have one length: {first} has {len(first)}, {s} has {len(s)}")
            if any(not 0 <= t < vocab_size for t in s):
                raise ValueError(f"sequence {s} has a token outside the vocabulary 0..{vocab_size - 1}")
            if not (math.isfinite(p) and p >= 0):
                raise ValueError(f"probability of {s} must be >= 0 and finite, got {p!r}")
        if len(first) < 1:
            raise ValueError("sequences must have length >= 1")
        total = math.fsum(table.values())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(f"probabilities must sum to 1 (within {SUM_TOLERANCE:g}), got {total!r}")
        self.vocab_size = int(vocab_size)
        self.length = len(first)
        self._table = {s: p for s, p in sorted(table.items()) if p > 0}
        self._build_conditionals()

    def _build_conditionals(self) -> None:
        """Row i of ``_logcond`` is log p(. | prefix) for the prefix with ``_row[prefix] == i``;
        the last row is the uniform row used for prefixes of probability zero."""
        child_mass: dict[tuple[int, ...], np.ndarray] = {}
        for s, p in self._table.items():
            for t in range(self.length):
                child_mass.setdefault(s[:t], np.zeros(self.vocab_size))[s[t]] += p
        _check_size("the table's conditionals", len(child_mass) * self.vocab_size)
        masses = np.stack(list(child_mass.values()))
        logcond = _log(masses / masses.sum(axis=1, keepdims=True))
        uniform = np.full((1, self.vocab_size), -math.log(self.vocab_size))
        self._row = {prefix: i for i, prefix in enumerate(child_mass)}
        self._logcond = torch.from_numpy(np.concatenate([logcond, uniform]))

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] float64 log p(. | prefix); prefixes are the tokens so far (length 0..length-1)."""
        uniform = len(self._row)
        rows = []
        for p in prefixes:
            key = tuple(p)
            i = self._row.get(key)
            if i is None:
                self._check_prefix(key)
                i = uniform
            rows.append(i)
        return self._logcond[rows]

    def prob(self, seq: Sequence[int]) -> float:
        return self._table.get(self._check_sequence(seq), 0.0)

    def joint(self) -> tuple[np.ndarray, np.ndarray]:
        seqs = np.array(list(self._table), dtype=np.int64).reshape(len(self._table), self.length)
        return seqs, np.array(list(self._table.values()))

    def __repr__(self) -> str:
        return f"TableDistribution(vocab_size={self.vocab_size}, length={self.length}, support={len(self._table)})"


class MarkovChain(_Toy):
    """Y_1 ~ initial, Y_{t+1} | Y_t ~ transition[Y_t], for ``length`` tokens.

    Args:
        initial: [V] probabilities (>= 0, summing to 1 within 1e-9).
        transition: [V, V]; row s is the distribution of the next token after token s.
        length: number of tokens, >= 1.
    """

    def __init__(self, initial, transition, length: int):
        initial = np.array(initial, dtype=np.float64)
        transition = np.array(transition, dtype=np.float64)
        if initial.ndim != 1 or initial.shape[0] < 1:
            raise ValueError(f"initial must be a 1-d array of length >= 1, got shape {initial.shape}")
        v = initial.shape[0]
        if transition.shape != (v, v):
            raise ValueError(f"transition must have shape ({v}, {v}) to match initial, got {transition.shape}")
        _check_int("length", length)
        _check_probabilities("initial", initial)
        _check_probabilities("transition rows", transition)
        initial.setflags(write=False)
        transition.setflags(write=False)
        self.initial, self.transition = initial, transition
        self.vocab_size, self.length = v, int(length)
        # rows 0..V-1: log transition[s]; row V: log initial (the empty prefix)
        self._logcond = torch.from_numpy(np.concatenate([_log(transition), _log(initial)[None]]))

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] float64 log p(. | prefix); only the prefix's last token matters."""
        rows = []
        for p in prefixes:
            if len(p) >= self.length or (len(p) and not 0 <= p[-1] < self.vocab_size):
                self._check_prefix(p)
            rows.append(int(p[-1]) if len(p) else self.vocab_size)
        return self._logcond[rows]

    def prob(self, seq: Sequence[int]) -> float:
        seq = self._check_sequence(seq)
        p = self.initial[seq[0]]
        for a, b in itertools.pairwise(seq):
            p *= self.transition[a, b]
        return float(p)

    def state_marginals(self) -> np.ndarray:
        """[length, V]: P(Y_t = v) by the forward recursion."""
        out = np.empty((self.length, self.vocab_size))
        out[0] = self.initial
        for t in range(1, self.length):
            out[t] = out[t - 1] @ self.transition
        return out

    def window_marginals(self, n: int) -> np.ndarray:
        n_windows = self._check_window(n)
        v = self.vocab_size
        _check_size(f"window marginals of {n} tokens", n_windows * v**n)
        out = self.state_marginals()[:n_windows]
        for k in range(1, n):  # append one axis: P(w_0..w_k) = P(w_0..w_{k-1}) T[w_{k-1}, w_k]
            out = out[..., None] * self.transition.reshape((1,) * k + (v, v))
        return out

    def joint(self) -> tuple[np.ndarray, np.ndarray]:
        v = self.vocab_size
        _check_size(f"enumerating {v}^{self.length} sequences", v**self.length)
        seqs = np.arange(v)[:, None]
        probs = self.initial.copy()
        for _ in range(1, self.length):
            probs = (probs[:, None] * self.transition[seqs[:, -1]]).reshape(-1)
            seqs = np.concatenate([np.repeat(seqs, v, axis=0), np.tile(np.arange(v), len(seqs))[:, None]], axis=1)
        keep = probs > 0
        return seqs[keep], probs[keep]

    def __repr__(self) -> str:
        return f"MarkovChain(n_states={self.vocab_size}, length={self.length})"


Toy = TableDistribution | MarkovChain


def random_markov_chain(n_states: int, alpha: float, length: int, seed: int) -> MarkovChain:
    """A chain whose initial distribution and every transition row are drawn from a symmetric
    Dirichlet(alpha) with ``numpy.random.default_rng(seed)`` (initial first, then the rows)."""
    _check_int("n_states", n_states)
    _check_alpha(alpha)
    _check_int("seed", seed, low=0)
    rng = np.random.default_rng(seed)
    concentration = np.full(n_states, float(alpha))
    initial = rng.dirichlet(concentration)
    transition = rng.dirichlet(concentration, size=n_states)
    return MarkovChain(initial, transition, length)


def random_table(vocab_size: int, length: int, seed: int, alpha: float = 1.0,
                 zero_fraction: float = 0.0) -> TableDistribution:
    """A table over all vocab_size^length sequences with probabilities ~ symmetric Dirichlet(alpha),
    after a random ``zero_fraction`` of the sequences (never all) is set to probability zero;
    ``numpy.random.default_rng(seed)``."""
    _check_int("vocab_size", vocab_size)
    _check_int("length", length)
    _check_alpha(alpha)
    if not 0 <= zero_fraction < 1:
        raise ValueError(f"zero_fraction must be in [0, 1), got {zero_fraction!r}")
    size = vocab_size**length
    _check_size(f"a table of {vocab_size}^{length} sequences", size)
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(size, float(alpha)))
    p[rng.permutation(size)[: int(zero_fraction * size)]] = 0.0
    p /= p.sum()
    return TableDistribution(dict(zip(itertools.product(range(vocab_size), repeat=length), p.tolist())), vocab_size)


MAX_TREE_DEPTH = 8


def binary_tree(p_a: Mapping[tuple[int, ...], float] | Sequence[float], n: int) -> TableDistribution:
    """A distribution over {A=0, B=1}^n from the conditionals P(A | prefix).

    Args:
        p_a: either {prefix: P(A | prefix)} for every prefix of length 0..n-1 (2^n - 1 entries), or
            the same numbers as a list in breadth-first order: P(A), P(A|A), P(A|B), P(A|AA),
            P(A|AB), P(A|BA), ...
        n: length, 1..MAX_TREE_DEPTH.

    Conditionals below a prefix of probability zero do not change the distribution and are
    dropped (the table then reports them as uniform).
    """
    if not isinstance(n, int) or not 1 <= n <= MAX_TREE_DEPTH:
        raise ValueError(f"n must be an integer in 1..{MAX_TREE_DEPTH}, got {n!r}")
    prefixes = [p for k in range(n) for p in itertools.product((0, 1), repeat=k)]
    if isinstance(p_a, Mapping):
        cond = {tuple(k): float(v) for k, v in p_a.items()}
        missing = [p for p in prefixes if p not in cond]
        extra = [k for k in cond if k not in set(prefixes)]
        if missing or extra:
            bad = missing[0] if missing else extra[0]
            raise ValueError(f"p_a must give P(A | prefix) for every prefix of length 0..{n - 1}; bad or missing {bad}")
    else:
        values = [float(v) for v in p_a]
        if len(values) != len(prefixes):
            raise ValueError(f"p_a must hold 2^n - 1 = {len(prefixes)} conditionals for n={n}, got {len(values)}")
        cond = dict(zip(prefixes, values))
    for prefix, q in cond.items():
        if not (math.isfinite(q) and 0 <= q <= 1):
            raise ValueError(f"P(A | {prefix}) must be in [0, 1], got {q!r}")
    probs = {}
    for seq in itertools.product((0, 1), repeat=n):
        p = 1.0
        for t, tok in enumerate(seq):
            q = cond[seq[:t]]
            p *= q if tok == 0 else 1.0 - q
        probs[seq] = p
    return TableDistribution(probs, 2)


def cnf_distribution(clauses: Sequence[Sequence[int]], n_vars: int, beta: float) -> TableDistribution:
    """P(x) ∝ exp(-beta · #clauses x violates) over x in {0=false, 1=true}^n_vars.

    Clauses are DIMACS-style: literal k > 0 is x_k, -k is not x_k (1-based). For beta > 0 the
    satisfying assignments (if any) are exactly the modes."""
    if not isinstance(n_vars, int) or not 1 <= n_vars <= 20:
        raise ValueError(f"n_vars must be an integer in 1..20, got {n_vars!r}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be >= 0 and finite, got {beta!r}")
    for clause in clauses:
        if not clause or any(not (isinstance(lit, int) and 1 <= abs(lit) <= n_vars) for lit in clause):
            raise ValueError(f"clause {tuple(clause)} must be a non-empty list of literals ±1..±{n_vars}")
    xs = np.array(list(itertools.product((0, 1), repeat=n_vars)), dtype=bool)
    violated = np.zeros(len(xs))
    for clause in clauses:
        sat = np.zeros(len(xs), dtype=bool)
        for lit in clause:
            sat |= xs[:, abs(lit) - 1] if lit > 0 else ~xs[:, abs(lit) - 1]
        violated += ~sat
    w = np.exp(-beta * (violated - violated.min()))
    w /= w.sum()
    return TableDistribution({tuple(x.astype(int).tolist()): float(p) for x, p in zip(xs, w)}, 2)


def hidden_path(n: int = 6, p_main: float = 0.55, stay: float = 0.7, p_hidden: float = 0.13) -> TableDistribution:
    """Vocabulary {0,1,2,3}. Token 0 (prob ``p_main``) opens an attractive branch that then repeats
    0 with prob ``stay`` (else 1, 2, 3 equally); tokens 1 and 2 share the rest with 3 and open
    uniform branches; token 3 (prob ``p_hidden``, the least likely first token) is followed by 3s
    with certainty. With the defaults the mode is 333333 (P = .13) while greedy, every lookahead
    up to depth 5 and beams narrower than 4 end in the 0-branch (best path 000000, P = .092)."""
    rest = 1.0 - p_main - p_hidden
    if not (0 < p_hidden < p_main and rest >= 0 and 0 < stay < 1 and n >= 2):
        raise ValueError("hidden_path needs 0 < p_hidden < p_main, p_main + p_hidden <= 1, 0 < stay < 1, n >= 2")
    first = {0: p_main, 1: rest / 2, 2: rest / 2, 3: p_hidden}
    probs = {}
    for seq in itertools.product(range(4), repeat=n):
        p = first[seq[0]]
        for tok in seq[1:]:
            if seq[0] == 0:
                p *= stay if tok == 0 else (1 - stay) / 3
            elif seq[0] == 3:
                p *= 1.0 if tok == 3 else 0.0
            else:
                p *= 0.25
        if p > 0:
            probs[seq] = p
    return TableDistribution(probs, 4)


@dataclass(frozen=True)
class ToyPreset:
    """A named toy for the pages: ``build()`` returns a fresh model."""

    name: str
    description: str
    build: Callable[[], Toy]


E1_CONDITIONALS = {(): 0.6, (0,): 0.55, (1,): 0.9}
E2_CONDITIONALS = {(): 0.6, (0,): 0.55, (1,): 0.0}
SAT_CLAUSES = ((1,),) + tuple((-1, k) for k in range(2, 9))

PRESETS: dict[str, ToyPreset] = {
    p.name: p
    for p in (
        ToyPreset(
            "E1",
            "Greedy ≠ mode, and the mode is not Hamming-optimal (n=2): P(A)=.6, P(A|A)=.55, P(A|B)=.9. "
            "Greedy AA (.33), mode BA (.36), marginal mode AA. Sampling at τ=1 matches P (E3); "
            "at τ=.5 it does not (E4).",
            lambda: binary_tree(E1_CONDITIONALS, 2),
        ),
        ToyPreset(
            "E2",
            "Three different winners (n=2): P(A)=.6, P(A|A)=.55, P(A|B)=0. "
            "Greedy AA, mode BB (0-1 optimal), AB is Hamming-optimal.",
            lambda: binary_tree(E2_CONDITIONALS, 2),
        ),
        ToyPreset(
            "hidden path",
            "A high-probability path behind the least likely first token (n=6, 4 tokens): 333333 has "
            "P=.13 and is the mode, but greedy, lookahead up to depth 5 and beams of width ≤ 3 all "
            "follow the attractive 0-branch whose best path 000000 has P=.092.",
            hidden_path,
        ),
        ToyPreset(
            "SAT trap",
            "P(x) ∝ exp(-2·#violated clauses) for x1 ∧ (x1→x2) ∧ … ∧ (x1→x8) over 8 binary variables "
            "(B = true). The unique satisfying assignment BBBBBBBB is the mode, but the x1 = false "
            "half violates just one clause and holds most of the mass: greedy and every lookahead "
            "up to depth 4 commit to A first, and the beam needs width > 2^(t-1) to keep it.",
            lambda: cnf_distribution(SAT_CLAUSES, 8, 2.0),
        ),
        ToyPreset(
            "Markov chain",
            "A random 3-state Markov chain of length 6 (Dirichlet α=0.5, seed 3) with three different "
            "winners: greedy 100000 (P=.098), the mode 122222 (P=.337), the Hamming-optimal 102222.",
            lambda: random_markov_chain(3, 0.5, 6, seed=3),
        ),
    )
}


def sequence_tempered(truth: Toy, tau: float) -> dict[tuple[int, ...], float]:
    """Sequence-level tempering P(y)^(1/τ) / Z over the truth's support (limit τ → 0: the mode).
    Contrast with per-token temperature, whose limit is the greedy path."""
    if not (isinstance(tau, int | float) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be > 0 and finite, got {tau!r}")
    seqs, probs = truth.joint()
    logw = np.log(probs) / tau
    logw -= logw.max()
    w = np.exp(logw)
    w /= w.sum()
    return {tuple(s): float(p) for s, p in zip(seqs.tolist(), w)}


def output_distribution(decoder, truth, steps: int, prompt: Sequence[int] = ()) -> dict[tuple[int, ...], float]:
    """The exact distribution r of ``decoder``'s outputs of ``steps`` tokens on ``truth``.

    Deterministic decoders give a point mass on their output. Random decoders (``Sampling``) are
    enumerated through their warped per-step probabilities, one ``logprobs`` call per depth, keeping
    only outputs with r > 0 (guarded by ``ENUMERATION_LIMIT``)."""
    if not decoder.is_random:
        return {decoder.decode(truth, list(prompt), steps).tokens: 1.0}
    room = truth.length - len(prompt)
    if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or not 1 <= steps <= room:
        raise ValueError(f"steps must be an integer in 1..{room} for this toy of length {truth.length}, got {steps!r}")
    frontier: dict[tuple[int, ...], float] = {(): 0.0}  # prefix -> log r(prefix)
    for _ in range(steps):
        _check_size("enumerating the decoder's outputs", len(frontier) * truth.vocab_size)
        keys = list(frontier)
        warped = decoder.warp(truth.logprobs([list(prompt) + list(k) for k in keys]).double())
        nxt = {}
        for key, row in zip(keys, warped):
            base = frontier[key]
            for v in torch.nonzero(row > -math.inf).squeeze(1).tolist():
                nxt[key + (v,)] = base + float(row[v])
        frontier = nxt
    return {k: math.exp(lr) for k, lr in sorted(frontier.items())}
