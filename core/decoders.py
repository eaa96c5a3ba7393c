"""Decoders: ways of turning next-token log-probabilities into a sequence of up to ``steps`` new tokens.

Every decoder is a frozen dataclass with ``.decode(model, prompt, steps, seed) -> Path`` and
``.is_random``; all of them work on any ``NextTokenModel`` (toys with ``prompt=[]``, the neural
engine, a Hugging Face model). With an EOS id they stop after emitting EOS and the Path ends with it
(as ``generate`` does); goals and risks score outputs padded with EOS (``core.protocol.pad_after_eos``).
Ties break to the lowest token id everywhere (for sequences: the lexicographically smallest).

* ``Greedy``: argmax at every step (== ``Beam(1)`` == ``Lookahead(1)``).
* ``Lookahead(depth)``: commit the first token of the most probable next-``depth`` window, found
  exactly by best-first search (``best_first_search``) under a node budget.
* ``Sampling(temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff,
  repetition_penalty, top_n_sigma)``: ancestral sampling through the warpers of ``core.warpers``, in
  ``transformers``' order; ``sample_many`` draws n rows at once.
* ``Beam(width, length_penalty, early_stopping)``: beam search as ``generate(num_beams=width)``.
* ``Fixed(tokens)``: a given output, to evaluate it like any other decoder.
* ``MBR(goal, n_candidates, epsilon)``: minimum Bayes risk over ε-sampled candidates (``core.mbr``).

This module gathers them from ``core.path``, ``core.warpers``, ``core.sampling``, ``core.search`` and
``core.beam``. Sampling and beam search use ``start_session`` so neural models step with their KV
cache (one forward per step for all rows); the searches call ``model.logprobs`` once per frontier batch.
"""

from core.beam import Beam, Fixed, Greedy
from core.path import Path, check_call, check_count, check_seed, make_path, sum_in_order
from core.sampling import (
    DRAW_BLOCK,
    GROUP_ROWS,
    Samples,
    Sampling,
    Step,
    draw,
    sample_groups,
    sample_many,
    walk,
    warp_logprobs,
)
from core.search import CHUNK, Lookahead, SearchResult, best_first_search, top_indices

__all__ = [
    "CHUNK", "DRAW_BLOCK", "GROUP_ROWS", "Beam", "Fixed", "Greedy", "Lookahead", "Path", "Samples", "Sampling",
    "SearchResult", "Step", "best_first_search", "check_call", "check_count", "check_seed", "draw", "make_path",
    "sample_groups", "sample_many", "sum_in_order", "top_indices", "walk", "warp_logprobs",
]


def __getattr__(name: str):
    """``MBR`` on first use: ``core.mbr`` builds on this module, so importing it here eagerly would be
    circular (``from core.decoders import MBR`` works in either import order)."""
    if name == "MBR":
        from core.mbr import MBR

        return MBR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
