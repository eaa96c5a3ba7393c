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

Progressive: the truth rows come in waves (``wave_sizes``: 16, 16, 32, 64, ... rows, so 16, 32, 64, 128, ...
in all), each walked with its own seed ``derived_seed(seed, WAVES_STREAM, w)``; the first wave also draws
every random decoder's ``COMPARE_DRAWS`` own draws and MBR's candidates in the same walk (their tokens are
targets as they are drawn), later waves score those as fixed targets. A wave's rows join fold A (its first
half) and fold B (its second half), so the result after the waves of n rows is the result of the request with
n rows, byte for byte (``draw_waves`` yields it after every wave; ``draw`` is its last).

Compute budgets are explicit (``NEURAL_NODE_BUDGET``, ``MAX_NEURAL_LOOKAHEAD``, ``N_SAMPLES_RANGE``), and every
request has a predicted time (``predict``, from the model's measured ``core.cost.CostModel``); ``plan`` caps
the Monte Carlo rows, then the steps, to keep a click within the budget.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from core.compute import pin_thread
from core.cost import SEARCH_BUDGET, SEARCH_DEPTH, Capped, CostModel
from core.decoders import (
    Beam,
    Fixed,
    Greedy,
    Lookahead,
    Path,
    Samples,
    Sampling,
    check_call,
    sample_groups,
    sample_many,
)
from core.estimators import Estimate
from core.mbr import MBR, candidate_sampler, candidates_text, check_epsilon, pick
from core.risk import GreedyCertificate, certificate_from_scores, exact_risk
from core.rollout import (
    DRAWS_STREAM,
    MBR_STREAM,
    WAVES_STREAM,
    Columns,
    Group,
    Rollout,
    Wave,
    derived_seed,
    fold_order,
    padded_rows,
    path_targets,
    score_outputs,
    target_groups,
    walk_wave,
)
from core.warpers import CHAIN

NEURAL_NODE_BUDGET = SEARCH_BUDGET  # best-first expansions per committed token for lookahead on a neural model
BAYES_NODE_BUDGET = 256  # expansions for the mode search on a neural model (then beam fallback, labelled approximate)
MAX_NEURAL_LOOKAHEAD = 4  # deepest lookahead offered on a neural model (cost grows with depth)
MAX_BEAM_WIDTH = 16
MBR_CANDIDATES_RANGE = (1, 64)
N_SAMPLES_RANGE = (16, 1024)  # Monte Carlo truth rows on a neural model
MAX_SHOWN_SAMPLES = 10
# Each random decoder's own draws, scored against every truth row (a two-sample interval): a fixed number, so
# the first wave draws them all and every later wave only adds truth rows. About the 25 at which the risk
# helper measured 95% coverage on toys (92% at 12); each draw costs a walk row (with a sort for top-p).
COMPARE_DRAWS = 24
FIRST_WAVE = 16  # truth rows of the first wave; wave w >= 1 doubles the rows so far
FIXED_KEYS = ("greedy", "lookahead", "beam")
EXTRA_ARGS = tuple(cls.arg() for cls in CHAIN)  # warpers offered as extra samplers, in CHAIN order
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
    extra: tuple[tuple[str, float], ...] = ()  # extra samplers: (warper argument, value), e.g. ("min_p", 0.1)


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

    def to_json(self, settings: DecoderSettings | None = None, prompt: Sequence[int] = (),
                source: dict | None = None) -> str:
        """Decoder settings, seed, tokens and risks as JSON, with the model's ``source`` (``core.sources.
        source_info``) when given; byte-identical for identical inputs (sorted keys; non-finite numbers as the
        strings "inf", "-inf", "nan")."""
        doc = {
            "source": source,
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

    def table(self, source: dict | None = None) -> list[dict]:
        """Plain rows for a table / CSV; with ``source`` (``core.sources.source_info``) every row names the model
        (columns ``source`` and ``source_<field>``)."""
        named = {} if source is None else {("source" if k == "source" else f"source_{k}"): v for k, v in source.items()}
        return [
            {"decoder": r.label, "output": r.output.text if r.output.text is not None else r.output.tokens,
             "risk": r.risk.mean, "ci_low": r.risk.ci_low, "ci_high": r.risk.ci_high,
             "regret": r.regret.mean, "regret_low": r.regret.ci_low, "regret_high": r.regret.ci_high,
             "exact": r.risk.exact, "n": r.risk.describe_n(), "log P(output)": sum(r.output.step_logprobs),
             "settings": r.settings, **named}
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
        *extra_samplers(s.extra),
    ]


def extra_samplers(extra: Sequence[tuple[str, float]]) -> list[tuple[str, Sampling]]:
    """(key ``extra:<argument>``, ``Sampling(**{argument: value})``) for each extra sampler; ValueError naming
    an unknown or repeated argument, or the argument whose value is out of its range."""
    out, seen = [], set()
    for item in extra:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise ValueError(f"an extra sampler must be (argument, value), got {item!r}")
        arg, value = item
        if arg not in EXTRA_ARGS:
            raise ValueError(f"extra sampler must be one of {', '.join(EXTRA_ARGS)}, got {arg!r}")
        if arg in seen:
            raise ValueError(f"extra sampler {arg} is given twice")
        seen.add(arg)
        out.append((f"extra:{arg}", Sampling(**{arg: value})))
    return out


def _random(settings: DecoderSettings, steps: int, exact: bool) -> list[tuple[str, object]]:
    return [(k, d) for k, d in lineup(settings, steps, exact) if d.is_random]


def wave_sizes(n: int) -> list[int]:
    """Truth rows of each wave of a request for n rows: ``FIRST_WAVE``, then as many again as all waves before
    (16, 16, 32, 64, ...), the last one cut to reach n."""
    sizes: list[int] = []
    total = 0
    while total < n:
        size = min(FIRST_WAVE if not sizes else total, n - total)
        sizes.append(size)
        total += size
    return sizes


def partial_sizes(n: int) -> list[int]:
    """The truth rows after each wave (16, 32, 64, ..., n): the requests a partial result equals."""
    return [int(x) for x in np.cumsum(wave_sizes(n))]


def _groups(mbr_sampler: Sampling, settings: DecoderSettings, seed: int, random, pointwise: bool) -> list[Group]:
    """Rows the first wave draws besides its truth rows: each non-identity random decoder's own draws
    (``COMPARE_DRAWS`` for pointwise goals, which score them; one to show for distribution matching, which reads
    the sampler's distribution instead), one draw of sampling from P to show (seeded by the request's seed), and
    MBR's ε-sampled candidates (pointwise goals)."""
    m, ds = (COMPARE_DRAWS if pointwise else 1), derived_seed(seed, DRAWS_STREAM)
    out = [Group(f"draws:{key}", m, ds, d) for key, d in random if not d.is_identity]
    out.append(Group("shown:ancestral", 1, seed, None))
    if pointwise:
        out.append(Group("mbr", settings.mbr_candidates, derived_seed(seed, MBR_STREAM), mbr_sampler))
    return out


def check_request(model, prompt: Sequence[int], steps: int, seed: int, settings: DecoderSettings,
                  n_samples: int) -> tuple[list[int], bool]:
    """(the prompt as ints, whether the model is an exact toy); ValueError naming the first problem:
    the prompt (toys take none), steps, seed, the decoder settings, the Monte Carlo samples."""
    exact = is_exact_model(model)
    prompt = [int(t) for t in prompt]
    if exact and prompt:
        raise ValueError("toys take no prompt")
    prompt = check_call(model, prompt, steps)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    lineup(settings, steps, exact)
    if not exact:
        lo, hi = N_SAMPLES_RANGE
        if not (isinstance(n_samples, int) and not isinstance(n_samples, bool) and lo <= n_samples <= hi):
            raise ValueError(f"Monte Carlo samples must be an integer from {lo} to {hi}, got {n_samples!r}")
    return prompt, exact


Progress = Callable[[int, int, str], None]
STAGES = 5  # progress units: fixed decoders (3), draws and rollout (1), scoring (1)


def _tick(progress: Progress | None, done: int, what: str) -> None:
    if progress is not None:
        progress(done, STAGES, what)


def decode_one(model, prompt: Sequence[int], steps: int, settings: DecoderSettings, exact: bool, key: str) -> Path:
    """One deterministic decoder's output (``key`` in ``FIXED_KEYS``)."""
    if key not in FIXED_KEYS:
        raise ValueError(f"key must be one of {', '.join(FIXED_KEYS)}, got {key!r}")
    pin_thread()
    return dict(lineup(settings, steps, exact))[key].decode(model, list(prompt), steps)


def decode_fixed(model, prompt: Sequence[int], steps: int, settings: DecoderSettings, exact: bool,
                 progress: Progress | None = None) -> dict[str, Path]:
    """The deterministic decoders' outputs (no seed): greedy, lookahead, beam."""
    out = {}
    for i, key in enumerate(FIXED_KEYS):
        _tick(progress, i, key)
        out[key] = decode_one(model, prompt, steps, settings, exact, key)
    return out


@dataclass(frozen=True, eq=False)
class Drawn:
    """A request's random part after some waves, shared by every goal of one family (``pointwise`` or
    distribution matching): each random decoder's shown draw, the samples from P shown, and (neural models)
    the truth rollout of the waves so far. For the pointwise goals it scores every output known before it
    (the deterministic decoders', the random decoders' own draws, MBR's ε-sampled candidates); for
    distribution matching it keeps every sampler's divergence statistics instead (they cost a few passes over
    every row's distribution, so they are computed only for those goals).

    ``memo`` holds what scoring computes once per request whatever the rows (the 0-1 mode, the teacher-forced
    pass over the outputs fixed before the waves); every ``Drawn`` of one request shares it."""

    shown: dict[str, Path]
    samples: tuple[Path, ...]
    rollout: Rollout | None
    pointwise: bool
    waves: tuple[Wave, ...] = ()
    memo: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        """Truth rows so far (0 for an exact toy)."""
        return 0 if self.rollout is None else self.rollout.n

    def truth_samples(self, eos_id: int | None = None) -> Samples | None:
        """The truth rows in the rollout's (fold) order, as ``Samples`` (e.g. the ``truth_samples`` of
        ``core.risk.estimate_risk``, to score other decoders on the same rows); None for a toy."""
        if not self.waves:
            return None
        order = fold_order([w.n for w in self.waves])
        lps = torch.cat([w.step_logprobs for w in self.waves])[order]
        return Samples(torch.cat([w.tokens for w in self.waves])[order], lps, lps, eos_id)


def _draw_exact(model, steps: int, seed: int, settings: DecoderSettings, random, pointwise: bool) -> Drawn:
    """A toy's shown draws (each random decoder decoded with the seed) and samples from P (seed + 1)."""
    specs = [(1, seed, d) for _, d in random]
    if settings.shown_samples:
        specs.append((settings.shown_samples, seed + 1, None))
    drawn = sample_groups(model, [], steps, specs)
    shown = {key: d.paths()[0] for (key, _), d in zip(random, drawn)}
    samples = tuple(drawn[-1].paths()) if settings.shown_samples else ()
    return Drawn(shown, samples, None, pointwise)


def draw_waves(model, prompt: Sequence[int], steps: int, seed: int, settings: DecoderSettings, n_samples: int,
               fixed: dict[str, Path], exact: bool, pointwise: bool = True, done: Drawn | None = None,
               progress: Progress | None = None) -> Iterator[Drawn]:
    """The request's random part wave by wave (see the module doc): yields a ``Drawn`` after every wave, the
    one after the waves of n rows equal to the request for n rows. ``done``: a ``Drawn`` of the same request
    (any n) whose waves are reused where the schedule for ``n_samples`` has them. Toys: one exact ``Drawn``."""
    _tick(progress, len(FIXED_KEYS), "sampling")
    prompt = list(prompt)
    random = _random(settings, steps, exact)
    pin_thread()
    if exact:
        yield _draw_exact(model, steps, seed, settings, random, pointwise)
        return
    eos = getattr(model, "eos_id", None)
    targets = {key: path_targets([fixed[key]], steps, eos) for key in FIXED_KEYS} if pointwise else {}
    samplers = {} if pointwise else dict(random)
    groups = _groups(candidate_sampler(model, settings.mbr_epsilon), settings, seed, random, pointwise)
    joined, ranges = target_groups(targets, steps, groups)
    for key, d in random:  # a random decoder's shown output: its first own draw
        name = "shown:ancestral" if d.is_identity else f"draws:{key}"
        ranges[f"shown:{key}"] = (ranges[name][0], ranges[name][0] + 1)
    sizes = wave_sizes(n_samples)
    reuse = list(done.waves) if done is not None and done.pointwise == pointwise else []
    memo = done.memo if reuse else {}
    waves: list[Wave] = []
    for w, size in enumerate(sizes):
        if w < len(reuse) and reuse[w].n == size and len(waves) == w:
            waves.append(reuse[w])
        else:
            if w == 0:
                waves.append(walk_wave(model, prompt, steps, size, derived_seed(seed, WAVES_STREAM, 0),
                                       targets=joined, samplers=samplers, groups=groups))
                drawn = waves[0].drawn
                joined = (torch.cat([joined[0], *(drawn[g.name].tokens for g in groups)]),
                          torch.cat([joined[1], *(drawn[g.name].logprob.double() for g in groups)]))
            else:
                waves.append(walk_wave(model, prompt, steps, size, derived_seed(seed, WAVES_STREAM, w),
                                       targets=joined, samplers=samplers, cands=waves[0].cands))
        if w == 0 and reuse and waves[0] is reuse[0]:
            drawn = waves[0].drawn
            joined = (torch.cat([joined[0], *(drawn[g.name].tokens for g in groups)]),
                      torch.cat([joined[1], *(drawn[g.name].logprob.double() for g in groups)]))
        first = waves[0]
        shown = {key: first.drawn["shown:ancestral" if d.is_identity else f"draws:{key}"].paths()[0]
                 for key, d in random}
        samples = tuple(first.samples(eos).paths()[: settings.shown_samples])
        rollout = Rollout.from_waves(steps, seed, waves, joined, ranges)
        yield Drawn(shown, samples, rollout, pointwise, tuple(waves), memo)


def draw(model, prompt: Sequence[int], steps: int, seed: int, settings: DecoderSettings, n_samples: int,
         fixed: dict[str, Path], exact: bool, pointwise: bool = True, progress: Progress | None = None) -> Drawn:
    """Every wave of the request (``draw_waves``): the random draws and the truth rollout of ``n_samples``
    rows that scores the fixed outputs and every draw."""
    *_, last = draw_waves(model, prompt, steps, seed, settings, n_samples, fixed, exact, pointwise, progress=progress)
    return last


def _label(key: str, decoder) -> str:
    if key == "ancestral":
        return "ancestral sampling (τ=1, = P)"
    return decoder.label


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


def _teacher_forced(model, prompt: list[int], rows: torch.Tensor, memo: dict | None, key: str):
    """``score_outputs`` of ``rows``, kept in ``memo`` under ``key`` (the rows fixed before the waves)."""
    if memo is not None and key in memo and torch.equal(memo[key][0], rows):
        return memo[key][1]
    scored = score_outputs(model, prompt, rows)
    if memo is not None:
        memo[key] = (rows, scored)
    return scored


def score(model, prompt: Sequence[int], steps: int, seed: int, goal, settings: DecoderSettings, n_samples: int,
          fixed: dict[str, Path], drawn: Drawn, exact: bool, progress: Progress | None = None) -> Comparison:
    """The goal's part: Bayes output, MBR's pick, teacher-forced passes over every displayed output (log-probs,
    ranks, the greedy certificate: one pass over the outputs fixed before the truth rows, one over MBR's pick and
    the Bayes output), and every risk and regret. ``n_samples`` is the request's; a ``drawn`` of fewer truth
    rows (a partial result) gives the result of the request for that many rows."""
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
    static_keys = [key for key in keys if key in paths]
    static = padded_rows([paths[key].tokens for key in static_keys] + [p.tokens for p in drawn.samples], steps, eos)
    chosen = padded_rows([mbr_choice[0] if key == "mbr" else bayes_tokens for key in keys if key not in paths],
                         steps, eos)
    memo = None if exact else drawn.memo
    outputs = _outputs(model, static, _teacher_forced(model, prompt, static, memo, "static"))
    by_key = dict(zip(static_keys, outputs))
    by_key.update(zip([key for key in keys if key not in paths],
                      _outputs(model, chosen, score_outputs(model, prompt, chosen))))
    scored = memo["static"][1] if memo is not None else score_outputs(model, prompt, static[:1])
    certificate = certificate_from_scores(static[0].tolist(), scored.step_logprobs[0], scored.runner_up[0])
    rows = []
    for key, decoder, label, risk, regret in rows_spec:
        note = _budget_note(decoder, paths[key]) if key in paths else ""
        rows.append(Row(key, label, repr(decoder), decoder.is_random, by_key[key], risk, regret, note or risk.note))
    _tick(progress, STAGES, "done")
    rollout = drawn.rollout
    return Comparison(tuple(rows), tuple(outputs[len(static_keys):]), goal.name, steps, seed,
                      0 if exact else rollout.n, exact, bayes_exact, bayes_method,
                      0 if rollout is None else rollout.n_select,
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
    if goal.pointwise and not goal.needs_references(steps):  # the 0-1 mode: a search that reads no truth rows
        key = ("bayes", goal)
        if key not in drawn.memo:
            drawn.memo[key] = goal.monte_carlo_bayes(model, prompt, rollout, BAYES_NODE_BUDGET)
        bayes = drawn.memo[key]
    else:
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


# ---- predicted seconds, and the request that fits a budget ------------------------------------------------

# ``logprobs`` calls per committed token of ``Lookahead(depth)`` (batches of ``Lookahead.batch`` nodes), measured
# on the shipped model's prompts (depth 4 approaches its node budget); a search never makes more than
# node_budget / batch calls per token.
LOOKAHEAD_CALLS = {1: 1, 2: 6, 3: 16, 4: 45}
BEAM_BOOKKEEPING = 3  # a beam step's bookkeeping, in greedy steps' (ranking 2·width continuations, reordering)
SORTING_ARGS = ("top_p", "typical_p", "min_p")  # warpers that sort the vocabulary at every step
MODE_CALLS = 4  # ``logprobs`` calls of 16 nodes a 0-1 mode search typically makes (its budget allows 16)


def lookahead_token_s(cost: CostModel, depth: int, node_budget: int, batch: int) -> float:
    """Predicted seconds per committed token of ``Lookahead(depth)``: ``logprobs`` calls per token times the
    seconds of a call. Calls: the shipped model's typical count (``LOOKAHEAD_CALLS``), raised to what this
    model's search probe made (``CostModel.search_calls``, scaled from its depth like the typical counts) when
    that is more (a flat model expands up to its node budget), never above node_budget / batch calls plus the
    depth - 1 calls that complete the best open node greedily when the budget runs out."""
    most = math.ceil(node_budget / batch) + depth - 1
    typical = LOOKAHEAD_CALLS.get(depth, most)
    calls = 1 if depth <= 1 else min(most, max(typical, cost.search_calls * typical / LOOKAHEAD_CALLS[SEARCH_DEPTH]))
    return calls * max(cost.step(batch) + cost.token_s, cost.search_call_s)


@dataclass(frozen=True)
class Prediction:
    """Predicted seconds of a Compare request's stages on a model with a measured ``CostModel``: each fixed
    decoder, each wave (the first with every random decoder's draws and MBR's candidates), and scoring (once,
    plus once per wave for the partial results the page shows)."""

    fixed: dict[str, float]
    waves: tuple[float, ...]
    scoring: float

    @property
    def total(self) -> float:
        return sum(self.fixed.values()) + sum(self.waves) + self.scoring


def _group_row_s(cost: CostModel, sampler) -> float:
    """Extra seconds per row and step of drawing from ``sampler`` (a sort for top-p and its kind)."""
    if sampler is None or not any(getattr(sampler, arg) is not None for arg in SORTING_ARGS):
        return 0.0
    return max(0.0, cost.sort_row_s - cost.row_token_s)


def predict(cost: CostModel, prompt_len: int, steps: int, settings: DecoderSettings, n_samples: int,
            pointwise: bool = True, exact: bool = False) -> Prediction:
    """Predicted seconds of ``compare`` (stage by stage) for a prompt of ``prompt_len`` tokens; no model call.
    Toys: their exact computations are small (a few ``logprobs`` calls per decoder and step)."""
    decoders = dict(lineup(settings, steps, exact))
    if exact:
        per = cost.forwards(steps)
        return Prediction({key: per for key in FIXED_KEYS}, (), per * len(decoders))
    look = decoders["lookahead"]
    beam = settings.beam_width
    fixed = {
        "greedy": cost.walk(1, steps, prompt_len),
        "lookahead": cost.prefill(prompt_len) + steps * lookahead_token_s(cost, look.depth, look.node_budget,
                                                                          look.batch),
        "beam": cost.prefill(prompt_len) + steps * (cost.step(beam) + BEAM_BOOKKEEPING * cost.token_s),
    }
    random = [(k, d) for k, d in decoders.items() if d.is_random]
    groups = _groups(Sampling(epsilon_cutoff=settings.mbr_epsilon), settings, 0, random, pointwise)
    sizes = wave_sizes(n_samples)
    waves = []
    for w, size in enumerate(sizes):
        rows = size + (sum(g.n for g in groups) if w == 0 else 0)
        extra = (sum(g.n * _group_row_s(cost, g.sampler) for g in groups) + len(groups) * cost.token_s if w == 0
                 else 0.0)  # each group's warp and draw: a sort for top-p, a few small ops for every group
        waves.append(cost.walk(rows, steps, prompt_len) + steps * extra)
    shown = len(FIXED_KEYS) + len(random) + settings.shown_samples
    once = cost.prefill(steps, shown) + (MODE_CALLS * cost.forwards(1, 16) if pointwise and steps > 0 else 0.0)
    per_wave = cost.prefill(steps, 2) + cost.token_s * len(decoders)
    return Prediction(fixed, tuple(waves), once + per_wave * len(sizes))


@dataclass(frozen=True)
class Plan:
    """What a click runs: the requested steps, Monte Carlo rows and settings, or less where the prediction is over
    the budget (``caps`` say what was lowered and why), with the predicted seconds of both."""

    steps: int
    n_samples: int
    settings: DecoderSettings
    caps: tuple[Capped, ...]
    predicted_s: float
    full_s: float

    @property
    def capped(self) -> bool:
        return bool(self.caps)


def plan(cost: CostModel, prompt_len: int, steps: int, settings: DecoderSettings, n_samples: int, budget_s: float,
         pointwise: bool = True, exact: bool = False, min_steps: int = 1) -> Plan:
    """The request to run within ``budget_s`` predicted seconds: the Monte Carlo rows first, down to a partial
    size of the request (``partial_sizes``: so the full computation continues from the capped one), then, if the
    fewest rows still take too long, the steps (not below ``min_steps``, e.g. the goal's N-gram window), the
    lookahead depth following the steps down where it would exceed them. Toys are never capped."""
    def at(s: int) -> DecoderSettings:
        return settings if settings.lookahead_depth <= s else replace(settings, lookahead_depth=s)

    def seconds(s: int, n: int) -> float:
        return predict(cost, prompt_len, s, at(s), n, pointwise, exact).total

    full = seconds(steps, n_samples)
    if exact or full <= budget_s:
        return Plan(steps, n_samples, settings, (), full, full)
    sizes = partial_sizes(n_samples)
    i = 0
    while i + 1 < len(sizes) and seconds(steps, sizes[i + 1]) <= budget_s:
        i += 1
    n, caps = sizes[i], []
    if n < n_samples:
        caps.append(Capped("Monte Carlo samples", n_samples, n, full, seconds(steps, n), budget_s))
    s = steps
    if seconds(steps, n) > budget_s:
        lo, hi = min(steps, max(1, min_steps)), steps
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if seconds(mid, n) <= budget_s else (lo, mid)
        s = lo if seconds(hi, n) > budget_s else hi
        if s < steps:
            caps.append(Capped("Steps", steps, s, seconds(steps, n), seconds(s, n), budget_s))
        if at(s) is not settings:
            caps.append(Capped("Lookahead depth", settings.lookahead_depth, s, seconds(steps, n), seconds(s, n),
                               budget_s))
    return Plan(s, n, at(s), tuple(caps), seconds(s, n), full)
