"""Minimum Bayes risk (MBR) decoding: among sampled candidates, the one whose expected loss under the
goal is least, the expectation taken over pseudo-references drawn from the model itself.

Why: the mode is an inadequate target for many goals (Eikema & Aziz 2020, "Is MAP decoding all you
need? The inadequacy of the mode": MBR over about 30 samples beats beam search), and MBR decoding under
ROUGE-1 beats greedy and beam search under ROUGE-1 (Bertsch et al. 2023, "It's MBR all the way down").
Candidates come from ε-sampling, which keeps tokens with p ≥ ε (Freitag et al. 2023 use ε = 0.02).

* Candidates: ``n_candidates`` ε-sampled rows (``Sampling(epsilon_cutoff=ε)``; seeded by ``derived_seed(seed,
  MBR_STREAM)``), plus any extra candidates (Compare adds the other decoders' outputs).
* Pseudo-references: ``n_references`` rows drawn from P at temperature 1 (seeded by ``derived_seed(seed,
  REFERENCES_STREAM)``, so ``estimate_risk(..., MBR(...), ..., seed)`` scores the pick on other rows), walked
  as a truth rollout (``core.rollout``); Compare uses fold A of its own truth rows instead.
* Utility: the goal's loss in its decomposable form. Hamming / N-gram: each candidate's expected loss
  is Σ_t (1 − P̂(window t)), the window probabilities Rao-Blackwellised from the references' per-step
  distributions, gathered in the one reference walk (O(R·T) per candidate, no pairwise loss table);
  0-1: exactly 1 − P(candidate), so no references are needed and MBR is the most probable candidate.

The unconstrained optimum of the same estimated utilities (per-position argmax, the N-gram DP) is the
goal's Bayes output (``core.goals``); Compare shows both. Distribution matching has no pointwise loss,
so MBR refuses it.

ε-sampling is ``Sampling(epsilon_cutoff=ε)``: ``transformers``' EpsilonLogitsWarper on a model's float32
scores, its exact definition on toys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from core.compute import pin_thread
from core.decoders import Path, Sampling, check_call, check_count, sample_many
from core.rollout import (
    MBR_STREAM,
    REFERENCES_STREAM,
    Columns,
    Rollout,
    derived_seed,
    path_targets,
    roll_out,
)
from core.sampling import draws_on_server


def check_epsilon(epsilon) -> None:
    """ValueError unless ``epsilon`` (MBR's ε-sampling cutoff) is a number in (0, 1)."""
    if isinstance(epsilon, bool) or not (isinstance(epsilon, int | float) and 0 < epsilon < 1):
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")


def candidate_sampler(model, epsilon: float) -> Sampling:
    """How MBR draws its candidates: ε-sampling (keep the tokens with p >= ε, always the most likely one);
    on a served model, which samples on its server and has no ε-cutoff there, sampling from P itself."""
    check_epsilon(epsilon)
    return Sampling() if draws_on_server(model) else Sampling(epsilon_cutoff=float(epsilon))


def candidates_text(model, n: int, epsilon: float) -> str:
    """The drawn candidates in words, for the method line."""
    if draws_on_server(model):
        return f"{n} sampled from P (the server has no ε-cutoff)"
    return f"{n} ε-sampled, ε = {epsilon:g}"


@dataclass(frozen=True)
class MBRChoice:
    """MBR's pick: the chosen ``path`` (candidate ``index`` of ``pool``), its estimated expected loss,
    whether those expected losses are exact (0-1) and how it was chosen."""

    path: Path
    index: int
    pool: int
    expected_loss: float
    exact: bool
    method: str


def pick(goal, rollout: Rollout | None, pool: Columns, rows: slice) -> tuple[int, torch.Tensor]:
    """(index of the candidate with the least expected loss over the truth rows ``rows`` — the first
    on ties —, every candidate's expected loss)."""
    losses = goal.expected_losses(rollout, pool, rows)
    return int(torch.argmin(losses)), losses


@dataclass(frozen=True)
class MBR:
    """Minimum Bayes risk decoding under ``goal`` (a pointwise goal), see the module doc.

    A random decoder without an enumerable output distribution (no ``warp``): its output is a function
    of the seed (``decode(seed=None)`` uses seed 0), and its risk is the average over seeds (the Monte
    Carlo estimators run it with independent seeds). ``n_references`` None: as many references as
    candidates.
    """

    goal: object
    n_candidates: int = 32
    epsilon: float = 0.02
    n_references: int | None = None
    is_random: ClassVar[bool] = True

    def __post_init__(self):
        if not getattr(self.goal, "pointwise", False):
            raise ValueError("MBR needs a pointwise goal (0-1, Hamming or N-gram Hamming), got "
                             f"{getattr(self.goal, 'name', self.goal)!r}")
        check_count("n_candidates", self.n_candidates)
        check_epsilon(self.epsilon)
        if self.n_references is not None and (not isinstance(self.n_references, int | np.integer)
                                              or isinstance(self.n_references, bool) or self.n_references < 2):
            raise ValueError(f"n_references must be None or an integer >= 2, got {self.n_references!r}")

    @property
    def label(self) -> str:
        return f"MBR ({self.goal.name})"

    def decode(self, model, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        return self.select(model, prompt, steps, seed).path

    def select(self, model, prompt: Sequence[int], steps: int, seed: int | None = None,
               extra: Sequence[Path] = ()) -> MBRChoice:
        """MBR over ``n_candidates`` ε-sampled candidates plus the ``extra`` ones (listed first, so they
        win ties)."""
        prompt = check_call(model, prompt, steps)
        seed = 0 if seed is None else seed
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        pin_thread()
        drawn = sample_many(model, prompt, steps, self.n_candidates, derived_seed(seed, MBR_STREAM),
                            candidate_sampler(model, self.epsilon))
        paths = list(extra) + drawn.paths()
        tokens, logp = path_targets(paths, steps, getattr(model, "eos_id", None))
        refs = self.n_references or self.n_candidates
        if self.goal.needs_references(steps):
            rollout = roll_out(model, prompt, steps, max(refs, 2), derived_seed(seed, REFERENCES_STREAM),
                               targets={"pool": (tokens, logp)})
            pool = rollout.columns("pool", "fixed")
            how = f"expected {self.goal.name} loss over {rollout.n} references drawn from P (Rao-Blackwellised)"
        else:
            rollout, pool = None, Columns(tokens, logp, None, "fixed")
            how = "exact expected 0-1 loss 1 − P(candidate): the most probable candidate"
        index, losses = pick(self.goal, rollout, pool, slice(None))
        method = (f"best of {len(paths)} candidates ({len(extra)} given + "
                  f"{candidates_text(model, self.n_candidates, self.epsilon)}) by {how}")
        return MBRChoice(paths[index], index, len(paths), float(losses[index]), rollout is None, method)
