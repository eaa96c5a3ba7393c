"""A toy as a multi-head model (a stand-in for the MTP engine in speculative-sampling tests): head 1 is
the toy's exact conditional; head j >= 2 at a prefix is the exact marginal of the token j - 1 places
after the next one (what a perfect multi-token head predicts), mixed with a fixed random distribution
so heads and head 1 disagree by a known amount."""

from __future__ import annotations

import numpy as np
import torch


class MultiHeadToy:
    def __init__(self, toy, n_heads: int = 4, noise: float = 0.3, seed: int = 0):
        self.toy, self.n_heads, self.noise = toy, n_heads, noise
        self.vocab_size, self.eos_id, self.length = toy.vocab_size, toy.eos_id, toy.length
        self.name = "multi-head toy"
        self._seqs, self._probs = toy.joint()
        self._rng = np.random.default_rng(seed)
        self._heads: dict[tuple[tuple[int, ...], int], torch.Tensor] = {}

    def logprobs(self, prefixes):
        return torch.stack([self._row(tuple(p), 1) for p in prefixes])

    def _row(self, prefix: tuple[int, ...], head: int) -> torch.Tensor:
        """log p of the token ``head`` places after ``prefix`` (a point mass on 0 past the toy's length)."""
        if len(prefix) + head > self.length:
            out = torch.full((self.vocab_size,), -float("inf"), dtype=torch.float64)
            out[0] = 0.0
            return out
        if head == 1:
            return self.toy.logprobs([list(prefix)])[0]
        key = (prefix, head)
        if key not in self._heads:
            match = (self._seqs[:, : len(prefix)] == np.array(prefix, dtype=np.int64)).all(axis=1)
            marginal = np.bincount(self._seqs[match, len(prefix) + head - 1], weights=self._probs[match],
                                   minlength=self.vocab_size)
            total = marginal.sum()
            marginal = marginal / total if total > 0 else np.full(self.vocab_size, 1 / self.vocab_size)
            mixed = (1 - self.noise) * marginal + self.noise * self._rng.dirichlet(np.ones(self.vocab_size))
            self._heads[key] = torch.from_numpy(np.log(mixed))
        return self._heads[key]

    def start(self, prompt, batch: int = 1, steps: int = 0):
        if batch != 1:
            raise ValueError("the multi-head toy runs one row")
        return _Session(self, list(prompt))


class _Session:
    def __init__(self, model: MultiHeadToy, tokens: list[int]):
        self.model, self.tokens = model, tokens
        self.last = model.logprobs([tokens])

    batch = 1

    def feed(self, ids) -> torch.Tensor:
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        rows = []
        for t in ids:
            self.tokens.append(int(t))
            rows.append(self.model._row(tuple(self.tokens), 1))
        out = torch.stack(rows)[None]
        self.last = out[:, -1]
        return out

    def advance(self, tokens) -> torch.Tensor:
        return self.feed(list(tokens))[:, -1]

    def heads(self, index=None, which=None) -> torch.Tensor:
        prefix = tuple(self.tokens if index is None else self.tokens[: index + 1])
        which = range(self.model.n_heads) if which is None else which
        return torch.stack([self.model._row(prefix, j + 1) for j in which])[None]

    def rollback(self, length: int) -> None:
        del self.tokens[length:]
