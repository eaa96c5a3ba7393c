"""A decoder's output (``Path``) and the argument checks every decoder shares.

With an EOS id, a decoder stops after emitting EOS and its ``Path`` ends with it, shorter than
``steps`` (as ``transformers``' ``generate`` does); goals and risks score it padded with EOS to
``steps`` tokens (``core.protocol.pad_after_eos``), which changes no probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.protocol import NextTokenModel


@dataclass(frozen=True)
class Path:
    """A decoder's output.

    Attributes:
        tokens: the new tokens only (up to and including EOS when the output ended there).
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


def sum_in_order(step: torch.Tensor) -> torch.Tensor:
    """Row sums added left to right (the order ``Path.logprob`` uses)."""
    return step.cumsum(dim=-1)[..., -1] if step.shape[-1] else step.sum(dim=-1)


def make_path(tokens: Sequence[int], step_logprobs: Sequence[float], **extra) -> Path:
    """A Path whose ``logprob`` is the left-to-right sum of ``step_logprobs``."""
    steps = torch.tensor(list(step_logprobs), dtype=torch.float64)
    return Path(tuple(int(t) for t in tokens), float(sum_in_order(steps)), tuple(steps.tolist()), **extra)


def is_int(x) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def check_count(name: str, value) -> None:
    """ValueError unless ``value`` is an integer >= 1 (the message names ``name``)."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_seed(seed) -> int:
    if not is_int(seed):
        raise ValueError(f"seed must be an integer for a random decoder, got {seed!r}")
    return int(seed)


def check_call(model: NextTokenModel, prompt: Sequence[int], steps: int) -> list[int]:
    """Validate a decode call (steps >= 1; within a toy's length) and return the prompt as ints."""
    check_count("steps", steps)
    prompt = [int(t) for t in prompt]
    length = getattr(model, "length", None)
    if length is not None and len(prompt) + steps > length:
        raise ValueError(f"steps must be <= {length - len(prompt)} for this toy of length {length}, got {steps}")
    return prompt
