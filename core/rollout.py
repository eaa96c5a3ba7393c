"""One truth rollout per request: the model's own samples (the truth rows), walked once, keeping every
statistic any goal needs to score any output fixed before the walk.

``roll_out`` draws n truth rows Y_1..Y_n from the model exactly as ``sample_many(model, prompt, steps, n,
seed)`` draws them (or teacher-forces given rows) and, at every step s, records from the rows' next-token
distributions p(. | Y_i,<s):

* ``hits[s, i, j]`` = p(target_j,s | Y_i,<s) for every target sequence j given up front (decoders'
  outputs, a random decoder's own draws, MBR candidates): with the truth tokens these give every
  pointwise goal's Rao-Blackwellised loss of every target against every truth row (``core.goals``);
* ``pair_hits[s, i]`` = p(Y_partner(i),s | Y_i,<s) for the cross-pairing of truth rows (rows a and
  a + n/2 are partners): sampling from P scored with its own truth rows, no extra draws;
* ``cands[s]`` the ``CANDIDATES`` tokens of highest marginal mean_{i in fold A} p(. | Y_i,<s) and their
  hits on every row, from which the Bayes output is chosen on fold A and scored on fold B;
* per sampler asked for, the Rao-Blackwellised KL(p ‖ r) at each visited prefix and the ratio
  r(Y)/P(Y) (distribution matching; a few passes over every row's distribution per step).

Folds: the first ``n // 2`` truth rows are fold A (choosing outputs that depend on the truth: the Bayes
output, MBR), the rest fold B (scoring them, independent of the choice). Nothing here depends on the
goal itself, so every pointwise goal (any N) scores from the same rollout.

Waves: ``walk_wave`` walks one batch of truth rows (and, optionally, groups of other rows drawn in the same
walk, whose tokens are targets as they are drawn); ``Rollout.from_waves`` joins waves into one rollout whose
fold A is the first half of every wave and fold B the second halves, in the same order, so the partner of row
a is row a + n // 2 as above. ``roll_out`` is one wave. ``core.compare`` runs a request as waves of doubling
size, each with its own seed, so the rollout after the first waves is the rollout of a request for fewer rows.

``score_outputs`` is the one teacher-forced pass over outputs known only later (displayed outputs, the
Bayes output): one ``feed`` of all rows through a cached session, linear in steps.

EOS: targets are scored as ``pad_after_eos`` pads them; sessions (``start_session``) make the
conditional after EOS a point mass on EOS, and ``score_outputs`` applies ``absorb_eos`` as well.

Threads: every entry pins the calling thread to one intra-op thread (``core.compute.pin_thread``), as
the engines do, so the per-step reductions give the same bits whatever the thread settings (and small
ops do not wait at thread barriers on a busy machine: on 2 loaded cores a Compare's draws spent 3.5 s
in ``exp`` at 2 threads, 0.07 s at 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from core.compute import pin_thread
from core.decoders import Path, Samples, Sampling, check_count, draw, sum_in_order, top_indices
from core.protocol import absorb_eos, pad_after_eos, start_session
from core.sampling import draws_on_server

CANDIDATES = 16  # tokens per position kept for the Bayes output's window marginals
# A random decoder scored against n truth rows draws n // DRAW_SHARE rows of its own, clamped to
# [MIN_DRAWS, MAX_DRAWS] (and at most n). Its interval's width then comes mostly from its draws; with
# fewer than ~16 the t interval of a discrete, skewed per-draw risk under-covers (measured on toys:
# 92% at 12 draws, 95% at 25).
DRAW_SHARE = 8
MIN_DRAWS, MAX_DRAWS = 16, 64
DRAWS_STREAM, MBR_STREAM, REFERENCES_STREAM, WAVES_STREAM = 1, 2, 3, 4  # derived seeds (see ``derived_seed``)


def derived_seed(seed: int, stream: int, index: int | None = None) -> int:
    """A seed independent of ``seed``'s own stream (for draws that must not share uniforms with the
    truth rows): stream 1 a random decoder's Monte Carlo draws, 2 MBR's candidates, 3 MBR's own
    pseudo-references (so a truth rollout with ``seed`` scores MBR's pick on rows it was not chosen on),
    ``WAVES_STREAM`` with ``index`` w the truth rows of wave w of a progressive rollout."""
    key = [int(seed) % 2**63, int(stream)] + ([] if index is None else [int(index)])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def sampler_draws(n: int) -> int:
    """How many of its own draws a random decoder gets next to n truth rows."""
    return min(n, max(MIN_DRAWS, min(MAX_DRAWS, n // DRAW_SHARE)))


def check_samples(n_samples, seed, minimum: int = 2) -> None:
    if not isinstance(n_samples, int | np.integer) or isinstance(n_samples, bool) or n_samples < minimum:
        raise ValueError(f"n_samples must be an integer >= {minimum}, got {n_samples!r}")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def padded_rows(outputs: Sequence[Sequence[int]], steps: int, eos_id: int | None) -> torch.Tensor:
    """[m, steps] int64: every output as ``pad_after_eos`` pads it."""
    rows = [pad_after_eos(o, steps, eos_id) for o in outputs]
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), steps)


def path_logprobs(paths: Sequence[Path]) -> torch.Tensor:
    """[m] float64 log P of each path (what it scores as padded after EOS: the padding has log-prob 0)."""
    return torch.tensor([p.logprob for p in paths], dtype=torch.float64)


# ---- per-sampler statistics over the truth rows (distribution matching) ---------------------------


@dataclass(frozen=True, eq=False)
class Divergence:
    """A sampler r against the truth rows. Per row i: ``kl`` = Σ_t KL(p(.|Y_i,<t) ‖ r(.|Y_i,<t))
    (Rao-Blackwellised: E_P of it is KL(P ‖ r), claims.md C14; ∞ at a row where r cut a token of
    positive probability), ``tv`` = (1 − r(Y_i)/P(Y_i))_+ (E_P of it is TV(P, r)), ``cut`` = Y_i itself
    left r's support. ``any_cut``: some visited prefix had a positive-probability token cut (then
    KL(P ‖ r) = ∞). ``identity``: r = P."""

    kl: torch.Tensor
    tv: torch.Tensor
    cut: torch.Tensor
    any_cut: bool
    identity: bool


class _DivergenceAccumulator:
    """Accumulates a ``Divergence`` one step of truth rows at a time.

    Pure temperature, pure top-k and pure top-p (the Compare lineup) use a few O(V) passes per row
    instead of the sampler's full warp (a top-p warp sorts every row): truncation at temperature 1
    keeps r(y) = p(y)/Z >= p(y) for every kept token, so TV needs only whether Y was kept, and KL is ∞
    as soon as anything was cut (else r = P on the path). Other samplers go through ``sampler.warp``.
    Top-p keeps a token iff the mass ranked strictly above it (ties: lower ids first) is < top_p, as
    ``warp_logprobs`` does, up to float rounding of that mass."""

    def __init__(self, sampler: Sampling, n: int):
        self.sampler = sampler
        self.identity = bool(getattr(sampler, "is_identity", False))
        self.kind = "warp"
        if sampler == Sampling(temperature=sampler.temperature):
            self.kind = "temperature"
        elif sampler == Sampling(top_k=sampler.top_k):
            self.kind = "top_k"
        elif sampler == Sampling(top_p=sampler.top_p):
            self.kind = "top_p"
        self.kl = torch.zeros(n, dtype=torch.float64)
        self.log_ratio = torch.zeros(n, dtype=torch.float64)
        self.cut = torch.zeros(n, dtype=torch.bool)
        self.any_cut = False

    def observe(self, step: _StepView) -> None:
        if self.identity:
            return
        lp, idx = step.lp, step.tok[:, None]
        if self.kind == "temperature":  # float64: KL = (1 − 1/τ) Σ p log p + lse(log p / τ) cancels
            scores = lp.double() / self.sampler.temperature
            lse = torch.logsumexp(scores, dim=1)
            self.kl += step.plogp * (1 - 1 / self.sampler.temperature) + lse
            self.log_ratio += scores.gather(1, idx).squeeze(1) - lse - step.lp_y
            return
        if self.kind == "warp":
            warped = self.sampler.warp(lp, step.history if self.sampler.needs_history else None)
            p = step.p
            cut_here = (p > 0) & (warped == -math.inf)
            diff = torch.where(p > 0, lp.double() - warped.double(), torch.zeros_like(lp, dtype=torch.float64))
            self.kl += (p.double() * diff).nan_to_num(nan=0.0).sum(1)
            self.log_ratio += warped.gather(1, idx).squeeze(1).double() - step.lp_y
            self.cut |= warped.gather(1, idx).squeeze(1) == -math.inf
            self._mark_cut(cut_here.any(1))
            return
        if self.kind == "top_k":
            k = min(int(self.sampler.top_k), lp.shape[1])
            kth = torch.topk(lp, k, dim=1).values[:, -1]
            kept_y = step.lp_y >= kth
            row_cut = step.lowest < kth  # some token of positive probability scores below the k-th
        else:  # top_p: mass ranked strictly above the truth token, lower ids first among equal scores
            lp_y = lp.gather(1, idx)
            mass = (step.p * (lp > lp_y)).sum(1, dtype=torch.float64)
            tied = (lp == lp_y).sum(1) > 1
            if bool(tied.any()):
                rows = torch.nonzero(tied).squeeze(1)
                lower = (lp[rows] == lp_y[rows]) & (torch.arange(lp.shape[1])[None, :] < idx[rows])
                mass[rows] += (step.p[rows] * lower).sum(1, dtype=torch.float64)
            kept_y = mass / step.total < self.sampler.top_p
            row_cut = 1 - step.lowest.double().exp() / step.total >= self.sampler.top_p  # the last-ranked is cut
        self.cut |= ~kept_y
        self._mark_cut(row_cut)

    def _mark_cut(self, row_cut: torch.Tensor) -> None:
        self.kl = torch.where(row_cut, torch.full_like(self.kl, math.inf), self.kl)
        self.any_cut = self.any_cut or bool(row_cut.any())

    def result(self) -> Divergence:
        if self.identity:
            zeros = torch.zeros_like(self.kl)
            return Divergence(zeros, zeros.clone(), self.cut, False, True)
        if self.kind in ("top_k", "top_p"):
            tv = self.cut.double()  # kept rows have r(Y)/P(Y) = Π 1/Z_t >= 1
        else:
            tv = torch.where(self.cut, torch.ones_like(self.kl), (1 - self.log_ratio.exp()).clamp(min=0.0))
        return Divergence(self.kl, tv, self.cut, self.any_cut, False)


@dataclass(frozen=True, eq=False)
class _StepView:
    """One step of truth rows, with the full-width quantities every sampler's statistics share."""

    lp: torch.Tensor  # [n, V] log-probs
    tok: torch.Tensor  # [n] the truth tokens
    p: torch.Tensor  # [n, V] probabilities
    lp_y: torch.Tensor  # [n] float64 log p(Y_t)
    total: torch.Tensor  # [n] float64 Σ p (1 up to rounding)
    plogp: torch.Tensor  # [n] float64 Σ p log p (0 log 0 = 0)
    lowest: torch.Tensor  # [n] the smallest log-prob of positive probability
    history: torch.Tensor | None = None  # [n, L] each row's tokens so far (prompt included)

    @classmethod
    def of(cls, lp: torch.Tensor, tok: torch.Tensor, history: torch.Tensor | None = None) -> _StepView:
        p = lp.exp()
        lowest = lp.masked_fill(lp == -math.inf, math.inf).min(1).values
        plogp = (p.double() * lp.double()).nansum(1)
        return cls(lp, tok, p, lp.gather(1, tok[:, None]).squeeze(1).double(), p.sum(1, dtype=torch.float64), plogp,
                   lowest, history)


# ---- the rollout ----------------------------------------------------------------------------------


def partners(n: int) -> torch.Tensor:
    """[n] each truth row's cross-pairing partner: a <-> a + n//2 (an odd last row is its own)."""
    idx, half = torch.arange(n), n // 2
    return torch.where(idx < half, idx + half, torch.where(idx < 2 * half, idx - half, idx))


@dataclass(frozen=True, eq=False)
class Columns:
    """Target sequences and what the rollout knows about them.

    Attributes:
        tokens: [m, steps] the targets as scored (padded after EOS).
        logp: [m] float64 log P(target) under the model (NaN where unknown; only 0-1 needs it).
        hits: [steps, n, m] p(target_j,s | Y_i,<s) over the truth rows; for role "truth" [steps, n],
            p(Y_partner(i),s | Y_i,<s).
        role: "fixed" (chosen without the truth rows), "selected" (chosen on fold A, so scored on fold
            B only), "draws" (a random decoder's own independent draws), "truth" (sampling from P,
            represented by the truth rows themselves, cross-paired).
        sampler: for "draws" and "truth", the key of the sampler's ``Divergence`` in the rollout.
    """

    tokens: torch.Tensor
    logp: torch.Tensor
    hits: torch.Tensor | None
    role: str
    sampler: str | None = None


@dataclass(frozen=True, eq=False)
class Rollout:
    """A truth rollout (see the module doc). ``groups`` names the targets' column ranges."""

    steps: int
    seed: int
    tokens: torch.Tensor  # [n, steps] truth rows
    logp: torch.Tensor  # [n] float64 log P(Y_i)
    targets: torch.Tensor  # [m, steps]
    target_logp: torch.Tensor  # [m] float64
    hits: torch.Tensor  # [steps, n, m]
    pair_hits: torch.Tensor  # [steps, n]
    cands: torch.Tensor  # [steps, CANDIDATES] best first
    cand_hits: torch.Tensor  # [steps, n, CANDIDATES]
    divergences: dict[str, Divergence] = field(default_factory=dict)
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def from_waves(cls, steps: int, seed: int, waves: Sequence[Wave], targets: tuple[torch.Tensor, torch.Tensor],
                   groups: Mapping[str, tuple[int, int]]) -> Rollout:
        """The rollout of these waves' truth rows, in fold order (``fold_order``), with the first wave's
        candidate tokens; the same waves give the same rollout however many more follow."""
        order = fold_order([w.n for w in waves])
        tokens = torch.cat([w.tokens for w in waves])[order]
        logp = sum_in_order(torch.cat([w.step_logprobs for w in waves])[order])
        return cls(steps, int(seed), tokens, logp, targets[0], targets[1],
                   torch.cat([w.hits for w in waves], dim=1)[:, order],
                   torch.cat([w.pair_hits for w in waves], dim=1)[:, order], waves[0].cands,
                   torch.cat([w.cand_hits for w in waves], dim=1)[:, order], _merge_divergences(waves, order),
                   dict(groups))

    @property
    def n(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_select(self) -> int:
        """Fold A: rows [0, n_select); fold B: rows [n_select, n)."""
        return self.n // 2

    @property
    def fold_a(self) -> slice:
        return slice(0, self.n_select)

    @property
    def fold_b(self) -> slice:
        return slice(self.n_select, self.n)

    def partner(self) -> torch.Tensor:
        """[n] each row's cross-pairing partner (see ``partners``)."""
        return partners(self.n)

    def columns(self, key: str, role: str, sampler: str | None = None) -> Columns:
        """The targets of group ``key`` (or of all of ``keys`` joined by '+') as ``Columns``."""
        cols = [c for k in key.split("+") for c in range(*self.groups[k])]
        idx = torch.tensor(cols, dtype=torch.long)
        return Columns(self.targets[idx], self.target_logp[idx], self.hits[:, :, idx], role, sampler)

    def truth_columns(self, sampler: str | None = None) -> Columns:
        """Sampling from P, represented by the truth rows (cross-paired)."""
        return Columns(self.tokens, self.logp, self.pair_hits, "truth", sampler)


@dataclass(frozen=True)
class Group:
    """Rows a walk draws besides the truth rows: ``n`` rows from ``sampler`` (None: the model itself) with a
    generator seeded by ``seed``, one uniform per row and step, as ``sample_many(model, prompt, steps, n,
    seed, sampler)`` draws them (bitwise where a row does not depend on the batch around it)."""

    name: str
    n: int
    seed: int
    sampler: Sampling | None = None


@dataclass(frozen=True, eq=False)
class Wave:
    """One walk of truth rows (see ``walk_wave``), in walk order: its rows become fold A (the first half),
    fold B (the second half) and, if the wave has an odd number of rows, one row alone at the end
    (``Rollout.from_waves``). ``pair_hits`` pairs row a with row a + n//2 of the same wave.

    Attributes:
        drawn: the groups' rows ({name: Samples}); their tokens are targets after the fixed ones, in
            group order.
        step_logprobs: [n, steps] float64 log p(Y_i,t | Y_i,<t) of the truth rows.
    """

    seed: int
    tokens: torch.Tensor
    step_logprobs: torch.Tensor
    hits: torch.Tensor
    pair_hits: torch.Tensor
    cands: torch.Tensor
    cand_hits: torch.Tensor
    divergences: dict[str, Divergence]
    drawn: dict[str, Samples] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.tokens.shape[0]

    def samples(self, eos_id: int | None) -> Samples:
        """The truth rows as ``Samples`` (sampled from P: their warped log-probs are the model's)."""
        return Samples(self.tokens, self.step_logprobs, self.step_logprobs, eos_id)


def fold_order(sizes: Sequence[int]) -> torch.Tensor:
    """Row order of waves of these sizes, merged: every wave's first half (fold A), every wave's second half
    (fold B), then the odd row of the last wave, so row j of fold A pairs with row j of fold B."""
    if any(s % 2 for s in sizes[:-1]):
        raise ValueError(f"only the last wave may have an odd number of rows, got {list(sizes)}")
    starts = np.cumsum([0, *sizes]).tolist()
    a = [r for s, n in zip(starts, sizes) for r in range(s, s + n // 2)]
    b = [r for s, n in zip(starts, sizes) for r in range(s + n // 2, s + 2 * (n // 2))]
    odd = [starts[-1] - 1] if sizes and sizes[-1] % 2 else []
    return torch.tensor(a + b + odd, dtype=torch.long)


def _merge_divergences(waves: Sequence[Wave], order: torch.Tensor) -> dict[str, Divergence]:
    out = {}
    for key, first in waves[0].divergences.items():
        parts = [w.divergences[key] for w in waves]
        out[key] = Divergence(torch.cat([d.kl for d in parts])[order], torch.cat([d.tv for d in parts])[order],
                              torch.cat([d.cut for d in parts])[order], any(d.any_cut for d in parts),
                              first.identity)
    return out


def walk_wave(model, prompt: Sequence[int], steps: int, n: int, seed: int, *,
              targets: tuple[torch.Tensor, torch.Tensor] | None = None, samplers: Mapping[str, Sampling] | None = None,
              groups: Sequence[Group] = (), cands: torch.Tensor | None = None,
              truth: torch.Tensor | None = None) -> Wave:
    """One walk of n truth rows (drawn from the model with a generator seeded by ``seed``, or teacher-forced
    from ``truth`` [n, steps]) and the ``groups``' rows, one batched forward per step.

    At every step each truth row records the probability of every target's token (``targets``: tokens [m,
    steps] padded after EOS and their log P [m]; then every group row's token as drawn at that step), of its
    wave partner's token, and of the ``cands`` [steps, k] candidate tokens (default: the ``CANDIDATES`` tokens
    of highest mean probability over this wave's fold A, the first n // 2 rows); per sampler in ``samplers``,
    its ``Divergence`` statistics. A served model draws every row on its server first (unbiased whatever
    truncation its rows carry), then the walk teacher-forces them."""
    check_count("n", n)
    prompt = [int(t) for t in prompt]
    fixed = targets[0] if targets is not None else torch.zeros(0, steps, dtype=torch.long)
    if fixed.dim() != 2 or fixed.shape[1] != steps:
        raise ValueError(f"targets must be [m, {steps}] tokens, got {list(fixed.shape)}")
    groups = list(groups)
    for g in groups:
        check_count(f"group {g.name!r} rows", g.n)
    bounds = np.cumsum([n] + [g.n for g in groups]).tolist()
    rows = bounds[-1]
    given_truth = truth.to(torch.long) if truth is not None else None
    given_groups = None  # a served model: its server draws every row
    specs = ([] if truth is not None else [(n, seed, None)]) + [(g.n, g.seed, g.sampler) for g in groups]
    if draws_on_server(model) and specs:
        served = model.sample_groups(prompt, steps, specs, None)
        if truth is None:
            given_truth, served = served[0].tokens, served[1:]
        if groups:
            given_groups = torch.cat([d.tokens for d in served])
            step_wlp_given = torch.cat([d.step_warped_logprobs for d in served])
    gen = torch.Generator().manual_seed(int(seed))
    gens = [torch.Generator().manual_seed(int(g.seed)) for g in groups]
    warpers = [g.sampler or Sampling() for g in groups]
    half = max(n // 2, 1)
    partner = partners(n)
    accs = {key: _DivergenceAccumulator(s, n) for key, s in (samplers or {}).items()}
    k = min(CANDIDATES, int(model.vocab_size)) if cands is None else cands.shape[1]
    tokens = torch.empty(rows, steps, dtype=torch.long)
    step_lp = torch.zeros(rows, steps, dtype=torch.float64)
    step_wlp = step_wlp_given if given_groups is not None else torch.zeros(rows - n, steps, dtype=torch.float64)
    out_cands = torch.empty(steps, k, dtype=torch.long) if cands is None else cands
    hits = pair_hits = cand_hits = None
    pin_thread()
    session = start_session(model, prompt, batch=rows, steps=steps)
    for s in range(steps):
        lp = session.last
        parts = [given_truth[:, s] if given_truth is not None else draw(lp[:n] if groups else lp, gen)]
        if given_groups is not None:
            parts.append(given_groups[:, s])
        for g, (a, b) in enumerate(zip(bounds, bounds[1:])):
            if given_groups is not None:
                break
            sampler = warpers[g]
            warped = sampler.warp(lp[a:b], session.history[a:b] if sampler.needs_history else None)
            chosen = draw(warped, gens[g])
            step_wlp[a - n : b - n, s] = warped.gather(1, chosen[:, None]).squeeze(1).double()
            parts.append(chosen)
        tok = torch.cat(parts) if len(parts) > 1 else parts[0]
        tokens[:, s] = tok
        step_lp[:, s] = lp.gather(1, tok[:, None]).squeeze(1).double()
        truth_lp = lp[:n] if groups else lp
        if hits is None:
            hits = torch.empty(steps, n, fixed.shape[0] + rows - n, dtype=lp.dtype)
            pair_hits = torch.empty(steps, n, dtype=lp.dtype)
            cand_hits = torch.empty(steps, n, k, dtype=lp.dtype)
        columns = torch.cat([fixed[:, s], tok[n:]]) if groups else fixed[:, s]
        hits[s] = truth_lp[:, columns].exp()
        pair_hits[s] = truth_lp.gather(1, tok[:n][partner][:, None]).squeeze(1).exp()
        if cands is None:
            out_cands[s] = top_indices(truth_lp[:half].exp().mean(0, dtype=torch.float64), k)
        cand_hits[s] = truth_lp[:, out_cands[s]].exp()
        if accs:
            view = _StepView.of(truth_lp, tok[:n], session.history[:n])
            for acc in accs.values():
                acc.observe(view)
        if s + 1 < steps:
            session.advance(tok.tolist())
    eos = getattr(model, "eos_id", None)
    drawn = {g.name: Samples(tokens[a:b], step_lp[a:b], step_wlp[a - n : b - n], eos)
             for g, a, b in zip(groups, bounds, bounds[1:])}
    return Wave(int(seed), tokens[:n], step_lp[:n], hits, pair_hits, out_cands, cand_hits,
                {key: acc.result() for key, acc in accs.items()}, drawn)


def target_groups(targets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], steps: int,
                  groups: Sequence[Group] = ()) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, tuple[int, int]]]:
    """(tokens [m, steps], log P [m]) of the fixed targets joined, and every target group's column range: the
    fixed ones first, then the ``groups`` (drawn in a walk) in order."""
    ranges, start = {}, 0
    for key, (tok, _) in targets.items():
        if tok.dim() != 2 or tok.shape[1] != steps:
            raise ValueError(f"targets[{key!r}] must be [m, {steps}] tokens, got {list(tok.shape)}")
        ranges[key] = (start, start + tok.shape[0])
        start += tok.shape[0]
    for g in groups:
        ranges[g.name] = (start, start + g.n)
        start += g.n
    tgt = torch.cat([t for t, _ in targets.values()]) if targets else torch.zeros(0, steps, dtype=torch.long)
    tgt_logp = (torch.cat([lp.double() for _, lp in targets.values()]) if targets
                else torch.zeros(0, dtype=torch.float64))
    return (tgt, tgt_logp), ranges


def roll_out(model, prompt: Sequence[int], steps: int, n: int, seed: int, *,
             targets: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
             samplers: Mapping[str, Sampling] | None = None, truth: torch.Tensor | None = None) -> Rollout:
    """Walk n truth rows once (see the module doc): one ``walk_wave``.

    Args:
        targets: {key: (tokens [m, steps] padded after EOS, log P [m] float64)}, scored on every row.
        samplers: {key: sampler} whose ``Divergence`` against the truth rows is kept.
        truth: optional [n, steps] rows to teacher-force instead of sampling (then ``seed`` only labels
            the rollout).
    """
    check_count("n", n)
    joined, ranges = target_groups(dict(targets or {}), steps)
    wave = walk_wave(model, prompt, steps, n, seed, targets=joined, samplers=samplers, truth=truth)
    return Rollout.from_waves(steps, seed, [wave], joined, ranges)


def draw_targets(drawn: Samples, steps: int, eos_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [m, steps] padded after EOS, log P [m]) of sampled rows, as ``roll_out`` takes targets."""
    return padded_rows(drawn.tokens.tolist(), steps, eos_id), drawn.logprob.double()


def path_targets(paths: Sequence[Path], steps: int, eos_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``draw_targets`` of decoded paths."""
    return padded_rows([p.tokens for p in paths], steps, eos_id), path_logprobs(paths)


# ---- the teacher-forced pass ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Scored:
    """Outputs [B, steps] teacher-forced through the model: each token's log-prob, its rank (1 = the
    most likely at that position; ties count in the token's favour) and the largest log-prob among
    the other tokens (the runner-up)."""

    step_logprobs: torch.Tensor  # [B, steps] float64
    ranks: torch.Tensor  # [B, steps] int64
    runner_up: torch.Tensor  # [B, steps] float64

    @property
    def logprob(self) -> torch.Tensor:
        return self.step_logprobs.cumsum(dim=1)[:, -1]


def score_outputs(model, prompt: Sequence[int], outputs: torch.Tensor) -> Scored:
    """Teacher-force outputs [B, steps] (padded after EOS) in one pass: a session of B rows fed all
    tokens at once (``feed``, one forward: linear in steps) where the model's sessions can, else one
    ``advance`` per step."""
    pin_thread()
    b, steps = outputs.shape
    session = start_session(model, list(prompt), batch=b, steps=steps)
    first = session.last[:, None]
    if steps == 1:
        lp = first
    elif hasattr(session, "feed"):
        lp = torch.cat([first, session.feed(outputs[:, : steps - 1])], dim=1)
    else:
        rows = [first]
        for t in range(steps - 1):
            rows.append(session.advance(outputs[:, t].tolist())[:, None])
        lp = torch.cat(rows, dim=1)
    eos = getattr(model, "eos_id", None)
    if eos is not None:
        before = torch.cat([torch.zeros(b, 1, dtype=torch.bool), (outputs == eos).cummax(dim=1).values[:, :-1]], 1)
        lp = absorb_eos(lp.reshape(b * steps, -1), before.reshape(-1), eos).reshape(b, steps, -1)
    chosen = lp.gather(2, outputs[:, :, None])
    ranks = 1 + (lp > chosen).sum(dim=2)
    others = lp.scatter(2, outputs[:, :, None], -math.inf).max(dim=2).values
    return Scored(chosen.squeeze(2).double(), ranks, others.double())
