"""Monte Carlo estimates with honest 95% intervals: Student-t quantiles, clipped to the loss's range.

Two shapes of data occur:

* i.i.d. per-row values (``Estimate.from_values``): mean ± t_{0.975, n-1} · s/√n;
* a kernel K[i, j] of n truth rows against m independent decoder draws (``Estimate.from_kernel``): the
  two-sample U-statistic mean_ij K[i, j], whose variance is estimated from the row means and the column
  means (Hoeffding's first-order terms, s²_rows/n + s²_cols/m; this slightly overstates the variance, by
  Var(K)/(nm)), with Welch–Satterthwaite degrees of freedom.

Every interval is clipped to the range the estimated quantity can take (``bounds``), e.g. [0, number of
windows] for an N-gram Hamming risk, [0, 1] for a total variation, [-W, W] for a regret.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Z95 = 1.959963984540054  # two-sided 95% normal quantile (the t quantile's limit)
SMALL_N = 30  # below this many independent truth rows an interval leans on the t approximation
SMALL_DRAWS = 16  # below this many own draws a random decoder's interval under-covers (toys: 92% at 12, 95% at 25)


def t95(df: float) -> float:
    """The two-sided 95% Student-t quantile with ``df`` degrees of freedom (``Z95`` for df = ∞)."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df!r}")
    if math.isinf(df):
        return Z95
    from scipy.special import stdtrit  # imported on first use: keeps scipy off the app's start-up path

    return float(stdtrit(df, 0.975))


Bounds = tuple[float, float]
UNBOUNDED: Bounds = (-math.inf, math.inf)


@dataclass(frozen=True)
class Estimate:
    """An estimate: mean ± 95% CI (clipped to the quantity's range), or an exact value (stderr 0).

    Attributes:
        n: independent truth rows (or pairs, or draws) behind the estimate; 0 when exact.
        n_draws: for a random decoder scored against the truth rows, its own independent draws (the
            interval accounts for both); 0 otherwise.
        df: degrees of freedom of the t quantile used (inf for exact values).
    """

    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int
    exact: bool = False
    note: str = ""
    n_draws: int = 0
    df: float = math.inf

    @classmethod
    def exact_value(cls, value: float, note: str = "") -> Estimate:
        return cls(float(value), 0.0, float(value), float(value), 0, True, note)

    @classmethod
    def from_values(cls, values, note: str = "", bounds: Bounds = UNBOUNDED) -> Estimate:
        """Mean and Student-t 95% CI of i.i.d. per-row values, clipped to ``bounds``."""
        v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        n = v.numel()
        if n == 0:
            raise ValueError("values must hold at least one value")
        mean = float(v.mean())
        if not math.isfinite(mean):
            return cls(mean, math.inf, mean, mean, n, False, note)
        var = float(v.var(unbiased=True)) if n > 1 else math.inf
        return cls._interval(mean, var / n, n - 1 if n > 1 else math.nan, n, 0, note, bounds)

    @classmethod
    def from_kernel(cls, kernel, note: str = "", bounds: Bounds = UNBOUNDED) -> Estimate:
        """The two-sample U-statistic mean_ij K[i, j] of n truth rows (i) against m independent
        draws (j), with the variance s²(row means)/n + s²(column means)/m and Welch–Satterthwaite
        degrees of freedom. m = 1 (one fixed output) is ``from_values`` of the single column."""
        k = torch.as_tensor(kernel, dtype=torch.float64)
        if k.dim() != 2 or k.numel() == 0:
            raise ValueError(f"kernel must be a non-empty [rows, draws] matrix, got shape {list(k.shape)}")
        n, m = k.shape
        if m == 1:
            return cls.from_values(k[:, 0], note, bounds)
        mean = float(k.mean())
        if not math.isfinite(mean):
            return cls(mean, math.inf, mean, mean, n, False, note, m)
        a = float(k.mean(1).var(unbiased=True)) / n if n > 1 else 0.0
        b = float(k.mean(0).var(unbiased=True)) / m
        if n == 1:
            df = m - 1
        elif a + b == 0:
            df = math.inf
        else:
            df = (a + b) ** 2 / (a * a / (n - 1) + b * b / (m - 1))
        return cls._interval(mean, a + b, df, n, m, note, bounds)

    @classmethod
    def _interval(cls, mean: float, var: float, df: float, n: int, m: int, note: str, bounds: Bounds) -> Estimate:
        lo, hi = bounds
        mean = min(max(mean, lo), hi)
        stderr = math.sqrt(var) if math.isfinite(var) else math.inf
        if stderr == 0:
            return cls(mean, 0.0, mean, mean, n, False, note, m, math.inf)
        if not math.isfinite(stderr) or not df > 0:
            return cls(mean, math.inf, lo, hi, n, False, note, m, df if df > 0 else math.nan)
        half = t95(df) * stderr
        return cls(mean, stderr, max(lo, mean - half), min(hi, mean + half), n, False, note, m, df)

    @property
    def small(self) -> bool:
        """Whether the interval rests on fewer than ``SMALL_N`` independent values or ``SMALL_DRAWS`` draws
        of a random decoder, so it is wide and leans on the t approximation."""
        return not self.exact and (self.n < SMALL_N or 0 < self.n_draws < SMALL_DRAWS)

    @property
    def half_width(self) -> float:
        return max(self.ci_high - self.mean, self.mean - self.ci_low)

    def describe_n(self) -> str:
        """"exact", "n = 64" or "n = 64 rows × 8 draws"."""
        if self.exact:
            return "exact"
        return f"n = {self.n} rows × {self.n_draws} draws" if self.n_draws else f"n = {self.n}"
