"""How often is greedy decoding optimal? A sweep over random Markov chains.

For each number of states V and Dirichlet concentration α, draw many chains (initial distribution
and every transition row ~ Dirichlet(α·1)) and count on how many the greedy path is
Hamming-optimal and is a mode, i.e. its risk equals the Bayes risk (within ``TOLERANCE``: paths
built from the same transitions in another order tie exactly, and rounding must not decide).
Everything is vectorised over the chains of a grid cell with numpy; per-chain paths equal
``Greedy``, ``bayes_output(Hamming())`` and ``bayes_output(ZeroOne())`` on the same
``MarkovChain`` up to such ties.

Small α makes rows peaked (one likely successor), so greedy follows the likely path and agrees
with both optima; as α and V grow, rows flatten and greedy's local choices stop matching.

Each fraction comes from ``n_chains`` independent chains, so ``SweepResult.interval`` gives its 95%
Wilson score interval (which stays inside [0, 1] and is honest at fractions near 0 or 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.risk import max_window_sum

Z95 = 1.959963984540054  # two-sided 95% normal quantile
TOLERANCE = 1e-9  # risks / log-probabilities this close count as equal
SWEEP_LIMIT = 1 << 25  # most numbers one grid cell holds (transition matrices, marginals): ~256 MB of float64


def random_chains(n_states: int, alpha: float, n_chains: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(initial [C, V], transition [C, V, V]) with every distribution ~ Dirichlet(alpha·1)."""
    concentration = np.full(n_states, float(alpha))
    return rng.dirichlet(concentration, size=n_chains), rng.dirichlet(concentration, size=(n_chains, n_states))


def greedy_paths(initial: np.ndarray, transition: np.ndarray, length: int) -> np.ndarray:
    """[C, length]: argmax at every step (lowest id on ties)."""
    c = np.arange(len(initial))
    out = np.empty((len(initial), length), dtype=np.int64)
    out[:, 0] = initial.argmax(axis=1)
    for t in range(1, length):
        out[:, t] = transition[c, out[:, t - 1]].argmax(axis=1)
    return out


def state_marginals(initial: np.ndarray, transition: np.ndarray, length: int) -> np.ndarray:
    """[C, length, V]: P(Y_t = v) by the forward recursion."""
    out = np.empty((len(initial), length, initial.shape[1]))
    out[:, 0] = initial
    for t in range(1, length):
        out[:, t] = np.einsum("cs,csv->cv", out[:, t - 1], transition)
    return out


def hamming_risks(marginals: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """[C]: expected Hamming loss Σ_t (1 − P(Y_t = path_t)) of each chain's path."""
    c, length, _ = marginals.shape
    return length - marginals[np.arange(c)[:, None], np.arange(length), paths].sum(axis=1)


def path_logprobs(initial: np.ndarray, transition: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """[C]: log P(path) of each chain's path."""
    c = np.arange(len(initial))
    with np.errstate(divide="ignore"):
        out = np.log(initial[c, paths[:, 0]])
        for t in range(1, paths.shape[1]):
            out = out + np.log(transition[c, paths[:, t - 1], paths[:, t]])
    return out


def modes(initial: np.ndarray, transition: np.ndarray, length: int) -> np.ndarray:
    """[C, length]: the most probable sequence (Viterbi on log-probabilities, ties to the
    lexicographically smallest), via ``max_window_sum`` with windows of 2 tokens."""
    if length == 1:
        return initial.argmax(axis=1)[:, None]
    c, v = initial.shape
    with np.errstate(divide="ignore"):
        log_init, log_trans = np.log(initial), np.log(transition)
    scores = np.broadcast_to(log_trans.reshape(c, 1, v * v), (c, length - 1, v * v)).copy()
    scores[:, 0] += np.repeat(log_init, v, axis=1)  # window 0 also scores its first token
    return max_window_sum(scores, v, 2)


def wilson_interval(successes, n: int, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): the Wilson score interval for a binomial proportion, elementwise over
    ``successes`` (counts out of ``n`` trials each)."""
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    k = np.asarray(successes, dtype=np.float64)
    if np.any((k < 0) | (k > n)):
        raise ValueError(f"successes must be counts from 0 to n = {n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


METRICS = {"greedy_is_hamming_optimal": "greedy is Hamming-optimal", "greedy_is_mode": "greedy is a mode",
           "mode_is_hamming_optimal": "mode is Hamming-optimal"}  # SweepResult field -> name in rows and charts


@dataclass(frozen=True)
class SweepResult:
    """Fractions of chains on which greedy (or the mode) is optimal for a goal, [len(n_states),
    len(alphas)]."""

    n_states: tuple[int, ...]
    alphas: tuple[float, ...]
    n_chains: int
    length: int
    greedy_is_hamming_optimal: np.ndarray
    greedy_is_mode: np.ndarray
    mode_is_hamming_optimal: np.ndarray

    def counts(self, metric: str) -> np.ndarray:
        """[len(n_states), len(alphas)] int: the number of chains (of ``n_chains``) on which ``metric``
        (a field name, one of ``METRICS``) held."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        return np.rint(getattr(self, metric) * self.n_chains).astype(np.int64)

    def interval(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) [len(n_states), len(alphas)]: the 95% Wilson interval of each cell's fraction."""
        return wilson_interval(self.counts(metric), self.n_chains)

    def rows(self) -> list[dict]:
        """One plain row per grid cell, for tables and CSV: each metric's fraction, its 95% Wilson
        interval and the number of chains behind it."""
        bands = {m: self.interval(m) for m in METRICS}
        rows = []
        for i, v in enumerate(self.n_states):
            for j, a in enumerate(self.alphas):
                row = {"n_states": v, "alpha": a, "n_chains": self.n_chains, "length": self.length}
                for m, name in METRICS.items():
                    row[name] = float(getattr(self, m)[i, j])
                    row[f"{name} (95% low)"] = float(bands[m][0][i, j])
                    row[f"{name} (95% high)"] = float(bands[m][1][i, j])
                rows.append(row)
        return rows


def greedy_optimality_sweep(n_states=(2, 3, 4, 6, 8), alphas=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
                            n_chains: int = 200, length: int = 10, seed: int = 0) -> SweepResult:
    """For every (V, α) cell draw ``n_chains`` random chains of ``length`` tokens (one
    ``numpy.random.default_rng`` seeded with ``seed`` for the whole grid, cells in row-major
    order) and measure how often greedy is Hamming-optimal and is a mode (and the mode is
    Hamming-optimal), each up to ``TOLERANCE``."""
    n_states, alphas = tuple(int(v) for v in n_states), tuple(float(a) for a in alphas)
    if not n_states or any(v < 1 for v in n_states):
        raise ValueError(f"n_states must be a non-empty list of integers >= 1, got {n_states}")
    if not alphas or any(not (math.isfinite(a) and a > 0) for a in alphas):
        raise ValueError(f"alphas must be a non-empty list of numbers > 0 and finite, got {alphas}")
    if not isinstance(n_chains, int) or n_chains < 1:
        raise ValueError(f"n_chains must be an integer >= 1, got {n_chains!r}")
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    cells = n_chains * max(length, max(n_states)) * max(n_states) ** 2
    if cells > SWEEP_LIMIT:
        raise ValueError(f"n_chains x max(length, #states) x #states^2 must be at most {SWEEP_LIMIT:,} numbers per "
                         f"grid cell, got {cells:,}; use fewer chains, states or a shorter length")
    rng = np.random.default_rng(seed)
    shape = (len(n_states), len(alphas))
    g_ham, g_mode, mode_ham = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for i, v in enumerate(n_states):
        for j, a in enumerate(alphas):
            init, trans = random_chains(v, a, n_chains, rng)
            marg = state_marginals(init, trans, length)
            greedy, mode = greedy_paths(init, trans, length), modes(init, trans, length)
            best_hamming = hamming_risks(marg, marg.argmax(axis=2))
            g_ham[i, j] = np.mean(hamming_risks(marg, greedy) <= best_hamming + TOLERANCE)
            g_mode[i, j] = np.mean(path_logprobs(init, trans, greedy) >= path_logprobs(init, trans, mode) - TOLERANCE)
            mode_ham[i, j] = np.mean(hamming_risks(marg, mode) <= best_hamming + TOLERANCE)
    return SweepResult(n_states, alphas, n_chains, length, g_ham, g_mode, mode_ham)
