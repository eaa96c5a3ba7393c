"""What a model's work costs on this machine, measured once when the model loads, so every page can
predict a click's seconds before running it and cap what would take too long.

Guards are in predicted seconds, not token counts: a budget that suits the shipped 10M-parameter model
is 10-20x too generous for a 135M one, and unknown for a user's own model or a server. ``measure``
times the model's own forward passes at a few batch sizes (the shapes walks, searches and teacher
forcing use); ``CostModel`` predicts the seconds of those building blocks; each computation predicts
its own total from them (e.g. ``core.compare.predict_seconds``) and ``fit`` finds the largest setting
whose prediction stays within a budget.

Timings never change a number a page shows: they only decide what a request asks for (a capped
setting is shown as capped, with the full computation offered at its predicted time), and the same
request gives the same bytes (``core.compute``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

BUDGET_ENV = "DECODING_EXPLORER_BUDGET_S"
DEFAULT_BUDGET_S = 10.0  # a click's predicted seconds above which a page caps its settings
MEASURED_ROWS = (1, 16, 64, 256)  # batch sizes timed for a one-token step
PREFILL_TOKENS = 32  # tokens fed at once to time a prompt pass (and teacher forcing)
REPEATS = 2  # each timing is the fastest of this many runs (the least disturbed by other work)
LARGEST_STEP_S = 0.2  # stop timing larger batches once a step takes this long (then predict linearly)
# The search probe: one committed token of the exact lookahead Compare runs on a neural model by default (depth
# 2, this node budget: core.compare.NEURAL_NODE_BUDGET is this value, and Lookahead's own nodes per call). How
# many calls it makes depends on the model, not only on its size: a peaked model prunes almost everything (the
# shipped one: a few calls), a flat one runs to the budget (64).
SEARCH_DEPTH, SEARCH_BUDGET = 2, 256


def budget_seconds() -> float:
    """The page budget in seconds: ``DECODING_EXPLORER_BUDGET_S`` if set (a positive number), else 10."""
    raw = os.environ.get(BUDGET_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_BUDGET_S
    return value if math.isfinite(value) and value > 0 else DEFAULT_BUDGET_S


@dataclass(frozen=True)
class CostModel:
    """Measured seconds of a model's building blocks.

    Attributes:
        kind: "local" (forward passes in this process), "toy" (exact tables: numpy) or "server".
        rows: batch sizes whose one-token step was timed (ascending).
        step_s: seconds of one one-token step of that many rows on a cached prefix.
        prefill_s: seconds per token of a multi-token feed of one row (prompt passes, teacher forcing).
        request_s: servers: seconds of one request returning one row of log-probs (0 otherwise).
        concurrency: servers: requests in flight at once.
        token_s: seconds a decoding step spends besides the forward pass (choosing the token, bookkeeping),
            once per step whatever the rows.
        row_token_s: seconds per row and step of vocabulary-wide work in a walk (drawing a token from the
            model's distribution, the rollout's statistics).
        sort_row_s: seconds per row and step of a warper that sorts the vocabulary (top-p, typical, min-p)
            and the draw after it.
        search_calls: ``logprobs`` calls the search probe made for one committed token (``SEARCH_DEPTH``,
            ``SEARCH_BUDGET``, ``Lookahead.batch``) on the measured prompt; 0 when not measured.
        search_call_s: seconds per call of that probe (each call feeds a batch of prefixes past the prefix
            cache's last full block); 0 when not measured.
    """

    kind: str
    rows: tuple[int, ...]
    step_s: tuple[float, ...]
    prefill_s: float
    request_s: float = 0.0
    concurrency: int = 1
    token_s: float = 0.0
    row_token_s: float = 0.0
    sort_row_s: float = 0.0
    search_calls: float = 0.0
    search_call_s: float = 0.0

    def __post_init__(self):
        if len(self.rows) != len(self.step_s) or not self.rows:
            raise ValueError("rows and step_s must be non-empty and of one length")
        if list(self.rows) != sorted(set(self.rows)) or self.rows[0] < 1:
            raise ValueError(f"rows must be ascending integers >= 1, got {self.rows}")

    def step(self, rows: int) -> float:
        """Seconds of one one-token step of ``rows`` rows: piecewise linear between measured batch sizes and,
        beyond the largest, along the slope of the last two (the marginal cost of a row)."""
        rows = max(1, int(rows))
        if self.kind == "server":
            return self.request_s * math.ceil(rows / max(1, self.concurrency))
        xs, ys = self.rows, self.step_s
        if rows <= xs[0]:
            return ys[0]
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if rows <= x1:
                return y0 + (y1 - y0) * (rows - x0) / (x1 - x0)
        if len(xs) == 1:
            return ys[0] * rows
        slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), ys[-1] / xs[-1] / 4)
        return ys[-1] + slope * (rows - xs[-1])

    def walk(self, rows: int, steps: int, prompt: int = 0) -> float:
        """Seconds of a walk of ``rows`` rows over ``steps`` tokens after a ``prompt``-token prompt
        (sampling or teacher forcing one token per step): one prompt pass, then one step per token."""
        if self.kind == "server":  # one request per row, every token of it in that request
            return self.step(rows) * (1 + steps / 8)
        return self.prefill(prompt) + steps * (self.step(rows) + self.token_s + max(1, int(rows)) * self.row_token_s)

    def prefill(self, tokens: int, rows: int = 1) -> float:
        """Seconds of feeding ``tokens`` tokens to each of ``rows`` rows in one pass."""
        if self.kind == "server":
            return self.step(rows)
        return self.step_s[0] + self.prefill_s * max(0, int(tokens)) * max(1, int(rows))

    def forwards(self, count: int, rows: int = 1) -> float:
        """Seconds of ``count`` separate one-token steps of ``rows`` rows (searches, greedy, beams), each with
        its bookkeeping."""
        return max(0, int(count)) * (self.step(rows) + self.token_s)


def measure(model, prompt: Sequence[int] = (), rows: Sequence[int] = MEASURED_ROWS) -> CostModel:
    """Time ``model``'s one-token steps at the batch sizes in ``rows`` (fastest of ``REPEATS`` steps after
    one untimed warm-up step; larger batches are skipped once a step takes ``LARGEST_STEP_S``, and then
    predicted linearly) and a multi-token feed. A served model (``core.remote``) is timed by a few
    requests; a toy by its ``logprobs``. About 0.3 s on the shipped model, 1-2 s on SmolLM2."""
    from core.protocol import start_session
    from core.sampling import draws_on_server

    prompt = [int(t) for t in prompt]
    if draws_on_server(model):
        return _measure_server(model, prompt)
    if not hasattr(model, "start"):  # toys and other prefix-only models: one logprobs call per step
        timed = [_fastest(lambda n=n: _timed(lambda: model.logprobs([prompt] * n))) for n in rows]
        return CostModel("toy" if hasattr(model, "joint") else "local", tuple(rows), _ascending(timed), 0.0)
    timed, measured = [], []
    for n in rows:
        session = start_session(model, prompt, batch=n, steps=REPEATS + 1)
        tokens = session.last.argmax(dim=-1).tolist()
        session.advance(tokens)  # warm-up
        timed.append(min(_timed(lambda s=session, t=tokens: s.advance(t)) for _ in range(REPEATS)))
        measured.append(n)
        if timed[-1] >= LARGEST_STEP_S:
            break
    session = start_session(model, prompt, batch=1, steps=PREFILL_TOKENS + 1)
    session.advance([0])  # warm-up
    feed = _timed(lambda: session.feed([list(range(1, PREFILL_TOKENS + 1))]))
    prefill = max(0.0, (feed - timed[0]) / PREFILL_TOKENS)
    step_s = _ascending(timed)
    token_s = max(0.0, _fastest(lambda: _timed(lambda: _greedy(model, prompt))) / GREEDY_TOKENS - step_s[0])
    row_s, sort_s = _row_costs(session.last)
    calls, call_s = _search_costs(model, prompt)
    return CostModel("local", tuple(measured), step_s, prefill, token_s=token_s, row_token_s=row_s, sort_row_s=sort_s,
                     search_calls=calls, search_call_s=call_s)


GREEDY_TOKENS = 4  # tokens of the greedy decode timed for a step's bookkeeping
DRAW_ROWS = 16  # rows of the draws timed for a walk's per-row work


def _greedy(model, prompt: list[int]) -> None:
    from core.decoders import Greedy

    Greedy().decode(model, prompt, GREEDY_TOKENS)


class _Counting:
    """``model`` with its ``logprobs`` calls counted (every other attribute is the model's)."""

    def __init__(self, model):
        self._model = model
        self.calls = 0

    def logprobs(self, prefixes):
        self.calls += 1
        return self._model.logprobs(prefixes)

    def __getattr__(self, name):
        return getattr(self._model, name)


def _search_costs(model, prompt: list[int]) -> tuple[float, float]:
    """(calls, seconds per call) of the search probe after ``prompt``; (0, 0) without a prompt."""
    from core.search import Lookahead, best_first_search

    if not prompt:
        return 0.0, 0.0
    counting = _Counting(model)
    seconds = _timed(lambda: best_first_search(counting, prompt, SEARCH_DEPTH, SEARCH_BUDGET, Lookahead.batch))
    return float(counting.calls), seconds / max(1, counting.calls)


def _row_costs(last) -> tuple[float, float]:
    """Seconds per row of a walk step's vocabulary-wide work on ``DRAW_ROWS`` copies of a real next-token
    distribution: (a draw from it plus the exponentials the rollout takes, a top-p warp and draw)."""
    import torch

    from core.decoders import Sampling, draw

    lp = last[:1].expand(DRAW_ROWS, -1).contiguous()
    gen = torch.Generator().manual_seed(0)
    plain = _fastest(lambda: _timed(lambda: (draw(lp, gen), lp.exp(), lp.exp())))
    sampler = Sampling(top_p=0.9)
    sorted_ = _fastest(lambda: _timed(lambda: draw(sampler.warp(lp), gen)))
    return plain / DRAW_ROWS, sorted_ / DRAW_ROWS


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _ascending(times: Sequence[float]) -> tuple[float, ...]:
    """A larger batch never predicts less time than a smaller one (timing noise aside)."""
    out, top = [], 0.0
    for t in times:
        top = max(top, t)
        out.append(top)
    return tuple(out)


def _measure_server(model, prompt: list[int]) -> CostModel:
    """Seconds per request: rows of fresh prefixes (the model caches rows it has seen)."""
    vocab = int(model.vocab_size)
    probes = [prompt + [(7919 * (i + 1)) % vocab] for i in range(REPEATS)]
    times = []
    for p in probes:
        t0 = time.perf_counter()
        model.logprobs([p])
        times.append(time.perf_counter() - t0)
    settings = getattr(getattr(model, "client", None), "settings", None)
    concurrency = int(getattr(settings, "concurrency", 1))
    return CostModel("server", (1,), (min(times),), 0.0, min(times), max(1, concurrency))


def _fastest(run: Callable[[], float]) -> float:
    run()  # warm-up: first-call allocations and caches
    return min(run() for _ in range(REPEATS))


@dataclass(frozen=True)
class Capped:
    """A setting a page lowered to keep a click within the budget, for the page to say so."""

    name: str  # the setting in words, e.g. "Monte Carlo samples"
    requested: int
    allowed: int
    requested_s: float  # predicted seconds of the requested setting
    allowed_s: float  # predicted seconds of the allowed one
    budget_s: float

    def message(self) -> str:
        return (f"{self.name} capped at {self.allowed} (you asked for {self.requested}): the full computation is "
                f"predicted to take {self.requested_s:.0f} s on this machine, over the {self.budget_s:.0f} s budget "
                f"per click (the capped one about {self.allowed_s:.1f} s). Use “Run the full computation” to run "
                "it anyway.")


def fit(predict: Callable[[int], float], requested: int, low: int, budget_s: float, name: str) -> Capped | None:
    """None when ``predict(requested)`` fits ``budget_s``; else the largest value in [low, requested]
    whose prediction fits (``low`` if none does), as a ``Capped``. ``predict`` must not decrease."""
    want = predict(requested)
    if want <= budget_s:
        return None
    lo, hi = low, requested  # predict(hi) > budget; find the largest value that fits
    if predict(lo) > budget_s:
        return Capped(name, requested, lo, want, predict(lo), budget_s)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if predict(mid) <= budget_s else (lo, mid)
    return Capped(name, requested, lo, want, predict(lo), budget_s)
