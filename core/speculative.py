"""Greedy speculative decoding: drafts verified by the model in one multi-token pass, output equal to greedy.

One loop (``verify_drafts``) serves every source of drafts (a ``Drafter``):

* ``HeadDrafter``: the extra heads of a multi-token-prediction model — self-speculative decoding, i.e.
  blockwise parallel decoding (Stern et al., 2018) as Gloeckle et al. (2024) use it. Heads 2..k at the
  last fed position t give drafts of tokens t+2..t+k (their argmaxes) in a cheap head-only pass over
  k-1 head blocks whose trunk output is cached, counted separately as a *draft pass*.
* ``core.prompt_lookup.PromptLookup``: n-gram matches in the prompt and the text so far (prompt lookup
  decoding, as ``transformers``' ``generate(prompt_lookup_num_tokens=...)``); no model work at all.

One iteration, with the cache holding every committed token except the last, x̂_{t+1} (head 1's argmax
at t, already exact):

1. **Draft.** d_1..d_m, m at most the tokens still wanted minus one.
2. **Verify.** Feed [x̂_{t+1}, d_1, …, d_m] in one forward pass (the *model pass*); head 1's argmax after
   each fed token is the greedy token that follows it.
3. **Accept.** Keep the longest prefix of drafts equal to those greedy tokens, plus head 1's own token
   after the last kept one (the *bonus*): 1 to m+1 tokens per model pass. Roll the KV cache back over the
   rejected positions and draft again.

The prompt pass: a drafter that reads only tokens (prompt lookup) drafts from the prompt before the model
has seen it, and the prompt's last token is fed together with those drafts, as ``generate`` does;
otherwise (the heads need the model's state, or nothing matched) the prompt pass is greedy's own first
call and commits one token.

The output equals ``Greedy().decode(engine, prompt, steps)`` token for token on every CPU, by construction
rather than by kernel luck. A multi-token verification feed and greedy's one-token steps are different
shapes, so their log-probs may differ in the last bits (within ``core.compute.LOGPROB_TOLERANCE``; see
the determinism contract there). Where head 1's top-2 margin is at least ``core.compute.NEAR_TIE_MARGIN``
(far above twice that tolerance) both computations pick the same token. Below it — a near-tie — the
decision is *replayed* on greedy's own shape path: the very calls ``Greedy().decode`` makes
(``start_session(engine, prompt, batch=1, steps=steps)``, then one token per ``advance``), made lazily on
a second session that catches up with the committed tokens. Ties break to the lowest token id on both
paths. ``replays`` counts the replayed decisions and ``replay_forwards`` the model passes they cost.

Models without KV-cached sessions (a server, a toy) verify through ``logprobs`` on every fed prefix at
once (``RowSession``): one request per draft block on a server that returns prompt log-probs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from core.compute import NEAR_TIE_MARGIN
from core.protocol import start_session


@dataclass(frozen=True)
class Trace:
    """One model pass of greedy speculative decoding.

    Attributes:
        position: number of tokens (prompt + generated) before this pass's first fed token.
        fed: tokens fed in this pass: the token before the first one decided (the last committed token,
            or the prompt's last token when the prompt pass verifies drafts), then the drafts; empty for
            a prompt pass without drafts, which feeds the prompt.
        drafted: the drafts (``fed[1:]``; fewer near the end of the output).
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


class PassStats:
    """Statistics every greedy speculative result shares; subclasses have ``tokens``, ``forwards``,
    ``traces`` and ``positions`` (the most drafts one pass can verify)."""

    tokens: tuple[int, ...]
    forwards: int
    traces: tuple[Trace, ...]

    @property
    def positions(self) -> int:
        raise NotImplementedError

    @property
    def tokens_per_forward(self) -> float:
        """Committed tokens per model pass, replays included (greedy decoding: 1.0)."""
        return len(self.tokens) / self.forwards

    @property
    def drafted_tokens(self) -> int:
        """Drafts verified, over all passes."""
        return sum(len(t.drafted) for t in self.traces)

    @property
    def accepted_tokens(self) -> int:
        """Drafts kept, over all passes."""
        return sum(t.accepted for t in self.traces)

    @property
    def acceptance(self) -> float:
        """Kept drafts / verified drafts; nan when nothing was drafted."""
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else math.nan

    @property
    def passes_with_drafts(self) -> int:
        """Model passes that verified at least one draft."""
        return sum(bool(t.drafted) for t in self.traces)

    @property
    def drafts_offered(self) -> tuple[int, ...]:
        """Per draft position i = 1..positions (first entry position 1): passes that verified an i-th draft."""
        return tuple(sum(len(t.drafted) > i for t in self.traces) for i in range(self.positions))

    @property
    def acceptance_per_position(self) -> tuple[float, ...]:
        """Share of the i-th drafts that were kept (a draft after a rejected one counts as not kept); nan
        where no pass had an i-th draft."""
        kept = [sum(t.accepted > i for t in self.traces) for i in range(self.positions)]
        return tuple(k / n if n else math.nan for k, n in zip(kept, self.drafts_offered))

    @property
    def conditional_acceptance_per_position(self) -> tuple[float, ...]:
        """Share of the i-th drafts kept among those reached, i.e. whose earlier drafts were all kept (the
        paper's per-position acceptance); nan where never reached."""
        out = []
        for i in range(self.positions):
            reached = [t for t in self.traces if len(t.drafted) > i and t.accepted >= i]
            out.append(sum(t.accepted > i for t in reached) / len(reached) if reached else math.nan)
        return tuple(out)


@dataclass(frozen=True)
class SpeculativeResult(PassStats):
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
    def positions(self) -> int:
        return self.heads - 1

    @property
    def acceptance_per_head(self) -> tuple[float, ...]:
        """Head j's (j = 2..k, first entry head 2) share of verified drafts that were kept
        (a draft after a rejected one counts as not kept); nan where a head never drafted."""
        return self.acceptance_per_position

    @property
    def conditional_acceptance_per_head(self) -> tuple[float, ...]:
        """Head j's share of kept drafts among those reached, i.e. whose earlier drafts were all
        kept (the paper's per-position acceptance); nan where never reached."""
        return self.conditional_acceptance_per_position


# ---- the verify/accept loop ----------------------------------------------------------------------


class Drafter(Protocol):
    """A source of drafts for ``verify_drafts``.

    Attributes:
        positions: the most drafts it offers per pass.
        model_pass: drafting runs the model (a head-only pass, counted as a draft pass).
        before_prompt_pass: it drafts from tokens alone, so the prompt pass can verify drafts too.
    """

    positions: int
    model_pass: bool
    before_prompt_pass: bool

    def draft(self, session, sequence: list[int], limit: int) -> list[int]:
        """At most ``limit`` (>= 1) drafts of the tokens that follow ``sequence`` (prompt + committed
        tokens; its last token is not fed to ``session`` yet; ``session`` is None before the prompt pass)."""
        ...


@dataclass(frozen=True)
class HeadDrafter:
    """Drafts from heads 2..``heads`` of a multi-token-prediction model (their argmaxes at the last fed
    position, which predict the tokens after the next one)."""

    heads: int
    model_pass = True
    before_prompt_pass = False

    @property
    def positions(self) -> int:
        return self.heads - 1

    def draft(self, session, sequence: list[int], limit: int) -> list[int]:
        return _argmax(session.heads(which=range(1, 1 + min(self.heads - 1, limit)))[0]).tolist()


@dataclass(frozen=True)
class Verified:
    """What ``verify_drafts`` returns: the output, one trace per model pass, and the costs."""

    tokens: tuple[int, ...]
    traces: tuple[Trace, ...]
    draft_passes: int
    replays: int
    replay_forwards: int

    @property
    def forwards(self) -> int:
        """Model passes: one per trace plus the replays' (greedy decoding uses one per token)."""
        return len(self.traces) + self.replay_forwards


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
    """The calls ``Greedy().decode(engine, prompt, steps)`` makes — ``start_session(engine, prompt, batch=1,
    steps=steps)``, then one token per ``advance`` — made lazily, to decide near-ties exactly as greedy does."""

    def __init__(self, engine, prompt: list[int], steps: int):
        self.engine, self.prompt, self.steps = engine, prompt, steps
        self.session = None
        self.fed: list[int] = []
        self.forwards = 0
        self.replays = 0

    def decide(self, tokens: list[int]) -> int:
        """Greedy's token after ``prompt + tokens``, where ``tokens`` extends every earlier call's."""
        if self.session is None:
            self.session = start_session(self.engine, self.prompt, batch=1, steps=self.steps)
            self.forwards += 1
        if tokens[: len(self.fed)] != self.fed:
            raise AssertionError("greedy's path only moves forward")
        for t in tokens[len(self.fed) :]:
            self.session.advance([t])
            self.forwards += 1
        self.fed = list(tokens)
        self.replays += 1
        return int(_argmax(self.session.last[0]))


class RowSession:
    """Verification for a model without KV-cached sessions (a served model, a toy): ``feed`` asks
    ``logprobs`` for the row after every fed token in one call (on a server that returns prompt log-probs,
    one request for the whole block); ``rollback`` forgets tokens. ``last`` is computed when first read."""

    def __init__(self, model, tokens: Sequence[int]):
        self.model = model
        self.tokens = [int(t) for t in tokens]
        self._last: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def last(self) -> torch.Tensor:
        if self._last is None:
            self._last = self.model.logprobs([self.tokens])
        return self._last

    def feed(self, tokens: Sequence[int]) -> torch.Tensor:
        """Append ``tokens``; log-probs [1, T, V] after each."""
        fed = [int(t) for t in tokens]
        lp = self.model.logprobs([self.tokens + fed[: i + 1] for i in range(len(fed))])
        self.tokens += fed
        self._last = lp[-1:]
        return lp[None]

    def rollback(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"length must be in [0, {self.length}], got {length}")
        self.tokens = self.tokens[:length]
        self._last = None


def _start(engine, prompt: list[int], steps: int):
    if hasattr(engine, "start"):
        return engine.start(prompt, batch=1, steps=steps)
    return RowSession(engine, prompt)


def verify_drafts(engine, prompt: list[int], steps: int, drafter: Drafter) -> Verified:
    """Greedy decoding of ``steps`` tokens after ``prompt`` (validated by the caller), ``drafter``'s drafts
    verified in one model pass each (module doc); output identical to ``Greedy().decode``, stopping after
    EOS as it does."""
    eos = getattr(engine, "eos_id", None)
    greedy = _GreedyPath(engine, prompt, steps)
    traces: list[Trace] = []
    tokens: list[int] = []
    draft_passes = 0
    drafts = drafter.draft(None, prompt, steps - 1) if drafter.before_prompt_pass and steps > 1 and prompt else []
    if drafts:  # the prompt pass verifies drafts: feed the prompt's last token with them
        session = _start(engine, prompt[:-1], steps + 1)
    else:
        session = _start(engine, prompt, steps)  # greedy's own first call: its first decision
        nxt = int(_argmax(session.last[0]))
        traces.append(Trace(len(prompt), (), (), (nxt,), 0, nxt))
        tokens.append(nxt)
        drafts = None
    while len(tokens) < steps and (not tokens or tokens[-1] != eos):  # greedy stops after emitting EOS
        sequence = prompt + tokens
        if drafts is None:
            limit = steps - len(tokens) - 1  # this pass commits at most limit + 1 tokens
            drafts = drafter.draft(session, sequence, limit) if limit > 0 else []
            draft_passes += int(drafter.model_pass and limit > 0)
        trace = _verify(session, greedy, tokens, sequence[-1], drafts, eos)
        traces.append(trace)
        tokens.extend(trace.committed)
        drafts = None
    return Verified(tuple(tokens), tuple(traces), draft_passes, greedy.replays, greedy.forwards)


def _verify(session, greedy: _GreedyPath, tokens: list[int], pending: int, drafts: list[int], eos) -> Trace:
    """One model pass: feed ``pending`` (the token before the first decision) and ``drafts``, keep the drafts
    greedy would have chosen, then head 1's own token; roll the cache back over the rest."""
    before = session.length
    fed = [pending, *drafts]
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
    return Trace(before, tuple(fed), tuple(drafts), tuple(predicted), accepted, nxt, tuple(replayed))


# ---- self-speculative decoding with the heads ----------------------------------------------------


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
    prompt = check_prompt(engine, prompt)
    engine.check_room(len(prompt) + steps)
    return prompt, heads


def check_prompt(model, prompt: Sequence[int]) -> list[int]:
    """``prompt`` as ints; ValueError naming the first id outside the vocabulary."""
    prompt = [int(t) for t in prompt]
    bad = [t for t in prompt if not 0 <= t < model.vocab_size]
    if bad:
        raise ValueError(f"prompt token ids must be in [0, {model.vocab_size}), got {bad[0]}")
    return prompt


def self_speculative(engine, prompt: Sequence[int], steps: int, heads: int | None = None) -> SpeculativeResult:
    """Greedy decoding of ``steps`` tokens after ``prompt`` with heads 2..``heads`` (default: all)
    drafting and head 1 verifying; output identical to ``Greedy().decode(engine, prompt, steps)``
    (near-ties replayed on greedy's path, see the module docstring).

    Raises ValueError for a model without extra heads, steps < 1, heads outside [2, n_heads],
    token ids outside the vocabulary, or prompt + steps longer than the context.
    """
    prompt, k = _check(engine, prompt, steps, heads)
    run = verify_drafts(engine, prompt, steps, HeadDrafter(k))
    return SpeculativeResult(run.tokens, run.forwards, run.draft_passes, k, run.traces, run.replays,
                             run.replay_forwards)


# ---- wall clock ----------------------------------------------------------------------------------


def alternating_medians(runs: Mapping[str, Callable[[], object]], repeats: int) -> tuple[dict, dict[str, float]]:
    """One untimed warm-up call of each run (first-call costs: allocations, caches), then ``repeats`` rounds
    calling every run in turn, so all see the same machine load. Returns (each run's last result, the
    median seconds of each)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    results = {name: run() for name, run in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - start)
    return results, {name: statistics.median(t) for name, t in times.items()}


@dataclass(frozen=True)
class GreedySpeed:
    """Greedy speculative decoders timed against ``Greedy().decode`` on one prompt in one request.

    Attributes:
        greedy_tokens: ``Greedy().decode`` of the prompt.
        greedy_seconds: its median wall-clock time.
        results: (name, result) of each speculative decoder, in the order given.
        seconds: (name, median wall-clock seconds) of each.
        repeats: timed runs of each after one untimed warm-up, alternating.
    """

    greedy_tokens: tuple[int, ...]
    greedy_seconds: float
    results: tuple[tuple[str, PassStats], ...]
    seconds: tuple[tuple[str, float], ...]
    repeats: int

    def result(self, name: str) -> PassStats:
        return dict(self.results)[name]

    def same_output(self, name: str) -> bool:
        return tuple(self.result(name).tokens) == self.greedy_tokens

    def speedup(self, name: str) -> float:
        """Greedy seconds / the decoder's seconds (same tokens, so per-token times agree)."""
        return self.greedy_seconds / dict(self.seconds)[name]


def time_against_greedy(engine, prompt: Sequence[int], steps: int,
                        decoders: Mapping[str, Callable[[], PassStats]], repeats: int = 3) -> GreedySpeed:
    """Time each of ``decoders`` (name -> a call decoding ``prompt``, ``steps`` tokens) against
    ``Greedy().decode(engine, prompt, steps)``: one untimed warm-up each, then ``repeats`` alternating
    timed runs; medians."""
    from core.decoders import Greedy

    if "greedy" in decoders:
        raise ValueError("decoders must not contain the name 'greedy' (the baseline)")
    runs = {"greedy": lambda: Greedy().decode(engine, list(prompt), steps), **decoders}
    results, seconds = alternating_medians(runs, repeats)
    names = list(decoders)
    return GreedySpeed(tuple(results["greedy"].tokens), seconds["greedy"], tuple((n, results[n]) for n in names),
                       tuple((n, seconds[n]) for n in names), repeats)


# ---- predicted seconds (core.cost) ---------------------------------------------------------------

# A verification pass feeding w tokens, as a multiple of a w-row one-token step (CostModel.step(w)): measured
# 1.0-1.25x on the shipped model and on SmolLM2 for w >= 4 (2 cores); 1.7x for w = 2 on SmolLM2, where the
# bound on the passes (one per token) more than covers it.
VERIFY_FACTOR = 1.25
# A head-only draft pass as a share of a one-token step (shipped model: about 0.35).
HEAD_PASS_FACTOR = 0.5


def predict_seconds(cost, prompt_tokens: int, steps: int, repeats: int, drafters: Sequence[tuple[int, bool]]) -> float:
    """Predicted seconds of timing ``drafters`` against greedy decoding (``time_against_greedy``, or
    ``compare_sampling_speed`` for one drafter): 1 + ``repeats`` runs of greedy and of each drafter, given as
    (most drafts per pass, drafting runs a head pass). A drafter's run is bounded by one verification pass
    per token (no draft kept), each feeding 1 + its drafts. ``cost``: a ``core.cost.CostModel``; a server
    (kind "server") is not timed: one run of each, one request per token at most."""
    if cost.kind == "server":
        return cost.forwards(steps) * (1 + len(drafters))
    prompt = cost.prefill(prompt_tokens)
    total = prompt + (steps - 1) * cost.step(1)
    for width, head_pass in drafters:
        per_pass = VERIFY_FACTOR * cost.step(1 + width) + (HEAD_PASS_FACTOR * cost.step(1) if head_pass else 0.0)
        total += prompt + (steps - 1) * per_pass
    return (1 + repeats) * total


from core.speculative_sample import speculative_sample  # noqa: E402,F401
