"""Cost guards on the lab pages (Theory lab, Consistency): each section predicts its seconds from the
measured lab costs (``core.lab_cost``) before it computes, caps its settings to its share of the page
budget (``core.cost.budget_seconds``), says what it capped and why, and offers "Run the full computation"
with the full prediction. Long work shows its progress. Widgets only; predictions come from core."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import streamlit as st

from core import lab_cost
from core.cost import budget_seconds
from core.lab_cost import Setting, cap_settings


def costs() -> lab_cost.LabCost:
    """The lab costs, measured once per process (``core.lab_cost.measured``, about 0.5 s the first time)."""
    with st.spinner("Timing this machine's exact computations (once per process)…"):
        return lab_cost.measured()


def seconds_text(s: float) -> str:
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min"


def _ask_full(key: str, request: str) -> None:
    st.session_state[f"{key}_full"] = request


def guard(key: str, what: str, request, requested: Mapping[str, int], predict: Callable[[Mapping[str, int]], float],
          order: Sequence[Setting] = (), share: float = 1.0) -> dict[str, int] | None:
    """The settings a section may run: ``requested`` when ``predict(requested)`` fits ``share`` of the page
    budget or the user asked for the full computation of this very request (``request``: everything else
    the section depends on, hashable); else ``requested`` with the settings of ``order`` capped to fit
    (each cap stated), or None when even the lowest settings do not fit (stated). Whenever it caps or
    refuses, a "Run the full computation" button shows the full prediction; clicking it runs exactly the
    requested computation until the request changes."""
    budget = budget_seconds() * share
    full_s = predict(requested)
    signature = repr((request, sorted(requested.items())))
    asked = st.session_state.get(f"{key}_full")
    if asked == signature:
        if full_s > budget:
            st.caption(f"{what}: running the full computation you asked for (predicted {seconds_text(full_s)}).")
        return dict(requested)
    if asked is not None:  # the request changed: the full computation was asked for another one
        del st.session_state[f"{key}_full"]
    if full_s <= budget:
        return dict(requested)
    allowed, caps, fits = cap_settings(predict, requested, order, budget)
    for c in caps if fits else ():
        st.info(c.message(), icon="⏱️")
    if not fits:
        over = (f"this section's {seconds_text(budget)} share of the {seconds_text(budget_seconds())} budget"
                if share < 1 else f"the {seconds_text(budget)} budget")
        st.warning(f"{what} is predicted to take {seconds_text(predict(allowed))} on this machine even at its smallest "
                   f"settings, over {over} per click, so it was not run.", icon="⏱️")
    elif share < 1:
        st.caption(f"(This section's share of the {seconds_text(budget_seconds())} budget per click is "
                   f"{seconds_text(budget)}.)")
    st.button(f"Run the full computation (predicted {seconds_text(full_s)})", key=f"{key}_full_btn",
              on_click=_ask_full, args=(key, signature))
    return allowed if fits else None


class Progress:
    """A progress bar for ``total`` units of work, with a redraw hint: ``tick`` returns True at most every
    ``REDRAW_S`` seconds (and at the end), when partial results are worth drawing again."""

    REDRAW_S = 0.5

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done = what, max(1, total), 0
        self.bar = st.progress(0.0, text=f"{what}: 0 of {self.total}")
        self.last = time.perf_counter()

    def tick(self, units: int = 1) -> bool:
        self.done += units
        self.bar.progress(min(self.done / self.total, 1.0), text=f"{self.what}: {self.done} of {self.total}")
        now = time.perf_counter()
        if now - self.last >= self.REDRAW_S or self.done >= self.total:
            self.last = now
            return True
        return False

    def close(self) -> None:
        self.bar.empty()
