"""Exact search: best-first branch-and-bound for the most probable window, and the ``Lookahead``
decoder built on it.

With an EOS id, a window that contains EOS continues with EOS for sure (``logprobs_after``), so the
search ranks variable-length continuations by their probability, and ``Lookahead`` stops after
committing EOS.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from core.path import Path, check_call, check_count, is_int, make_path
from core.protocol import NextTokenModel, logprobs_after


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of a 1-d tensor, best first, ties to the lowest index."""
    k = min(k, scores.numel())
    kth = torch.topk(scores, k).values[-1]
    idx = torch.nonzero(scores >= kth).squeeze(1)  # ascending ids, so the stable sort keeps low ids first
    return idx[torch.sort(scores[idx], descending=True, stable=True).indices[:k]]


@dataclass(frozen=True)
class SearchResult:
    """Result of ``best_first_search``: the window found, whether it is certainly the best, and an
    upper bound on the best window's log-probability (== ``logprob`` when ``exact``)."""

    tokens: tuple[int, ...]
    step_logprobs: tuple[float, ...]
    logprob: float
    exact: bool
    bound: float
    expansions: int


@dataclass(frozen=True)
class _Open:
    """A node to expand. ``after`` = (score, id) of the last child already taken from it: a
    re-expansion fetches only the children ranked after that one."""

    tokens: tuple[int, ...]
    score: float
    step_lps: tuple[float, ...]
    after: tuple[float, int] | None = None


CHUNK = 64  # children kept per expansion; more are fetched by expanding the parent again if needed


def best_first_search(model: NextTokenModel, prefix: Sequence[int], depth: int, node_budget: int | None = None,
                      batch: int = 16, memo: dict | None = None) -> SearchResult:
    """The most probable ``depth``-token continuation of ``prefix`` (exact, ties to the
    lexicographically smallest), by best-first branch-and-bound.

    Any continuation's joint probability is <= its prefix's, so nodes are opened in order of
    (-log-prob, tokens) and the search stops once the best complete window beats every open node.
    Up to ``batch`` open nodes are expanded per ``model.logprobs`` call. Each expanded node keeps
    its best ``CHUNK`` children (none below the best complete window) and offers them one at a
    time; nodes one token short of ``depth`` contribute just their best child. ``node_budget``
    caps the nodes expanded (None: no cap); when it runs out, the most promising open node is
    completed greedily and the result says ``exact=False`` with an upper bound on the best
    window's log-probability. ``memo`` ({full prefix tuple: log-prob row}) reuses rows across
    searches (``Lookahead`` passes the rows below the token it just committed). Rows come from
    ``logprobs_after``: after an EOS in the window, EOS follows with probability 1.
    """
    check_count("depth", depth)
    if node_budget is not None and (not is_int(node_budget) or node_budget < 1):
        raise ValueError(f"node_budget must be None or an integer >= 1, got {node_budget!r}")
    prefix = [int(t) for t in prefix]
    tick = itertools.count()
    heap: list = []  # (-score, tokens, tick, node to expand, (children, rank) or None)
    best: _Open | None = None  # best complete window so far
    pending = [_Open((), 0.0, ())]
    expansions = 0

    def beats_best(neg_score: float, tokens: tuple[int, ...]) -> bool:
        return best is None or (neg_score, tokens) < (-best.score, best.tokens)

    memo = {} if memo is None else memo
    base = tuple(prefix)
    while pending:
        keys = [base + node.tokens for node in pending]
        missing = list(dict.fromkeys(k for k in keys if k not in memo))
        if missing:
            memo.update(zip(missing, logprobs_after(model, prefix, [k[len(base):] for k in missing]).double()))
        rows = [memo[k] for k in keys]
        expansions += len(pending)
        for node, lp in zip(pending, rows):
            scores = node.score + lp
            if len(node.tokens) == depth - 1:
                v = int(torch.argmax(scores))  # first maximum: lowest id
                if beats_best(-float(scores[v]), node.tokens + (v,)):
                    best = _Open(node.tokens + (v,), float(scores[v]), node.step_lps + (float(lp[v]),))
                continue
            children = _ranked_children(node, scores, lp, None if best is None else best.score)
            if children[1]:
                _push_child(heap, tick, children, 0)
        limit = batch if node_budget is None else min(batch, node_budget - expansions)
        pending = []
        while heap and len(pending) < limit and beats_best(heap[0][0], heap[0][1]):
            _, _, _, node, ranked = heapq.heappop(heap)
            if ranked is not None:  # a child: offer its next sibling
                _push_child(heap, tick, ranked[0], ranked[1] + 1)
            pending.append(node)
    if best is not None and not (heap and beats_best(heap[0][0], heap[0][1])):
        return SearchResult(best.tokens, best.step_lps, best.score, True, best.score, expansions)
    # budget spent: complete the most promising open node greedily; bound = best open score
    bound = max(-heap[0][0], best.score if best else -math.inf)
    node = heap[0][3]
    while len(node.tokens) < depth:
        lp = logprobs_after(model, prefix, [node.tokens])[0].double()
        v = int(torch.argmax(lp))
        node = _Open(node.tokens + (v,), node.score + float(lp[v]), node.step_lps + (float(lp[v]),))
    if best is None or (-node.score, node.tokens) < (-best.score, best.tokens):
        best = node
    return SearchResult(best.tokens, best.step_lps, best.score, False, bound, expansions)


def _ranked_children(node: _Open, scores: torch.Tensor, lp: torch.Tensor, floor: float | None):
    """(node, ids, scores, step log-probs, more): the node's next ``CHUNK`` children best first
    (ties to the lower id), skipping those already taken (``node.after``) and those scoring below
    ``floor``; ``more`` says whether children were left out for the chunk size alone."""
    ids = torch.arange(scores.numel())
    if node.after is not None:
        a_score, a_id = node.after
        ids = ids[(scores < a_score) | ((scores == a_score) & (ids > a_id))]
    if floor is not None:
        ids = ids[scores[ids] >= floor]
    kept = ids[top_indices(scores[ids], CHUNK)] if len(ids) else ids
    return node, kept.tolist(), scores[kept].tolist(), lp[kept].tolist(), len(ids) > len(kept)


def _push_child(heap: list, tick, children, rank: int) -> None:
    """Push child ``rank`` of a node's ranked children; past the kept chunk, push the node again (to
    fetch its next chunk), keyed by the last kept child's score, an upper bound for the rest."""
    parent, ids, scores, lps, more = children
    if rank < len(ids):
        child = _Open(parent.tokens + (ids[rank],), scores[rank], parent.step_lps + (lps[rank],))
        heapq.heappush(heap, (-scores[rank], child.tokens, next(tick), child, (children, rank)))
    elif more:
        again = _Open(parent.tokens, parent.score, parent.step_lps, (scores[-1], ids[-1]))
        heapq.heappush(heap, (-scores[-1], parent.tokens, next(tick), again, None))


@dataclass(frozen=True)
class Lookahead:
    """At every step commit argmax_v q(v | prefix) · max over the next depth-1 tokens of their joint
    probability, i.e. the first token of the most probable ``depth``-token window (depth shrinks
    near the end). Exact by ``best_first_search``; ``Lookahead(1) == Greedy``. Stops after
    committing EOS.

    Args:
        depth: window length >= 1.
        node_budget: most nodes expanded per committed token; when a step runs out the Path has
            ``budget_exhausted=True`` and ``bound`` (largest certified gap in nats).
        batch: open nodes expanded per ``logprobs`` call.
    """

    depth: int
    node_budget: int = 1024
    batch: int = 4  # measured on the shipped model on CPU: rows cost more than calls
    is_random: ClassVar[bool] = False

    def __post_init__(self):
        check_count("depth", self.depth)
        check_count("node_budget", self.node_budget)
        check_count("batch", self.batch)

    @property
    def label(self) -> str:
        return f"lookahead (depth {self.depth})"

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        prompt = check_call(model, prompt, steps)
        tokens: list[int] = []
        step_lps: list[float] = []
        gap, exhausted = 0.0, False
        memo: dict = {}
        for t in range(steps):
            res = best_first_search(model, prompt + tokens, min(self.depth, steps - t), self.node_budget,
                                    self.batch, memo)
            tokens.append(res.tokens[0])
            step_lps.append(res.step_logprobs[0])
            if not res.exact:
                exhausted, gap = True, max(gap, res.bound - res.logprob)
            if tokens[-1] == getattr(model, "eos_id", None):
                break
            here = tuple(prompt + tokens)  # keep the rows the next search can reuse
            memo = {k: v for k, v in memo.items() if k[: len(here)] == here}
        return make_path(tokens, step_lps, budget_exhausted=exhausted, bound=gap)
