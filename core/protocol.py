"""The one protocol every model in the explorer speaks, and incremental sessions over it.

Exact toy distributions, the shipped multi-head model and any local Hugging Face model all go
through the same decoders, goals and risk code by implementing ``NextTokenModel``. Models that can
step cheaply (a KV cache) also implement ``start``; for the others ``start_session`` falls back to
calling ``logprobs`` on every row's full prefix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class NextTokenModel(Protocol):
    vocab_size: int
    eos_id: int | None

    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] float32 log p(. | prefix) for each prefix (prompt tokens + generated tokens)."""
        ...


class Session(Protocol):
    """B rows continuing one prompt. ``last`` is [B, V] log p(next token | row)."""

    last: torch.Tensor

    def advance(self, tokens: Sequence[int]) -> torch.Tensor:
        """Append one token to every row; return the new ``last``."""
        ...

    def select(self, rows: Sequence[int]) -> Session:
        """A session whose row i is a copy of this session's row ``rows[i]``."""
        ...


class PrefixSession:
    """Session for any NextTokenModel: keeps each row's tokens and asks ``logprobs`` again."""

    def __init__(self, model: NextTokenModel, rows: list[list[int]], last: torch.Tensor | None = None):
        self.model = model
        self.rows = rows
        self.last = model.logprobs(rows) if last is None else last

    def advance(self, tokens: Sequence[int]) -> torch.Tensor:
        if len(tokens) != len(self.rows):
            raise ValueError(f"advance needs one token per row ({len(self.rows)}), got {len(tokens)}")
        self.rows = [r + [int(t)] for r, t in zip(self.rows, tokens)]
        self.last = self.model.logprobs(self.rows)
        return self.last

    def select(self, rows: Sequence[int]) -> PrefixSession:
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        return PrefixSession(self.model, [list(self.rows[i]) for i in rows], self.last[idx])


def start_session(model: NextTokenModel, prompt: Sequence[int], batch: int = 1, steps: int = 0) -> Session:
    """An incremental session of ``batch`` rows that all start from ``prompt``, with room for
    ``steps`` more tokens. Uses the model's own cached ``start`` when it has one."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if hasattr(model, "start"):
        return model.start(list(prompt), batch=batch, steps=steps)
    first = model.logprobs([list(prompt)])
    return PrefixSession(model, [list(prompt) for _ in range(batch)], first.expand(batch, -1).clone())


class CachedSession:
    """Shared part of the KV-cached sessions (``EngineSession``, ``HFSession``): ``advance`` is one
    ``feed`` of a single token per row. Subclasses define ``batch``, ``last`` and ``feed``."""

    def advance(self, tokens: Sequence[int]) -> torch.Tensor:
        if len(tokens) != self.batch:
            raise ValueError(f"advance needs one token per row ({self.batch}), got {len(tokens)}")
        self.feed(torch.as_tensor(list(tokens), dtype=torch.long)[:, None])
        return self.last


# ---- EOS: variable-length outputs as fixed-length sequences ------------------------------------


def pad_after_eos(tokens: Sequence[int], steps: int, eos_id: int | None) -> tuple[int, ...]:
    """An output as goals and risks score it: its tokens up to and including the first EOS, then EOS
    repeated up to ``steps`` tokens (a sequence that ended is followed by EOS with probability 1, so
    padding changes no probability). Without EOS (or ``eos_id`` None) the tokens must number ``steps``."""
    tokens = tuple(int(t) for t in tokens)
    if eos_id is not None and eos_id in tokens:
        tokens = tokens[: tokens.index(eos_id) + 1]
        if len(tokens) > steps:
            raise ValueError(f"output of {len(tokens)} tokens up to EOS is longer than steps = {steps}")
        return tokens + (int(eos_id),) * (steps - len(tokens))
    if len(tokens) != steps:
        raise ValueError(f"an output without EOS must have steps = {steps} tokens, got {len(tokens)}")
    return tokens


def absorb_eos(logprobs: torch.Tensor, finished: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """Next-token log-probs [B, V] with every finished row (``finished`` [B] bool: the row has emitted
    EOS) replaced by a point mass on EOS (log-prob 0 there, -inf elsewhere): after EOS the padded
    sequence continues with EOS for sure. Unchanged (the same tensor) when no row is finished."""
    if eos_id is None or not bool(finished.any()):
        return logprobs
    point = torch.full_like(logprobs[:1], -math.inf)
    point[0, eos_id] = 0.0
    return torch.where(finished.to(logprobs.device)[:, None], point, logprobs)


class TextModel:
    """Shared checks of the text models (``Engine``, ``HFEngine``). Subclasses define ``vocab_size``,
    ``max_tokens`` and ``decode``."""

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id])

    def check_room(self, n_tokens: int) -> None:
        """ValueError when a prefix of ``n_tokens`` (prompt + steps) does not fit the context."""
        if n_tokens > self.max_tokens:
            raise ValueError(
                f"prompt + steps = {n_tokens} tokens exceeds the model's context of {self.max_tokens} tokens; "
                "shorten the prompt or lower steps"
            )

    def check_tokens(self, tokens: Sequence[int]) -> None:
        """ValueError naming the first token id outside the vocabulary."""
        bad = [t for t in tokens if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside this model's vocabulary [0, {self.vocab_size})")
