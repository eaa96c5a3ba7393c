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

from core.decoders import (
    Beam,
    Fixed,
    Greedy,
    Lookahead,
    Path,
    Sampling,
    check_call,
    sample_groups,
    sample_many,
    sum_in_order,
)
from core.goals import DistributionMatch
from core.risk import (
    Estimate,
    WindowMarginals,
    _derived_seed,
    approx_bayes_output,
    bayes_output,
    estimate_risks,
    exact_risk,
)

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
    return token_ranks_many(model, prompt, [tokens])[0]


def token_ranks_many(model, prompt: Sequence[int], outputs: Sequence[Sequence[int]]
                     ) -> list[tuple[tuple[float, ...], tuple[int, ...]]]:
    """``token_ranks`` of several outputs of the same length from ONE ``logprobs`` call over all
    their prefixes (each row as in its own call: a model's rows do not depend on the batch)."""
    prompt = [int(t) for t in prompt]
    outputs = [[int(t) for t in tokens] for tokens in outputs]
    steps = len(outputs[0]) if outputs else 0
    if any(len(o) != steps for o in outputs):
        raise ValueError("token_ranks_many needs outputs of one length")
    if not steps:
        return [((), ()) for _ in outputs]
    lp = model.logprobs([prompt + o[:t] for o in outputs for t in range(steps)]).double()
    chosen = lp[torch.arange(lp.shape[0]), torch.as_tensor(outputs).reshape(-1)]
    ranks = (1 + (lp > chosen[:, None]).sum(dim=1)).reshape(len(outputs), steps)
    chosen = chosen.reshape(len(outputs), steps)
    return [(tuple(c.tolist()), tuple(int(r) for r in rk.tolist())) for c, rk in zip(chosen, ranks)]


def _outputs(model, prompt, outputs: Sequence[Sequence[int]]) -> list[Output]:
    """Display rows of several outputs (one ``logprobs`` call for all)."""
    text = hasattr(model, "decode") and not is_exact_model(model)
    return [Output(tuple(int(t) for t in tokens), logprobs, ranks, model.decode(list(tokens)) if text else None)
            for tokens, (logprobs, ranks) in zip(outputs, token_ranks_many(model, prompt, outputs))]


def _label(key: str, decoder) -> str:
    return "ancestral sampling (τ=1, = P)" if key == "ancestral" else decoder.label


def compare(model, prompt: Sequence[int], steps: int, seed: int, goal, settings: DecoderSettings,
            n_samples: int = 256, progress: Callable[[int, int, str], None] | None = None) -> Comparison:
    """Decode with every decoder of ``lineup`` plus the goal's Bayes output and score all of them.

    Exact on toys (``n_samples`` unused); Monte Carlo with ``n_samples`` shared truth rows otherwise.
    ``progress(done, total, what)`` is called before each unit of work. Same inputs, same result.

    Passes over the model are shared: one walk draws the truth rows, every random decoder's Monte
    Carlo draws and shown draw, and the samples from P (``sample_groups``: each group's rows as its
    own ``sample_many`` call would draw them); the Bayes output's window marginals are accumulated in
    that walk; ``estimate_risks`` scores every decoder in one more walk over the truth rows; one ``logprobs`` call
    gives every displayed output's log-probs and ranks.
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
    is_dm = isinstance(goal, DistributionMatch)

    paths: dict[str, Path] = {}
    for i, (key, decoder) in enumerate(decoders):
        if not decoder.is_random:
            tick(i, total, _label(key, decoder))
            paths[key] = decoder.decode(model, prompt, steps, seed)

    # one walk for every draw: truth rows (when an estimator needs them: 0-1 needs none, a fixed
    # output's risk is 1 − P(ŷ) and a sampler's E_r[1 − P(Ŷ)] uses its own draws), the random
    # decoders' own Monte Carlo draws (pointwise goals), their shown draw, and the samples from P
    tick(len(decoders), total, "sampling")
    random = [(key, d) for key, d in decoders if d.is_random]
    if is_dm:
        random.append(("bayes", Sampling()))
    needs_truth = not exact and (is_dm or goal.window(steps) < steps)
    groups: list[tuple[str, tuple]] = [("truth", (n_samples, seed, None))] if needs_truth else []
    if not exact and not is_dm:
        groups += [(("mc", key), (n_samples, _derived_seed(seed), d)) for key, d in random]
    groups += [(("shown", key), (1, seed, d)) for key, d in random]
    if settings.shown_samples:
        groups.append(("samples", (settings.shown_samples, seed + 1, None)))
    marginals = None
    if needs_truth and not is_dm:  # the Bayes output's window marginals, from the truth rows as drawn
        marginals = WindowMarginals(model.vocab_size, steps, goal.window(steps), n_samples)

    def observe(t, logprobs, tokens):
        if marginals is not None:
            marginals.observe(t, logprobs, tokens)  # the first group: the truth rows

    specs = [spec for _, spec in groups]
    drawn = dict(zip([g for g, _ in groups], sample_groups(model, prompt, steps, specs, observe=observe)))
    truth = drawn.get("truth")
    for key, _ in random:
        paths[key] = drawn[("shown", key)].paths()[0]

    tick(0, total, "the goal's Bayes output")
    if is_dm:  # the Bayes decoder is P itself: sampling at τ = 1
        bayes, bayes_exact = Sampling(), True
        method = "sampling from P (τ = 1) is the Bayes decoder for distribution matching"
    elif exact:
        bayes, bayes_exact, method = Fixed(bayes_output(goal, model, steps)), True, "exact (enumeration)"
    else:
        res = approx_bayes_output(goal, model, prompt, steps, n_samples, seed, node_budget=BAYES_NODE_BUDGET,
                                  truth_samples=truth, marginals=marginals)
        bayes, bayes_exact, method = Fixed(res.tokens), res.exact, res.method
    lineup_all = [*decoders, ("bayes", bayes)]

    shown = drawn["samples"].paths() if settings.shown_samples else []
    keys = [key for key, _ in lineup_all]
    token_rows = [paths[key].tokens if key in paths else bayes.tokens for key in keys]
    outputs = _outputs(model, prompt, token_rows + [p.tokens for p in shown])
    if "bayes" not in paths:  # a fixed output, teacher-forced: its log-probs are those just computed
        lps = torch.tensor(outputs[len(keys) - 1].step_logprobs, dtype=torch.float64)
        paths["bayes"] = Path(tuple(bayes.tokens), float(sum_in_order(lps)), tuple(lps.tolist()))

    tick(len(decoders) + 1, total, "risks")
    if exact:
        risks = [Estimate.exact_value(exact_risk(goal, model, d, steps), "exact") for _, d in lineup_all]
    else:
        draws = [drawn.get(("mc", key)) for key, _ in lineup_all]
        risks = estimate_risks(goal, model, [d for _, d in lineup_all], prompt, steps, n_samples, seed,
                               truth_samples=truth, outputs=[None if d.is_random else paths[key]
                                                             for key, d in lineup_all], draws=draws)
    bayes_risk = risks[-1].mean

    rows = []
    for (key, decoder), est, out in zip(lineup_all, risks, outputs):
        path = paths[key]
        note = ""
        if getattr(path, "budget_exhausted", False):
            note = (f"node budget of {decoder.node_budget} per token reached: the output is the best found, its "
                    f"windows within {path.bound:.3g} nats of the exact lookahead windows")
        label = _label(key, decoder)
        if key == "bayes":
            label = "Bayes decoder (sampling from P)" if is_dm else f"Bayes output ({goal.name})"
        regret = est.mean - bayes_risk if math.isfinite(est.mean) else math.inf
        rows.append(Row(key, label, repr(decoder), decoder.is_random, out, est, regret, note or est.note))
    tick(total, total, "done")
    return Comparison(tuple(rows), tuple(outputs[len(keys):]), goal.name, steps, seed, 0 if exact else n_samples,
                      exact, bayes_exact, method)


def empirical_distribution(model, sampler: Sampling, steps: int, n: int, seed: int) -> dict[tuple[int, ...], float]:
    """Relative frequencies of the outputs of ``n`` seeded draws of ``sampler`` (for "sample N times"
    next to the exact output distribution), most frequent first, ties by sequence."""
    drawn = sample_many(model, [], steps, n, seed, sampler)
    counts: dict[tuple[int, ...], int] = {}
    for row in drawn.tokens.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    return {k: c / n for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
