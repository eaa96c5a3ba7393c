"""Deterministic decoders that walk one session: ``Greedy``, ``Beam`` (as ``transformers`` runs beam
search, EOS and length penalty included) and ``Fixed`` (a given output, scored by teacher forcing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from core.path import Path, check_call, check_count, make_path
from core.protocol import NextTokenModel, logprobs_after, pad_after_eos, start_session
from core.search import top_indices


@dataclass(frozen=True)
class Greedy:
    """The most likely next token at every step (lowest id on ties); stops after emitting EOS.

    Calls the model as ``start_session(model, prompt, batch=1, steps=steps)`` and then one token per
    ``advance`` (a calling pattern others replay to reproduce it exactly)."""

    is_random: ClassVar[bool] = False
    label: ClassVar[str] = "greedy"

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        prompt = check_call(model, prompt, steps)
        session = start_session(model, prompt, batch=1, steps=steps)
        eos = getattr(model, "eos_id", None)
        tokens, step_lps = [], []
        for t in range(steps):
            lp = session.last[0]
            tok = int(torch.argmax(lp))  # the first maximum: ties go to the lowest id
            tokens.append(tok)
            step_lps.append(float(lp[tok]))
            if tok == eos:
                break
            if t + 1 < steps:
                session.advance([tok])
        return make_path(tokens, step_lps)


@dataclass(frozen=True)
class _Hypothesis:
    score: float  # log-probability (finished: divided by length ** length_penalty)
    tokens: tuple[int, ...]
    step_lps: tuple[float, ...]


@dataclass(frozen=True)
class Beam:
    """Beam search as ``transformers`` (5.x) runs it: ``model.generate(input_ids, do_sample=False,
    num_beams=width, length_penalty=length_penalty, early_stopping=early_stopping, max_new_tokens=steps,
    num_return_sequences=1)`` on a model whose generation config has the model's EOS id.

    Each step ranks every (beam, token) continuation by its summed log-probability and looks at the
    best 2·width. Those that end (emit EOS, or reach ``steps`` tokens) and rank within the best
    ``width`` become finished hypotheses, scored log P / length**length_penalty (length counts the
    new tokens, EOS included); the best ``width`` that do not end continue. At most ``width``
    finished hypotheses are kept. The search stops when no beam continues, when all ``width`` slots
    are full and ``early_stopping is True``, or when (all slots full) the best running beam's score
    divided by its current length**length_penalty (by ``steps``**length_penalty when
    ``early_stopping == "never"`` and length_penalty > 0) cannot beat the worst finished score —
    ``transformers``' heuristic, not a proof. The output is the best finished hypothesis.

    Without EOS every hypothesis has ``steps`` tokens, so length_penalty and early_stopping change
    nothing. Exact ties go to the lower beam rank, then the lower token id (``transformers`` leaves
    them to ``torch.topk``); scores are float64 (``transformers``: float32). Impossible continuations
    (probability 0) are never kept, so a toy may run fewer than ``width`` beams.
    """

    width: int
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    is_random: ClassVar[bool] = False

    def __post_init__(self):
        check_count("width", self.width)
        lp = self.length_penalty
        if isinstance(lp, bool) or not isinstance(lp, int | float) or not abs(lp) < float("inf"):
            raise ValueError(f"length_penalty must be a finite number, got {lp!r}")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")

    @property
    def label(self) -> str:
        extra = "" if (self.length_penalty, self.early_stopping) == (1.0, False) else \
            f", length penalty {self.length_penalty:g}, early stopping {self.early_stopping}"
        return f"beam (width {self.width}{extra})"

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        prompt = check_call(model, prompt, steps)
        eos = getattr(model, "eos_id", None)
        session = start_session(model, prompt, batch=1, steps=steps)
        running = [_Hypothesis(0.0, (), ())]
        finished: list[_Hypothesis] = []
        for t in range(steps):
            lp = session.last.double()
            vocab = lp.shape[1]
            cand = (torch.tensor([h.score for h in running], dtype=torch.float64)[:, None] + lp).reshape(-1)
            order = top_indices(cand, 2 * self.width)
            order = order[cand[order] > -float("inf")]
            ends = [t + 1 == steps or int(i) % vocab == eos for i in order]
            new_running, rows = [], []
            for rank, i in enumerate(order.tolist()):
                b, tok = divmod(i, vocab)
                h = _Hypothesis(float(cand[i]), running[b].tokens + (tok,), running[b].step_lps + (float(lp[b, tok]),))
                if ends[rank]:
                    if rank < self.width:
                        finished.append(_Hypothesis(h.score / (t + 1) ** self.length_penalty, h.tokens, h.step_lps))
                elif len(new_running) < self.width:
                    new_running.append(h)
                    rows.append(b)
            finished = sorted(finished, key=lambda h: -h.score)[: self.width]  # stable: earlier first on ties
            running = new_running
            if not running or self._done(finished, running[0].score, t + 1, steps):
                break
            if rows != list(range(session.batch)):
                session = session.select(rows)
            session.advance([h.tokens[-1] for h in running])
        best = finished[0]
        return make_path(best.tokens, best.step_lps)

    def _done(self, finished: list[_Hypothesis], best_running: float, length: int, steps: int) -> bool:
        """``transformers``' stopping rule once every finished slot is taken."""
        if len(finished) < self.width:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0:
            length = steps
        return best_running / length**self.length_penalty <= finished[-1].score


@dataclass(frozen=True)
class Fixed:
    """A given output (e.g. a Bayes output or a user's pick), decoded by teacher forcing so it can be
    scored like any decoder's. With an EOS id it may end at EOS (shorter than ``steps``) or be padded
    with EOS to ``steps`` tokens; the Path ends at the EOS either way."""

    tokens: tuple[int, ...]
    is_random: ClassVar[bool] = False
    label: ClassVar[str] = "fixed output"

    def decode(self, model: NextTokenModel, prompt: Sequence[int], steps: int, seed: int | None = None) -> Path:
        prompt = check_call(model, prompt, steps)
        eos = getattr(model, "eos_id", None)
        tokens = [int(t) for t in self.tokens]
        if eos not in tokens and len(tokens) != steps:
            raise ValueError(f"steps must equal the fixed output's length {len(tokens)}, got {steps}")
        tokens = list(pad_after_eos(tokens, steps, eos))
        if eos is not None and eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
        lp = logprobs_after(model, prompt, [tokens[:t] for t in range(len(tokens))]).double()
        return make_path(tokens, lp[torch.arange(len(tokens)), torch.as_tensor(tokens)].tolist())
