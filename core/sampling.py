"""Ancestral sampling: the ``Sampling`` decoder, batched walks over many rows, and the token draw.

``Sampling`` takes ``transformers``' argument names and applies its warpers (``core.warpers``) in
their fixed order. ``walk`` drives n rows one batched forward per step (drawing or teacher forcing);
``sample_many`` / ``sample_groups`` draw rows with seeded generators; ``draw`` inverts one uniform
per row. Sessions come from ``core.protocol.start_session``, so rows that emit EOS continue as EOS
(padded, with log-prob 0) and ``Samples.paths()`` ends each output at its EOS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
import torch

from core.path import Path, check_call, check_count, check_seed, make_path, sum_in_order
from core.protocol import NextTokenModel, Session, start_session
from core.warpers import CHAIN, Temperature, Warper, apply_chain

# ---- the sampler -------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Sampling:
    """Ancestral sampling from the warped next-token distribution.

    Args (``transformers``' ``generate`` names; None turns a warper off; see ``core.warpers``):
        temperature: > 0; 1 leaves the model's distribution unchanged.
        top_k: keep the k most likely tokens (>= 1).
        top_p: keep the smallest most-likely set with mass >= top_p, in (0, 1].
        min_p: keep tokens with p >= min_p · max p, in [0, 1].
        typical_p: locally typical sampling's mass, in (0, 1].
        epsilon_cutoff: keep tokens with p >= ε, in (0, 1).
        eta_cutoff: keep tokens with p >= min(η, √η·e^−H), in (0, 1).
        repetition_penalty: θ > 0 on every token already in the row (prompt included).
        top_n_sigma: keep logits >= max − n·σ, n > 0 (llama.cpp's; not in transformers).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    epsilon_cutoff: float | None = None
    eta_cutoff: float | None = None
    repetition_penalty: float | None = None
    top_n_sigma: float | None = None
    is_random: ClassVar[bool] = True

    def __post_init__(self):
        if self.temperature is None:
            raise ValueError("temperature must be > 0 and finite, got None")
        self.chain  # noqa: B018 - builds (so validates) every warper

    def __repr__(self) -> str:
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if getattr(self, f.name) != f.default]
        return f"Sampling({', '.join(changed)})"

    @property
    def chain(self) -> tuple[Warper, ...]:
        """The active warpers, in ``core.warpers.CHAIN`` order."""
        built = (cls.build(getattr(self, cls.arg())) for cls in CHAIN)
        return tuple(w for w in built if w is not None)

    @property
    def label(self) -> str:
        parts = [f"τ={self.temperature:g}"] + [w.label for w in self.chain if not isinstance(w, Temperature)]
        return f"sampling ({', '.join(parts)})"

    @property
    def is_identity(self) -> bool:
        """No active warper: the sampler's distribution is the model's."""
        return not self.chain

    @property
    def truncates(self) -> bool:
        """Whether a warper can cut tokens (so the output distribution can miss P's support)."""
        return any(w.truncates for w in self.chain)

    @property
    def needs_history(self) -> bool:
        """Whether ``warp`` needs each row's tokens so far (the repetition penalty)."""
        return any(w.needs_history for w in self.chain)

    def warp(self, logprobs: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """The sampler's normalised log-probs [..., V] (``-inf`` for cut tokens) of the model's
        normalised ``logprobs`` [..., V], returned as they are by the identity sampler. ``history``:
        each row's token ids so far [rows, L] (prompt + generated), needed only by the repetition
        penalty (``needs_history``)."""
        if self.is_identity:
            return logprobs
        return apply_chain(self.chain, logprobs, history)

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        return sample_many(model, prompt, steps, 1, check_seed(seed), self).paths()[0]


def warp_logprobs(logprobs: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, *, history: torch.Tensor | None = None, **more) -> torch.Tensor:
    """``Sampling(temperature, top_k, top_p, **more).warp(logprobs, history)``, always normalised: the
    input may be logits or log-probs [..., V]; it is not modified."""
    return apply_chain(Sampling(temperature, top_k, top_p, **more).chain, logprobs, history)


# ---- drawing -----------------------------------------------------------------------------------

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


# ---- walks -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Samples:
    """n sampled rows of ``steps`` tokens each (from ``sample_many``), padded with EOS after it.

    Attributes:
        tokens: [n, steps] int64.
        step_logprobs: [n, steps] float64, log p(token | row so far) under the model (0 after EOS).
        step_warped_logprobs: [n, steps] float64, log r(token | row so far) under the sampler that
            drew them (equal to ``step_logprobs`` up to rounding for the identity sampler).
        eos_id: the model's EOS id (None: rows never end early).
    """

    tokens: torch.Tensor
    step_logprobs: torch.Tensor
    step_warped_logprobs: torch.Tensor
    eos_id: int | None = None

    @property
    def n(self) -> int:
        return self.tokens.shape[0]

    @property
    def logprob(self) -> torch.Tensor:
        """[n] log P(row) under the model."""
        return sum_in_order(self.step_logprobs)

    @property
    def lengths(self) -> torch.Tensor:
        """[n] tokens of each output up to and including its EOS (``steps`` where it has none)."""
        steps = self.tokens.shape[1]
        if self.eos_id is None:
            return torch.full((self.n,), steps, dtype=torch.long)
        hit = self.tokens == self.eos_id
        return torch.where(hit.any(dim=1), hit.int().argmax(dim=1) + 1, steps)

    def paths(self) -> list[Path]:
        """One Path per row, ending at its EOS."""
        rows = zip(self.tokens.tolist(), self.step_logprobs.tolist(), self.lengths.tolist())
        return [make_path(t[:k], s[:k]) for t, s, k in rows]


@dataclass(frozen=True)
class Step:
    """One position of a ``walk``: ``session`` holds every row's tokens so far (``history`` [n, L],
    prompt included), ``logprobs`` its [n, V] next-token log-probs (the model's dtype; a point mass
    on EOS for rows that ended), ``warped`` the sampler's (None when tokens are given), and
    ``tokens`` [n] the tokens about to be appended."""

    t: int
    session: Session
    logprobs: torch.Tensor
    warped: torch.Tensor | None
    tokens: torch.Tensor
    history: torch.Tensor | None = None


def draws_on_server(model) -> bool:
    """Whether ``model`` samples on a server (``core.remote``; it has its own ``sample_groups``), so every
    walk draws its rows there."""
    return hasattr(model, "sample_groups")


def walk(model: NextTokenModel, prompt: Sequence[int], steps: int, n: int, *, seed: int | None = None,
         sampler: Sampling | None = None, tokens: torch.Tensor | None = None) -> Iterator[Step]:
    """Drive n rows continuing ``prompt`` for ``steps`` tokens, one batched forward per step.

    Each row's next token is drawn from ``sampler`` (default: the model at temperature 1) with a
    ``torch.Generator`` seeded by ``seed``, or read from ``tokens`` [n, steps] (teacher forcing).
    Yields a ``Step`` before the tokens are appended, so a caller may fork ``session`` there. After a
    row's EOS its log-probs are a point mass on EOS (so teacher-forced rows must be padded with EOS,
    as ``pad_after_eos`` pads them); ``Step.history`` is what a history-dependent sampler reads
    (``sampler.warp(step.logprobs, step.history)``).

    A served model (one with its own ``sample_groups``, ``core.remote``) draws the rows on its server,
    so they are unbiased whatever truncation its reported rows have; the walk then teacher-forces them.
    """
    if tokens is None and draws_on_server(model):
        tokens = sample_groups(model, prompt, steps, [(n, check_seed(seed), sampler)])[0].tokens
    if tokens is None:
        gen = torch.Generator().manual_seed(check_seed(seed))
        sampler = sampler or Sampling()
    session = start_session(model, prompt, batch=n, steps=steps)
    for t in range(steps):
        lp, history = session.last, session.history
        if tokens is None:
            warped = sampler.warp(lp, history if sampler.needs_history else None)
            chosen = draw(warped, gen)
        else:
            warped, chosen = None, tokens[:, t]
        yield Step(t, session, lp, warped, chosen, history)
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
    depend on the batch around them, else up to the last bit of float32 rounding (tokens then differ
    only if a uniform falls within it of a bucket boundary).
    Groups share a walk up to ``GROUP_ROWS`` rows. ``observe(t, logprobs, tokens)``, if given, sees
    the first group's [n, V] log-probs and [n] tokens about to be appended at every step."""
    if draws_on_server(model):  # unbiased rows, whatever truncation the served rows have
        return model.sample_groups(prompt, steps, groups, observe)
    prompt = check_call(model, prompt, steps)
    if not groups:
        raise ValueError("groups must hold at least one (n, seed, sampler)")
    for n, seed, _ in groups:
        check_count("n", n)
        check_seed(seed)
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
            warped = samplers[g].warp(rows, session.history[a:b] if samplers[g].needs_history else None)
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
    eos = getattr(model, "eos_id", None)
    return [Samples(torch.stack([s[g] for s in toks], 1), torch.stack([s[g] for s in lps], 1),
                    torch.stack([s[g] for s in wlps], 1), eos) for g in range(len(groups))]
