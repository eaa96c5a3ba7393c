"""Every decoder side by side under one goal: the Compare page's whole computation, as pure functions
so it can be benchmarked, tested and cached stage by stage.

``compare(model, prompt, steps, seed, goal, settings, n_samples)`` decodes with greedy, lookahead,
sampling at temperature τ, top-k and top-p sampling, beam search, ancestral sampling (τ = 1), MBR under
the goal (pointwise goals) and the goal's Bayes output, and scores each by its risk (expected loss)
under the goal and its regret (risk − the Bayes output's risk), with the model as the truth P:

* toys (enumerable): everything exact (``exact_risk``, ``bayes_output``); MBR still samples its
  candidates and references, and its pick is scored exactly;
* any other model: one truth rollout (``core.rollout``) of ``n_samples`` rows scores every output with
  the goal's own estimator. The Bayes output (except the 0-1 mode, found by search) and MBR's pick are
  chosen on fold A of the truth rows and scored on fold B; each regret is the paired difference on the
  rows independent of every choice, with its own interval (so a regret can be negative when a decoder
  beats an approximate Bayes output).

Stages, each cacheable on its own (the page does): ``decode_fixed`` (greedy, lookahead, beam: no seed),
``draw`` (every random draw and the truth rollout: seed and n_samples, and only the goal's family:
pointwise or distribution matching), ``score`` (the goal: Bayes output, MBR pick, one teacher-forced pass
over the displayed outputs, the estimates), so a change of goal within a family reuses the rollout and a
change of seed reuses the deterministic decoders.

Compute budgets are explicit (``NEURAL_NODE_BUDGET``, ``MAX_NEURAL_LOOKAHEAD``, ``N_SAMPLES_RANGE``,
``MC_TOKEN_BUDGET``) so no setting can hang a page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from core.compute import pin_thread
from core.decoders import Beam, Fixed, Greedy, Lookahead, Path, Sampling, check_call, sample_groups, sample_many
from core.estimators import Estimate
from core.mbr import MBR, candidate_sampler, candidates_text, check_epsilon, pick
from core.risk import GreedyCertificate, certificate_from_scores, exact_risk
from core.rollout import (
    DRAWS_STREAM,
    MBR_STREAM,
    Columns,
    Rollout,
    derived_seed,
    draw_targets,
    padded_rows,
    path_targets,
    roll_out,
    sampler_draws,
    score_outputs,
)

NEURAL_NODE_BUDGET = 256  # best-first expansions per committed token for lookahead on a neural model
BAYES_NODE_BUDGET = 256  # expansions for the mode search on a neural model (then beam fallback, labelled approximate)
MAX_NEURAL_LOOKAHEAD = 4  # deepest lookahead offered on a neural model (cost grows with depth)
MAX_BEAM_WIDTH = 16
MBR_CANDIDATES_RANGE = (1, 64)
N_SAMPLES_RANGE = (16, 1024)  # Monte Carlo truth rows on a neural model
MAX_SHOWN_SAMPLES = 10
MC_TOKEN_BUDGET = 1 << 17  # tokens sampled per request (every row drawn x steps) on a neural model
FIXED_KEYS = ("greedy", "lookahead", "beam")
MBR_CITATIONS = ("Eikema & Aziz 2020: the mode is an inadequate target, and MBR over about 30 samples beats "
                 "beam search; Bertsch et al. 2023: MBR under ROUGE-1 beats greedy and beam search under ROUGE-1")


@dataclass(frozen=True)
class DecoderSettings:
    """The knobs of the decoders compared (validated by ``lineup``)."""

    lookahead_depth: int = 2
    temperature: float = 0.7
    top_k: int = 5
    top_p: float = 0.9
    beam_width: int = 4
    shown_samples: int = 3
    mbr_candidates: int = 32
    mbr_epsilon: float = 0.02


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
    decoder); ``risk`` its expected loss under the goal; ``regret`` = risk − the Bayes output's,
    estimated on the same truth rows (paired) with its own interval."""

    key: str  # stable id: greedy, lookahead, sampling, top_k, top_p, beam, ancestral, mbr, bayes
    label: str
    settings: str  # the decoder's dataclass repr, e.g. "Sampling(temperature=0.7, top_k=None, top_p=None)"
    is_random: bool
    output: Output
    risk: Estimate
    regret: Estimate
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
    n_select: int = 0  # truth rows of fold A (choosing the Bayes output and MBR); 0 when none were used
    mbr_method: str = ""  # how MBR picked ("" when the goal has no MBR)
    mbr_exact: bool = False  # MBR's expected losses are exact (0-1, or a toy)
    certificate: GreedyCertificate | None = None

    def to_json(self, settings: DecoderSettings | None = None, prompt: Sequence[int] = ()) -> str:
        """Decoder settings, seed, tokens and risks as JSON; byte-identical for identical inputs
        (sorted keys; non-finite numbers as the strings "inf", "-inf", "nan")."""
        doc = {
            "goal": self.goal, "steps": self.steps, "seed": self.seed, "n_samples": self.n_samples,
            "exact": self.exact, "bayes_exact": self.bayes_exact, "bayes_method": self.bayes_method,
            "n_select": self.n_select, "mbr_method": self.mbr_method, "mbr_exact": self.mbr_exact,
            "certificate": asdict(self.certificate) if self.certificate is not None else None,
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
             "regret": r.regret.mean, "regret_low": r.regret.ci_low, "regret_high": r.regret.ci_high,
             "exact": r.risk.exact, "n": r.risk.describe_n(), "log P(output)": sum(r.output.step_logprobs),
             "settings": r.settings}
            for r in self.rows
        ]

    @property
    def small_n(self) -> list[str]:
        """Labels of the rows whose risk or regret interval rests on too few rows or draws (``Estimate.small``)."""
        return [r.label for r in self.rows if r.risk.small or r.regret.small]


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
    """(key, decoder) for every decoder compared besides MBR and the Bayes output; ValueError naming a
    bad setting and its range."""
    s = settings
    max_depth = steps if exact else min(steps, MAX_NEURAL_LOOKAHEAD)
    if not isinstance(s.lookahead_depth, int) or not 1 <= s.lookahead_depth <= max_depth:
        why = "" if exact else f" on a neural model (node budget {NEURAL_NODE_BUDGET} per token)"
        raise ValueError(f"lookahead depth must be an integer from 1 to {max_depth}{why}, got {s.lookahead_depth!r}")
    if not isinstance(s.beam_width, int) or not 1 <= s.beam_width <= MAX_BEAM_WIDTH:
        raise ValueError(f"beam width must be an integer from 1 to {MAX_BEAM_WIDTH}, got {s.beam_width!r}")
    if not isinstance(s.shown_samples, int) or not 0 <= s.shown_samples <= MAX_SHOWN_SAMPLES:
        raise ValueError(f"samples shown must be an integer from 0 to {MAX_SHOWN_SAMPLES}, got {s.shown_samples!r}")
    lo, hi = MBR_CANDIDATES_RANGE
    if not isinstance(s.mbr_candidates, int) or not lo <= s.mbr_candidates <= hi:
        raise ValueError(f"MBR candidates must be an integer from {lo} to {hi}, got {s.mbr_candidates!r}")
    check_epsilon(s.mbr_epsilon)
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


def _draw_specs(model, settings: DecoderSettings, seed: int, n_samples: int, exact: bool, random,
                pointwise: bool = True) -> list[tuple]:
    """(name, (rows, seed, sampler)) of every random draw of a request, in walk order: each random
    decoder's Monte Carlo draws (neural models, pointwise goals; not sampling from P, which the truth
    rows represent), its one shown draw (``decoder.decode(seed)``), MBR's ε-sampled candidates (pointwise
    goals), the samples from P shown."""
    specs = []
    if not exact and pointwise:
        m, ds = sampler_draws(n_samples), derived_seed(seed, DRAWS_STREAM)
        specs += [(f"draws:{key}", (m, ds, d)) for key, d in random if not d.is_identity]
    specs += [(f"shown:{key}", (1, seed, d)) for key, d in random]
    if pointwise and not exact:  # on a toy MBR draws its own candidates and references
        specs.append(("mbr", (settings.mbr_candidates, derived_seed(seed, MBR_STREAM),
                              candidate_sampler(model, settings.mbr_epsilon))))
    if settings.shown_samples:
        specs.append(("samples", (settings.shown_samples, seed + 1, None)))
    return specs


def check_request(model, prompt: Sequence[int], steps: int, seed: int, settings: DecoderSettings,
                  n_samples: int) -> tuple[list[int], bool]:
    """(the prompt as ints, whether the model is an exact toy); ValueError naming the first problem:
    the prompt (toys take none), steps, seed, the decoder settings, the Monte Carlo samples and budget."""
    exact = is_exact_model(model)
    prompt = [int(t) for t in prompt]
    if exact and prompt:
        raise ValueError("toys take no prompt")
    prompt = check_call(model, prompt, steps)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    random = [(k, d) for k, d in lineup(settings, steps, exact) if d.is_random]
    if not exact:
        lo, hi = N_SAMPLES_RANGE
        if not (isinstance(n_samples, int) and not isinstance(n_samples, bool) and lo <= n_samples <= hi):
            raise ValueError(f"Monte Carlo samples must be an integer from {lo} to {hi}, got {n_samples!r}")
        rows = n_samples + sum(n for _, (n, _, _) in _draw_specs(model, settings, seed, n_samples, exact, random))
        if rows * steps > MC_TOKEN_BUDGET:
            raise ValueError(f"Monte Carlo budget: rows x tokens must be at most {MC_TOKEN_BUDGET:,}, got {rows} x "
                             f"{steps} = {rows * steps:,} ({n_samples} truth rows plus the decoders' own draws); "
                             "lower the Monte Carlo samples or the steps")
    return prompt, exact


Progress = Callable[[int, int, str], None]
STAGES = 5  # progress units: fixed decoders (3), draws and rollout (1), scoring (1)


def _tick(progress: Progress | None, done: int, what: str) -> None:
    if progress is not None:
        progress(done, STAGES, what)


def decode_fixed(model, prompt: Sequence[int], steps: int, settings: DecoderSettings, exact: bool,
                 progress: Progress | None = None) -> dict[str, Path]:
    """The deterministic decoders' outputs (no seed): greedy, lookahead, beam."""
    decoders = dict(lineup(settings, steps, exact))
    out = {}
    pin_thread()
    for i, key in enumerate(FIXED_KEYS):
        _tick(progress, i, decoders[key].label)
        out[key] = decoders[key].decode(model, list(prompt), steps)
    return out


@dataclass(frozen=True, eq=False)
class Drawn:
    """A request's random part, shared by every goal of one family (``pointwise`` or distribution
    matching): each random decoder's shown draw, the samples from P shown, and (neural models) the truth
    rollout. For the pointwise goals it scores every output known before it (the deterministic
    decoders', the random decoders' own draws, MBR's ε-sampled candidates); for distribution matching it
    keeps every sampler's divergence statistics instead (they cost a few passes over every row's
    distribution, so they are computed only for those goals)."""

    shown: dict[str, Path]
    samples: tuple[Path, ...]
    rollout: Rollout | None
    pointwise: bool


def draw(model, prompt: Sequence[int], steps: int, seed: int, settings: DecoderSettings, n_samples: int,
         fixed: dict[str, Path], exact: bool, pointwise: bool = True, progress: Progress | None = None) -> Drawn:
    """Every random draw in one grouped walk (``sample_groups``), then (neural models) one truth walk
    of ``n_samples`` rows (``roll_out``) that scores the fixed outputs and every draw."""
    _tick(progress, len(FIXED_KEYS), "sampling")
    prompt = list(prompt)
    random = [(k, d) for k, d in lineup(settings, steps, exact) if d.is_random]
    specs = _draw_specs(model, settings, seed, n_samples, exact, random, pointwise)
    pin_thread()
    drawn = dict(zip([name for name, _ in specs], sample_groups(model, prompt, steps, [s for _, s in specs])))
    shown = {key: drawn[f"shown:{key}"].paths()[0] for key, _ in random}
    samples = tuple(drawn["samples"].paths()) if "samples" in drawn else ()
    if exact:
        return Drawn(shown, samples, None, pointwise)
    eos = getattr(model, "eos_id", None)
    targets, samplers = {}, {}
    if pointwise:
        targets = {key: path_targets([fixed[key]], steps, eos) for key in FIXED_KEYS}
        targets.update({f"shown:{key}": path_targets([shown[key]], steps, eos) for key, _ in random})
        targets.update({name: draw_targets(drawn[name], steps, eos) for name, _ in specs
                        if name.startswith("draws:") or name == "mbr"})
    else:
        samplers = dict(random)
    rollout = roll_out(model, prompt, steps, n_samples, seed, targets=targets, samplers=samplers)
    return Drawn(shown, samples, rollout, pointwise)


def _label(key: str, decoder) -> str:
    return "ancestral sampling (τ=1, = P)" if key == "ancestral" else decoder.label


def _outputs(model, rows: torch.Tensor, scored) -> list[Output]:
    """Display rows of teacher-forced outputs, each shown up to and including its first EOS (it is
    scored padded with EOS after it)."""
    text = hasattr(model, "decode") and not is_exact_model(model)
    eos = getattr(model, "eos_id", None)
    out = []
    for tokens, lps, ranks in zip(rows.tolist(), scored.step_logprobs.tolist(), scored.ranks.tolist()):
        end = tokens.index(eos) + 1 if eos in tokens else len(tokens)
        tokens, lps, ranks = tokens[:end], lps[:end], ranks[:end]
        out.append(Output(tuple(tokens), tuple(lps), tuple(int(r) for r in ranks),
                          model.decode(list(tokens)) if text else None))
    return out


def _budget_note(decoder, path: Path) -> str:
    if getattr(path, "budget_exhausted", False):
        return (f"node budget of {decoder.node_budget} per token reached: the output is the best found, its "
                f"windows within {path.bound:.3g} nats of the exact lookahead windows")
    return ""


def score(model, prompt: Sequence[int], steps: int, seed: int, goal, settings: DecoderSettings, n_samples: int,
          fixed: dict[str, Path], drawn: Drawn, exact: bool, progress: Progress | None = None) -> Comparison:
    """The goal's part: Bayes output, MBR's pick, one teacher-forced pass over every displayed output
    (log-probs, ranks, the greedy certificate), and every risk and regret."""
    _tick(progress, len(FIXED_KEYS) + 1, "the goal's Bayes output and the risks")
    if drawn.pointwise != goal.pointwise:
        raise ValueError(f"the draws were made for {'pointwise goals' if drawn.pointwise else 'distribution matching'}"
                         f", not for {goal.name}")
    prompt = list(prompt)
    decoders = lineup(settings, steps, exact)
    eos = getattr(model, "eos_id", None)
    paths = {**fixed, **drawn.shown}
    mbr = MBR(goal, settings.mbr_candidates, settings.mbr_epsilon) if goal.pointwise else None
    pin_thread()
    if exact:
        parts = _score_exact(model, steps, seed, goal, decoders, paths, mbr)
    else:
        parts = _score_monte_carlo(model, prompt, steps, goal, decoders, paths, drawn, mbr)
    bayes_tokens, rows_spec, bayes_exact, bayes_method, mbr_choice = parts
    keys = [key for key, _, _, _, _ in rows_spec]
    shown_rows = [paths[key].tokens if key in paths else (mbr_choice[0] if key == "mbr" else bayes_tokens)
                  for key in keys]
    displayed = padded_rows(shown_rows + [p.tokens for p in drawn.samples], steps, eos)
    scored = score_outputs(model, prompt, displayed)
    outputs = _outputs(model, displayed, scored)
    greedy = keys.index("greedy")
    certificate = certificate_from_scores(displayed[greedy].tolist(), scored.step_logprobs[greedy],
                                          scored.runner_up[greedy])
    rows = []
    for (key, decoder, label, risk, regret), out in zip(rows_spec, outputs):
        note = _budget_note(decoder, paths[key]) if key in paths else ""
        rows.append(Row(key, label, repr(decoder), decoder.is_random, out, risk, regret, note or risk.note))
    _tick(progress, STAGES, "done")
    rollout = drawn.rollout
    return Comparison(tuple(rows), tuple(outputs[len(keys):]), goal.name, steps, seed, 0 if exact else n_samples,
                      exact, bayes_exact, bayes_method, 0 if rollout is None else rollout.n_select,
                      "" if mbr_choice is None else mbr_choice[1], mbr_choice is not None and mbr_choice[2],
                      certificate)


def _regret(risk: Estimate, bayes_risk: float) -> Estimate:
    value = risk.mean - bayes_risk if math.isfinite(risk.mean) else math.inf
    return Estimate.exact_value(value, "exact")


def _score_exact(model, steps: int, seed: int, goal, decoders, paths: dict[str, Path], mbr: MBR | None):
    """Exact risks on a toy; MBR samples its candidates and references, its pick scored exactly."""
    if goal.pointwise:
        bayes_tokens = goal.exact_bayes_output(model, steps)
        bayes_risk = goal.exact_risk(model, steps, {bayes_tokens: 1.0})
        bayes_decoder, label = Fixed(bayes_tokens), f"Bayes output ({goal.name})"
    else:
        bayes_decoder, label = Sampling(), "Bayes decoder (sampling from P)"
        bayes_risk = exact_risk(goal, model, bayes_decoder, steps)
        bayes_tokens = paths["ancestral"].tokens
    rows = []
    for key, d in decoders:
        risk = Estimate.exact_value(exact_risk(goal, model, d, steps), "exact")
        rows.append((key, d, _label(key, d), risk, _regret(risk, bayes_risk)))
    mbr_choice = None
    if mbr is not None:
        choice = mbr.select(model, [], steps, seed, extra=[paths[key] for key, _ in decoders])
        r = goal.exact_risk(model, steps, {tuple(choice.path.tokens): 1.0})
        risk = Estimate.exact_value(r, "exact risk of MBR's pick")
        rows.append(("mbr", mbr, mbr.label, risk, _regret(risk, bayes_risk)))
        mbr_choice = (choice.path.tokens, choice.method, choice.exact)
    risk = Estimate.exact_value(bayes_risk, "exact")
    rows.append(("bayes", bayes_decoder, label, risk, Estimate.exact_value(0.0, "exact")))
    return bayes_tokens, rows, True, "exact (enumeration)", mbr_choice


def _score_monte_carlo(model, prompt, steps: int, goal, decoders, paths: dict[str, Path], drawn: Drawn,
                       mbr: MBR | None):
    """Risks and regrets from the truth rollout; the Bayes output and MBR's pick chosen on fold A."""
    rollout = drawn.rollout
    bayes = goal.monte_carlo_bayes(model, prompt, rollout, BAYES_NODE_BUDGET)
    eos = getattr(model, "eos_id", None)
    rows = []
    for key, d in decoders:
        if d.is_random and d.is_identity:
            cols = rollout.truth_columns(key)
        elif d.is_random:  # distribution matching reads the sampler's divergence, not draws
            cols = (rollout.columns(f"draws:{key}", "draws", key) if goal.pointwise
                    else Columns(*path_targets([], steps, eos), None, "draws", key))
        else:
            cols = (rollout.columns(key, "fixed") if goal.pointwise
                    else Columns(*path_targets([paths[key]], steps, eos), None, "fixed"))
        rows.append((key, d, _label(key, d), goal.estimate(rollout, cols), goal.estimate(rollout, cols, bayes.columns)))
    mbr_choice = None
    if mbr is not None:
        names = "+".join([*FIXED_KEYS, *(f"shown:{k}" for k, d in decoders if d.is_random), "mbr"])
        pool = rollout.columns(names, "fixed")
        index, _ = pick(goal, rollout, pool, rollout.fold_a)
        needs = goal.needs_references(steps)
        chosen = Columns(pool.tokens[index : index + 1], pool.logp[index : index + 1],
                         pool.hits[:, :, index : index + 1], "selected" if needs else "fixed")
        rows.append(("mbr", mbr, mbr.label, goal.estimate(rollout, chosen),
                     goal.estimate(rollout, chosen, bayes.columns)))
        where = (f"expected {goal.name} loss over the {rollout.n_select} fold-A truth rows (Rao-Blackwellised); "
                 "scored on fold B" if needs else "exact expected 0-1 loss 1 − P(candidate)")
        method = (f"best of {pool.tokens.shape[0]} candidates (the other decoders' outputs + "
                  f"{candidates_text(model, mbr.n_candidates, mbr.epsilon)}) by {where}")
        mbr_choice = (tuple(chosen.tokens[0].tolist()), method, not needs)
    bayes_label = f"Bayes output ({goal.name})" if goal.pointwise else "Bayes decoder (sampling from P)"
    bayes_decoder = Fixed(bayes.tokens) if goal.pointwise else Sampling()
    rows.append(("bayes", bayes_decoder, bayes_label, goal.estimate(rollout, bayes.columns),
                 Estimate.exact_value(0.0, "exact")))
    return bayes.tokens, rows, bayes.exact, bayes.method, mbr_choice


def compare(model, prompt: Sequence[int], steps: int, seed: int, goal, settings: DecoderSettings,
            n_samples: int = 256, progress: Progress | None = None) -> Comparison:
    """Decode with every decoder of ``lineup`` plus MBR and the goal's Bayes output and score all of them
    (the three stages in a row). Exact on toys (``n_samples`` unused); Monte Carlo with ``n_samples``
    truth rows otherwise. ``progress(done, total, what)`` is called before each unit of work. Same
    inputs, same result."""
    prompt, exact = check_request(model, prompt, steps, seed, settings, n_samples)
    goal.loss_range(steps)  # the goal fits the steps (e.g. N-gram n <= steps)
    fixed = decode_fixed(model, prompt, steps, settings, exact, progress)
    drawn = draw(model, prompt, steps, seed, settings, n_samples, fixed, exact, goal.pointwise, progress)
    return score(model, prompt, steps, seed, goal, settings, n_samples, fixed, drawn, exact, progress)


def token_ranks(model, prompt: Sequence[int], tokens: Sequence[int]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Each token's log-prob and rank (1 = most likely; ties count in the token's favour) given the
    prompt and the tokens before it."""
    return token_ranks_many(model, prompt, [tokens])[0]


def token_ranks_many(model, prompt: Sequence[int], outputs: Sequence[Sequence[int]]
                     ) -> list[tuple[tuple[float, ...], tuple[int, ...]]]:
    """``token_ranks`` of several outputs of the same length in one teacher-forced pass
    (``score_outputs``: one ``feed`` of every row)."""
    outputs = [[int(t) for t in tokens] for tokens in outputs]
    steps = len(outputs[0]) if outputs else 0
    if any(len(o) != steps for o in outputs):
        raise ValueError("token_ranks_many needs outputs of one length")
    if not steps:
        return [((), ()) for _ in outputs]
    scored = score_outputs(model, [int(t) for t in prompt], torch.tensor(outputs, dtype=torch.long))
    return [(tuple(lp), tuple(int(r) for r in rk)) for lp, rk in zip(scored.step_logprobs.tolist(),
                                                                     scored.ranks.tolist())]


def empirical_distribution(model, sampler: Sampling, steps: int, n: int, seed: int) -> dict[tuple[int, ...], float]:
    """Relative frequencies of the outputs of ``n`` seeded draws of ``sampler`` (for "sample N times"
    next to the exact output distribution), most frequent first, ties by sequence."""
    drawn = sample_many(model, [], steps, n, seed, sampler)
    counts: dict[tuple[int, ...], int] = {}
    for row in drawn.tokens.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    return {k: c / n for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
