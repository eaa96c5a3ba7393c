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


def start_session(model: NextTokenModel, prompt: Sequence[int], batch: int = 1, steps: int = 0) -> EosSession:
    """An incremental session of ``batch`` rows that all start from ``prompt``, with room for
    ``steps`` more tokens: the model's own cached ``start`` when it has one (else a ``PrefixSession``),
    wrapped in an ``EosSession`` so every walk knows each row's tokens and ends rows at EOS."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    prompt = [int(t) for t in prompt]
    if hasattr(model, "start"):
        inner = model.start(prompt, batch=batch, steps=steps)
    else:
        first = model.logprobs([prompt])
        inner = PrefixSession(model, [list(prompt) for _ in range(batch)], first.expand(batch, -1).clone())
    history = torch.as_tensor(prompt, dtype=torch.long).reshape(1, -1).expand(batch, -1)
    return EosSession(inner, getattr(model, "eos_id", None), history, len(prompt))


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
    return torch.where(finished.to(logprobs.device)[:, None], point_mass(logprobs[:1], eos_id), logprobs)


def point_mass(like: torch.Tensor, token: int) -> torch.Tensor:
    """Log-probs shaped like ``like`` [..., V] with all mass on ``token``."""
    out = torch.full_like(like, -math.inf)
    out[..., token] = 0.0
    return out


def logprobs_after(model: NextTokenModel, prompt: Sequence[int],
                   continuations: Sequence[Sequence[int]]) -> torch.Tensor:
    """[B, V] log p(. | prompt + continuation) for each continuation, with EOS absorbing: a
    continuation that contains ``model.eos_id`` gets a point mass on EOS (its row is not asked of the
    model). What searches and teacher forcing call instead of raw ``model.logprobs``."""
    eos = getattr(model, "eos_id", None)
    prompt = [int(t) for t in prompt]
    done = [eos is not None and eos in c for c in continuations]
    todo = [prompt + [int(t) for t in c] for c, d in zip(continuations, done) if not d]
    if not any(done):
        return model.logprobs(todo)
    rows = model.logprobs(todo) if todo else None
    out = point_mass(torch.empty(len(continuations), model.vocab_size,
                                 dtype=torch.float64 if rows is None else rows.dtype), eos)
    if rows is not None:
        out[[i for i, d in enumerate(done) if not d]] = rows
    return out


class EosSession:
    """A ``Session`` that knows every row's tokens and ends rows at EOS: what ``start_session`` returns.

    It wraps the model's own session (``inner``: a KV-cached ``EngineSession`` / ``HFSession`` or a
    ``PrefixSession``) and adds:

    * ``history`` [B, L]: each row's tokens so far, prompt included (what repetition penalties read);
    * EOS absorption (``absorb_eos``): once a row has emitted ``eos_id`` after the prompt, its next-token
      distribution is a point mass on EOS, in ``last`` and in every position a multi-token ``feed``
      returns. So any walk (sampling, teacher forcing, beam search, Monte Carlo truth rows) produces
      EOS-padded sequences whose probability is that of the variable-length output;
    * when every row has ended, later tokens are not sent to the model at all (they are EOS for sure);
      they are fed to it only if an operation needs the model's state again (``heads``, a ``rollback``
      into them).

    ``advance``/``feed`` call the inner session exactly as a caller would (one ``advance`` per token;
    ``feed`` as given), so the model sees the same calls with or without this wrapper. Other attributes
    (``cache``, ``engine``, ...) are the inner session's.
    """

    def __init__(self, inner, eos_id: int | None, history: torch.Tensor, prompt_length: int,
                 finished: torch.Tensor | None = None, pending: int = 0, last: torch.Tensor | None = None):
        self.inner = inner
        self.eos_id = eos_id
        self.history = history
        self.prompt_length = prompt_length
        self.finished = torch.zeros(history.shape[0], dtype=torch.bool) if finished is None else finished
        self.pending = pending  # trailing EOS tokens of finished rows not yet sent to ``inner``
        self.last = absorb_eos(inner.last, self.finished, eos_id) if last is None else last

    @property
    def batch(self) -> int:
        return self.history.shape[0]

    @property
    def length(self) -> int:
        """Tokens per row (prompt + generated)."""
        return self.history.shape[1]

    def tokens(self, row: int = 0) -> list[int]:
        """Row ``row``'s tokens (prompt + generated)."""
        return self.history[row].tolist()

    def __getattr__(self, name):
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def _all_done(self) -> bool:
        return self.eos_id is not None and bool(self.finished.all())

    def _sync(self) -> None:
        if self.pending:
            ids = torch.full((self.batch, self.pending), self.eos_id, dtype=torch.long)
            self.pending = 0
            self._inner_feed(ids)

    def _inner_feed(self, ids: torch.Tensor) -> torch.Tensor:
        if hasattr(self.inner, "feed"):
            return self.inner.feed(ids)
        return torch.stack([self.inner.advance(ids[:, j].tolist()) for j in range(ids.shape[1])], dim=1)

    def advance(self, tokens: Sequence[int]) -> torch.Tensor:
        ids = torch.as_tensor([int(t) for t in tokens], dtype=torch.long)
        if len(ids) != self.batch:
            raise ValueError(f"advance needs one token per row ({self.batch}), got {len(ids)}")
        self.history = torch.cat([self.history, ids[:, None]], dim=1)
        if self.eos_id is not None:
            self.finished = self.finished | (ids == self.eos_id)
        if self._all_done():
            self.pending += 1
            self.last = point_mass(self.last, self.eos_id)
        else:
            self._sync()
            self.last = absorb_eos(self.inner.advance(ids.tolist()), self.finished, self.eos_id)
        return self.last

    def feed(self, tokens) -> torch.Tensor:
        """Append tokens [B, T] (or [T] for every row); log-probs [B, T, V] after each, absorbed after EOS.
        One forward for KV-cached sessions; a ``PrefixSession`` advances one token at a time."""
        ids = torch.as_tensor(tokens, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids[None, :].expand(self.batch, -1)
        if ids.dim() != 2 or ids.shape[0] != self.batch or ids.shape[1] == 0:
            raise ValueError(f"feed needs tokens of shape [{self.batch}, T>=1] or [T>=1], got {list(ids.shape)}")
        before = self.finished
        self.history = torch.cat([self.history, ids], dim=1)
        if self.eos_id is None:
            out = self._inner_feed(ids)
        else:
            ended = before[:, None] | (ids == self.eos_id).cummax(dim=1).values  # [B, T]: ended at or before
            self.finished = ended[:, -1]
            if bool(before.all()):
                self.pending += ids.shape[1]
                out = point_mass(self.last[:, None].expand(-1, ids.shape[1], -1), self.eos_id)
            else:
                self._sync()
                out = self._inner_feed(ids)
                out = torch.where(ended[..., None], point_mass(out[:1, :1], self.eos_id), out)
        self.last = out[:, -1]
        return out

    def heads(self, index: int | None = None, **kwargs) -> torch.Tensor:
        """The inner session's ``heads`` ([B, n, V] log-probs of every head after token ``index``), with a
        point mass on EOS for rows that had ended by then."""
        self._sync()
        out = self.inner.heads(index, **kwargs)
        if self.eos_id is None:
            return out
        end = self.length if index is None else index + 1
        ended = (self.history[:, self.prompt_length : end] == self.eos_id).any(dim=1)
        return torch.where(ended[:, None, None], point_mass(out[:1, :1], self.eos_id), out)

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` tokens of every row; ``last`` is stale until the next feed."""
        if not self.prompt_length <= length <= self.length:
            raise ValueError(f"length must be in [{self.prompt_length}, {self.length}], got {length}")
        synced = self.length - self.pending
        if length <= synced:
            self.inner.rollback(length)
            self.pending = 0
        else:
            self.pending = length - synced
        self.history = self.history[:, :length]
        if self.eos_id is not None:
            self.finished = (self.history[:, self.prompt_length :] == self.eos_id).any(dim=1)

    def select(self, rows: Sequence[int]) -> EosSession:
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        return EosSession(self.inner.select(idx.tolist()), self.eos_id, self.history[idx], self.prompt_length,
                          self.finished[idx], self.pending, self.last[idx])


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
