"""Choice points: where along a decoded path the choice of token matters, read off the model's heads.

Everything is in **bits** and works on any ``NextTokenModel`` (toys, the shipped MTP engine, a local
Hugging Face model); models with several heads (``n_heads`` > 1 and ``head_logprobs``) add the
head-k views. Head k after a prefix is the model's distribution of the token k positions after the
prefix's end (head 1 = ordinary next-token prediction).

* ``step_heads``: every head's top-k, mass covered and entropy after one prefix (the step inspector).
* ``choice_trace``: along a path, head 1's entropy and probability of each chosen token, and for
  every head k how its prediction of token t (made k−1 tokens before head 1's) disagrees with what
  head 1 then said (total variation, top-1 agreement, probability of the chosen token).
* ``decompose``: H(X), H(Y), H(X|Y), H(Y|X), I(X;Y) of a joint table, each term computed directly.
* ``pair_information``: the model's joint of two consecutive tokens X, Y after a prefix, estimated
  with head 1's exact p(x), p(y|x) for the top-k x's (one batched forward), and a remainder bucket;
  see ``PairEstimate`` for what is exact and what is a bound.

References: Gloeckle et al. 2024 §5 (choice points; H(X)+H(Y) = H(X|Y) + 2 I(X;Y) + H(Y|X));
../shared/MTP-NOTES.md §3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.decoders import Path

LOG2E = 1.0 / math.log(2.0)
MAX_TOP_K = 256  # most continuations pair_information feeds in one batch
JOINT_TOLERANCE = 1e-9
METRICS = ("entropy", "surprise", "influence")


# ---- model access ------------------------------------------------------------------------------


def n_heads(model) -> int:
    """How many heads the model exposes (1 unless it has ``n_heads`` > 1 and ``head_logprobs``)."""
    n = int(getattr(model, "n_heads", 1) or 1)
    return n if n > 1 and hasattr(model, "head_logprobs") else 1


def heads_after(model, prefix: Sequence[int]) -> torch.Tensor:
    """[n_heads, V] float64 log-probs of every head after ``prefix`` (head 1 only for 1-head models)."""
    prefix = [int(t) for t in prefix]
    if n_heads(model) > 1:
        return model.head_logprobs(prefix).double()
    return model.logprobs([prefix]).double()


def entropy_bits(logprobs: torch.Tensor) -> torch.Tensor:
    """Entropy in bits over the last axis of log-probabilities (``-inf`` entries count as 0)."""
    lp = logprobs.double()
    p = lp.exp()
    terms = torch.where(p > 0, p * lp, torch.zeros_like(lp))
    return -terms.sum(-1) * LOG2E


def _check_prefix_tokens(model, name: str, tokens: Sequence[int]) -> list[int]:
    out = []
    for t in tokens:
        if not isinstance(t, (int, np.integer)) or not 0 <= int(t) < model.vocab_size:
            raise ValueError(f"{name} must hold token ids in [0, {model.vocab_size}), got {t!r}")
        out.append(int(t))
    return out


def _check_top_k(top_k: int, limit: int = MAX_TOP_K) -> int:
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or not 1 <= top_k <= limit:
        raise ValueError(f"top_k must be an integer in [1, {limit}], got {top_k!r}")
    return int(top_k)


# ---- one step: every head's top-k --------------------------------------------------------------


@dataclass(frozen=True)
class HeadView:
    """One head's prediction after a prefix.

    Attributes:
        head: 1-based head number; it predicts the token ``head`` positions after the prefix's end.
        token_ids, probs: its top-k tokens, most probable first (ties: lowest id first).
        entropy_bits: entropy of its full distribution.
        covered: total probability of the top-k tokens.
    """

    head: int
    token_ids: tuple[int, ...]
    probs: tuple[float, ...]
    entropy_bits: float
    covered: float


def _top(logprobs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of a [V] vector, ties to the lowest id (a stable sort, unlike ``torch.topk``)."""
    order = torch.sort(logprobs, descending=True, stable=True).indices[:k]
    return order, logprobs[order]


def step_heads(model, prefix: Sequence[int], top_k: int = 10) -> tuple[HeadView, ...]:
    """Every head's top-k, entropy and covered mass after ``prefix`` (prompt + tokens so far)."""
    top_k = _check_top_k(top_k)
    prefix = _check_prefix_tokens(model, "prefix", prefix)
    table = heads_after(model, prefix)
    views = []
    for j in range(table.shape[0]):
        ids, lp = _top(table[j], min(top_k, table.shape[1]))
        p = lp.exp()
        views.append(HeadView(j + 1, tuple(int(i) for i in ids), tuple(float(x) for x in p),
                              float(entropy_bits(table[j])), float(p.sum())))
    return tuple(views)


# ---- along a path ------------------------------------------------------------------------------


def next_token_table(model, prompt: Sequence[int], tokens: Sequence[int]) -> torch.Tensor:
    """[steps, V] float64 head-1 log-probs before each path token (row t: after ``prompt + tokens[:t]``).

    Models with sessions (``start`` + ``feed``) use one forward pass over the path; others one
    batched ``logprobs`` call.
    """
    prompt = _check_prefix_tokens(model, "prompt", prompt)
    tokens = _check_prefix_tokens(model, "tokens", tokens)
    if not tokens:
        return torch.empty(0, model.vocab_size, dtype=torch.float64)
    if hasattr(model, "start"):
        session = model.start(prompt, steps=len(tokens) - 1)
        rows = [session.last[0].double()[None]]
        if len(tokens) > 1:
            rows.append(session.feed(tokens[:-1])[0].double())
        return torch.cat(rows)
    return model.logprobs([prompt + tokens[:t] for t in range(len(tokens))]).double()


def score_path(model, prompt: Sequence[int], tokens: Sequence[int]) -> Path:
    """``tokens`` as a decoder ``Path``: head 1's log p of each token given everything before it
    (like ``decoders.Fixed``, but one forward pass for models with sessions)."""
    table = next_token_table(model, prompt, tokens)
    steps = tuple(float(table[t, int(tok)]) for t, tok in enumerate(tokens))
    return Path(tuple(int(t) for t in tokens), math.fsum(steps), steps)


def head_table(model, prompt: Sequence[int], tokens: Sequence[int]) -> torch.Tensor:
    """[n_heads, steps, V] float64: row k−1, column t = head k's log-probs for path token t, i.e. after
    the prefix ``prompt + tokens[:t-k+1]``; NaN where that prefix would start before the prompt's
    beginning (t − k + 1 < −len(prompt)).

    Head 1 comes from ``next_token_table``; the other heads of engine-like models (``start`` with
    ``heads``) from one head query per position after one forward pass over the path.
    """
    prompt = _check_prefix_tokens(model, "prompt", prompt)
    tokens = _check_prefix_tokens(model, "tokens", tokens)
    steps, n, V = len(tokens), n_heads(model), model.vocab_size
    full = prompt + tokens
    L = len(prompt)
    out = torch.full((n, steps, V), float("nan"), dtype=torch.float64)
    if steps == 0:
        return out
    out[0] = next_token_table(model, prompt, tokens)
    if n == 1:
        return out
    # head k >= 2 predicts token L+t from the prefix full[:e], e = L+t-k+1
    ends = range(max(0, L - n + 1), L + steps - 1)
    if hasattr(model, "start"):
        session = model.start(full[: L + steps - 2] if L + steps >= 2 else [])
        per_end = {e: session.heads(e - 1)[0].double() for e in ends}
    else:
        per_end = {e: model.head_logprobs(full[:e]).double() for e in ends}
    for t in range(steps):
        for j in range(1, n):
            e = L + t - j
            if e >= 0:
                out[j, t] = per_end[e][j]
    return out


@dataclass(frozen=True)
class HeadAgreement:
    """How head k's predictions along a path compare with head 1's, averaged over ``positions``."""

    head: int
    positions: int
    mean_tv: float
    top1_agreement: float
    mean_chosen_prob: float


@dataclass(frozen=True, eq=False)
class ChoiceTrace:
    """Per-position statistics of a path (length ``steps``), all from the model.

    Attributes:
        tokens: the path's new tokens.
        entropy_bits: [steps] head 1's entropy before choosing token t.
        chosen_prob: [steps] head 1's probability of the chosen token t.
        head_chosen_prob: [n_heads, steps] head k's probability of token t, predicted k−1 tokens
            before head 1's prediction (row 0 = ``chosen_prob``); NaN where unavailable.
        head_tv: [n_heads, steps] total variation between head k's distribution of token t and
            head 1's (0 for row 0); how much the k−1 tokens in between changed the prediction.
        head_agree: [n_heads, steps] 1.0 where head k's top-1 for token t equals head 1's, 0.0 where
            not, NaN where unavailable.
        influence: [steps] head_tv of head 2 on token t+1: how much committing token t moved the
            prediction of the token after it (NaN for the last token and for 1-head models).
    """

    tokens: tuple[int, ...]
    entropy_bits: np.ndarray
    chosen_prob: np.ndarray
    head_chosen_prob: np.ndarray
    head_tv: np.ndarray
    head_agree: np.ndarray
    influence: np.ndarray

    @property
    def surprise_bits(self) -> np.ndarray:
        """−log2 of head 1's probability of each chosen token."""
        with np.errstate(divide="ignore"):
            return -np.log2(self.chosen_prob)

    def metric(self, name: str) -> np.ndarray:
        """One per-position score: "entropy", "surprise" or "influence"."""
        if name == "entropy":
            return self.entropy_bits
        if name == "surprise":
            return self.surprise_bits
        if name == "influence":
            return self.influence
        raise ValueError(f"metric must be one of {METRICS}, got {name!r}")

    def head_summary(self) -> tuple[HeadAgreement, ...]:
        """Per head k >= 2: averages over the positions where head k's prediction exists."""
        out = []
        for j in range(1, self.head_tv.shape[0]):
            ok = ~np.isnan(self.head_tv[j])
            means = [float(a[j][ok].mean()) if ok.any() else float("nan")
                     for a in (self.head_tv, self.head_agree, self.head_chosen_prob)]
            out.append(HeadAgreement(j + 1, int(ok.sum()), *means))
        return tuple(out)

    def top_positions(self, name: str, count: int) -> tuple[int, ...]:
        """The ``count`` positions with the highest score (NaN never ranks; ties: earlier first)."""
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        score = self.metric(name)
        ranked = [int(i) for i in np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")]
        return tuple(sorted(i for i in ranked[:count] if not np.isnan(score[i])))


def choice_trace(model, prompt: Sequence[int], tokens: Sequence[int]) -> ChoiceTrace:
    """Entropy, chosen-token probability and head-k vs head-1 disagreement along ``tokens``."""
    table = head_table(model, prompt, tokens)
    n, steps, _ = table.shape
    idx = torch.as_tensor([int(t) for t in tokens], dtype=torch.long)
    head1 = table[0]
    p1 = head1.exp()
    chosen = torch.stack([table[j, torch.arange(steps), idx] for j in range(n)]).exp() if steps else torch.zeros(n, 0)
    tv = 0.5 * (table.exp() - p1[None]).abs().sum(-1)
    available = ~torch.isnan(table[:, :, 0]) if steps else torch.zeros(n, 0, dtype=torch.bool)
    agree = (table.argmax(-1) == head1.argmax(-1)[None]).double() if steps else torch.zeros(n, 0)
    agree = torch.where(available, agree, torch.full_like(agree, float("nan")))
    influence = np.full(steps, np.nan)
    if n > 1 and steps > 1:
        influence[:-1] = tv[1, 1:].numpy()
    return ChoiceTrace(
        tokens=tuple(int(t) for t in tokens),
        entropy_bits=entropy_bits(head1).numpy() if steps else np.zeros(0),
        chosen_prob=chosen[0].numpy() if steps else np.zeros(0),
        head_chosen_prob=chosen.numpy(),
        head_tv=tv.numpy(),
        head_agree=agree.numpy(),
        influence=influence,
    )


# ---- two consecutive tokens --------------------------------------------------------------------


@dataclass(frozen=True)
class Decomposition:
    """Information terms (bits) of a joint of X and Y: H(X) + H(Y) = H(X|Y) + 2·I(X;Y) + H(Y|X)."""

    h_x: float
    h_y: float
    h_x_given_y: float
    h_y_given_x: float
    mutual_information: float

    @property
    def residual(self) -> float:
        """H(X) + H(Y) − (H(X|Y) + 2 I(X;Y) + H(Y|X)); zero up to rounding."""
        return (self.h_x + self.h_y) - (self.h_x_given_y + 2 * self.mutual_information + self.h_y_given_x)


def decompose(joint) -> Decomposition:
    """Every term computed directly from the table joint[x, y] (non-negative, summing to 1)."""
    p = np.asarray(joint, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"joint must be a non-empty 2-d table p[x, y], got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("joint must hold finite probabilities >= 0")
    if abs(p.sum() - 1.0) > JOINT_TOLERANCE:
        raise ValueError(f"joint must sum to 1 (within {JOINT_TOLERANCE:g}), got {float(p.sum())!r}")
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    pxy = p[nz]
    px_b = np.broadcast_to(px[:, None], p.shape)[nz]
    py_b = np.broadcast_to(py[None, :], p.shape)[nz]
    return Decomposition(
        h_x=float(-np.sum(px[px > 0] * np.log2(px[px > 0]))),
        h_y=float(-np.sum(py[py > 0] * np.log2(py[py > 0]))),
        h_x_given_y=float(-np.sum(pxy * np.log2(pxy / py_b))),
        h_y_given_x=float(-np.sum(pxy * np.log2(pxy / px_b))),
        mutual_information=float(np.sum(pxy * np.log2(pxy / (px_b * py_b)))),
    )


@dataclass(frozen=True)
class PairEstimate:
    """The model's joint of X (token after ``prefix``) and Y (the token after X), estimated.

    Exact: p(x) over the whole vocabulary (head 1), so ``decomposition.h_x`` is exact; p(y|x) for
    the ``top_k`` most probable x's, which cover ``covered`` of X's mass.
    Approximate: the remaining x's ("remainder bucket", mass 1 − covered) are assumed to be followed
    by the top-k's average continuation p̄(y) and to carry no information about Y. Hence
    ``mutual_information`` is a lower bound on the model's I(X;Y) (the top-k rows' divergence from
    their own mixture is the least it can be); H(Y), H(Y|X), H(X|Y) are estimates, and all of them
    are exact when ``covered`` == 1. The decomposition identity holds exactly for the estimated joint.

    Attributes:
        x_ids, x_probs: the top-k x's and p(x), most probable first.
        covered: Σ top-k p(x).
        decomposition: terms of the estimated joint, in bits (H(X) exact; the remainder's split of X
            is independent of Y, so it adds the same amount to H(X) and H(X|Y)).
        h_y_head2: entropy of head 2's own prediction of Y after ``prefix`` (multi-head models; None
            otherwise): the model's direct estimate of H(Y), for comparison.
        y_top: the top tokens of the estimated p(y) with their probabilities.
    """

    x_ids: tuple[int, ...]
    x_probs: tuple[float, ...]
    covered: float
    decomposition: Decomposition
    h_y_head2: float | None
    y_top: tuple[tuple[int, float], ...]

    @property
    def exact(self) -> bool:
        return self.covered >= 1.0 - 1e-12


def pair_information(model, prefix: Sequence[int], top_k: int = 16) -> PairEstimate:
    """Estimate the joint of the next two tokens after ``prefix`` with one batched forward of
    ``top_k`` continuations (see ``PairEstimate``)."""
    top_k = _check_top_k(top_k)
    prefix = _check_prefix_tokens(model, "prefix", prefix)
    heads = heads_after(model, prefix)
    lp_x = heads[0]
    ids, lp_top = _top(lp_x, min(top_k, lp_x.shape[0]))
    px_top = lp_top.exp()
    keep = px_top > 0
    ids, px_top = ids[keep], px_top[keep]
    covered = float(px_top.sum())
    cond = model.logprobs([prefix + [int(x)] for x in ids]).double().exp()
    cond = cond / cond.sum(-1, keepdim=True)
    rows = px_top[:, None] * cond
    mixture = rows.sum(0) / covered
    rest = max(0.0, 1.0 - covered)
    joint = torch.cat([rows, rest * mixture[None]]) if rest > 0 else rows
    joint = joint / joint.sum()
    bucketed = decompose(joint.numpy())
    h_x = float(entropy_bits(lp_x))
    within_rest = max(0.0, h_x - bucketed.h_x)  # (1 − covered) · H(X | X in the remainder)
    dec = Decomposition(
        h_x=h_x,
        h_y=bucketed.h_y,
        h_x_given_y=bucketed.h_x_given_y + within_rest,
        h_y_given_x=bucketed.h_y_given_x,
        mutual_information=bucketed.mutual_information,
    )
    y_ids, y_lp = _top(torch.log(joint.sum(0)), 10)
    return PairEstimate(
        x_ids=tuple(int(i) for i in ids),
        x_probs=tuple(float(p) for p in px_top),
        covered=covered,
        decomposition=dec,
        h_y_head2=float(entropy_bits(heads[1])) if heads.shape[0] > 1 else None,
        y_top=tuple((int(i), float(v)) for i, v in zip(y_ids, y_lp.exp())),
    )


# ---- predicted seconds (core.cost), for the pages' compute guards -----------------------------------------

PAIR_CALLS = 4  # pair_information's batched logprobs call, in one-token steps of top_k rows (measured: 2.5-4.5)
TRACE_FEEDS = 4  # a path's teacher-forced tables, in feeds of the path (measured on SmolLM2: about 4)
VIEW_STEPS = 3  # one step's head views (a logprobs call and its sorting), in one-token steps


def predict_path(cost, prompt_len: int, steps: int) -> float:
    """Seconds of decoding a greedy or sampled path of ``steps`` tokens (one row)."""
    return cost.walk(1, steps, prompt_len)


def predict_trace(cost, steps: int, heads: int) -> float:
    """Seconds of ``choice_trace`` / ``score_path`` / the greedy certificate along a path: teacher-forced feeds,
    plus one heads call per position on a multi-head model."""
    return TRACE_FEEDS * cost.prefill(steps) + (steps * cost.forwards(1) if heads > 1 else 0.0)


def predict_views(cost) -> float:
    """Seconds of ``step_heads`` after one prefix."""
    return VIEW_STEPS * cost.forwards(1)


def predict_pair(cost, top_k: int) -> float:
    """Seconds of ``pair_information(model, prefix, top_k)``: one batched call of top_k continuations."""
    return PAIR_CALLS * cost.step(top_k) + cost.forwards(1)
