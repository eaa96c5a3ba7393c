"""Decoders: ways of turning next-token log-probabilities into a sequence of ``steps`` new tokens.

Every decoder is a frozen dataclass with ``.decode(model, prompt, steps, seed) -> Path`` and
``.is_random``; all of them work on any ``NextTokenModel`` (toys with ``prompt=[]``, the neural
engine, a Hugging Face model). They generate exactly ``steps`` tokens and never stop at EOS.
Ties break to the lowest token id everywhere (for sequences: the lexicographically smallest).

* ``Greedy``: argmax at every step (== ``Beam(1)`` == ``Lookahead(1)``).
* ``Lookahead(depth)``: commit the first token of the most probable next-``depth`` window, found
  exactly by best-first search (``best_first_search``) under a node budget.
* ``Sampling(temperature, top_k, top_p)``: ancestral sampling through the ``transformers`` warpers,
  in their order (temperature, top-k, top-p); ``sample_many`` draws n rows at once.
* ``Beam(width)``: beam search over a fixed number of new tokens, equal to ``transformers``'
  ``generate(num_beams=width, do_sample=False)`` when no EOS can end a beam (see ``Beam``).
* ``Fixed(tokens)``: a given output, to evaluate it like any other decoder.

Sampling and beam search use ``start_session`` so neural models step with their KV cache (one
forward per step for all rows); the searches call ``model.logprobs`` once per frontier batch.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from core.protocol import NextTokenModel, Session, start_session

# ---- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    """A decoder's output.

    Attributes:
        tokens: the new tokens only.
        logprob: log P(tokens | prompt) under the model (sum of ``step_logprobs``, left to right).
        step_logprobs: log p(token_t | prompt, tokens_<t) under the model.
        budget_exhausted: a search (Lookahead) ran out of its node budget at some step, so the
            output may differ from the exact decoder's.
        bound: certified optimality gap in nats of that search: the exact window (or mode) has a
            log-probability at most ``bound`` above the one found (the largest gap over all steps
            for Lookahead); 0.0 when every search finished.
    """

    tokens: tuple[int, ...]
    logprob: float
    step_logprobs: tuple[float, ...]
    budget_exhausted: bool = False
    bound: float = 0.0

    def text(self, model) -> str:
        """The tokens as text, for models with ``decode`` (not toys)."""
        if not hasattr(model, "decode"):
            raise ValueError(f"{type(model).__name__} has no decode(); toys have no text")
        return model.decode(list(self.tokens))


@dataclass(frozen=True, eq=False)
class Samples:
    """n sampled rows of ``steps`` new tokens each (from ``sample_many``).

    Attributes:
        tokens: [n, steps] int64.
        step_logprobs: [n, steps] float64, log p(token | row so far) under the model.
        step_warped_logprobs: [n, steps] float64, log r(token | row so far) under the sampler that
            drew them (equal to ``step_logprobs`` up to rounding at temperature 1 without top-k/p).
    """

    tokens: torch.Tensor
    step_logprobs: torch.Tensor
    step_warped_logprobs: torch.Tensor

    @property
    def n(self) -> int:
        return self.tokens.shape[0]

    @property
    def logprob(self) -> torch.Tensor:
        """[n] log P(row) under the model."""
        return sum_in_order(self.step_logprobs)

    def paths(self) -> list[Path]:
        rows = zip(self.tokens.tolist(), self.logprob.tolist(), self.step_logprobs.tolist())
        return [Path(tuple(t), lp, tuple(s)) for t, lp, s in rows]


def sum_in_order(step: torch.Tensor) -> torch.Tensor:
    """Row sums added left to right (the order ``Path.logprob`` uses)."""
    return step.cumsum(dim=-1)[..., -1] if step.shape[-1] else step.sum(dim=-1)


# ---- argument checks ---------------------------------------------------------------------------


def _is_int(x) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def check_count(name: str, value) -> None:
    """ValueError unless ``value`` is an integer >= 1 (the message names ``name``)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_call(model: NextTokenModel, prompt: Sequence[int], steps: int) -> list[int]:
    """Validate a decode call (steps >= 1; within a toy's length) and return the prompt as ints."""
    check_count("steps", steps)
    prompt = [int(t) for t in prompt]
    length = getattr(model, "length", None)
    if length is not None and len(prompt) + steps > length:
        raise ValueError(f"steps must be <= {length - len(prompt)} for this toy of length {length}, got {steps}")
    return prompt


def _check_seed(seed) -> int:
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer for a random decoder, got {seed!r}")
    return int(seed)


def _check_warp(temperature, top_k, top_p) -> None:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")


# ---- warpers -----------------------------------------------------------------------------------


def warp_logprobs(logprobs: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """The sampler's distribution as normalised log-probs [..., V], ``-inf`` for cut tokens.

    Same order and semantics as ``transformers``' TemperatureLogitsWarper, TopKLogitsWarper and
    TopPLogitsWarper (min_tokens_to_keep=1): divide by the temperature; keep every token whose
    score is >= the k-th largest (ties at the k-th value all stay); then drop the tokens that
    ``transformers`` drops when, sorted ascending, their cumulative probability is <= 1 - top_p,
    i.e. keep a token iff the mass ranked strictly above it is < top_p (the most likely token
    always stays; top_p = 1 keeps everything). Where top-p must split equal scores, the lower
    token ids stay (``transformers`` leaves that to an unstable sort). Input may be log-probs or
    logits; it is not modified.
    """
    _check_warp(temperature, top_k, top_p)
    scores = logprobs / temperature if temperature != 1 else logprobs
    if top_k is not None:
        k = min(int(top_k), scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p is not None and top_p < 1:
        scores = scores.masked_fill(~_top_p_keep(scores, top_p), -math.inf)
    return _log_normalize(scores)


def _log_normalize(scores: torch.Tensor) -> torch.Tensor:
    # log_softmax over a short last axis pays a large thread-pool overhead on busy CPUs (measured:
    # ~9 ms for [200, 3] with 2 threads); x - logsumexp(x) does not, and is slower on wide rows.
    if scores.shape[-1] > 256:
        return torch.log_softmax(scores, dim=-1)
    return scores - torch.logsumexp(scores, dim=-1, keepdim=True)


def _top_p_keep(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask of the tokens top-p keeps, from the k best scores only (k grows until every row's kept
    set ends inside them), avoiding a full sort of wide rows when the kept set is small."""
    vocab = scores.shape[-1]
    log_total = torch.logsumexp(scores.double(), dim=-1, keepdim=True)  # float64: the boundary is sharp
    k = min(vocab, 64)
    while True:
        vals = torch.topk(scores, k, dim=-1).values  # best first
        probs = (vals.double() - log_total).exp()
        above = probs.cumsum(dim=-1) - probs  # mass ranked strictly above each position
        n_keep = (above < top_p).sum(dim=-1, keepdim=True).clamp(min=1)
        if k == vocab or bool((n_keep < k).all()):
            break
        # every later token is at most the k-th probability: at least this many more are needed
        short = ((top_p - probs.sum(dim=-1)) / probs[..., -1]).max()
        k = max(2 * k, k + int(min(float(short), vocab)))
        if k > vocab // 8:  # then one full-width pass is cheaper than more rounds
            k = vocab
    kth = vals.gather(-1, n_keep - 1)  # the model's dtype, like scores
    keep = scores > kth
    tied = scores == kth  # fill the rest of the kept set with the lowest ids of the boundary value
    return keep | (tied & (tied.cumsum(dim=-1) <= n_keep - keep.sum(dim=-1, keepdim=True)))


DRAW_BLOCK = 128  # tokens per block in ``draw``


def draw(logprobs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of normalised log-probs [n, V], by inverting the CDF with one float64
    uniform per row: over blocks of ``DRAW_BLOCK`` tokens first (block masses as float64), then
    inside the chosen block with the uniform's position within it. Two passes over [n, V] instead
    of ``torch.multinomial``'s many; a token of probability zero is never drawn."""
    n, vocab = logprobs.shape
    p = logprobs.exp()
    u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
    if vocab <= DRAW_BLOCK:
        return _invert_cdf(p.double(), u)[0].squeeze(1)
    if vocab % DRAW_BLOCK:
        p = torch.nn.functional.pad(p, (0, -vocab % DRAW_BLOCK))
    blocks = p.view(n, -1, DRAW_BLOCK)
    b, inside = _invert_cdf(blocks.sum(dim=-1).double(), u)  # float32 sums of 128 terms: exact enough
    chosen = blocks.gather(1, b[:, :, None].expand(-1, 1, DRAW_BLOCK)).squeeze(1).double()
    return (b * DRAW_BLOCK + _invert_cdf(chosen, inside)[0]).squeeze(1)


def _invert_cdf(weights: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows of weights [n, m] >= 0 and uniforms u [n, 1] in [0, 1): the bucket idx [n, 1] where
    u falls (never one of weight 0) and u's relative position inside it, again uniform."""
    cdf = weights.cumsum(dim=-1)
    x = u * cdf[:, -1:]
    positive = weights > 0
    first = positive.int().argmax(dim=-1, keepdim=True)
    last = positive.shape[-1] - 1 - positive.flip(-1).int().argmax(dim=-1, keepdim=True)
    idx = torch.minimum(torch.maximum(torch.searchsorted(cdf, x, right=True), first), last)  # rounding at ends
    w = weights.gather(1, idx)
    inside = ((x - (cdf.gather(1, idx) - w)) / w).clamp(0.0, 1.0 - 2.0**-53)
    return idx, inside


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of a 1-d tensor, best first, ties to the lowest index."""
    k = min(k, scores.numel())
    kth = torch.topk(scores, k).values[-1]
    idx = torch.nonzero(scores >= kth).squeeze(1)  # ascending ids, so the stable sort keeps low ids first
    return idx[torch.sort(scores[idx], descending=True, stable=True).indices[:k]]


# ---- sampling ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One position of a ``walk``: ``session`` holds every row's tokens so far, ``logprobs`` its
    [n, V] next-token log-probs (the model's dtype), ``warped`` the sampler's (None when tokens are
    given), and ``tokens`` [n] the tokens about to be appended."""

    t: int
    session: Session
    logprobs: torch.Tensor
    warped: torch.Tensor | None
    tokens: torch.Tensor


def walk(model: NextTokenModel, prompt: Sequence[int], steps: int, n: int, *, seed: int | None = None,
         sampler: Sampling | None = None, tokens: torch.Tensor | None = None) -> Iterator[Step]:
    """Drive n rows continuing ``prompt`` for ``steps`` tokens, one batched forward per step.

    Each row's next token is drawn from ``sampler`` (default: the model at temperature 1) with a
    ``torch.Generator`` seeded by ``seed``, or read from ``tokens`` [n, steps] (teacher forcing).
    Yields a ``Step`` before the tokens are appended, so a caller may fork ``session`` there.
    """
    if tokens is None:
        gen = torch.Generator().manual_seed(_check_seed(seed))
        sampler = sampler or Sampling()
    session = start_session(model, prompt, batch=n, steps=steps)
    for t in range(steps):
        lp = session.last
        if tokens is None:
            warped = sampler.warp(lp)
            chosen = draw(warped, gen)
        else:
            warped, chosen = None, tokens[:, t]
        yield Step(t, session, lp, warped, chosen)
        if t + 1 < steps:
            session.advance(chosen.tolist())


def sample_many(model: NextTokenModel, prompt: Sequence[int], steps: int, n: int, seed: int,
                sampler: Sampling | None = None) -> Samples:
    """n independent draws of ``steps`` tokens from ``sampler`` (default ``Sampling()``: the model
    itself), batched: one forward per step for all rows (the model's KV cache via
    ``start_session``). Returns a ``Samples`` (tokens [n, steps] plus model and sampler log-probs);
    ``.paths()`` gives one ``Path`` per row. Same seed, same rows."""
    return sample_groups(model, prompt, steps, [(n, seed, sampler)])[0]


def sample_groups(model: NextTokenModel, prompt: Sequence[int], steps: int,
                  groups: Sequence[tuple[int, int, Sampling | None]],
                  observe: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> list[Samples]:
    """Several ``sample_many`` draws in one walk: group g = (n, seed, sampler) holds rows
    [n_0 + ... + n_(g-1), ... + n_g) of one session, warped by its own sampler and drawn with its own
    generator (one uniform per row and step, as ``sample_many`` draws), so each group's rows are
    ``sample_many(model, prompt, steps, n, seed, sampler)``'s: bitwise where the model's rows do not
    depend on the batch around them (the shipped engine on CPU, measured), else up to the last bit of
    float32 rounding (tokens then differ only if a uniform falls within it of a bucket boundary).
    Groups share a walk up to ``GROUP_ROWS`` rows. ``observe(t, logprobs, tokens)``, if given, sees
    the first group's [n, V] log-probs and [n] tokens about to be appended at every step."""
    if hasattr(model, "sample_groups"):  # a served model draws on its server (core.remote): unbiased rows
        return model.sample_groups(prompt, steps, groups, observe)
    prompt = check_call(model, prompt, steps)
    if not groups:
        raise ValueError("groups must hold at least one (n, seed, sampler)")
    for n, seed, _ in groups:
        check_count("n", n)
        _check_seed(seed)
    out: list[Samples] = []
    walk_groups: list = []
    for g in groups:  # consecutive groups share a walk while it stays within GROUP_ROWS rows
        if walk_groups and sum(int(n) for n, _, _ in walk_groups) + int(g[0]) > GROUP_ROWS:
            out += _sample_walk(model, prompt, steps, walk_groups, observe if not out else None)
            walk_groups = []
        walk_groups.append(g)
    return out + _sample_walk(model, prompt, steps, walk_groups, observe if not out else None)


GROUP_ROWS = 512  # rows one ``sample_groups`` walk holds (wider batches ran slower per row on CPU)


def _sample_walk(model, prompt: list[int], steps: int, groups, observe) -> list[Samples]:
    gens = [torch.Generator().manual_seed(int(seed)) for _, seed, _ in groups]
    samplers = [sampler or Sampling() for _, _, sampler in groups]
    bounds = np.cumsum([0] + [int(n) for n, _, _ in groups]).tolist()
    toks, lps, wlps = [], [], []
    session = start_session(model, prompt, batch=bounds[-1], steps=steps)
    for t in range(steps):
        lp = session.last
        chosen, step_lp, step_wlp = [], [], []
        for g, (a, b) in enumerate(zip(bounds, bounds[1:])):
            rows = lp[a:b] if len(groups) > 1 else lp
            warped = samplers[g].warp(rows)
            tok = draw(warped, gens[g])
            idx = tok[:, None]
            chosen.append(tok)
            step_lp.append(rows.gather(1, idx).squeeze(1).double())
            step_wlp.append(warped.gather(1, idx).squeeze(1).double())
        if observe is not None:
            observe(t, lp[: bounds[1]], chosen[0])
        toks.append(chosen)
        lps.append(step_lp)
        wlps.append(step_wlp)
        if t + 1 < steps:
            session.advance((torch.cat(chosen) if len(groups) > 1 else chosen[0]).tolist())
    return [Samples(torch.stack([s[g] for s in toks], 1), torch.stack([s[g] for s in lps], 1),
                    torch.stack([s[g] for s in wlps], 1)) for g in range(len(groups))]


@dataclass(frozen=True)
class Sampling:
    """Ancestral sampling from the warped next-token distribution (see ``warp_logprobs``).

    Args:
        temperature: > 0; 1 leaves the model's distribution unchanged.
        top_k: None, or keep the k most likely tokens (>= 1).
        top_p: None, or keep the smallest most-likely set with mass >= top_p, in (0, 1].
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    is_random: ClassVar[bool] = True

    def __post_init__(self):
        _check_warp(self.temperature, self.top_k, self.top_p)

    @property
    def label(self) -> str:
        parts = [f"τ={self.temperature:g}"]
        if self.top_k is not None:
            parts.append(f"top-k={self.top_k}")
        if self.top_p is not None:
            parts.append(f"top-p={self.top_p:g}")
        return f"sampling ({', '.join(parts)})"

    @property
    def is_identity(self) -> bool:
        """Temperature 1 without top-k / top-p: the sampler's distribution is the model's."""
        return self.temperature == 1 and not self.truncates

    @property
    def truncates(self) -> bool:
        """Whether top-k / top-p can cut tokens (so the output distribution can miss P's support)."""
        return self.top_k is not None or (self.top_p is not None and self.top_p < 1)

    def warp(self, logprobs: torch.Tensor) -> torch.Tensor:
        """The warped log-probs of the model's normalised ``logprobs`` (returned as they are by the
        identity sampler)."""
        if self.is_identity:
            return logprobs
        return warp_logprobs(logprobs, self.temperature, self.top_k, self.top_p)

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        return sample_many(model, prompt, steps, 1, _check_seed(seed), self).paths()[0]


# ---- beam search (and greedy) ------------------------------------------------------------------


def _beam_search(model: NextTokenModel, prompt: Sequence[int], steps: int, width: int) -> Path:
    """Keep the ``width`` best prefixes by log-probability; candidates tie to the lower beam rank,
    then the lower token id. Returns the best of the final beams."""
    prompt = check_call(model, prompt, steps)
    session = start_session(model, prompt, batch=1, steps=steps)
    scores = torch.zeros(1, dtype=torch.float64)
    history = torch.zeros(1, 0, dtype=torch.long)
    step_lp = torch.zeros(1, 0, dtype=torch.float64)
    for t in range(steps):
        lp = session.last.double()
        vocab = lp.shape[1]
        cand = (scores[:, None] + lp).reshape(-1)  # [beams * V]
        order = top_indices(cand, width)
        beam, tok = order // vocab, order % vocab
        scores = cand[order]
        history = torch.cat([history[beam], tok[:, None]], 1)
        step_lp = torch.cat([step_lp[beam], lp[beam, tok][:, None]], 1)
        if t + 1 < steps:
            if beam.tolist() != list(range(lp.shape[0])):
                session = session.select(beam.tolist())
            session.advance(tok.tolist())
    return Path(tuple(history[0].tolist()), float(scores[0]), tuple(step_lp[0].tolist()))


@dataclass(frozen=True)
class Greedy:
    """The most likely next token at every step (lowest id on ties)."""

    is_random: ClassVar[bool] = False
    label: ClassVar[str] = "greedy"

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        return _beam_search(model, prompt, steps, 1)


@dataclass(frozen=True)
class Beam:
    """Beam search with ``width`` beams over exactly ``steps`` new tokens.

    Equal, token for token, to ``transformers`` (5.x) ``model.generate(input_ids, do_sample=False,
    num_beams=width, num_return_sequences=1, max_new_tokens=steps)`` when no beam can end early:
    the model's config and generation config must have ``eos_token_id=None`` (so no EOS stops a
    beam and no MinNewTokens/EOS processor edits the scores). Then every hypothesis has length
    ``steps``, so ``length_penalty`` (score / steps**penalty) and ``early_stopping`` (True, False
    or "never") cannot change the ranking. Up to exact ties (``transformers`` leaves them to
    ``torch.topk``; here: lower beam rank, then lower token id) and float32-vs-float64 rounding.
    """

    width: int
    is_random: ClassVar[bool] = False

    def __post_init__(self):
        check_count("width", self.width)

    @property
    def label(self) -> str:
        return f"beam (width {self.width})"

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        return _beam_search(model, prompt, steps, self.width)


@dataclass(frozen=True)
class Fixed:
    """A given output (e.g. a Bayes output or a user's pick), decoded by teacher forcing so it can be
    scored like any decoder's."""

    tokens: tuple[int, ...]
    is_random: ClassVar[bool] = False
    label: ClassVar[str] = "fixed output"

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        prompt = check_call(model, prompt, steps)
        if len(self.tokens) != steps:
            raise ValueError(f"steps must equal the fixed output's length {len(self.tokens)}, got {steps}")
        tokens = [int(t) for t in self.tokens]
        lp = model.logprobs([prompt + tokens[:t] for t in range(steps)]).double()
        step = lp[torch.arange(steps), torch.as_tensor(tokens)]
        return Path(tuple(tokens), float(sum_in_order(step)), tuple(step.tolist()))


# ---- exact search ------------------------------------------------------------------------------


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
    searches (``Lookahead`` passes the rows below the token it just committed).
    """
    check_count("depth", depth)
    if node_budget is not None and (not _is_int(node_budget) or node_budget < 1):
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
            memo.update(zip(missing, model.logprobs([list(k) for k in missing]).double()))
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
        lp = model.logprobs([prefix + list(node.tokens)])[0].double()
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
    near the end). Exact by ``best_first_search``; ``Lookahead(1) == Greedy``.

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
            here = tuple(prompt + tokens)  # keep the rows the next search can reuse
            memo = {k: v for k, v in memo.items() if k[: len(here)] == here}
        logprob = float(sum_in_order(torch.tensor(step_lps, dtype=torch.float64)))
        return Path(tuple(tokens), logprob, tuple(step_lps), exhausted, gap)
