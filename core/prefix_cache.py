"""The one prefix cache of the engines (``core.engine.Engine`` and ``core.hf.HFEngine``).

Canonical blocks: a prefix's tokens are processed in fixed, position-aligned blocks of ``BLOCK``
tokens — positions [0, B), [B, 2B), ... — and block i is always one forward pass of exactly its B
tokens on top of the state after blocks 0..i-1. A block taken from the cache and one computed now
are therefore the same computation on the same shapes, bit for bit, so no result depends on
whether a lookup hit, on what earlier requests cached, or on what other sessions do (the
determinism contract, ``core.compute``). A request gets the blocks before its last token
(``aligned``) as a private copy and runs the rest — at least its last token, whose logits it wants —
with shapes of its own.

The cache holds the blocks of one path (the most recent request's aligned prefix); a request that
shares only its first blocks with it truncates it there and extends it. A model backend supplies
four operations on its own state type (``BlockBackend``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

S = TypeVar("S")

BLOCK = 16


def aligned(n_tokens: int, block: int = BLOCK) -> int:
    """How many of a prefix's ``n_tokens`` tokens come from whole cached blocks: the blocks that end
    before its last token, so every request runs at least its last token itself (0 for no tokens)."""
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    return block * ((n_tokens - 1) // block) if n_tokens else 0


class BlockBackend(Protocol[S]):
    """What ``PrefixCache`` needs from a model (one batch row; ``S`` is the model's cache type)."""

    def empty(self) -> S:
        """A state holding no tokens."""
        ...

    def run(self, state: S, tokens: list[int]) -> S:
        """One forward pass of ``tokens`` at the state's next positions; returns the extended state
        (``state`` itself may be extended in place)."""
        ...

    def truncate(self, state: S, length: int) -> S | None:
        """The state cut to its first ``length`` tokens (in place allowed), or None when the model's
        cache cannot be cut exactly (sliding-window or recurrent layers): the cache then recomputes."""
        ...

    def private(self, state: S, length: int, capacity: int) -> S | None:
        """A copy of the state's first ``length`` tokens for one request (which extends it, up to
        ``capacity`` tokens in all), laid out the same way however the state was reached; None when
        the cache cannot be cut to ``length``."""
        ...


class PrefixCache(Generic[S]):
    """Canonical-block prefix cache over a ``BlockBackend``; safe to share between threads."""

    def __init__(self, backend: BlockBackend[S], block: int = BLOCK):
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.backend = backend
        self.block = block
        self._lock = threading.Lock()
        self._tokens: list[int] = []  # the cached path, a whole number of blocks
        self._state: S | None = None
        self.hits = 0  # blocks reused (statistics for tests and benchmarks)
        self.misses = 0  # blocks computed

    def base(self, tokens: Sequence[int], capacity: int) -> tuple[int, S]:
        """``(a, state)``: ``a = aligned(len(tokens))`` and a private state holding ``tokens[:a]``,
        with room for ``capacity`` tokens in all (``capacity >= len(tokens)``)."""
        tokens = [int(t) for t in tokens]
        a = aligned(len(tokens), self.block)
        if capacity < len(tokens):
            raise ValueError(f"capacity {capacity} is below the {len(tokens)} tokens of the prefix")
        if a == 0:
            return 0, self.backend.private(self.backend.empty(), 0, capacity)
        with self._lock:
            keep = _shared_blocks(self._tokens, tokens[:a], self.block)
            if keep == a:
                private = self.backend.private(self._state, a, capacity)
                if private is not None:
                    self.hits += a // self.block
                    return a, private
            self._extend(tokens[:a], keep)
            return a, self.backend.private(self._state, a, capacity)

    def _extend(self, tokens: list[int], keep: int) -> None:
        """Make the cached path exactly ``tokens`` (whole blocks), reusing its first ``keep`` tokens."""
        state = self._state
        if state is not None and keep < len(self._tokens):
            state = self.backend.truncate(state, keep) if keep else None
        if state is None:
            state, keep = self.backend.empty(), 0
        self._state, self._tokens = None, []  # a failure below leaves an empty cache, never a torn one
        self.hits += keep // self.block
        for start in range(keep, len(tokens), self.block):
            state = self.backend.run(state, tokens[start : start + self.block])
            self.misses += 1
        self._state, self._tokens = state, list(tokens)

    def clear(self) -> None:
        with self._lock:
            self._state, self._tokens = None, []


def _shared_blocks(cached: list[int], tokens: list[int], block: int) -> int:
    """Tokens in the whole blocks two paths share (a multiple of ``block``)."""
    n = min(len(cached), len(tokens))
    i = 0
    while i < n and cached[i] == tokens[i]:
        i += 1
    return i - i % block
