"""Goals: what a decoded sequence is judged by.

Pointwise goals score one output ŷ against one true sequence y; all of them count mismatching
windows of N consecutive tokens (``window``): the N-gram Hamming loss
ℓ(ŷ, y) = Σ_{t=1}^{n-N+1} 1[ŷ_{t:t+N-1} ≠ y_{t:t+N-1}], with Hamming = N-gram of N=1 and
sequence 0-1 = N-gram of N=n. Their expected loss under P therefore only needs window marginals:
E ℓ(ŷ, Y) = Σ_t (1 − P(Y_{t:t+N-1} = ŷ_{t:t+N-1})).

``DistributionMatch`` judges a decoder's whole output distribution r against P instead
(KL(P‖r) or total variation); its Bayes decoder is sampling from P itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


class _WindowGoal:
    """Shared by the pointwise goals: loss = number of mismatching windows of ``window(steps)``."""

    pointwise: ClassVar[bool] = True  # judges one output against one true sequence

    def window(self, steps: int) -> int:
        raise NotImplementedError

    def n_windows(self, steps: int) -> int:
        return steps - self.window(steps) + 1

    def loss(self, y_hat: Sequence[int], y: Sequence[int]) -> float:
        y_hat, y = tuple(y_hat), tuple(y)
        if len(y_hat) != len(y):
            raise ValueError(f"y_hat and y must have the same length, got {len(y_hat)} and {len(y)}")
        n = self.window(len(y))
        return float(sum(y_hat[t : t + n] != y[t : t + n] for t in range(len(y) - n + 1)))


@dataclass(frozen=True)
class ZeroOne(_WindowGoal):
    """Exact answer: loss 1 unless the whole sequence is right. Bayes output: the mode."""

    name: ClassVar[str] = "0-1"

    def window(self, steps: int) -> int:
        return steps


@dataclass(frozen=True)
class Hamming(_WindowGoal):
    """Number of wrong positions. Bayes output: the per-position marginal mode."""

    name: ClassVar[str] = "Hamming"

    def window(self, steps: int) -> int:
        return 1


@dataclass(frozen=True)
class NGramHamming(_WindowGoal):
    """Number of wrong windows of ``n`` consecutive tokens (windows t = 1..steps-n+1). Bayes
    output: maximise Σ_t P(window t) by dynamic programming."""

    n: int

    def __post_init__(self):
        if not isinstance(self.n, int | np.integer) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n!r}")

    @property
    def name(self) -> str:
        return f"{self.n}-gram Hamming"

    def window(self, steps: int) -> int:
        if self.n > steps:
            raise ValueError(f"NGramHamming n must be <= steps ({steps}), got {self.n}")
        return self.n


@dataclass(frozen=True)
class DistributionMatch:
    """Creative use: how far the decoder's output distribution r is from P.

    ``divergence="kl"``: KL(P‖r) = Σ P log(P/r), infinite when r misses part of P's support (so
    for every deterministic decoder unless P is a point mass). ``"tv"``: ½ Σ |P − r| (1 − P(ŷ) for
    a deterministic output ŷ). Bayes decoder: sampling from P (temperature 1), risk 0.
    """

    divergence: str = "kl"
    pointwise: ClassVar[bool] = False  # judges the decoder's whole output distribution

    def __post_init__(self):
        if self.divergence not in ("kl", "tv"):
            raise ValueError(f"divergence must be 'kl' or 'tv', got {self.divergence!r}")

    @property
    def name(self) -> str:
        return "KL(P‖r)" if self.divergence == "kl" else "TV(P, r)"

    def between(self, p: Mapping[tuple[int, ...], float], r: Mapping[tuple[int, ...], float]) -> float:
        """The divergence between two explicit distributions {sequence: probability}."""
        if self.divergence == "tv":
            return 0.5 * math.fsum(abs(p.get(y, 0.0) - r.get(y, 0.0)) for y in set(p) | set(r))
        terms = []
        for y, py in p.items():
            if py > 0:
                ry = r.get(y, 0.0)
                if ry <= 0:
                    return math.inf
                terms.append(py * (math.log(py) - math.log(ry)))
        return max(math.fsum(terms), 0.0)


Goal = ZeroOne | Hamming | NGramHamming | DistributionMatch
