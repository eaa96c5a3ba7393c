"""Injected lab costs for page tests: predictions that do not depend on this machine's speed."""

from __future__ import annotations

from core.goals import ZeroOne
from core.lab_cost import KINDS, LabCost


def uniform_costs(overhead_s: float, per_sequence_s: float, mbr_run_s: float = 1e-3, draw_s: float = 1e-4,
                  sweep_s: float = 1e-6) -> LabCost:
    """A machine where every fixed cost is ``overhead_s``, every enumerated output or truth sequence
    ``per_sequence_s`` (scoring and building models a tenth of it), an MBR step ``mbr_run_s``."""
    per_kind = lambda what, s: tuple(((kind, w), s) for kind in KINDS for w in what)  # noqa: E731
    mbr = [(refs, what) for refs in (False, True) for what in ("run", "step")]
    return LabCost(overhead_s, per_kind(("output",), per_sequence_s) + per_kind(("prefix",), 0.0),
                   per_kind((ZeroOne(),), per_sequence_s / 10), per_kind((ZeroOne(),), per_sequence_s / 10),
                   per_kind(("mixture", "learned"), per_sequence_s / 10), per_kind(mbr, mbr_run_s),
                   draw_s, sweep_s)
