"""Prompt-lookup decoding: greedy speculative decoding whose drafts are copied from the prompt and the text
so far, for any model — one head is enough.

Drafting is Saxena's prompt lookup (2023) exactly as ``transformers`` runs it for
``generate(prompt_lookup_num_tokens=N, max_matching_ngram_size=M)`` (``PromptLookupCandidateGenerator``):
before each verification pass, take the sequence the model reads (its start tokens, the prompt, the tokens
committed so far) and its last n tokens, for n = min(M, length - 1) down to 1. The first earlier
occurrence of that n-gram, left to right, gives the drafts: up to N tokens that followed it, cut before the
first EOS (so EOS is never drafted). No occurrence for any n: no drafts, and the pass is an ordinary greedy
step. The prompt pass verifies the drafts found in the prompt itself, as ``generate`` does.

The drafts cost no model work; each pass feeds 1 + (number of drafts) tokens and commits the drafts greedy
agrees with plus one. The verification, rollback and near-tie replays are ``core.speculative``'s one loop,
so the output equals ``Greedy().decode`` token for token on every CPU. Code and other text that repeats
its own names (a variable, a call, a quoted line) gains the most; free prose, little.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.path import check_call, check_count
from core.speculative import PassStats, Trace, check_prompt, verify_drafts

DEFAULT_NUM_TOKENS = 10  # PromptLookupCandidateGenerator's default num_output_tokens
DEFAULT_MAX_NGRAM = 2  # generate's default max_matching_ngram_size


def lookup_drafts(sequence: Sequence[int], num_tokens: int, max_ngram: int, eos_id: int | None = None
                  ) -> tuple[int, ...]:
    """The drafts prompt lookup proposes after ``sequence`` (everything the model has read, start tokens
    included): for n = min(``max_ngram``, len - 1) down to 1, the first occurrence (left to right) of the
    last n tokens that has a continuation gives up to ``num_tokens`` of the tokens after it, cut before the
    first ``eos_id``. () when nothing matches (or the continuation starts with EOS)."""
    ids = [int(t) for t in sequence]
    length = len(ids)
    for n in range(min(max_ngram, length - 1), 0, -1):
        tail = ids[length - n :]
        first = tail[0]
        for i in range(length - n):  # the tail's own window (i = length - n) has no continuation
            if ids[i] == first and ids[i : i + n] == tail:
                drafts = ids[i + n : min(i + n + num_tokens, length)]
                if eos_id is not None and eos_id in drafts:
                    drafts = drafts[: drafts.index(eos_id)]
                return tuple(drafts)
    return ()


@dataclass(frozen=True)
class PromptLookup:
    """A ``core.speculative.Drafter``: ``lookup_drafts`` over ``start`` (the model's start tokens) + the
    sequence so far."""

    num_tokens: int = DEFAULT_NUM_TOKENS
    max_ngram: int = DEFAULT_MAX_NGRAM
    start: tuple[int, ...] = ()
    eos_id: int | None = None
    model_pass = False
    before_prompt_pass = True

    @property
    def positions(self) -> int:
        return self.num_tokens

    def draft(self, session, sequence: list[int], limit: int) -> list[int]:
        return list(lookup_drafts([*self.start, *sequence], self.num_tokens, self.max_ngram, self.eos_id)[:limit])


@dataclass(frozen=True)
class LookupResult(PassStats):
    """Output and statistics of ``prompt_lookup_decode``.

    Attributes:
        tokens: the new tokens (equal to greedy decoding's; ending at EOS if greedy emits it).
        forwards: model passes: the prompt pass, one verification pass per iteration, and the
            ``replay_forwards`` (greedy decoding uses one per token).
        traces: one ``core.speculative.Trace`` per model pass, in order (a pass whose lookup found nothing
            has no drafts and commits one token).
        num_tokens: N, the most drafts per pass (``prompt_lookup_num_tokens``).
        max_ngram: M, the longest n-gram matched (``max_matching_ngram_size``).
        replays: near-tie decisions recomputed on greedy's own shape path.
        replay_forwards: model passes the replays cost.
    """

    tokens: tuple[int, ...]
    forwards: int
    traces: tuple[Trace, ...]
    num_tokens: int
    max_ngram: int
    replays: int = 0
    replay_forwards: int = 0

    @property
    def positions(self) -> int:
        return self.num_tokens


def prompt_lookup_decode(model, prompt: Sequence[int], steps: int,
                         prompt_lookup_num_tokens: int = DEFAULT_NUM_TOKENS,
                         max_matching_ngram_size: int = DEFAULT_MAX_NGRAM) -> LookupResult:
    """Greedy decoding of ``steps`` tokens after ``prompt`` with prompt-lookup drafts (module doc); the
    arguments are ``generate``'s. Output identical to ``Greedy().decode(model, prompt, steps)``, stopping
    after EOS as it does. Any ``NextTokenModel``: KV-cached sessions where the model has them
    (``start``), else ``logprobs`` on every fed prefix at once (one request per draft block on a server
    with prompt log-probs).

    Raises ValueError for steps < 1, N or M < 1, token ids outside the vocabulary, or prompt + steps
    longer than the model's context (or a toy's length).
    """
    check_count("prompt_lookup_num_tokens", prompt_lookup_num_tokens)
    check_count("max_matching_ngram_size", max_matching_ngram_size)
    prompt = check_call(model, check_prompt(model, prompt), steps)
    if hasattr(model, "check_room"):
        model.check_room(len(prompt) + steps)
    drafter = PromptLookup(int(prompt_lookup_num_tokens), int(max_matching_ngram_size),
                           tuple(getattr(model, "start_ids", ())), getattr(model, "eos_id", None))
    run = verify_drafts(model, prompt, steps, drafter)
    return LookupResult(run.tokens, run.forwards, run.traces, drafter.num_tokens, drafter.max_ngram, run.replays,
                        run.replay_forwards)


def server_verification(model) -> str | None:
    """None when ``model`` verifies a draft block in one request (a local model, or a server that returns the
    rows after every prompt position — vLLM's prompt_logprobs — or takes several prompts per request); else
    why not, in words."""
    caps = getattr(model, "caps", None)
    if caps is None:
        return None
    from core.remote import CHAIN_MAX_K

    if not caps.token_prompts:
        return ("this server takes text prompts, one per request, so every row after a drafted token is a "
                "request of its own: verifying N drafts costs N + 1 requests, never fewer than greedy's one per token")
    if (caps.prompt_logprobs and 0 < caps.top_logprobs <= CHAIN_MAX_K) or caps.batch_prompts:
        return None
    return ("this server returns one position's next-token log-probs per request (no prompt_logprobs, one prompt "
            "per request), so verifying N drafts costs N + 1 requests, never fewer than greedy's one per token")
