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

The output equals ``Greedy().decode(engine, prompt, steps)`` token for token on every CPU, by
construction rather than by kernel luck. A k-token verification feed and greedy's one-token steps are
different shapes, so their log-probs may differ in the last bits (within
``core.compute.LOGPROB_TOLERANCE``; see the determinism contract there). Where head 1's top-2 margin
is at least ``core.compute.NEAR_TIE_MARGIN`` (far above twice that tolerance) both computations
pick the same token. Below it — a near-tie — the decision is *replayed* on greedy's own shape
path: the very calls ``Greedy().decode`` makes (``engine.start(prompt, batch=1, steps=steps)``,
then one token per ``advance``), made lazily on a second session that catches up with the
committed tokens. Ties break to the lowest token id on both paths. ``SpeculativeResult.replays``
counts the replayed decisions and ``replay_forwards`` the model passes they cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from core.compute import NEAR_TIE_MARGIN


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
        replayed: indices into ``predicted`` whose decision was a near-tie, recomputed on greedy's
            own shape path (the replayed token is the one in ``predicted``).
    """

    position: int
    fed: tuple[int, ...]
    drafted: tuple[int, ...]
    predicted: tuple[int, ...]
    accepted: int
    bonus: int
    replayed: tuple[int, ...] = ()

    @property
    def committed(self) -> tuple[int, ...]:
        return (*self.drafted[: self.accepted], self.bonus)


@dataclass(frozen=True)
class SpeculativeResult:
    """Output and statistics of ``self_speculative``.

    Attributes:
        tokens: the new tokens (equal to greedy decoding's).
        forwards: model passes: the prompt pass, one verification pass per iteration, and the
            ``replay_forwards`` (greedy decoding uses ``steps``).
        draft_passes: head-only passes that drafted (k-1 head blocks at one cached position).
        heads: k, the number of heads used (head 1 verifies, heads 2..k draft).
        traces: one ``Trace`` per prompt or verification pass, in order.
        replays: near-tie decisions recomputed on greedy's own shape path.
        replay_forwards: model passes the replays cost (greedy's prompt pass and one-token steps up to
            the last replayed decision, each made once).
    """

    tokens: tuple[int, ...]
    forwards: int
    draft_passes: int
    heads: int
    traces: tuple[Trace, ...]
    replays: int = 0
    replay_forwards: int = 0

    @property
    def tokens_per_forward(self) -> float:
        """Committed tokens per model pass, replays included (greedy decoding: 1.0; at most k)."""
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
    (the rule of ``core.decoders.Greedy``: its scores add one float64 constant to every float32
    log-prob, which keeps their order — two float32 log-probs a float64 rounding could merge would
    both have to exceed -2e-6, i.e. probabilities summing past 1)."""
    return torch.argmax(logprobs, dim=-1)


def _margins(logprobs: torch.Tensor) -> list[float]:
    """Top-2 margin of each row of [T, V] log-probs (nats)."""
    top = torch.topk(logprobs, 2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


class _GreedyPath:
    """The calls ``Greedy().decode(engine, prompt, steps)`` makes — ``start(prompt, batch=1, steps)``,
    then one token per ``advance`` — made lazily, to decide near-ties exactly as greedy does."""

    def __init__(self, engine, prompt: list[int], steps: int):
        self.engine, self.prompt, self.steps = engine, prompt, steps
        self.session = None
        self.fed: list[int] = []
        self.forwards = 0
        self.replays = 0

    def decide(self, tokens: list[int]) -> int:
        """Greedy's token after ``prompt + tokens``, where ``tokens`` extends every earlier call's."""
        if self.session is None:
            self.session = self.engine.start(self.prompt, batch=1, steps=self.steps)
            self.forwards += 1
        if tokens[: len(self.fed)] != self.fed:
            raise AssertionError("greedy's path only moves forward")
        for t in tokens[len(self.fed) :]:
            self.session.advance([t])
            self.forwards += 1
        self.fed = list(tokens)
        self.replays += 1
        return int(_argmax(self.session.last[0]))


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
    drafting and head 1 verifying; output identical to ``Greedy().decode(engine, prompt, steps)``
    (near-ties replayed on greedy's path, see the module docstring).

    Raises ValueError for a model without extra heads, steps < 1, heads outside [2, n_heads],
    token ids outside the vocabulary, or prompt + steps longer than the context.
    """
    prompt, k = _check(engine, prompt, steps, heads)
    session = engine.start(prompt, batch=1, steps=steps)  # greedy's own first call: its first decision
    greedy = _GreedyPath(engine, prompt, steps)
    nxt = int(_argmax(session.last[0]))
    traces = [Trace(len(prompt), (), (), (nxt,), 0, nxt)]
    tokens = [nxt]
    draft_passes = 0
    eos = getattr(engine, "eos_id", None)
    while len(tokens) < steps and tokens[-1] != eos:  # greedy stops after emitting EOS
        room = steps - len(tokens)  # tokens still wanted; this pass commits 1..min(k, room)
        drafts: list[int] = []
        if room > 1:
            drafts = _argmax(session.heads(which=range(1, min(k, room)))[0]).tolist()
            draft_passes += 1
        before = session.length
        fed = [nxt, *drafts]
        lp = session.feed(fed)[0]
        predicted = _argmax(lp).tolist()
        margins = _margins(lp)
        replayed = []
        accepted = 0
        for i in range(len(fed)):  # decide until the first draft greedy would not have chosen
            if margins[i] < NEAR_TIE_MARGIN:
                predicted[i] = greedy.decide(tokens + drafts[:i])
                replayed.append(i)
            if i == len(drafts) or drafts[i] != predicted[i]:
                break
            accepted += 1
        nxt = predicted[accepted]
        if eos in drafts[:accepted]:  # an accepted EOS ends the output: it becomes this pass's last token
            accepted, nxt = drafts.index(eos), eos
        session.rollback(before + accepted + 1)
        traces.append(Trace(before, tuple(fed), tuple(drafts), tuple(predicted), accepted, nxt, tuple(replayed)))
        tokens.extend([*drafts[:accepted], nxt])
    return SpeculativeResult(tuple(tokens), len(traces) + greedy.forwards, draft_passes, k, tuple(traces),
                             greedy.replays, greedy.forwards)


from core.speculative_sample import speculative_sample  # noqa: E402,F401
