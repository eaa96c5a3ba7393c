"""Goals: what a decoded sequence is judged by, and each goal's own risk estimators.

Pointwise goals score one output ŷ against one true sequence y; all of them count mismatching
windows of N consecutive tokens (``window``): the N-gram Hamming loss
ℓ(ŷ, y) = Σ_{t=1}^{n-N+1} 1[ŷ_{t:t+N-1} ≠ y_{t:t+N-1}], with Hamming = N-gram of N=1 and
sequence 0-1 = N-gram of N=n. Their expected loss under P therefore only needs window marginals:
E ℓ(ŷ, Y) = Σ_t (1 − P(Y_{t:t+N-1} = ŷ_{t:t+N-1})).

``DistributionMatch`` judges a decoder's whole output distribution r against P instead
(KL(P‖r) or total variation); its Bayes decoder is sampling from P itself.

Every goal owns its estimators (callers never branch on the goal's class):

* exact, on an enumerable toy: ``exact_risk(truth, steps, r)`` of an output distribution r and
  ``exact_bayes_output(truth, steps)``;
* Monte Carlo, from one truth rollout (``core.rollout``): ``estimate(rollout, columns, baseline)`` is
  the risk of an output, of a random decoder's draws or of sampling from P, or with ``baseline`` the
  regret against it, paired on the same truth rows; ``expected_losses`` scores MBR candidates;
  ``monte_carlo_bayes`` is the Bayes output, chosen on fold A of the truth rows (so it is scored on
  fold B, independently of its choice) or found without them (the 0-1 mode by search).

Pointwise Monte Carlo losses are Rao-Blackwellised from the one truth pass: window t of a target ŷ
against truth row Y_i scores 1 − 1[Y_i,t:s-1 = ŷ_t:s-1] · p(ŷ_s | Y_i,<s) with s = t+N-1 (unbiased for
1 − P(window), averaging the window's last token under P); 0-1 is exact: 1 − P(ŷ).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from core.decoders import Beam, best_first_search
from core.estimators import Estimate
from core.protocol import pad_after_eos
from core.rollout import Columns, Rollout, score_outputs

BEAM_FALLBACK = 8  # beam width tried when the mode search runs out of budget
MAX_WINDOW_CELLS = 1 << 22  # fold-A rows x candidate windows held for the sampled N-gram marginals


@dataclass(frozen=True)
class BayesResult:
    """An (approximate) Bayes output: ``exact`` says whether it is certainly optimal for the goal under
    the model, ``method`` how it was found; ``columns`` what a rollout knows of it (for scoring)."""

    tokens: tuple[int, ...]
    exact: bool
    method: str
    columns: Columns | None = field(default=None, compare=False, repr=False)


def prefix_distribution(truth, steps: int) -> dict[tuple[int, ...], float]:
    """P over a toy's first ``steps`` tokens, as {sequence: probability}."""
    seqs, probs = truth.joint()
    out: dict[tuple[int, ...], float] = {}
    for s, p in zip(seqs[:, :steps].tolist(), probs.tolist()):
        out[tuple(s)] = out.get(tuple(s), 0.0) + p
    return out


def max_window_sum(scores: np.ndarray, k: int, n: int) -> np.ndarray:
    """argmax over sequences y of Σ_t scores[b, t, window t of y], for each b; ties go to the
    lexicographically smallest y.

    Args:
        scores: [B, W, k**n]; the last axis is a window of n tokens in 0..k-1 in row-major order.
    Returns:
        [B, W + n - 1] int64 token indices.

    Dynamic programming over the last n-1 tokens: backward best-to-go values, then a forward pass
    that takes the lowest window / token reaching the optimum. n=1 is a per-position argmax; with
    n=2 and log-probabilities as scores it is Viterbi.
    """
    b, w, s = scores.shape
    if s != k**n:
        raise ValueError(f"scores' last axis must have k**n = {k**n} entries, got {s}")
    m = k ** (n - 1)
    state = np.arange(s) % m  # window -> its last n-1 tokens (= the next window's first n-1)
    togo = np.empty_like(scores)
    togo[:, -1] = scores[:, -1]
    for t in range(w - 2, -1, -1):
        togo[:, t] = scores[:, t] + togo[:, t + 1].reshape(b, m, k).max(axis=2)[:, state]
    out = np.empty((b, w + n - 1), dtype=np.int64)
    win = togo[:, 0].argmax(axis=1)  # first maximum: the lexicographically smallest window
    out[:, :n] = np.stack(np.unravel_index(win, (k,) * n), axis=1) if n > 1 else win[:, None]
    rows = np.arange(b)
    for t in range(1, w):
        last = win % m
        nxt = togo[:, t].reshape(b, m, k)[rows, last].argmax(axis=1)
        win = last * k + nxt
        out[:, t + n - 1] = nxt
    return out


def window_losses(match: torch.Tensor, hits: torch.Tensor, n: int) -> torch.Tensor:
    """Rao-Blackwellised N-gram Hamming losses of targets against truth rows.

    Args:
        match: [steps, ...] bool, whether the truth row's token equals the target's at each position.
        hits: [steps, ...] p(target token | truth row's prefix) at each position.
        n: the window length N.
    Returns:
        [...] float64: Σ_t (1 − 1[window t's first N-1 tokens match] · hits[t+N-1]).
    """
    steps = match.shape[0]
    n_windows = steps - n + 1
    if n == 1:
        return n_windows - hits.sum(0, dtype=torch.float64)
    mism = (~match[: steps - 1]).to(torch.int32).cumsum(0)
    cum = torch.cat([torch.zeros_like(mism[:1]), mism])  # cum[s]: mismatches at positions < s
    ok = cum[n - 1 : n - 1 + n_windows] == cum[:n_windows]
    return n_windows - (ok * hits[n - 1 : n - 1 + n_windows]).sum(0, dtype=torch.float64)


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

    def loss_range(self, steps: int) -> tuple[float, float]:
        return 0.0, float(self.n_windows(steps))

    def needs_references(self, steps: int) -> bool:
        """Whether scoring a fixed output needs truth rows (0-1 does not: its risk is 1 − P(ŷ))."""
        return self.window(steps) < steps

    # ---- exact, on toys ----------------------------------------------------------------------------

    def exact_risk(self, truth, steps: int, r: Mapping[tuple[int, ...], float]) -> float:
        """Σ_ŷ r(ŷ) E_P ℓ(ŷ, Y) for an output distribution r over sequences of ``steps`` tokens."""
        outputs = np.array(list(r), dtype=np.int64).reshape(len(r), steps)
        weights = np.array(list(r.values()))
        n = self.window(steps)
        if n == steps:
            p = prefix_distribution(truth, steps)
            risks = 1.0 - np.array([p.get(tuple(y), 0.0) for y in outputs.tolist()])
        else:
            n_windows = steps - n + 1
            marg = truth.window_marginals(n)[:n_windows]
            risks = n_windows - sum(marg[t][tuple(outputs[:, t + k] for k in range(n))] for t in range(n_windows))
        return math.fsum(weights * risks)

    def exact_bayes_output(self, truth, steps: int) -> tuple[int, ...]:
        """The risk-minimising output (ties to the lexicographically smallest): the mode by best-first
        search (0-1), else the DP optimum over the toy's exact window marginals."""
        n = self.window(steps)
        if n == steps:
            return best_first_search(truth, [], steps).tokens
        marg = truth.window_marginals(n)[: steps - n + 1]
        return tuple(max_window_sum(marg.reshape(1, steps - n + 1, -1), truth.vocab_size, n)[0].tolist())

    # ---- Monte Carlo, from a truth rollout -----------------------------------------------------------

    def _kernel(self, rollout: Rollout, cols: Columns, rows: slice) -> torch.Tensor:
        """[rows, m] float64: each target's loss against each truth row of ``rows``."""
        steps = rollout.steps
        n = self.window(steps)
        if n == steps:
            loss = 1.0 - cols.logp.exp()
            return loss[None, :].expand(len(range(rollout.n)[rows]), -1)
        match = rollout.tokens[rows].T[:, :, None] == cols.tokens.T[:, None, :]
        return window_losses(match, cols.hits[:, rows], n)

    def _pair_losses(self, rollout: Rollout, truth_rows: torch.Tensor) -> torch.Tensor:
        """Loss of each row's cross-pairing partner (as the output) against the row (as the truth)."""
        partner = rollout.partner()[truth_rows]
        match = (rollout.tokens[truth_rows] == rollout.tokens[partner]).T
        return window_losses(match, rollout.pair_hits[:, truth_rows], self.window(rollout.steps))

    def estimate(self, rollout: Rollout, cols: Columns, baseline: Columns | None = None) -> Estimate:
        """The risk of ``cols`` (one output, a random decoder's draws, or sampling from P), or with
        ``baseline`` (one output) its regret risk(cols) − risk(baseline), paired on the same truth
        rows: fold B when either was chosen on fold A ("selected"), else all rows."""
        steps = rollout.steps
        w = self.n_windows(steps)
        bounds = (0.0, float(w)) if baseline is None else (-float(w), float(w))
        if not self.needs_references(steps):  # 0-1: exact per output, 1 − P(ŷ)
            loss = 1.0 - cols.logp.exp()
            if baseline is not None:
                loss = loss - (1.0 - baseline.logp.exp())
            if cols.role in ("fixed", "selected"):
                return Estimate.exact_value(float(loss[0]), "exact: 1 − P(output)" if baseline is None
                                            else "exact: P(Bayes output) − P(output)")
            what = "truth rows (draws from P)" if cols.role == "truth" else "own draws"
            return Estimate.from_values(loss, f"mean of 1 − P(draw) over {loss.numel()} {what}", bounds)
        held_out = cols.role == "selected" or (baseline is not None and baseline.role == "selected")
        rows = rollout.fold_b if held_out else slice(0, rollout.n)
        where = f"the {rollout.n - rollout.n_select} fold-B rows" if held_out else f"{rollout.n} truth rows"
        base = None if baseline is None else self._kernel(rollout, baseline, rows)[:, 0]
        if cols.role == "truth":
            half = rollout.n_select
            if base is None:
                both = self._pair_losses(rollout, torch.arange(2 * half))
                values = (both[:half] + both[half:]) / 2
            else:
                idx = torch.arange(half, 2 * half)
                values = self._pair_losses(rollout, idx) - base[: len(idx)]
            return Estimate.from_values(values, f"sampling from P: {half} pairs of independent truth rows, "
                                                "each scored against the other", bounds)
        kernel = self._kernel(rollout, cols, rows)
        if base is not None:
            kernel = kernel - base[:, None]
        m = kernel.shape[1]
        note = f"Rao-Blackwellised over {where}" + (f" × {m} own draws" if m > 1 else "")
        return Estimate.from_kernel(kernel, note, bounds)

    def expected_losses(self, rollout: Rollout | None, cols: Columns, rows: slice) -> torch.Tensor:
        """[m] each target's estimated risk over the truth rows ``rows`` (MBR's expected utilities);
        exact for 0-1 (``rollout`` may then be None)."""
        if not self.needs_references(cols.tokens.shape[1]):
            return 1.0 - cols.logp.exp()
        return self._kernel(rollout, cols, rows).mean(0)

    def monte_carlo_bayes(self, model, prompt: Sequence[int], rollout: Rollout,
                          node_budget: int = 4096) -> BayesResult:
        """The Bayes output under a model too large to enumerate, saying whether it is exact.

        0-1: the mode by best-first search within ``node_budget`` expansions (exact when it finishes),
        else the better of the search's candidate and beam search (width ``BEAM_FALLBACK``); it uses no
        truth rows. Hamming / N-gram: the DP optimum over window marginals estimated on fold A
        (Rao-Blackwellised, over the rollout's top candidates per position), so its risk is scored on
        fold B, independently of the choice; approximate."""
        steps = rollout.steps
        n = self.window(steps)
        if n == steps:
            return self._mode(model, prompt, steps, node_budget)
        half = rollout.n_select
        # candidates per position: k**n candidate windows on each of the half rows fit MAX_WINDOW_CELLS (for
        # long windows k = 1: the per-position marginal modes, the DP's only choice)
        k = int(max(1, min(rollout.cands.shape[1], math.floor((MAX_WINDOW_CELLS / half) ** (1 / n)))))
        cands, truth = rollout.cands[:, :k], rollout.tokens[:half]
        est = []
        for t in range(steps - n + 1):
            acc = torch.ones(half, 1, dtype=torch.float64)
            for j in range(n):
                s = t + j
                factor = (rollout.cand_hits[s, :half, :k].double() if j == n - 1
                          else (truth[:, s, None] == cands[s][None, :]).double())
                acc = (acc[:, :, None] * factor[:, None, :]).reshape(half, -1)
            est.append(acc.mean(0))
        idx = torch.as_tensor(max_window_sum(torch.stack(est).numpy()[None], k, n)[0])
        pos = torch.arange(steps)
        tokens = cands[pos, idx]
        hits = rollout.cand_hits[pos, :, idx][:, :, None]  # [steps, n, 1]
        cols = Columns(tokens[None], torch.tensor([math.nan], dtype=torch.float64), hits, "selected")
        what = "per-position marginal mode" if n == 1 else f"{n}-gram DP optimum"
        return BayesResult(tuple(tokens.tolist()), False,
                           f"{what} over window marginals estimated on fold A ({half} truth rows, "
                           f"Rao-Blackwellised, top {k} candidates per position), scored on the other "
                           f"{rollout.n - half} rows", cols)

    def _mode(self, model, prompt: Sequence[int], steps: int, node_budget: int) -> BayesResult:
        res = best_first_search(model, prompt, steps, node_budget)
        tokens, logp = res.tokens, res.logprob
        if res.exact:
            method = f"mode by best-first search ({res.expansions} nodes expanded)"
        else:
            beam = Beam(BEAM_FALLBACK).decode(model, prompt, steps)
            if beam.logprob > res.logprob:
                tokens, logp = beam.tokens, beam.logprob
            method = (f"best-first search hit its budget of {node_budget} nodes (log P(mode) ≤ {res.bound:.3f}); "
                      f"best of its candidate and beam search (width {BEAM_FALLBACK})")
        padded = pad_after_eos(tokens, steps, getattr(model, "eos_id", None))
        row = torch.tensor([padded], dtype=torch.long)
        if padded != tuple(tokens):
            logp = float(score_outputs(model, prompt, row).logprob[0])
        cols = Columns(row, torch.tensor([logp], dtype=torch.float64), None, "fixed")
        return BayesResult(padded, res.exact, method, cols)


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

    def loss_range(self, steps: int) -> tuple[float, float]:
        return (0.0, math.inf) if self.divergence == "kl" else (0.0, 1.0)

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

    # ---- exact, on toys ----------------------------------------------------------------------------

    def exact_risk(self, truth, steps: int, r: Mapping[tuple[int, ...], float]) -> float:
        """KL(P‖r) (∞ where r misses P's support) or TV(P, r), P over the toy's first ``steps`` tokens."""
        return self.between(prefix_distribution(truth, steps), r)

    def exact_bayes_output(self, truth, steps: int) -> tuple[int, ...]:
        raise ValueError("no single output is Bayes-optimal for distribution matching: the Bayes decoder is "
                         "P itself (Sampling() at temperature 1)")

    # ---- Monte Carlo, from a truth rollout -----------------------------------------------------------

    def estimate(self, rollout: Rollout, cols: Columns, baseline: Columns | None = None) -> Estimate:
        """The divergence of a deterministic output (exact: TV = 1 − P(ŷ), KL = ∞ unless P(ŷ) = 1), of a
        sampler (from its ``Divergence`` over the truth rows: E_P of the Rao-Blackwellised per-row KL, or
        of (1 − r(Y)/P(Y))_+), or of sampling from P (exactly 0). The Bayes decoder's risk is exactly
        0, so a regret (``baseline``) equals the risk."""
        lo, hi = self.loss_range(rollout.steps)
        if cols.role == "truth":
            return Estimate.exact_value(0.0, "exact: sampling from P has r = P")
        if cols.role in ("fixed", "selected"):
            p = float(cols.logp[0].exp())
            if self.divergence == "tv":
                return Estimate.exact_value(1.0 - p, "exact: 1 − P(ŷ) for a deterministic output ŷ")
            if p >= 1.0:
                return Estimate.exact_value(0.0, "exact: P is a point mass on the output")
            return Estimate.exact_value(math.inf, "exact: a deterministic decoder's r is a point mass, missing the "
                                                  "rest of P")
        if cols.sampler not in rollout.divergences:
            raise ValueError("distribution matching needs the sampler's per-step distribution r(. | prefix); this "
                             "random decoder has none (e.g. MBR)")
        div = rollout.divergences[cols.sampler]
        if div.identity:
            return Estimate.exact_value(0.0, "exact: the sampler is P itself (τ = 1, no truncation)")
        cut_note = f"{int(div.cut.sum())} of the {rollout.n} truth rows lie outside the sampler's support"
        if self.divergence == "kl":
            if div.any_cut:
                return Estimate.exact_value(math.inf, "top-k/top-p cut off a token of positive probability at a "
                                                      "prefix the truth reaches, so r misses part of P's support: "
                                                      "KL(P‖r) = ∞")
            return Estimate.from_values(div.kl, f"E_P of Σ_t KL(p‖r) at the truth rows' prefixes "
                                                 f"({rollout.n} rows, Rao-Blackwellised)", (lo, hi))
        note = f"E_P[(1 − r(Y)/P(Y))+] over {rollout.n} truth rows" + (f"; {cut_note}" if div.any_cut else "")
        return Estimate.from_values(div.tv, note, (lo, hi))

    def expected_losses(self, rollout: Rollout | None, cols: Columns, rows: slice) -> torch.Tensor:
        raise ValueError("MBR needs a pointwise goal (0-1, Hamming or N-gram Hamming): distribution matching "
                         "judges a whole output distribution, not one output")

    def needs_references(self, steps: int) -> bool:
        return True

    def monte_carlo_bayes(self, model, prompt: Sequence[int], rollout: Rollout,
                          node_budget: int = 4096) -> BayesResult:
        """The Bayes decoder is P itself; the output shown is one draw from P (the first truth row)."""
        return BayesResult(tuple(rollout.tokens[0].tolist()), True,
                           "sampling from P (τ = 1) is the Bayes decoder for distribution matching",
                           rollout.truth_columns())


Goal = ZeroOne | Hamming | NGramHamming | DistributionMatch
