"""Exact toy distributions over fixed-length token sequences (the named presets are in ``core.presets``).

A toy is a ``NextTokenModel`` whose prefixes are the tokens generated so far (no prompt, length
0..length-1) and which can also be enumerated, so every decoder, goal and risk can be checked
exactly. Two kinds:

* ``TableDistribution``: an explicit table {sequence: probability}.
* ``MarkovChain``: an initial distribution and a transition matrix, with exact marginals by the
  forward recursion (no enumeration needed for the Hamming / N-gram Bayes outputs).

Log-probabilities are float64 and ``-inf`` for impossible tokens. A table's conditional at a
prefix of probability zero is undefined; it is taken as uniform (only decoders that wander onto
impossible prefixes, e.g. a wide beam, ever see it, and their joint probability stays zero).

A toy may have an EOS id (``eos_id``): its sequences are then variable-length outputs padded with EOS
to ``length`` tokens (``core.protocol.pad_after_eos``), every prefix containing EOS continues with EOS
for sure, and ``prob`` accepts an output ending at its EOS. ``token_text`` names the tokens (A, B, ...
unless ``token_names`` are given).

References: the worked examples E1-E4 are in ../shared/claims.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from core.protocol import pad_after_eos, point_mass

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
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
    eos_id: int | None = None
    token_names: tuple[str, ...] | None = None

    def _set_eos(self, eos_id, token_names) -> None:
        if eos_id is not None:
            _check_int("eos_id", eos_id, low=0)
            if eos_id >= self.vocab_size:
                raise ValueError(f"eos_id must be a token in 0..{self.vocab_size - 1}, got {eos_id}")
            eos_id = int(eos_id)
        if token_names is not None:
            token_names = tuple(str(n) for n in token_names)
            if len(token_names) != self.vocab_size:
                raise ValueError(f"token_names must name all {self.vocab_size} tokens, got {len(token_names)}")
        self.eos_id, self.token_names = eos_id, token_names

    def token_text(self, token_id: int) -> str:
        """The token's name: ``token_names[token_id]``, else A, B, ... (``<id>`` past Z)."""
        if self.token_names is not None:
            return self.token_names[token_id]
        return LETTERS[token_id] if 0 <= token_id < len(LETTERS) else f"<{token_id}>"

    def _ended(self, prefix) -> bool:
        return self.eos_id is not None and self.eos_id in prefix

    def _padded(self, seq: Sequence[int]) -> tuple[int, ...]:
        """A sequence as the toy holds it: with an EOS id, padded with EOS after its first EOS."""
        seq = tuple(int(t) for t in seq)
        if self.eos_id is not None and self.eos_id in seq[: self.length]:
            seq = pad_after_eos(seq, self.length, self.eos_id)
        return self._check_sequence(seq)

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
        eos_id: None, or the EOS token: every sequence must then be padded with EOS after its first EOS.
        token_names: None, or one name per token (for ``token_text``).
    """

    def __init__(self, probs: Mapping[Sequence[int], float], vocab_size: int, eos_id: int | None = None,
                 token_names: Sequence[str] | None = None):
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
        self._set_eos(eos_id, token_names)
        if self.eos_id is not None:
            for s in table:
                if self.eos_id in s and any(t != self.eos_id for t in s[s.index(self.eos_id):]):
                    raise ValueError(f"sequence {s} continues after EOS (token {self.eos_id}); a toy with an EOS id "
                                     "holds outputs padded with EOS after their first EOS")
        self._table = {s: p for s, p in sorted(table.items()) if p > 0}
        self._build_conditionals()

    def _build_conditionals(self) -> None:
        """Row i of ``_logcond`` is log p(. | prefix) for the prefix with ``_row[prefix] == i``;
        then the uniform row used for prefixes of probability zero, and the point mass on EOS for
        prefixes that contain EOS (with an EOS id)."""
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
        if self.eos_id is not None:
            self._logcond = torch.cat([self._logcond, point_mass(self._logcond[:1], self.eos_id)])

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] float64 log p(. | prefix); prefixes are the tokens so far (length 0..length-1)."""
        uniform = len(self._row)
        rows = []
        for p in prefixes:
            key = tuple(p)
            i = self._row.get(key)
            if i is None:
                self._check_prefix(key)
                i = uniform + 1 if self._ended(key) else uniform
            rows.append(i)
        return self._logcond[rows]

    def prob(self, seq: Sequence[int]) -> float:
        """P(seq); with an EOS id ``seq`` may end at its EOS (it is padded)."""
        return self._table.get(self._padded(seq), 0.0)

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
        eos_id: None, or the EOS token: its transition row must put all mass on EOS (it absorbs).
        token_names: None, or one name per state (for ``token_text``).
    """

    def __init__(self, initial, transition, length: int, eos_id: int | None = None,
                 token_names: Sequence[str] | None = None):
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
        self._set_eos(eos_id, token_names)
        if self.eos_id is not None and transition[self.eos_id, self.eos_id] != 1.0:
            raise ValueError(f"transition row {self.eos_id} (EOS) must put all its mass on EOS: after EOS a toy "
                             "emits only EOS")
        # rows 0..V-1: log transition[s]; row V: log initial (the empty prefix)
        self._logcond = torch.from_numpy(np.concatenate([_log(transition), _log(initial)[None]]))

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] float64 log p(. | prefix); only the prefix's last token matters."""
        rows = []
        for p in prefixes:
            if len(p) >= self.length or (len(p) and not 0 <= p[-1] < self.vocab_size):
                self._check_prefix(p)
            rows.append(self.eos_id if self._ended(p) else int(p[-1]) if len(p) else self.vocab_size)
        return self._logcond[rows]

    def prob(self, seq: Sequence[int]) -> float:
        """P(seq); with an EOS id ``seq`` may end at its EOS (it is padded)."""
        seq = self._padded(seq)
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
    """The exact distribution r of ``decoder``'s outputs of ``steps`` tokens on ``truth`` (outputs that
    end at EOS padded with EOS to ``steps`` tokens).

    Deterministic decoders give a point mass on their output. Random decoders (``Sampling``) are
    enumerated through their warped per-step probabilities (the rows' tokens so far given as the
    history the repetition penalty reads), one ``logprobs`` call per depth, keeping only outputs
    with r > 0 (guarded by ``ENUMERATION_LIMIT``)."""
    if not decoder.is_random:
        tokens = decoder.decode(truth, list(prompt), steps).tokens
        return {pad_after_eos(tokens, steps, getattr(truth, "eos_id", None)): 1.0}
    room = truth.length - len(prompt)
    if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or not 1 <= steps <= room:
        raise ValueError(f"steps must be an integer in 1..{room} for this toy of length {truth.length}, got {steps!r}")
    frontier: dict[tuple[int, ...], float] = {(): 0.0}  # prefix -> log r(prefix)
    for _ in range(steps):
        _check_size("enumerating the decoder's outputs", len(frontier) * truth.vocab_size)
        keys = list(frontier)
        rows = [list(prompt) + list(k) for k in keys]
        history = None
        if getattr(decoder, "needs_history", False):
            history = torch.tensor(rows, dtype=torch.long).reshape(len(rows), -1)
        warped = decoder.warp(truth.logprobs(rows).double(), history)
        nxt = {}
        for key, row in zip(keys, warped):
            base = frontier[key]
            for v in torch.nonzero(row > -math.inf).squeeze(1).tolist():
                nxt[key + (v,)] = base + float(row[v])
        frontier = nxt
    return {k: math.exp(lr) for k, lr in sorted(frontier.items())}


_PRESET_NAMES = frozenset({"MAX_TREE_DEPTH", "binary_tree", "cnf_distribution", "hidden_path", "eos_toy", "ToyPreset",
                           "E1_CONDITIONALS", "E2_CONDITIONALS", "SAT_CLAUSES", "PRESETS"})


def __getattr__(name: str):
    """The preset builders live in ``core.presets`` (imported on first use, so neither module imports
    the other at load time)."""
    if name in _PRESET_NAMES:
        from core import presets

        return getattr(presets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
