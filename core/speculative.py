"""Greedy self-speculative decoding with the extra heads of a multi-token-prediction model.

Blockwise parallel decoding (Stern et al., 2018) as Gloeckle et al. (2024) use it: head 1 is the
model, heads 2..k draft. One iteration, holding the cache up to the last committed position t:

1. **Draft.** Head 1's argmax at t is the next greedy token x̂_{t+1} (already exact). Heads 2..k at
   t give drafts d_{t+2..t+k} (their argmaxes; a cheap pass over k-1 head blocks at one position
   whose trunk output is cached, counted separately as a *draft pass*).
2. **Verify.** Feed [x̂_{t+1}, d_{t+2}, …, d_{t+k}] in one forward pass (the *model pass*); head 1's
   argmax after each fed token is the greedy token that follows it.
3. **Accept.** Keep the longest prefix of drafts equal to those greedy tokens, plus head 1's own
   token after the last kept one (the *bonus*): 1 to k tokens per model pass. Roll the KV cache
   back over the rejected positions and draft again from the last kept one.

The output equals ``Greedy().decode(engine, prompt, steps)`` token for token: the verification
uses the engine's head-1 log-probabilities and the same tie rule (lowest token id), and the
engine computes every row of a multi-token feed bitwise like a one-token step
(``tests/test_speculative.py`` checks both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Trace:
    """One model pass of self-speculative decoding.

    Attributes:
        position: number of tokens (prompt + generated) before this pass's first fed token.
        fed: tokens fed in this pass: the committed next token, then the drafts (empty for the
            prompt pass, which feeds the prompt).
        drafted: the drafts of heads 2..k (``fed[1:]``; fewer near the end of the output).
        predicted: head 1's greedy token after each fed token (after the prompt for the prompt pass).
        accepted: how many drafts were kept (a leading run of ``drafted``).
        bonus: head 1's token after the last kept one (committed for free).
        committed: the new output tokens this pass adds: ``drafted[:accepted] + (bonus,)``.
    """

    position: int
    fed: tuple[int, ...]
    drafted: tuple[int, ...]
    predicted: tuple[int, ...]
    accepted: int
    bonus: int

    @property
    def committed(self) -> tuple[int, ...]:
        return (*self.drafted[: self.accepted], self.bonus)


@dataclass(frozen=True)
class SpeculativeResult:
    """Output and statistics of ``self_speculative``.

    Attributes:
        tokens: the new tokens (equal to greedy decoding's).
        forwards: model passes: the prompt pass plus one verification pass per iteration (greedy
            decoding uses ``steps``).
        draft_passes: head-only passes that drafted (k-1 head blocks at one cached position).
        heads: k, the number of heads used (head 1 verifies, heads 2..k draft).
        traces: one ``Trace`` per model pass, in order.
    """

    tokens: tuple[int, ...]
    forwards: int
    draft_passes: int
    heads: int
    traces: tuple[Trace, ...]

    @property
    def tokens_per_forward(self) -> float:
        """Committed tokens per model pass (greedy decoding: 1.0; at most k)."""
        return len(self.tokens) / self.forwards

    @property
    def drafts_offered(self) -> tuple[int, ...]:
        """How many times head j (j = 2..k, first entry head 2) had a draft verified."""
        return tuple(sum(len(t.drafted) > i for t in self.traces) for i in range(self.heads - 1))

    @property
    def acceptance_per_head(self) -> tuple[float, ...]:
        """Head j's (j = 2..k, first entry head 2) share of verified drafts that were kept
        (a draft after a rejected one counts as not kept); nan where a head never drafted."""
        kept = [sum(t.accepted > i for t in self.traces) for i in range(self.heads - 1)]
        return tuple(k / n if n else float("nan") for k, n in zip(kept, self.drafts_offered))

    @property
    def conditional_acceptance_per_head(self) -> tuple[float, ...]:
        """Head j's share of kept drafts among those reached, i.e. whose earlier drafts were all
        kept (the paper's per-position acceptance); nan where never reached."""
        out = []
        for i in range(self.heads - 1):
            reached = [t for t in self.traces if len(t.drafted) > i and t.accepted >= i]
            out.append(sum(t.accepted > i for t in reached) / len(reached) if reached else float("nan"))
        return tuple(out)


def _argmax(logprobs: torch.Tensor) -> torch.Tensor:
    """Argmax over the last axis; torch returns the first maximum, i.e. ties go to the lowest id
    (the rule of ``core.decoders.Greedy``)."""
    return torch.argmax(logprobs, dim=-1)


def _check(engine, prompt: Sequence[int], steps, heads) -> tuple[list[int], int]:
    n_heads = getattr(engine, "n_heads", 1)
    if not hasattr(engine, "start") or n_heads < 2:
        raise ValueError(
            f"self-speculative decoding needs a model with extra heads (n_heads >= 2); "
            f"{getattr(engine, 'name', type(engine).__name__)} has n_heads = {n_heads}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if heads is None:
        heads = n_heads
    if isinstance(heads, bool) or not isinstance(heads, int) or not 2 <= heads <= n_heads:
        raise ValueError(f"heads must be an integer in [2, {n_heads}], got {heads!r}")
    prompt = [int(t) for t in prompt]
    bad = [t for t in prompt if not 0 <= t < engine.vocab_size]
    if bad:
        raise ValueError(f"prompt token ids must be in [0, {engine.vocab_size}), got {bad[0]}")
    engine.check_room(len(prompt) + steps)
    return prompt, heads


def self_speculative(engine, prompt: Sequence[int], steps: int, heads: int | None = None) -> SpeculativeResult:
    """Greedy decoding of ``steps`` tokens after ``prompt`` with heads 2..``heads`` (default: all)
    drafting and head 1 verifying; output identical to ``Greedy().decode(engine, prompt, steps)``.

    Raises ValueError for a model without extra heads, steps < 1, heads outside [2, n_heads],
    token ids outside the vocabulary, or prompt + steps longer than the context.
    """
    prompt, k = _check(engine, prompt, steps, heads)
    session = engine.start(prompt, batch=1, steps=steps)
    nxt = int(_argmax(session.last[0]))
    traces = [Trace(len(prompt), (), (), (nxt,), 0, nxt)]
    tokens = [nxt]
    draft_passes = 0
    while len(tokens) < steps:
        room = steps - len(tokens)  # tokens still wanted; this pass commits 1..min(k, room)
        drafts: list[int] = []
        if room > 1:
            drafts = _argmax(session.heads(which=range(1, min(k, room)))[0]).tolist()
            draft_passes += 1
        before = session.length
        fed = [nxt, *drafts]
        predicted = _argmax(session.feed(fed)[0]).tolist()
        accepted = 0
        while accepted < len(drafts) and drafts[accepted] == predicted[accepted]:
            accepted += 1
        nxt = predicted[accepted]
        session.rollback(before + accepted + 1)
        traces.append(Trace(before, tuple(fed), tuple(drafts), tuple(predicted), accepted, nxt))
        tokens.extend([*drafts[:accepted], nxt])
    return SpeculativeResult(tuple(tokens), len(traces), draft_passes, k, tuple(traces))
from core.speculative_sample import speculative_sample  # noqa: E402,F401
