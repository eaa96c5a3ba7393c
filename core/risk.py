"""Risk (expected loss) of a decoder for a goal, exactly on toys and by Monte Carlo on any model,
and Bayes outputs (the risk-minimising output for a goal).

Exact (toys): ``exact_risk`` averages over the truth P *and* the decoder's own randomness (a
sampler's output distribution r is enumerated); ``bayes_output`` is the mode (best-first search),
the per-position marginal mode, or the N-gram optimum by dynamic programming over window marginals.

Monte Carlo (the model is the truth): ``estimate_risk`` returns an ``Estimate`` with a 95% normal
confidence interval, using the cheapest unbiased estimator available:

* 0-1 risk of a fixed output ŷ is exact: 1 − P(ŷ).
* N-gram / Hamming risk is Rao-Blackwellised: Σ_t (1 − E_{Y<t ~ P} P(Y_{t:t+N-1} = ŷ_{t:t+N-1} | Y<t)),
  the window probability computed by forking every sampled prefix Y<t and teacher-forcing ŷ's
  window (for a random decoder, each truth row is paired with an independent decoder draw ŷ_i;
  its 0-1 risk is then E_r[1 − P(Ŷ)], needing no truth samples at all).
* KL(P‖r) of a sampler: E_P[log P(Y) − log r(Y)] with r(Y) by teacher forcing through the same
  warpers; ∞ (exactly) as soon as top-k/top-p cut a token of positive probability at a prefix
  the truth reaches. TV: E_P[(1 − r(Y)/P(Y))_+]. The truth's mass that truncation cut off is
  reported (``truncated_mass``).

Fixed seed, identical numbers. Truth rows are drawn with ``seed`` exactly as
``sample_many(model, prompt, steps, n_samples, seed)`` draws them, so several decoders can share
one batch via ``truth_samples=``; a random decoder's own draws use a seed derived from ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.decoders import (
    Beam,
    Fixed,
    Path,
    Samples,
    Sampling,
    best_first_search,
    check_call,
    sample_groups,
    sum_in_order,
    top_indices,
    walk,
)
from core.goals import DistributionMatch
from core.toy import output_distribution

Z95 = 1.959963984540054  # two-sided 95% normal quantile
BEAM_FALLBACK = 8  # beam width tried when the mode search runs out of budget
MAX_WINDOW_CELLS = 1 << 22  # samples x candidate windows held for the sampled N-gram marginals


@dataclass(frozen=True)
class Estimate:
    """A risk estimate: mean ± 95% CI from n independent rows, or an exact value (stderr 0)."""

    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int
    exact: bool = False
    note: str = ""

    @classmethod
    def exact_value(cls, value: float, note: str = "") -> Estimate:
        return cls(float(value), 0.0, float(value), float(value), 0, True, note)

    @classmethod
    def from_values(cls, values, note: str = "") -> Estimate:
        """Mean and normal 95% CI of i.i.d. per-row values."""
        v = np.asarray(torch.as_tensor(values, dtype=torch.float64))
        mean = float(v.mean())
        stderr = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.inf
        return cls(mean, stderr, mean - Z95 * stderr, mean + Z95 * stderr, len(v), False, note)


@dataclass(frozen=True)
class BayesResult:
    """An (approximate) Bayes output: ``exact`` says whether it is certainly optimal for the goal
    under the model, ``method`` how it was found."""

    tokens: tuple[int, ...]
    exact: bool
    method: str


# ---- exact, on toys -------------------------------------------------------------------------------


def _check_toy(truth, steps: int) -> None:
    if not hasattr(truth, "joint"):
        raise ValueError("exact risk needs an enumerable toy (TableDistribution or MarkovChain); "
                         "use estimate_risk for other models")
    if not isinstance(steps, int | np.integer) or not 1 <= steps <= truth.length:
        raise ValueError(f"steps must be an integer in 1..{truth.length} for this toy, got {steps!r}")


def _prefix_distribution(truth, steps: int) -> dict[tuple[int, ...], float]:
    """P over the first ``steps`` tokens, as {sequence: probability}."""
    seqs, probs = truth.joint()
    out: dict[tuple[int, ...], float] = {}
    for s, p in zip(seqs[:, :steps].tolist(), probs.tolist()):
        out[tuple(s)] = out.get(tuple(s), 0.0) + p
    return out


def _sequence_probs(model, outputs: np.ndarray) -> np.ndarray:
    """P(output) for every row of outputs [M, steps], by teacher forcing (one logprobs call)."""
    m, steps = outputs.shape
    rows = outputs.tolist()
    lp = model.logprobs([r[:t] for r in rows for t in range(steps)]).double().reshape(m, steps, -1)
    step = lp.gather(2, torch.as_tensor(outputs)[:, :, None]).squeeze(2)
    return sum_in_order(step).exp().numpy()


def _fixed_output_risks(goal, truth, steps: int, outputs: np.ndarray) -> np.ndarray:
    """Exact risk of each fixed output (rows of [M, steps]): Σ_t (1 − P(window t of the output))."""
    n = goal.window(steps)
    if n == steps:
        return 1.0 - _sequence_probs(truth, outputs)
    n_windows = steps - n + 1
    marg = truth.window_marginals(n)[:n_windows]
    hit = sum(marg[t][tuple(outputs[:, t + k] for k in range(n))] for t in range(n_windows))
    return n_windows - hit


def exact_risk(goal, truth, decoder, steps: int) -> float:
    """Expected loss of ``decoder``'s output of ``steps`` tokens under the toy ``truth``, exact over
    both the truth and the decoder's randomness. DistributionMatch: KL(P‖r) (∞ where r misses
    P's support) or TV(P, r), with P the toy's distribution of its first ``steps`` tokens."""
    _check_toy(truth, steps)
    r = output_distribution(decoder, truth, steps)
    if isinstance(goal, DistributionMatch):
        return goal.between(_prefix_distribution(truth, steps), r)
    outputs = np.array(list(r), dtype=np.int64).reshape(len(r), steps)
    weights = np.array(list(r.values()))
    return math.fsum(weights * _fixed_output_risks(goal, truth, steps, outputs))


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


def bayes_output(goal, truth, steps: int) -> tuple[int, ...]:
    """The output of ``steps`` tokens minimising the goal's risk under the toy ``truth`` (exact; ties
    to the lexicographically smallest): the mode for 0-1 (best-first search), the per-position
    marginal mode for Hamming, the DP optimum over window marginals for N-gram Hamming.

    Ties are exact float ties: outputs whose probabilities are equal in exact arithmetic but are
    computed by different products (e.g. Markov paths using the same transitions in another
    order) can differ in the last bit, and then the larger float wins."""
    _check_toy(truth, steps)
    if isinstance(goal, DistributionMatch):
        raise ValueError("no single output is Bayes-optimal for distribution matching: the Bayes decoder is "
                         "P itself (Sampling() at temperature 1)")
    n = goal.window(steps)
    if n == steps:
        return best_first_search(truth, [], steps).tokens
    marg = truth.window_marginals(n)[: steps - n + 1]
    return tuple(max_window_sum(marg.reshape(1, steps - n + 1, -1), truth.vocab_size, n)[0].tolist())


def risk_table(goals: Sequence, truth, decoders: Sequence, steps: int) -> list[dict]:
    """Plain rows for the theory lab: one per decoder, then one per pointwise goal's Bayes output.
    Each row: {"decoder": label, "output": tokens or None (random), <goal.name>: exact risk, ...}."""
    bayes = [Fixed(bayes_output(g, truth, steps)) for g in goals if not isinstance(g, DistributionMatch)]
    labels = [d.label for d in decoders] + [f"Bayes output ({g.name})" for g in goals
                                            if not isinstance(g, DistributionMatch)]
    rows = []
    for label, dec in zip(labels, list(decoders) + bayes):
        row = {"decoder": label, "output": None if dec.is_random else dec.decode(truth, [], steps).tokens}
        row.update({g.name: exact_risk(g, truth, dec, steps) for g in goals})
        rows.append(row)
    return rows


# ---- Monte Carlo, on any model ------------------------------------------------------------------


def _derived_seed(seed: int) -> int:
    """An independent seed for the decoder's own draws."""
    return int(np.random.SeedSequence([seed % 2**63, 1]).generate_state(1)[0])


def _check_mc(n_samples, seed, truth_samples: Samples | None, steps: int) -> None:
    if not isinstance(n_samples, int | np.integer) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if truth_samples is not None and tuple(truth_samples.tokens.shape) != (n_samples, steps):
        raise ValueError(f"truth_samples must hold [n_samples, steps] = [{n_samples}, {steps}] tokens, "
                         f"got {list(truth_samples.tokens.shape)}")


def _window_hits(model, prompt, steps: int, n: int, targets: torch.Tensor, target_lps: torch.Tensor,
                 n_samples: int, seed: int, truth_samples: Samples | None) -> torch.Tensor:
    """[n_samples, W]: P(Y_{t:t+n-1} = target window t | Y_<t) for truth rows Y (t = 0 needs no Y).

    targets / target_lps: [1 or n_samples, steps] target tokens and their model log-probs."""
    return _window_hits_many(model, prompt, steps, n, [(targets, target_lps)], n_samples, seed, truth_samples)[0]


FORK_ROWS = 1024  # rows teacher-forced at once through the N-gram windows (targets x truth rows)


def _window_hits_many(model, prompt, steps: int, n: int, targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      n_samples: int, seed: int, truth_samples: Samples | None) -> list[torch.Tensor]:
    """``_window_hits`` for several target sets in one walk over the truth rows: entry d is exactly
    ``_window_hits(..., *targets[d], ...)``. At each step the truth rows' log-probs give every target's
    first window token at once; the N-1 forced tokens after it run as one fork of (targets x truth
    rows), in chunks of at most ``FORK_ROWS`` rows (a row's log-probs do not depend on its batch)."""
    n_windows = steps - n + 1
    hits, tgts = [], []
    for tok, lps in targets:
        h = torch.empty(n_samples, n_windows, dtype=torch.float64)
        h[:, 0] = sum_in_order(lps[:, :n]).exp()
        hits.append(h)
        tgts.append(tok.expand(n_samples, -1))
    if n_windows == 1 or not targets:
        return hits
    per_fork = max(1, FORK_ROWS // n_samples)
    chunks = [range(a, min(a + per_fork, len(tgts))) for a in range(0, len(tgts), per_fork)]
    forced = None if truth_samples is None else truth_samples.tokens
    for step in walk(model, prompt, steps, n_samples, seed=seed, tokens=forced):
        if step.t >= n_windows:
            break
        if step.t == 0:
            continue
        t = step.t
        accs = [step.logprobs.gather(1, tg[:, t : t + 1]).squeeze(1).double() for tg in tgts]
        if n > 1:
            for chunk in chunks:
                fork = step.session.select(list(range(n_samples)) * len(chunk))
                for k in range(1, n):
                    fork.advance(torch.cat([tgts[d][:, t + k - 1] for d in chunk]).tolist())
                    for j, d in enumerate(chunk):  # gather, then widen: the rows are wide
                        rows = fork.last[j * n_samples : (j + 1) * n_samples]
                        accs[d] = accs[d] + rows.gather(1, tgts[d][:, t + k : t + k + 1]).squeeze(1).double()
        for h, acc in zip(hits, accs):
            h[:, t] = acc.exp()
    return hits


@dataclass(frozen=True)
class _SamplerStats:
    """Per truth row: log P(Y), log r(Y), the P-mass cut by truncation along Y; and whether any
    visited prefix had a cut token of positive probability."""

    logp: torch.Tensor
    logr: torch.Tensor
    cut: torch.Tensor
    any_cut: bool


def _sampler_stats(model, sampler: Sampling, prompt, steps: int, n_samples: int, seed: int,
                   truth_samples: Samples | None) -> _SamplerStats:
    return _sampler_stats_many(model, [sampler], prompt, steps, n_samples, seed, truth_samples)[0]


def _sampler_stats_many(model, samplers: Sequence[Sampling], prompt, steps: int, n_samples: int, seed: int,
                        truth_samples: Samples | None) -> list[_SamplerStats]:
    """``_sampler_stats`` of several samplers from one walk over the truth rows."""
    logp = torch.zeros(n_samples, dtype=torch.float64)
    logr = [torch.zeros_like(logp) for _ in samplers]
    cut = [torch.zeros_like(logp) for _ in samplers]
    alive = [torch.ones(n_samples, dtype=torch.bool) for _ in samplers]
    any_cut = [False for _ in samplers]
    forced = None if truth_samples is None else truth_samples.tokens
    for step in walk(model, prompt, steps, n_samples, seed=seed, tokens=forced):
        idx = step.tokens[:, None]
        logp += step.logprobs.gather(1, idx).squeeze(1).double()
        probs = None
        for i, sampler in enumerate(samplers):
            warped = sampler.warp(step.logprobs)
            wr = warped.gather(1, idx).squeeze(1).double()
            logr[i] += wr
            if probs is None:
                probs = step.logprobs.exp()
            cut_here = probs.masked_fill(warped > -math.inf, 0.0).sum(1, dtype=torch.float64)
            any_cut[i] = any_cut[i] or bool((cut_here > 0).any())
            cut[i] += alive[i] * cut_here
            alive[i] &= wr > -math.inf
    return [_SamplerStats(logp.clone(), lr, c, ac) for lr, c, ac in zip(logr, cut, any_cut)]


def truncated_mass(model, sampler: Sampling, prompt: Sequence[int], steps: int, n_samples: int, seed: int, *,
                   truth_samples: Samples | None = None) -> Estimate:
    """The truth's probability mass outside the sampler's support (what top-k/top-p cut off):
    P(Y ∉ supp r) = E_P Σ_t 1[Y_<t kept] · P(cut tokens | Y_<t), Rao-Blackwellised over the cut
    tokens at every visited prefix."""
    prompt = check_call(model, prompt, steps)
    _check_mc(n_samples, seed, truth_samples, steps)
    stats = _sampler_stats(model, sampler, prompt, steps, n_samples, seed, truth_samples)
    return Estimate.from_values(stats.cut, note="P-mass outside the sampler's support")


def _divergence_of_sampler(goal: DistributionMatch, stats: _SamplerStats) -> Estimate:
    cut = Estimate.from_values(stats.cut)
    cut_note = f"top-k/top-p cut off {cut.mean:.4g} ± {Z95 * cut.stderr:.2g} of the truth's mass"
    if goal.divergence == "kl":
        if stats.any_cut:
            return Estimate.exact_value(math.inf, f"{cut_note}, so r misses part of P's support: KL(P‖r) = ∞")
        return Estimate.from_values(stats.logp - stats.logr, "E_P[log P(Y) − log r(Y)], r by teacher forcing")
    values = (1.0 - (stats.logr - stats.logp).exp()).clamp(min=0.0)
    note = "E_P[(1 − r(Y)/P(Y))+], r by teacher forcing" + (f"; {cut_note}" if stats.any_cut else "")
    return Estimate.from_values(values, note)


def _divergence_of_output(goal: DistributionMatch, path: Path) -> Estimate:
    p = math.exp(path.logprob)
    if goal.divergence == "tv":
        return Estimate.exact_value(1.0 - p, "1 − P(ŷ) for a deterministic output ŷ")
    if p >= 1.0:
        return Estimate.exact_value(0.0, "P is a point mass on the output")
    return Estimate.exact_value(math.inf, "a deterministic decoder's r is a point mass: it misses the rest of P")


def estimate_risk(goal, model, decoder, prompt: Sequence[int], steps: int, n_samples: int, seed: int, *,
                  truth_samples: Samples | None = None, output: Path | None = None) -> Estimate:
    """Monte Carlo risk of ``decoder`` for ``goal`` with ``model`` as the truth (see the module doc).

    Args:
        truth_samples: optional ``sample_many(model, prompt, steps, n_samples, s)`` rows to use as the
            truth draws (share one batch across decoders); by default drawn with ``seed`` exactly so.
        output: optional already-decoded Path of a deterministic decoder (saves decoding again).
    """
    return estimate_risks(goal, model, [decoder], prompt, steps, n_samples, seed, truth_samples=truth_samples,
                          outputs=[output])[0]


def estimate_risks(goal, model, decoders: Sequence, prompt: Sequence[int], steps: int, n_samples: int, seed: int,
                   *, truth_samples: Samples | None = None, outputs: Sequence[Path | None] | None = None,
                   draws: Sequence[Samples | None] | None = None) -> list[Estimate]:
    """``estimate_risk`` of every decoder, sharing the passes over the model: equal, number for
    number, to ``[estimate_risk(goal, model, d, prompt, steps, n_samples, seed, truth_samples=...,
    output=o) for d, o in zip(decoders, outputs)]`` (bitwise where the model's rows do not depend on
    the batch around them, as the shipped engine's on CPU; else up to float32 rounding of the grouped
    draws and forks).

    One walk over the truth rows scores every decoder (each step's truth log-probs give all targets'
    window probabilities at once; N-gram windows teacher-force all targets as one fork), the random
    decoders' own draws are drawn in one walk (``sample_groups``, each decoder's rows exactly as
    ``sample_many(..., _derived_seed(seed), decoder)``), and all samplers' divergence statistics come
    from one walk.

    Args:
        outputs: per decoder, None or its already-decoded Path (deterministic decoders only).
        draws: per decoder, None or its already-drawn ``sample_many(model, prompt, steps, n_samples,
            _derived_seed(seed), decoder)`` rows (random decoders, pointwise goals only).
    """
    prompt = check_call(model, prompt, steps)
    _check_mc(n_samples, seed, truth_samples, steps)
    decoders = list(decoders)
    outputs = list(outputs) if outputs is not None else [None] * len(decoders)
    draws = list(draws) if draws is not None else [None] * len(decoders)
    if len(outputs) != len(decoders) or len(draws) != len(decoders):
        raise ValueError(f"outputs and draws must hold one entry per decoder ({len(decoders)})")
    outputs = [o if o is not None or d.is_random else d.decode(model, prompt, steps) for d, o in zip(decoders, outputs)]
    result: list[Estimate | None] = [None] * len(decoders)
    if isinstance(goal, DistributionMatch):
        random = [i for i, d in enumerate(decoders) if d.is_random]
        for i, d in enumerate(decoders):
            if not d.is_random:
                result[i] = _divergence_of_output(goal, outputs[i])
        if random:
            stats = _sampler_stats_many(model, [decoders[i] for i in random], prompt, steps, n_samples, seed,
                                        truth_samples)
            for i, st in zip(random, stats):
                result[i] = _divergence_of_sampler(goal, st)
        return result
    n = goal.window(steps)
    n_windows = steps - n + 1
    missing = [i for i, d in enumerate(decoders) if d.is_random and draws[i] is None]
    if missing:
        ds = _derived_seed(seed)
        for i, drawn in zip(missing, sample_groups(model, prompt, steps, [(n_samples, ds, decoders[i])
                                                                          for i in missing])):
            draws[i] = drawn
    scored, targets = [], []
    for i, d in enumerate(decoders):
        if d.is_random:
            targets.append((draws[i].tokens, draws[i].step_logprobs))
        elif n_windows == 1:
            result[i] = Estimate.exact_value(1.0 - math.exp(outputs[i].logprob), "1 − P(ŷ), exact")
            continue
        else:
            targets.append((torch.tensor([outputs[i].tokens], dtype=torch.long),
                            torch.tensor([outputs[i].step_logprobs], dtype=torch.float64)))
        scored.append(i)
    hits = _window_hits_many(model, prompt, steps, n, targets, n_samples, seed, truth_samples)
    for i, h in zip(scored, hits):
        result[i] = Estimate.from_values(n_windows - h.sum(1), "Rao-Blackwellised over each window's probability")
    return result


# ---- approximate Bayes outputs, on any model ------------------------------------------------------


class WindowMarginals:
    """Estimated window marginals over per-position candidate tokens, accumulated one step of truth
    rows at a time (``observe``), so any walk over the truth rows can feed them.

    Candidates at position s: the m tokens of highest Rao-Blackwellised marginal
    mean_i p(. | Y_i,<s). Window t's estimate: mean_i 1[Y_i,t:t+n-2 = w_0..w_{n-2}] ·
    p(w_{n-1} | Y_i,<t+n-1), unbiased for P(window t = w)."""

    def __init__(self, vocab: int, steps: int, n: int, n_samples: int):
        self.steps, self.n, self.n_samples = steps, n, n_samples
        self.m = int(max(2, min(vocab, 16, math.floor((MAX_WINDOW_CELLS / n_samples) ** (1 / n)))))
        self.cands, self.probs, self.toks = [], [], []

    def observe(self, t: int, logprobs: torch.Tensor, tokens: torch.Tensor) -> None:
        """Step t's [n_samples, V] truth log-probs and the [n_samples] truth tokens at t."""
        if t != len(self.cands):
            raise ValueError(f"steps must be observed in order: expected {len(self.cands)}, got {t}")
        p = logprobs.exp()
        c = top_indices(p.mean(0, dtype=torch.float64), self.m)
        self.cands.append(c)
        self.probs.append(p[:, c].double())
        self.toks.append(tokens)

    def result(self):
        """([W, m**n] window estimates, candidates [steps, m] as numpy, m)."""
        if len(self.cands) != self.steps:
            raise ValueError(f"all {self.steps} steps must be observed, got {len(self.cands)}")
        n, n_samples = self.n, self.n_samples
        match = [(tok[:, None] == c[None, :]).double() for tok, c in zip(self.toks, self.cands)]
        est = []
        for t in range(self.steps - n + 1):
            acc = torch.ones(n_samples, 1, dtype=torch.float64)
            for k in range(n):
                factor = self.probs[t + k] if k == n - 1 else match[t + k]
                acc = (acc[:, :, None] * factor[:, None, :]).reshape(n_samples, -1)
            est.append(acc.mean(0))
        return torch.stack(est).numpy(), torch.stack(self.cands).numpy(), self.m


def _sampled_window_marginals(model, prompt, steps: int, n: int, n_samples: int, seed: int,
                              truth_samples: Samples | None = None):
    """``WindowMarginals`` of ``n_samples`` truth rows drawn with ``seed`` as ``sample_many`` draws
    them, or of ``truth_samples`` (the same rows, no new draw)."""
    acc = WindowMarginals(model.vocab_size, steps, n, n_samples)
    forced = None if truth_samples is None else truth_samples.tokens
    for step in walk(model, prompt, steps, n_samples, seed=seed, tokens=forced):
        acc.observe(step.t, step.logprobs, step.tokens)
    return acc.result()


def approx_bayes_output(goal, model, prompt: Sequence[int], steps: int, n_samples: int, seed: int,
                        node_budget: int = 4096, *, truth_samples: Samples | None = None,
                        marginals: WindowMarginals | None = None) -> BayesResult:
    """A Bayes output under a model too large to enumerate, saying whether it is exact.

    0-1: the mode by best-first search within ``node_budget`` expansions (exact when it finishes),
    else the better of the search's candidate and beam search (width ``BEAM_FALLBACK``).
    Hamming / N-gram: DP over window marginals estimated from ``n_samples`` Rao-Blackwellised
    truth samples (``_sampled_window_marginals``); approximate. DistributionMatch: the Bayes decoder
    is P itself, so the result is one draw at temperature 1. ``truth_samples``: the
    ``sample_many(model, prompt, steps, n_samples, seed)`` rows if already drawn (same result, one
    pass fewer). ``marginals``: a ``WindowMarginals`` already fed with every step of those rows
    (Hamming / N-gram; then no walk at all).
    """
    prompt = check_call(model, prompt, steps)
    _check_mc(n_samples, seed, truth_samples, steps)
    if isinstance(goal, DistributionMatch):
        path = Sampling().decode(model, prompt, steps, seed)
        return BayesResult(path.tokens, True, "one draw from P at temperature 1: for distribution matching the "
                                              "Bayes decoder is sampling from P itself")
    n = goal.window(steps)
    if n == steps:
        res = best_first_search(model, prompt, steps, node_budget)
        if res.exact:
            return BayesResult(res.tokens, True, f"mode by best-first search ({res.expansions} nodes expanded)")
        beam = Beam(BEAM_FALLBACK).decode(model, prompt, steps)
        tokens = beam.tokens if beam.logprob > res.logprob else res.tokens
        return BayesResult(tokens, False, f"best-first search hit its budget of {node_budget} nodes "
                                          f"(log P(mode) ≤ {res.bound:.3f}); best of its candidate and beam "
                                          f"search (width {BEAM_FALLBACK})")
    if marginals is not None:
        if (marginals.steps, marginals.n, marginals.n_samples) != (steps, n, n_samples):
            raise ValueError(f"marginals must be of {steps} steps, window {n} and {n_samples} samples, got "
                             f"{marginals.steps}, {marginals.n} and {marginals.n_samples}")
        est, cands, m = marginals.result()
    else:
        est, cands, m = _sampled_window_marginals(model, prompt, steps, n, n_samples, seed, truth_samples)
    idx = max_window_sum(est[None], m, n)[0]
    tokens = tuple(int(cands[s, j]) for s, j in enumerate(idx))
    what = "per-position marginal mode" if n == 1 else f"{n}-gram DP optimum"
    return BayesResult(tokens, False, f"{what} over window marginals estimated from {n_samples} "
                                      f"Rao-Blackwellised samples (top {m} candidates per position)")

