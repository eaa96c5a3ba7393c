"""Risk (expected loss) of a decoder for a goal, exactly on toys and by Monte Carlo on any model;
Bayes outputs, regret, and the greedy-optimality certificate.

Exact (toys): ``exact_risk`` averages over the truth P *and* the decoder's own randomness (a
sampler's output distribution r is enumerated); ``bayes_output`` is the mode (best-first search),
the per-position marginal mode, or the N-gram optimum by dynamic programming over window marginals.
The goals compute both (``core.goals``).

Monte Carlo (the model is the truth): one truth rollout per request (``core.rollout.roll_out``: n
rows drawn exactly as ``sample_many(model, prompt, steps, n, seed)`` draws them, walked once) scores
every decoder, with the goal's own estimator:

* a deterministic output ŷ: 0-1 exactly (1 − P(ŷ)); N-gram / Hamming Rao-Blackwellised per truth row,
  Σ_t (1 − 1[Y_t..s-1 = ŷ_t..s-1] · p(ŷ_s | Y_<s)); DistributionMatch exactly (TV = 1 − P(ŷ), KL = ∞);
* a random decoder: its own ``sampler_draws(n)`` draws (seeded by ``derived_seed(seed, DRAWS_STREAM)``)
  against every truth row, a two-sample U-statistic whose interval accounts for both; sampling from P
  itself (τ = 1, no truncation) uses the truth rows, cross-paired, and no extra draws;
  DistributionMatch: E_P of the Rao-Blackwellised Σ_t KL(p ‖ r) along the truth rows (∞ exactly as soon
  as truncation cuts a token of positive probability), or E_P[(1 − r(Y)/P(Y))_+];
* the Bayes output (``approx_bayes_output``): the 0-1 mode by search (no truth rows), else chosen on
  fold A of the truth rows and scored on fold B; ``estimate_regret`` is the paired difference on the
  rows that are independent of every choice, with its own interval.

Intervals are Student-t (``core.estimators``), clipped to the loss's range. Fixed seed, identical numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.compute import pin_thread
from core.decoders import Fixed, Greedy, Path, Samples, check_call, sample_groups
from core.estimators import Z95, Estimate
from core.goals import BayesResult, max_window_sum
from core.rollout import (
    DRAWS_STREAM,
    Columns,
    Rollout,
    check_samples,
    derived_seed,
    draw_targets,
    padded_rows,
    path_targets,
    roll_out,
    sampler_draws,
    score_outputs,
)
from core.toy import output_distribution

__all__ = ["Z95", "BayesResult", "Estimate", "GreedyCertificate", "approx_bayes_output", "bayes_output",
           "estimate_regret", "estimate_risk", "estimate_risks", "exact_risk", "greedy_certificate", "greedy_is_mode",
           "max_window_sum", "risk_table", "truncated_mass"]

CERTIFICATE_MARGIN = 1e-4  # nats the greedy path must clear the bound by (float32 log-probs sum with rounding)


# ---- exact, on toys -------------------------------------------------------------------------------


def _check_toy(truth, steps: int) -> None:
    if not hasattr(truth, "joint"):
        raise ValueError("exact risk needs an enumerable toy (TableDistribution or MarkovChain); "
                         "use estimate_risk for other models")
    if not isinstance(steps, int | np.integer) or not 1 <= steps <= truth.length:
        raise ValueError(f"steps must be an integer in 1..{truth.length} for this toy, got {steps!r}")


def exact_risk(goal, truth, decoder, steps: int) -> float:
    """Expected loss of ``decoder``'s output of ``steps`` tokens under the toy ``truth``, exact over
    both the truth and the decoder's randomness. DistributionMatch: KL(P‖r) (∞ where r misses
    P's support) or TV(P, r), with P the toy's distribution of its first ``steps`` tokens."""
    _check_toy(truth, steps)
    if decoder.is_random and not hasattr(decoder, "warp"):
        raise ValueError(f"exact risk needs the decoder's output distribution; {decoder.label} is random without "
                         "one (it is not a per-step sampler): use estimate_risk, or the exact risk of its output "
                         "for one seed")
    return goal.exact_risk(truth, steps, output_distribution(decoder, truth, steps))


def bayes_output(goal, truth, steps: int) -> tuple[int, ...]:
    """The output of ``steps`` tokens minimising the goal's risk under the toy ``truth`` (exact; ties
    to the lexicographically smallest): the mode for 0-1 (best-first search), the per-position
    marginal mode for Hamming, the DP optimum over window marginals for N-gram Hamming.

    Ties are exact float ties: outputs whose probabilities are equal in exact arithmetic but are
    computed by different products (e.g. Markov paths using the same transitions in another
    order) can differ in the last bit, and then the larger float wins."""
    _check_toy(truth, steps)
    return goal.exact_bayes_output(truth, steps)


def risk_table(goals: Sequence, truth, decoders: Sequence, steps: int) -> list[dict]:
    """Plain rows for the theory lab: one per decoder, then one per pointwise goal's Bayes output.
    Each row: {"decoder": label, "output": tokens or None (random), <goal.name>: exact risk, ...}."""
    pointwise = [g for g in goals if g.pointwise]
    bayes = [Fixed(bayes_output(g, truth, steps)) for g in pointwise]
    labels = [d.label for d in decoders] + [f"Bayes output ({g.name})" for g in pointwise]
    rows = []
    for label, dec in zip(labels, list(decoders) + bayes):
        row = {"decoder": label, "output": None if dec.is_random else dec.decode(truth, [], steps).tokens}
        row.update({g.name: exact_risk(g, truth, dec, steps) for g in goals})
        rows.append(row)
    return rows


# ---- Monte Carlo, on any model ------------------------------------------------------------------


def _check_truth(truth_samples: Samples | None, n_samples: int, steps: int) -> torch.Tensor | None:
    if truth_samples is None:
        return None
    if tuple(truth_samples.tokens.shape) != (n_samples, steps):
        raise ValueError(f"truth_samples must hold [n_samples, steps] = [{n_samples}, {steps}] tokens, "
                         f"got {list(truth_samples.tokens.shape)}")
    return truth_samples.tokens


def decoder_rollout(model, prompt: Sequence[int], steps: int, n_samples: int, seed: int, decoders: Sequence,
                    outputs: Sequence[Path | None] | None = None,
                    truth_samples: Samples | None = None) -> tuple[Rollout, list[Columns]]:
    """The truth rollout that scores ``decoders``, and each decoder's ``Columns`` in it.

    Deterministic decoders are decoded once (or taken from ``outputs``); per-step samplers draw
    ``sampler_draws(n_samples)`` rows each with ``derived_seed(seed, DRAWS_STREAM)`` (one grouped walk),
    except sampling from P itself, which the truth rows represent; other random decoders (MBR) are
    decoded ``sampler_draws(n_samples)`` times with seeds ``derived_seed(seed, DRAWS_STREAM) + i``."""
    prompt = check_call(model, prompt, steps)
    check_samples(n_samples, seed)
    truth = _check_truth(truth_samples, n_samples, steps)
    decoders = list(decoders)
    outputs = list(outputs) if outputs is not None else [None] * len(decoders)
    if len(outputs) != len(decoders):
        raise ValueError(f"outputs must hold one entry per decoder ({len(decoders)})")
    eos = getattr(model, "eos_id", None)
    m, ds = sampler_draws(n_samples), derived_seed(seed, DRAWS_STREAM)
    drawing = [i for i, d in enumerate(decoders)
               if d.is_random and hasattr(d, "warp") and not getattr(d, "is_identity", False)]
    pin_thread()
    drawn = dict(zip(drawing, sample_groups(model, prompt, steps, [(m, ds, decoders[i]) for i in drawing])
                     if drawing else []))
    targets, samplers, specs = {}, {}, []
    for i, d in enumerate(decoders):
        key = f"d{i}"
        if d.is_random and i in drawn:
            samplers[key] = d
            targets[key] = draw_targets(drawn[i], steps, eos)
            specs.append((key, "draws"))
        elif d.is_random and hasattr(d, "warp"):  # sampling from P: the truth rows themselves
            samplers[key] = d
            specs.append((key, "truth"))
        elif d.is_random:  # a random decoder without per-step distributions: run with m seeds
            targets[key] = path_targets([d.decode(model, prompt, steps, ds + j) for j in range(m)], steps, eos)
            specs.append((key, "draws"))
        else:
            path = outputs[i] if outputs[i] is not None else d.decode(model, prompt, steps, seed)
            targets[key] = path_targets([path], steps, eos)
            specs.append((key, "fixed"))
    rollout = roll_out(model, prompt, steps, n_samples, seed, targets=targets, samplers=samplers, truth=truth)
    cols = [rollout.truth_columns(key) if role == "truth" else rollout.columns(key, role, key) for key, role in specs]
    return rollout, cols


def estimate_risks(goal, model, decoders: Sequence, prompt: Sequence[int], steps: int, n_samples: int, seed: int,
                   *, truth_samples: Samples | None = None, outputs: Sequence[Path | None] | None = None
                   ) -> list[Estimate]:
    """``estimate_risk`` of every decoder from one truth rollout (the random decoders' draws in one
    grouped walk): equal to the separate calls up to the float rounding of the grouped draws."""
    rollout, cols = decoder_rollout(model, prompt, steps, n_samples, seed, decoders, outputs, truth_samples)
    return [goal.estimate(rollout, c) for c in cols]


def estimate_risk(goal, model, decoder, prompt: Sequence[int], steps: int, n_samples: int, seed: int, *,
                  truth_samples: Samples | None = None, output: Path | None = None) -> Estimate:
    """Monte Carlo risk of ``decoder`` for ``goal`` with ``model`` as the truth (see the module doc).

    Args:
        truth_samples: optional ``sample_many(model, prompt, steps, n_samples, s)`` rows to use as the
            truth rows (teacher-forced); by default drawn with ``seed`` exactly so.
        output: optional already-decoded Path of a deterministic decoder (saves decoding again).
    """
    return estimate_risks(goal, model, [decoder], prompt, steps, n_samples, seed, truth_samples=truth_samples,
                          outputs=[output])[0]


def estimate_regret(goal, model, decoder, prompt: Sequence[int], steps: int, n_samples: int, seed: int, *,
                    truth_samples: Samples | None = None, output: Path | None = None,
                    node_budget: int = 4096) -> Estimate:
    """risk(decoder) − risk(Bayes output), paired on the same truth rows, with its own 95% interval.

    The Bayes output is ``approx_bayes_output``'s on the same rollout: the 0-1 mode by search (then the
    regret of a fixed output is exact), else chosen on fold A (the first n_samples // 2 rows), and the
    regret is the mean paired difference on fold B, independent of that choice (so it can come out
    negative when the decoder beats an approximate Bayes output). DistributionMatch: the Bayes
    decoder (sampling from P) has risk 0, so the regret is the risk."""
    check_samples(n_samples, seed, minimum=4)
    rollout, (cols,) = decoder_rollout(model, prompt, steps, n_samples, seed, [decoder], [output], truth_samples)
    bayes = goal.monte_carlo_bayes(model, check_call(model, prompt, steps), rollout, node_budget)
    return goal.estimate(rollout, cols, bayes.columns)


def approx_bayes_output(goal, model, prompt: Sequence[int], steps: int, n_samples: int, seed: int,
                        node_budget: int = 4096, *, truth_samples: Samples | None = None) -> BayesResult:
    """A Bayes output under a model too large to enumerate, saying whether it is exact.

    0-1: the mode by best-first search within ``node_budget`` expansions (exact when it finishes),
    else the better of the search's candidate and beam search. Hamming / N-gram: the DP optimum over
    window marginals estimated on fold A of ``n_samples`` truth rows drawn with ``seed`` (approximate).
    DistributionMatch: the Bayes decoder is P itself; the output shown is one draw from P."""
    prompt = check_call(model, prompt, steps)
    check_samples(n_samples, seed)
    truth = _check_truth(truth_samples, n_samples, steps)
    rollout = roll_out(model, prompt, steps, n_samples, seed, truth=truth)
    return goal.monte_carlo_bayes(model, prompt, rollout, node_budget)


def truncated_mass(model, sampler, prompt: Sequence[int], steps: int, n_samples: int, seed: int, *,
                   truth_samples: Samples | None = None) -> Estimate:
    """The truth's probability mass outside the sampler's support (what top-k/top-p cut off):
    P(Y ∉ supp r), the fraction of truth rows the sampler would never produce."""
    prompt = check_call(model, prompt, steps)
    check_samples(n_samples, seed)
    truth = _check_truth(truth_samples, n_samples, steps)
    rollout = roll_out(model, prompt, steps, n_samples, seed, samplers={"sampler": sampler}, truth=truth)
    cut = rollout.divergences["sampler"].cut.double()
    return Estimate.from_values(cut, f"P-mass outside the sampler's support, {n_samples} truth rows", (0.0, 1.0))


# ---- the greedy-optimality certificate (claims.md C13) -------------------------------------------


@dataclass(frozen=True)
class GreedyCertificate:
    """Trauger & Tewari's sufficient condition for greedy = mode.

    Any sequence other than the greedy output ŷ leaves it at some step t with a token other than ŷ_t,
    so its probability is at most P(ŷ_<t) · q_2(t), q_2(t) the largest probability of a token other
    than ŷ_t after ŷ_<t. ``bound`` = max_t of that (log); ``holds`` when log P(ŷ) clears it by
    ``CERTIFICATE_MARGIN`` (then greedy is exactly a most probable sequence). Only sufficient: when it
    fails, greedy may still be the mode."""

    tokens: tuple[int, ...]
    logprob: float
    bound: float
    step: int
    holds: bool

    def text(self) -> str:
        p, b = math.exp(self.logprob), math.exp(self.bound)
        if self.holds:
            return (f"Greedy is exactly the mode — certified, no search needed: P(greedy) = {p:.4g} ≥ {b:.4g}, the "
                    f"most any other sequence can have (it must leave the greedy path somewhere; the largest bound "
                    f"is at step {self.step}: P(greedy's first {self.step} tokens) × the runner-up token's p).")
        return (f"Greedy is not certified as the mode: P(greedy) = {p:.4g} < {b:.4g}, the bound for leaving the "
                f"greedy path at step {self.step} (P(greedy's first {self.step} tokens) × the runner-up token's p). "
                "The certificate is only sufficient: greedy may still be the mode.")


def certificate_from_scores(tokens: Sequence[int], step_logprobs: torch.Tensor,
                            runner_up: torch.Tensor) -> GreedyCertificate:
    """The certificate of a greedy output from its teacher-forced log-probs and runner-up log-probs."""
    lp = step_logprobs.double()
    cum = lp.cumsum(0)
    before = torch.cat([torch.zeros(1, dtype=torch.float64), cum[:-1]])
    bounds = before + runner_up.double()
    t = int(torch.argmax(bounds))
    logp, bound = float(cum[-1]), float(bounds[t])
    return GreedyCertificate(tuple(int(x) for x in tokens), logp, bound, t, logp >= bound + CERTIFICATE_MARGIN)


def greedy_certificate(model, prompt: Sequence[int], steps: int, path: Path | None = None) -> GreedyCertificate:
    """The certificate for ``Greedy().decode(model, prompt, steps)`` (or the given greedy ``path``), from
    one teacher-forced pass over it (outputs padded after EOS)."""
    prompt = check_call(model, prompt, steps)
    path = path if path is not None else Greedy().decode(model, prompt, steps)
    row = padded_rows([path.tokens], steps, getattr(model, "eos_id", None))
    scored = score_outputs(model, prompt, row)
    return certificate_from_scores(row[0].tolist(), scored.step_logprobs[0], scored.runner_up[0])


def greedy_is_mode(model, prompt: Sequence[int], steps: int) -> bool | None:
    """True when the certificate proves greedy's output is the mode (claims.md C13); None when it does
    not hold (it is only sufficient, so greedy may still be the mode)."""
    return True if greedy_certificate(model, prompt, steps).holds else None
