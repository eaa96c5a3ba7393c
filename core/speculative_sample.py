"""Sampled self-speculative decoding: the extra heads of a multi-token-prediction model draft, head 1
verifies by rejection sampling, and the output is distributed exactly as ``sampler``'s ancestral
sampling (Leviathan et al. 2023; Chen et al. 2023, with the drafts coming from heads 2..k).

One pass, with the cache holding the committed tokens up to t and the next token x_{t+1} already drawn
from head 1's warped distribution p (not yet fed):

1. **Draft.** Head j (j = 2..k) at t gives q_j, its warped distribution of token t+j (the same
   ``sampler`` warps p and q); draw d_j ~ q_j independently (a head-only *draft pass*).
2. **Verify.** Feed [x_{t+1}, d_2, …, d_k] in one forward (the *model pass*); head 1 after each fed
   token gives p, the warped distribution of the token after it.
3. **Accept.** Left to right, keep d_j with probability min(1, p(d_j)/q_j(d_j)). At the first rejection
   draw the replacement from norm(max(0, p − q_j)) and stop; if every draft is kept, draw the *bonus*
   from p after the last one. Either way that token is the next pass's x. Roll the cache back over the
   rejected drafts.

Given the tokens before it, a kept-or-replaced token has distribution p exactly (the rejection rule),
so the output is ancestral sampling with ``sampler`` whatever the heads predict; the heads only decide
how many tokens a pass commits. A draft that is reached (all earlier ones kept) is kept with probability
Σ_v min(p(v), q_j(v)) = 1 − TV(q_j, p): each trace records that number, the per-head *expected*
acceptance. The output stops after EOS, like ``Sampling().decode``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from core.path import check_count, check_seed
from core.protocol import start_session
from core.sampling import Sampling, draw


@dataclass(frozen=True)
class SampledTrace:
    """One model pass of sampled self-speculative decoding.

    Attributes:
        position: tokens (prompt + generated) before this pass's first fed token.
        fed: the committed next token, then the drafts (empty for the prompt pass).
        drafted: the drafts of heads 2..k (``fed[1:]``).
        accepted: how many drafts were kept (a leading run of ``drafted``).
        expected: for each draft that was verified (all earlier ones kept), the probability it had of
            being kept, 1 − TV(head j's warped distribution, head 1's).
        bonus: the token drawn after this pass (the next pass's first fed token), None when the output
            ended in this pass (EOS, or ``steps`` tokens).
        resampled: the bonus replaced a rejected draft (drawn from norm(max(0, p − q))).
    """

    position: int
    fed: tuple[int, ...]
    drafted: tuple[int, ...]
    accepted: int
    expected: tuple[float, ...]
    bonus: int | None
    resampled: bool

    @property
    def committed(self) -> tuple[int, ...]:
        """The output tokens this pass adds."""
        return (*self.drafted[: self.accepted], *(() if self.bonus is None else (self.bonus,)))


@dataclass(frozen=True)
class SpeculativeSampleResult:
    """Output and statistics of ``speculative_sample``.

    Attributes:
        tokens: the new tokens (ending at EOS if one was drawn).
        forwards: model passes: the prompt pass plus one verification pass per iteration (ancestral
            sampling uses one per token).
        draft_passes: head-only passes that drafted.
        heads: k, the heads used (head 1 verifies, heads 2..k draft).
        traces: one ``SampledTrace`` per model pass, in order.
    """

    tokens: tuple[int, ...]
    forwards: int
    draft_passes: int
    heads: int
    traces: tuple[SampledTrace, ...]

    @property
    def tokens_per_forward(self) -> float:
        return len(self.tokens) / self.forwards

    @property
    def positions(self) -> int:
        """The most drafts one pass verifies (k - 1)."""
        return self.heads - 1

    def _per_head(self, fn) -> tuple[float, ...]:
        return tuple(fn(i) for i in range(self.heads - 1))

    @property
    def drafts_offered(self) -> tuple[int, ...]:
        """How many drafts head j (j = 2..k, first entry head 2) had verified or skipped after a rejection."""
        return self._per_head(lambda i: sum(len(t.drafted) > i for t in self.traces))

    @property
    def drafts_reached(self) -> tuple[int, ...]:
        """How many of head j's drafts were verified (every earlier draft of the pass kept)."""
        return self._per_head(lambda i: sum(len(t.expected) > i for t in self.traces))

    @property
    def acceptance_per_head(self) -> tuple[float, ...]:
        """Head j's kept drafts / offered drafts; nan where it never drafted."""
        kept = self._per_head(lambda i: sum(t.accepted > i for t in self.traces))
        return tuple(k / n if n else math.nan for k, n in zip(kept, self.drafts_offered))

    @property
    def conditional_acceptance_per_head(self) -> tuple[float, ...]:
        """Head j's kept drafts / reached drafts; nan where none was reached."""
        kept = self._per_head(lambda i: sum(t.accepted > i for t in self.traces))
        return tuple(k / n if n else math.nan for k, n in zip(kept, self.drafts_reached))

    @property
    def expected_acceptance_per_head(self) -> tuple[float, ...]:
        """Mean over head j's reached drafts of 1 − TV(q_j, p): what ``conditional_acceptance_per_head``
        estimates; nan where none was reached."""
        def mean(i: int) -> float:
            values = [t.expected[i] for t in self.traces if len(t.expected) > i]
            return math.fsum(values) / len(values) if values else math.nan
        return self._per_head(mean)


def _check(engine, prompt: Sequence[int], steps, seed, heads, sampler) -> tuple[list[int], int]:
    n_heads = getattr(engine, "n_heads", 1)
    if not hasattr(engine, "start") or n_heads < 2:
        name = getattr(engine, "name", type(engine).__name__)
        raise ValueError(f"speculative sampling needs a model with extra heads (n_heads >= 2); {name} has "
                         f"n_heads = {n_heads}")
    check_count("steps", steps)
    check_seed(seed)
    if not isinstance(sampler, Sampling):
        raise ValueError(f"sampler must be a Sampling, got {type(sampler).__name__}")
    heads = n_heads if heads is None else heads
    if isinstance(heads, bool) or not isinstance(heads, int) or not 2 <= heads <= n_heads:
        raise ValueError(f"heads must be an integer in [2, {n_heads}], got {heads!r}")
    prompt = [int(t) for t in prompt]
    if any(not 0 <= t < engine.vocab_size for t in prompt):
        raise ValueError(f"prompt token ids must be in [0, {engine.vocab_size}), got "
                         f"{next(t for t in prompt if not 0 <= t < engine.vocab_size)}")
    if hasattr(engine, "check_room"):
        engine.check_room(len(prompt) + steps)
    return prompt, heads


def _warp_rows(sampler: Sampling, logprobs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Warped log-probs [T, V] of rows [T, V], row j after ``history[:, : L - T + 1 + j]`` ([1, L])."""
    if not sampler.needs_history:
        return sampler.warp(logprobs)
    start = history.shape[1] - logprobs.shape[0] + 1
    return torch.cat([sampler.warp(logprobs[j : j + 1], history[:, : start + j]) for j in range(logprobs.shape[0])])


def _draw_one(logprobs: torch.Tensor, gen: torch.Generator) -> int:
    return int(draw(logprobs[None], gen)[0])


def _residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Log of norm(max(0, p − q)) for probabilities p, q [V] (float64); p itself if nothing is left
    (p == q up to rounding: then a rejection has probability ~0)."""
    rest = (p - q).clamp(min=0.0)
    total = rest.sum()
    return (rest / total).log() if total > 0 else p.log()


def speculative_sample(engine, prompt: Sequence[int], steps: int, seed: int, sampler: Sampling | None = None,
                       heads: int | None = None) -> SpeculativeSampleResult:
    """Up to ``steps`` tokens after ``prompt`` drawn from ``sampler`` (default ``Sampling()``) with heads
    2..``heads`` (default: all) drafting and head 1 verifying (module doc); same output distribution as
    ``sampler.decode(engine, prompt, steps, seed)``, not the same draw. Randomness from one
    ``torch.Generator`` seeded with ``seed``.

    Raises ValueError for a model without extra heads, steps < 1, a non-integer seed, heads outside
    [2, n_heads], token ids outside the vocabulary, or prompt + steps longer than the context.
    """
    sampler = Sampling() if sampler is None else sampler
    prompt, k = _check(engine, prompt, steps, seed, heads, sampler)
    gen = torch.Generator().manual_seed(int(seed))
    eos = getattr(engine, "eos_id", None)
    session = start_session(engine, prompt, batch=1, steps=steps)
    x = _draw_one(_warp_rows(sampler, session.last, session.history)[0], gen)
    tokens = [x]
    traces = [SampledTrace(len(prompt), (), (), 0, (), x, False)]
    draft_passes = 0
    while x != eos and len(tokens) < steps:
        n_drafts = min(k - 1, steps - len(tokens))
        seen = torch.cat([session.history, torch.tensor([[x]])], dim=1).expand(n_drafts, -1)
        q = sampler.warp(session.heads(which=range(1, 1 + n_drafts))[0], seen if sampler.needs_history else None)
        drafts = draw(q, gen).tolist()
        draft_passes += 1
        before, fed = session.length, (x, *drafts)
        p = _warp_rows(sampler, session.feed(list(fed))[0], session.history)
        big_p, big_q = p[:n_drafts].double().exp(), q.double().exp()
        index = torch.arange(n_drafts)
        ids = torch.tensor(drafts)
        u = torch.rand(n_drafts, generator=gen, dtype=torch.float64)
        keep = (u * big_q[index, ids] < big_p[index, ids]).tolist()  # accept with probability min(1, p/q)
        accepted = keep.index(False) if False in keep else n_drafts
        reached = min(accepted + 1, n_drafts)
        expected = torch.minimum(big_p[:reached], big_q[:reached]).sum(dim=-1).tolist()  # 1 − TV(q, p)
        kept = drafts[:accepted]
        if eos in kept:  # the output ends at the first kept EOS
            accepted = reached = kept.index(eos) + 1
            expected, kept = expected[:reached], kept[:accepted]
        tokens.extend(kept)
        x, rejected = None, accepted < n_drafts
        if tokens[-1] != eos and len(tokens) < steps:  # else the output ended in this pass: no bonus
            x = _draw_one(_residual(big_p[accepted], big_q[accepted]) if rejected else p[n_drafts], gen)
        resampled = x is not None and rejected
        session.rollback(before + 1 + accepted)
        traces.append(SampledTrace(before, fed, tuple(drafts), accepted, tuple(expected), x, resampled))
        if x is None:
            break
        tokens.append(x)
    return SpeculativeSampleResult(tuple(tokens), len(traces), draft_passes, k, tuple(traces))


@dataclass(frozen=True)
class SamplingSpeed:
    """Wall-clock comparison of speculative and ancestral sampling with the same sampler and seed
    (different draws of the same distribution): medians of ``repeats`` alternating runs after a warm-up."""

    result: SpeculativeSampleResult
    ancestral_tokens: int
    ancestral_seconds: float
    speculative_seconds: float
    repeats: int

    @property
    def speedup(self) -> float:
        """Ancestral seconds per token / speculative seconds per token (outputs may differ in length)."""
        per_ancestral = self.ancestral_seconds / self.ancestral_tokens
        return per_ancestral / (self.speculative_seconds / len(self.result.tokens))


def compare_sampling_speed(engine, prompt: Sequence[int], steps: int, seed: int, sampler: Sampling | None = None,
                           heads: int | None = None, repeats: int = 3) -> SamplingSpeed:
    """Time ``speculative_sample`` against ``sampler.decode`` (one untimed warm-up each, then ``repeats``
    alternating timed runs, medians)."""
    from core.speculative import alternating_medians

    sampler = Sampling() if sampler is None else sampler
    check_count("repeats", repeats)
    results, seconds = alternating_medians({
        "ancestral": lambda: sampler.decode(engine, prompt, steps, seed),
        "speculative": lambda: speculative_sample(engine, prompt, steps, seed, sampler, heads)}, repeats)
    return SamplingSpeed(results["speculative"], len(results["ancestral"].tokens), seconds["ancestral"],
                         seconds["speculative"], repeats)
