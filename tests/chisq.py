"""One chi-square check of sampled outputs against an exact output distribution."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from scipy.stats import chisquare


def assert_frequencies_match(outputs: Iterable[tuple[int, ...]], r: Mapping[tuple[int, ...], float],
                             min_p: float = 1e-3) -> None:
    """Chi-square of the outputs' counts against ``r`` (cells expecting < 5 pooled); every output must be
    in ``r``'s support (a KeyError otherwise) and the p-value must exceed ``min_p``."""
    counts = dict.fromkeys(r, 0)
    n = 0
    for y in outputs:
        counts[tuple(y)] += 1  # a KeyError is an output outside r's support
        n += 1
    keys = [y for y in r if r[y] * n >= 5]
    observed = np.array([counts[y] for y in keys] + [n - sum(counts[y] for y in keys)])
    expected = np.array([r[y] * n for y in keys] + [n - sum(r[y] * n for y in keys)])
    keep = expected > 1e-9
    assert chisquare(observed[keep], expected[keep]).pvalue > min_p
