"""Warpers: how a sampler reshapes the model's next-token distribution before it draws a token.

Each warper is a small frozen dataclass with one parameter, named like ``transformers``' ``generate``
argument (``Sampling`` takes the same names). ``CHAIN`` fixes the order they are applied in:

    repetition penalty, temperature, top-nσ, top-k, top-p, min-p, typical, ε (epsilon), η (eta)

which is ``transformers``' order (``GenerationMixin._get_logits_processor``: the repetition penalty is a
logits *processor* and runs before the *warpers* temperature, top-k, top-p, min-p, typical, epsilon and
eta). Top-nσ (Tang et al. 2024, "Top-nσ: Not All Logits Are You Need") is not in ``transformers``; it
runs where llama.cpp's default chain puts it, after the penalties and before top-k, with llama.cpp's
definition (keep logits >= max - n·σ, σ the population standard deviation of the finite logits); it
gives the same set before or after temperature.

Scores are log-probabilities (or logits) [B, V]; ``-inf`` marks an impossible token. A warper returns
unnormalised scores with ``-inf`` for the tokens it cuts; ``Sampling.warp`` normalises. Two arithmetic
paths, chosen by the scores' dtype:

* float32 (what models return): each warper runs ``transformers``' own ``LogitsProcessor`` on the same
  tensor, so the result is that class's, bit for bit (top-nσ: llama.cpp's formula in the input dtype).
* float64 (the exact toys): the mathematical definition, with ``TOL`` = 1e-12 at every boundary so
  float rounding never moves a token across it: a cumulative mass within ``TOL`` of its threshold
  counts as reaching it (top-p, typical), a probability within a relative ``TOL`` of a cut-off counts
  as on it (min-p, ε, η), log-scores within ``TOL`` of a cut count as on it (top-k, top-nσ). Where the
  definition must choose among equal tokens (top-p, typical) the lower ids stay; ``transformers``
  leaves that to an unstable sort.

The repetition penalty reads each row's token history (prompt + generated, [B, L] ids), like a
``LogitsProcessor``'s ``input_ids``: a seen token's score s becomes s·θ if s < 0 else s/θ. Applied to
log-probabilities (all <= 0) that is p ↦ p^θ before renormalising, which is what ``transformers``'
beam search does (it processes log-probs); ``generate(do_sample=True)`` applies it to raw logits, whose
signs depend on the model's arbitrary logit offset, so there it is not a function of the distribution.

Adding a warper is adding one class here, one entry in ``CHAIN`` and the argument of the same name on
``Sampling`` (a test checks that the two lists agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from core.path import is_int

TOL = 1e-12


@dataclass(frozen=True)
class Warper:
    """One step of a sampler's chain. Subclasses have one field (the ``Sampling`` argument of the same
    name) and set ``bounds`` = (low, high, low included, high included) for it."""

    title: ClassVar[str]  # short name for labels and the UI, e.g. "top-p"
    help: ClassVar[str]  # one-line definition for the UI
    example: ClassVar[float]  # a typical value to offer in the UI
    bounds: ClassVar[tuple[float, float, bool, bool]]
    integer: ClassVar[bool] = False
    truncates: ClassVar[bool] = True  # can cut tokens (so a sampler's support can miss the model's)
    needs_history: ClassVar[bool] = False
    in_transformers: ClassVar[bool] = True

    @classmethod
    def arg(cls) -> str:
        """The parameter's name (``Sampling``'s and ``generate``'s argument)."""
        return fields(cls)[0].name

    @property
    def value(self):
        return getattr(self, self.arg())

    def __post_init__(self):
        low, high, low_in, high_in = self.bounds
        v = self.value
        ok = is_int(v) if self.integer else isinstance(v, int | float) and not isinstance(v, bool)
        ok = ok and math.isfinite(v) and (low <= v if low_in else low < v) and (v <= high if high_in else v < high)
        if not ok:
            raise ValueError(f"{self.arg()} must be {self.allowed()}, got {v!r}")

    @classmethod
    def allowed(cls) -> str:
        low, high, low_in, high_in = cls.bounds
        if cls.integer:
            return f"None or an integer >= {low:g}"
        if high == math.inf:
            return f"None or > {low:g} and finite"
        return f"None or in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"

    @classmethod
    def build(cls, value) -> Warper | None:
        """The warper for a ``Sampling`` argument, or None where the value turns it off."""
        if value is None:
            return None
        warper = cls(value)
        return None if warper.is_noop else warper

    @property
    def is_noop(self) -> bool:
        return False

    @property
    def label(self) -> str:
        return f"{self.title}={self.value:g}"

    def apply(self, scores: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """Warped scores [B, V] of scores [B, V] (not modified); ``history`` [B, L] token ids or None."""
        if scores.dtype == torch.float64:
            return self.exact(scores, history)
        return self.processor()(_ids(scores, history), scores)

    def processor(self):
        """The ``transformers`` LogitsProcessor computing this warper on float32 scores."""
        raise NotImplementedError

    def exact(self, scores: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """The definition on float64 scores (default: the processor, where it has no boundary)."""
        return self.processor()(_ids(scores, history), scores)


def _ids(scores: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
    """A processor's ``input_ids``: the history, or no tokens."""
    return history if history is not None else torch.empty(scores.shape[0], 0, dtype=torch.long)


def _cut(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Scores with ``-inf`` outside ``keep``."""
    return scores.masked_fill(~keep, -math.inf)


def _or_best(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``keep`` plus every token with the best score (what ε and η keep when nothing passes)."""
    return keep | (scores == scores.amax(dim=-1, keepdim=True))


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """[B, 1] entropy in nats of normalised log-probs (0·log 0 = 0)."""
    return -(logp.exp() * logp).nansum(dim=-1, keepdim=True)


def _smallest_set(order: torch.Tensor, probs: torch.Tensor, mass: float) -> torch.Tensor:
    """Keep-mask [B, V] of the shortest prefix of ``order`` (token ids, per row) whose probability is
    >= ``mass`` - TOL."""
    before = probs.gather(-1, order).cumsum(dim=-1)
    before = torch.cat([torch.zeros_like(before[..., :1]), before[..., :-1]], dim=-1)  # mass ranked before
    keep_sorted = before < mass - TOL
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


@dataclass(frozen=True)
class RepetitionPenalty(Warper):
    repetition_penalty: float
    title: ClassVar[str] = "repetition penalty"
    help: ClassVar[str] = ("Every token already in the prompt or output gets its log-probability multiplied by "
                           "θ (θ > 1 discourages repeats, θ < 1 encourages them); Keskar et al. 2019 (CTRL).")
    example: ClassVar[float] = 1.2
    bounds: ClassVar = (0.0, math.inf, False, False)
    truncates: ClassVar[bool] = False
    needs_history: ClassVar[bool] = True

    @property
    def is_noop(self) -> bool:
        return self.repetition_penalty == 1

    def processor(self):
        return RepetitionPenaltyLogitsProcessor(float(self.repetition_penalty))


@dataclass(frozen=True)
class Temperature(Warper):
    temperature: float
    title: ClassVar[str] = "τ"
    help: ClassVar[str] = "Divide every score by τ: τ < 1 sharpens the distribution, τ > 1 flattens it."
    example: ClassVar[float] = 0.7
    bounds: ClassVar = (0.0, math.inf, False, False)
    truncates: ClassVar[bool] = False

    @classmethod
    def allowed(cls) -> str:
        return "> 0 and finite"

    @property
    def is_noop(self) -> bool:
        return self.temperature == 1

    def processor(self):
        return TemperatureLogitsWarper(float(self.temperature))


@dataclass(frozen=True)
class TopNSigma(Warper):
    top_n_sigma: float
    title: ClassVar[str] = "top-nσ"
    help: ClassVar[str] = ("Keep the tokens whose logit is at least max − n·σ (σ: standard deviation of the "
                           "finite logits); Tang et al. 2024, as llama.cpp defines it. Not in transformers.")
    example: ClassVar[float] = 1.0
    bounds: ClassVar = (0.0, math.inf, False, False)
    in_transformers: ClassVar[bool] = False

    @property
    def label(self) -> str:
        return f"top-nσ={self.top_n_sigma:g} (not in transformers)"

    def apply(self, scores: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        finite = scores > -math.inf
        count = finite.sum(dim=-1, keepdim=True).clamp(min=1)
        mean = scores.masked_fill(~finite, 0.0).sum(dim=-1, keepdim=True) / count
        var = ((scores - mean) ** 2).masked_fill(~finite, 0.0).sum(dim=-1, keepdim=True) / count
        cut = scores.amax(dim=-1, keepdim=True) - self.top_n_sigma * var.sqrt()
        if scores.dtype == torch.float64:
            cut = cut - TOL
        return _cut(scores, scores >= cut)


@dataclass(frozen=True)
class TopK(Warper):
    top_k: int
    title: ClassVar[str] = "top-k"
    help: ClassVar[str] = "Keep the k most likely tokens (every token tied with the k-th stays)."
    example: ClassVar[float] = 50
    bounds: ClassVar = (1, math.inf, True, False)
    integer: ClassVar[bool] = True

    def processor(self):
        return TopKLogitsWarper(int(self.top_k))

    def exact(self, scores, history):
        kth = torch.topk(scores, min(int(self.top_k), scores.shape[-1]), dim=-1).values[..., -1:]
        return _cut(scores, scores >= kth - TOL)


@dataclass(frozen=True)
class TopP(Warper):
    top_p: float
    title: ClassVar[str] = "top-p"
    help: ClassVar[str] = ("Nucleus sampling: keep the smallest set of most likely tokens whose probability adds "
                           "up to at least p; Holtzman et al. 2020.")
    example: ClassVar[float] = 0.9
    bounds: ClassVar = (0.0, 1.0, False, True)

    @property
    def is_noop(self) -> bool:
        return self.top_p == 1

    def processor(self):
        return TopPLogitsWarper(float(self.top_p))

    def exact(self, scores, history):
        probs = scores.softmax(dim=-1)
        order = torch.sort(probs, dim=-1, descending=True, stable=True).indices  # ties: lower id first
        return _cut(scores, _smallest_set(order, probs, self.top_p))


@dataclass(frozen=True)
class MinP(Warper):
    min_p: float
    title: ClassVar[str] = "min-p"
    help: ClassVar[str] = ("Keep the tokens at least min-p times as likely as the most likely one; "
                           "Nguyen et al. 2024.")
    example: ClassVar[float] = 0.1
    bounds: ClassVar = (0.0, 1.0, True, True)

    @property
    def is_noop(self) -> bool:
        return self.min_p == 0

    def processor(self):
        return MinPLogitsWarper(float(self.min_p))

    def exact(self, scores, history):
        probs = scores.softmax(dim=-1)
        return _cut(scores, probs >= self.min_p * probs.amax(dim=-1, keepdim=True) * (1 - TOL))


@dataclass(frozen=True)
class Typical(Warper):
    typical_p: float
    title: ClassVar[str] = "typical-p"
    help: ClassVar[str] = ("Locally typical sampling: rank tokens by how close their surprisal −log p is to the "
                           "entropy, keep the smallest such set with probability at least p; Meister et al. 2023.")
    example: ClassVar[float] = 0.9
    bounds: ClassVar = (0.0, 1.0, False, True)

    @property
    def is_noop(self) -> bool:
        return self.typical_p == 1

    def processor(self):
        return TypicalLogitsWarper(float(self.typical_p))

    def exact(self, scores, history):
        logp = scores.log_softmax(dim=-1)
        shifted = (-logp - _entropy(logp)).abs()  # inf for impossible tokens
        order = torch.sort(shifted, dim=-1, stable=True).indices  # most typical first, ties: lower id first
        in_set = _smallest_set(order, logp.exp(), self.typical_p)
        boundary = shifted.masked_fill(~in_set, -math.inf).amax(dim=-1, keepdim=True)
        return _cut(scores, shifted <= boundary)  # ties with the last one stay; the most likely token may go


@dataclass(frozen=True)
class EpsilonCutoff(Warper):
    epsilon_cutoff: float
    title: ClassVar[str] = "ε-cutoff"
    help: ClassVar[str] = ("ε-sampling: keep the tokens of probability at least ε (the most likely always "
                           "stays); Hewitt et al. 2022.")
    example: ClassVar[float] = 3e-4
    bounds: ClassVar = (0.0, 1.0, False, False)

    def processor(self):
        return EpsilonLogitsWarper(float(self.epsilon_cutoff))

    def exact(self, scores, history):
        return _cut(scores, _or_best(scores, scores.softmax(dim=-1) >= self.epsilon_cutoff * (1 - TOL)))


@dataclass(frozen=True)
class EtaCutoff(Warper):
    eta_cutoff: float
    title: ClassVar[str] = "η-cutoff"
    help: ClassVar[str] = ("η-sampling: keep the tokens of probability at least min(ε, √ε·e^−H), H the "
                           "entropy (the most likely always stays); Hewitt et al. 2022.")
    example: ClassVar[float] = 2e-3
    bounds: ClassVar = (0.0, 1.0, False, False)

    def processor(self):
        return EtaLogitsWarper(float(self.eta_cutoff))

    def exact(self, scores, history):
        logp = scores.log_softmax(dim=-1)
        eta = torch.clamp(math.sqrt(self.eta_cutoff) * torch.exp(-_entropy(logp)), max=self.eta_cutoff)
        return _cut(scores, _or_best(scores, logp.exp() >= eta * (1 - TOL)))


CHAIN: tuple[type[Warper], ...] = (RepetitionPenalty, Temperature, TopNSigma, TopK, TopP, MinP, Typical,
                                    EpsilonCutoff, EtaCutoff)


def log_normalize(scores: torch.Tensor) -> torch.Tensor:
    """Scores [..., V] as normalised log-probs (``-inf`` stays ``-inf``)."""
    # log_softmax over a short last axis pays a large thread-pool overhead on busy CPUs (measured:
    # ~9 ms for [200, 3] with 2 threads); x - logsumexp(x) does not, and is slower on wide rows.
    if scores.shape[-1] > 256:
        return torch.log_softmax(scores, dim=-1)
    return scores - torch.logsumexp(scores, dim=-1, keepdim=True)


def apply_chain(chain, scores: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised log-probs [..., V] after the warpers ``chain`` (in order) on ``scores`` [..., V]."""
    flat = scores.reshape(-1, scores.shape[-1])
    if history is not None:
        history = torch.as_tensor(history, dtype=torch.long).reshape(flat.shape[0], -1)
    elif any(w.needs_history for w in chain):
        raise ValueError("repetition_penalty needs each row's token history: call warp(logprobs, history) with "
                         "history the [rows, tokens so far] ids (prompt + generated)")
    for warper in chain:
        flat = warper.apply(flat, history)
    return log_normalize(flat).reshape(scores.shape)
