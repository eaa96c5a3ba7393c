"""Every decoder side by side under one goal: the Compare page's whole computation, as one pure
function so it can be benchmarked, tested and cached.

``compare(model, prompt, steps, seed, goal, settings, n_samples)`` decodes with greedy, lookahead,
sampling at temperature τ, top-k and top-p sampling, beam search, ancestral sampling (τ = 1) and the
goal's Bayes output, and scores each by its risk (expected loss) under the goal, with the model as
the truth P:

* toys (enumerable): ``exact_risk``, exact over P and the decoder's own randomness, and the exact
  ``bayes_output``;
* any other model: ``estimate_risk`` (Monte Carlo, ``n_samples`` truth rows shared by all decoders,
  95% CI) and ``approx_bayes_output`` (says whether it is certainly optimal).

Regret = risk − the Bayes output's risk. Random decoders are shown by one draw (seeded), and
``settings.shown_samples`` draws of P itself are returned for display. Compute budgets are explicit
(``NEURAL_NODE_BUDGET``, ``MAX_NEURAL_LOOKAHEAD``, ``N_SAMPLES_RANGE``, ``MC_TOKEN_BUDGET``) so no setting can
hang a page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from core.decoders import Beam, Fixed, Greedy, Lookahead, Path, Sampling, check_call, sample_many
from core.goals import DistributionMatch
from core.risk import Estimate, approx_bayes_output, bayes_output, estimate_risk, exact_risk

NEURAL_NODE_BUDGET = 256  # best-first expansions per committed token for lookahead on a neural model
BAYES_NODE_BUDGET = 256  # expansions for the mode search on a neural model (then beam fallback, labelled approximate)
MAX_NEURAL_LOOKAHEAD = 4  # deepest lookahead offered on a neural model (cost grows with depth)
MAX_BEAM_WIDTH = 16
N_SAMPLES_RANGE = (16, 1024)  # Monte Carlo truth rows on a neural model
MAX_SHOWN_SAMPLES = 10
MC_TOKEN_BUDGET = 1 << 17  # Monte Carlo token evaluations (samples x tokens per sample) on a neural model


@dataclass(frozen=True)
class DecoderSettings:
    """The knobs of the decoders compared (validated by ``lineup``)."""

    lookahead_depth: int = 2
    temperature: float = 0.7
    top_k: int = 5
    top_p: float = 0.9
    beam_width: int = 4
    shown_samples: int = 3


@dataclass(frozen=True)
class Output:
    """A decoded sequence for display: the tokens, their log-probs under the model, their ranks
    (1 = the most likely token at that position) and the text (None for toys)."""

    tokens: tuple[int, ...]
    step_logprobs: tuple[float, ...]
    ranks: tuple[int, ...]
    text: str | None


@dataclass(frozen=True)
class Row:
    """One decoder's result. ``output`` is its decoded sequence (one seeded draw for a random
    decoder); ``risk`` its expected loss under the goal; ``regret`` = risk − the Bayes output's."""

    key: str  # stable id: greedy, lookahead, sampling, top_k, top_p, beam, ancestral, bayes
    label: str
    settings: str  # the decoder's dataclass repr, e.g. "Sampling(temperature=0.7, top_k=None, top_p=None)"
    is_random: bool
    output: Output
    risk: Estimate
    regret: float
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    rows: tuple[Row, ...]
    samples: tuple[Output, ...]  # draws from P itself (ancestral sampling, τ = 1)
    goal: str
    steps: int
    seed: int
    n_samples: int  # Monte Carlo truth rows (0 when exact)
    exact: bool  # every risk exact (toys)
    bayes_exact: bool  # the Bayes output is certainly optimal
    bayes_method: str

    def to_json(self, settings: DecoderSettings | None = None, prompt: Sequence[int] = ()) -> str:
        """Decoder settings, seed, tokens and risks as JSON; byte-identical for identical inputs
        (sorted keys; non-finite numbers as the strings "inf", "-inf", "nan")."""
        doc = {
            "goal": self.goal, "steps": self.steps, "seed": self.seed, "n_samples": self.n_samples,
            "exact": self.exact, "bayes_exact": self.bayes_exact, "bayes_method": self.bayes_method,
            "prompt_tokens": [int(t) for t in prompt],
            "settings": asdict(settings) if settings is not None else None,
            "rows": [asdict(r) for r in self.rows],
            "samples": [asdict(s) for s in self.samples],
        }
        return json.dumps(_finite(doc), sort_keys=True, ensure_ascii=False, indent=1)

    def table(self) -> list[dict]:
        """Plain rows for a table / CSV."""
        return [
            {"decoder": r.label, "output": r.output.text if r.output.text is not None else r.output.tokens,
             "risk": r.risk.mean, "ci_low": r.risk.ci_low, "ci_high": r.risk.ci_high,
             "regret": r.regret, "exact": r.risk.exact, "n": r.risk.n, "log P(output)": sum(r.output.step_logprobs),
             "settings": r.settings}
            for r in self.rows
        ]


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def is_exact_model(model) -> bool:
    """Toys can be enumerated, so their risks are exact."""
    return hasattr(model, "joint")


def lineup(settings: DecoderSettings, steps: int, exact: bool) -> list[tuple[str, object]]:
    """(key, decoder) for every decoder compared; ValueError naming a bad setting and its range."""
    s = settings
    max_depth = steps if exact else min(steps, MAX_NEURAL_LOOKAHEAD)
    if not isinstance(s.lookahead_depth, int) or not 1 <= s.lookahead_depth <= max_depth:
        why = "" if exact else f" on a neural model (node budget {NEURAL_NODE_BUDGET} per token)"
        raise ValueError(f"lookahead depth must be an integer from 1 to {max_depth}{why}, got {s.lookahead_depth!r}")
    if not isinstance(s.beam_width, int) or not 1 <= s.beam_width <= MAX_BEAM_WIDTH:
        raise ValueError(f"beam width must be an integer from 1 to {MAX_BEAM_WIDTH}, got {s.beam_width!r}")
    if not isinstance(s.shown_samples, int) or not 0 <= s.shown_samples <= MAX_SHOWN_SAMPLES:
        raise ValueError(f"samples shown must be an integer from 0 to {MAX_SHOWN_SAMPLES}, got {s.shown_samples!r}")
    budget = {} if exact else {"node_budget": NEURAL_NODE_BUDGET}
    return [
        ("greedy", Greedy()),
        ("lookahead", Lookahead(s.lookahead_depth, **budget)),
        ("sampling", Sampling(temperature=s.temperature)),
        ("top_k", Sampling(top_k=s.top_k)),
        ("top_p", Sampling(top_p=s.top_p)),
        ("beam", Beam(s.beam_width)),
        ("ancestral", Sampling()),
    ]


def _check_mc_budget(goal, steps: int, n_samples: int) -> None:
    """ValueError when the Monte Carlo estimates would evaluate more than ``MC_TOKEN_BUDGET`` tokens:
    every truth row runs ``steps`` tokens, and an N-gram goal teacher-forces N-1 more per later window."""
    per_row = steps
    if not isinstance(goal, DistributionMatch):
        n = goal.window(steps)
        per_row += (steps - n) * (n - 1)
    if n_samples * per_row > MC_TOKEN_BUDGET:
        raise ValueError(f"Monte Carlo budget: samples x tokens per sample must be at most {MC_TOKEN_BUDGET:,}, got "
                         f"{n_samples} x {per_row} = {n_samples * per_row:,}; lower the Monte Carlo samples, the steps "
                         "or N")


def token_ranks(model, prompt: Sequence[int], tokens: Sequence[int]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Each token's log-prob and rank (1 = most likely; ties count in the token's favour) given the
    prompt and the tokens before it: one batched ``logprobs`` call."""
    prompt, tokens = [int(t) for t in prompt], [int(t) for t in tokens]
    if not tokens:
        return (), ()
    lp = model.logprobs([prompt + tokens[:t] for t in range(len(tokens))]).double()
    chosen = lp[torch.arange(len(tokens)), torch.as_tensor(tokens)]
    ranks = 1 + (lp > chosen[:, None]).sum(dim=1)
    return tuple(chosen.tolist()), tuple(int(r) for r in ranks.tolist())


def _output(model, prompt, tokens) -> Output:
    logprobs, ranks = token_ranks(model, prompt, tokens)
    text = model.decode(list(tokens)) if hasattr(model, "decode") and not is_exact_model(model) else None
    return Output(tuple(int(t) for t in tokens), logprobs, ranks, text)


def _label(key: str, decoder) -> str:
    return "ancestral sampling (τ=1, = P)" if key == "ancestral" else decoder.label


def compare(model, prompt: Sequence[int], steps: int, seed: int, goal, settings: DecoderSettings,
            n_samples: int = 256, progress: Callable[[int, int, str], None] | None = None) -> Comparison:
    """Decode with every decoder of ``lineup`` plus the goal's Bayes output and score all of them.

    Exact on toys (``n_samples`` unused); Monte Carlo with ``n_samples`` shared truth rows otherwise.
    ``progress(done, total, what)`` is called before each unit of work. Same inputs, same result.
    """
    exact = is_exact_model(model)
    prompt = [int(t) for t in prompt]
    if exact and prompt:
        raise ValueError("toys take no prompt")
    prompt = check_call(model, prompt, steps)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not exact and not (isinstance(n_samples, int) and N_SAMPLES_RANGE[0] <= n_samples <= N_SAMPLES_RANGE[1]):
        lo, hi = N_SAMPLES_RANGE
        raise ValueError(f"Monte Carlo samples must be an integer from {lo} to {hi}, got {n_samples!r}")
    if not exact:
        _check_mc_budget(goal, steps, n_samples)
    decoders = lineup(settings, steps, exact)
    total = len(decoders) + 3
    tick = progress or (lambda done, total, what: None)

    tick(0, total, "the goal's Bayes output")
    is_dm = isinstance(goal, DistributionMatch)
    if is_dm:  # the Bayes decoder is P itself: sampling at τ = 1
        bayes, bayes_exact = Sampling(), True
        method = "sampling from P (τ = 1) is the Bayes decoder for distribution matching"
    elif exact:
        bayes, bayes_exact, method = Fixed(bayes_output(goal, model, steps)), True, "exact (enumeration)"
    else:
        res = approx_bayes_output(goal, model, prompt, steps, n_samples, seed, node_budget=BAYES_NODE_BUDGET)
        bayes, bayes_exact, method = Fixed(res.tokens), res.exact, res.method
    # truth rows shared by every decoder, drawn only when some estimator needs them (0-1 needs none:
    # a fixed output's risk is 1 − P(ŷ), a sampler's E_r[1 − P(Ŷ)] uses its own draws)
    needs_truth = not exact and (is_dm or goal.window(steps) < steps)
    truth = sample_many(model, prompt, steps, n_samples, seed) if needs_truth else None

    def risk(decoder, path: Path | None) -> Estimate:
        if exact:
            return Estimate.exact_value(exact_risk(goal, model, decoder, steps), "exact")
        return estimate_risk(goal, model, decoder, prompt, steps, n_samples, seed, truth_samples=truth,
                             output=None if decoder.is_random else path)

    scored = []
    for i, (key, decoder) in enumerate([*decoders, ("bayes", bayes)]):
        tick(i + 1, total, _label(key, decoder) if key != "bayes" else "the Bayes output's risk")
        path = decoder.decode(model, prompt, steps, seed)
        note = ""
        if getattr(path, "budget_exhausted", False):
            note = (f"node budget of {decoder.node_budget} per token reached: the output is the best found, its "
                    f"windows within {path.bound:.3g} nats of the exact lookahead windows")
        scored.append((key, decoder, path, risk(decoder, path), note))
    bayes_risk = scored[-1][3].mean

    rows = []
    for key, decoder, path, est, note in scored:
        label = _label(key, decoder)
        if key == "bayes":
            label = "Bayes decoder (sampling from P)" if is_dm else f"Bayes output ({goal.name})"
        regret = est.mean - bayes_risk if math.isfinite(est.mean) else math.inf
        rows.append(Row(key, label, repr(decoder), decoder.is_random, _output(model, prompt, path.tokens), est,
                        regret, note or est.note))
    tick(total - 1, total, "samples from P")
    samples = ()
    if settings.shown_samples:
        drawn = sample_many(model, prompt, steps, settings.shown_samples, seed + 1)
        samples = tuple(_output(model, prompt, p.tokens) for p in drawn.paths())
    tick(total, total, "done")
    return Comparison(tuple(rows), samples, goal.name, steps, seed, 0 if exact else n_samples, exact, bayes_exact,
                      method)


def empirical_distribution(model, sampler: Sampling, steps: int, n: int, seed: int) -> dict[tuple[int, ...], float]:
    """Relative frequencies of the outputs of ``n`` seeded draws of ``sampler`` (for "sample N times"
    next to the exact output distribution), most frequent first, ties by sequence."""
    drawn = sample_many(model, [], steps, n, seed, sampler)
    counts: dict[tuple[int, ...], int] = {}
    for row in drawn.tokens.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    return {k: c / n for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
