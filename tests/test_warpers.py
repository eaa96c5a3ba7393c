"""Warpers: equal to transformers' LogitsProcessors on float32 (adversarial inputs), the mathematical
definitions on float64 (exact toys), llama.cpp's top-nσ, exact risks and sampling frequencies."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from core.decoders import Sampling, sample_many, warp_logprobs
from core.goals import DistributionMatch, ZeroOne
from core.risk import exact_risk
from core.toy import PRESETS, output_distribution, random_table
from core.warpers import CHAIN, TOL, TopNSigma, log_normalize
from tests.chisq import assert_frequencies_match

SETTINGS = [  # (Sampling kwargs, the transformers processors generate would build, in its order)
    (dict(temperature=0.7), [TemperatureLogitsWarper(0.7)]),
    (dict(top_k=3), [TopKLogitsWarper(3)]),
    (dict(top_p=0.75), [TopPLogitsWarper(0.75)]),
    (dict(top_p=0.9), [TopPLogitsWarper(0.9)]),
    (dict(min_p=0.25), [MinPLogitsWarper(0.25)]),
    (dict(typical_p=0.6), [TypicalLogitsWarper(0.6)]),
    (dict(epsilon_cutoff=0.25), [EpsilonLogitsWarper(0.25)]),
    (dict(eta_cutoff=0.1), [EtaLogitsWarper(0.1)]),
    (dict(repetition_penalty=1.5), [RepetitionPenaltyLogitsProcessor(1.5)]),
    (dict(temperature=1.3, top_k=4, top_p=0.8, min_p=0.05, typical_p=0.95, epsilon_cutoff=0.01, eta_cutoff=0.02,
          repetition_penalty=1.2),
     [RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(1.3), TopKLogitsWarper(4), TopPLogitsWarper(0.8),
      MinPLogitsWarper(0.05), TypicalLogitsWarper(0.95), EpsilonLogitsWarper(0.01), EtaLogitsWarper(0.02)]),
]


def _adversarial_rows() -> list[torch.Tensor]:
    """float32 score rows [B, V]: cumulative masses exactly at thresholds, equal logits, ties at the k-th
    place, -inf entries, one-token support, V = 2, and a 50k vocabulary."""
    g = torch.Generator().manual_seed(0)
    ln = lambda probs: torch.tensor(probs, dtype=torch.float64).log().float()[None]  # noqa: E731
    return [
        ln([0.5, 0.25, 0.25]),  # top-p .75 exactly at a cumulative sum; ε = .25 and min-p .25·.5 exactly at p
        ln([0.5, 0.25, 0.125, 0.125]),
        torch.zeros(1, 10),  # ten equal logits
        torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, -1.0]]),  # ties at the k-th place
        torch.tensor([[1.0, -math.inf, 0.5, -math.inf, 0.2, 0.1]]),
        torch.tensor([[0.0, -math.inf, -math.inf, -math.inf]]),  # one-token support
        torch.tensor([[0.3, -0.4]]),  # V = 2
        torch.tensor([[-2.0, 5.0, -3.0, 1.5, 0.0, 2.5]]),  # raw logits of both signs (repetition penalty)
        torch.randn(4, 50_000, generator=g) * 3,
        torch.randn(8, 37, generator=g) * torch.rand(8, 1, generator=g) * 6,
    ]


def _history(rows: torch.Tensor) -> torch.Tensor:
    v = rows.shape[1]
    return torch.tensor([[0, 1, 1, v - 1, min(3, v - 1)]]).expand(rows.shape[0], -1) % v


@pytest.mark.parametrize(("kwargs", "processors"), SETTINGS, ids=lambda x: str(x)[:60])
def test_float32_chain_equals_transformers_bit_for_bit(kwargs, processors):
    sampler = Sampling(**kwargs)
    for rows in _adversarial_rows():
        history = _history(rows)
        ours = rows
        for warper in sampler.chain:
            ours = warper.apply(ours, history)
        want = LogitsProcessorList(processors)(history, rows.clone())
        assert torch.equal(ours, want), (kwargs, rows)
        assert torch.equal(sampler.warp(rows, history), log_normalize(want))


def test_boundary_cases_keep_what_transformers_keeps_on_float32():
    ten = torch.zeros(1, 10)
    assert int((Sampling(top_p=0.9).warp(ten) > -math.inf).sum()) == 9  # not 10
    half = torch.tensor([[0.5, 0.25, 0.25]]).log()
    assert (Sampling(top_p=0.75).warp(half) > -math.inf).sum() == 2
    ties = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])
    assert (Sampling(top_k=2).warp(ties) > -math.inf).tolist() == [[True, True, True, True, False]]


def _smallest_set_brute_force(p: list[float], order: list[int], mass: float) -> set[int]:
    kept, total = set(), 0.0
    for v in order:
        if total >= mass - TOL:
            break
        kept.add(v)
        total += p[v]
    return kept


def test_float64_follows_the_definitions_at_boundaries():
    e1_after_b = torch.tensor([[0.9, 0.1]], dtype=torch.float64).log()
    assert Sampling(top_p=0.9).warp(e1_after_b).exp().tolist() == [[1.0, 0.0]]  # {A} already has mass .9
    ten = torch.zeros(1, 10, dtype=torch.float64)
    assert (Sampling(top_p=0.9).warp(ten) > -math.inf).tolist() == [[True] * 9 + [False]]  # lowest ids stay
    thirds = torch.tensor([[1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64).log()
    assert (Sampling(top_p=2 / 3).warp(thirds) > -math.inf).tolist() == [[True, True, False]]
    exact = torch.tensor([[0.5, 0.25, 0.125, 0.125]], dtype=torch.float64).log()
    assert (Sampling(min_p=0.25).warp(exact) > -math.inf).all()  # p = min_p·max stays
    assert (Sampling(epsilon_cutoff=0.125).warp(exact) > -math.inf).all()  # p = ε stays
    assert (Sampling(epsilon_cutoff=0.126).warp(exact) > -math.inf).tolist() == [[True, True, False, False]]
    assert (Sampling(top_k=3).warp(exact) > -math.inf).all()  # the tie at the 3rd place stays
    assert (Sampling(top_p=0.75).warp(exact) > -math.inf).tolist() == [[True, True, False, False]]


def test_float64_warpers_match_brute_force_definitions_on_random_distributions():
    rng = np.random.default_rng(3)
    for trial in range(300):
        v = int(rng.integers(2, 9))
        probs = rng.dirichlet(np.full(v, 0.5))
        if trial % 3 == 0:  # dyadic probabilities: exact ties and exact boundaries
            probs = rng.choice([1, 2, 4], size=v).astype(float)
            probs /= probs.sum()
        lp = torch.tensor(probs).log()[None]
        p = probs.tolist()
        mass = float(rng.choice([0.25, 0.5, 0.75, 0.9, rng.uniform(0.05, 0.99)]))
        by_p = sorted(range(v), key=lambda i: (-p[i], i))
        assert set(torch.nonzero(Sampling(top_p=mass).warp(lp)[0] > -math.inf).flatten().tolist()) == \
            _smallest_set_brute_force(p, by_p, mass)
        entropy = -sum(x * math.log(x) for x in p if x > 0)
        shifted = [abs(-math.log(x) - entropy) for x in p]
        by_typical = sorted(range(v), key=lambda i: (shifted[i], i))
        last = max(_smallest_set_brute_force(p, by_typical, mass), key=lambda i: shifted[i])
        want = {i for i in range(v) if shifted[i] <= shifted[last]}
        assert set(torch.nonzero(Sampling(typical_p=mass).warp(lp)[0] > -math.inf).flatten().tolist()) == want
        m = float(rng.choice([0.1, 0.5, 1.0]))
        want = {i for i in range(v) if p[i] >= m * max(p) * (1 - TOL)}
        assert set(torch.nonzero(Sampling(min_p=m).warp(lp)[0] > -math.inf).flatten().tolist()) == want
        eps = float(rng.uniform(0.01, 0.6))
        eta = min(eps, math.sqrt(eps) * math.exp(-entropy))
        for kwargs, cut in [(dict(epsilon_cutoff=eps), eps), (dict(eta_cutoff=eps), eta)]:
            want = {i for i in range(v) if p[i] >= cut * (1 - TOL) or p[i] == max(p)}
            assert set(torch.nonzero(Sampling(**kwargs).warp(lp)[0] > -math.inf).flatten().tolist()) == want


def test_float64_agrees_with_transformers_away_from_boundaries():
    g = torch.Generator().manual_seed(5)
    for kwargs, processors in SETTINGS:
        rows = torch.randn(64, 30, generator=g, dtype=torch.float64) * 2
        history = _history(rows)
        ours = Sampling(**kwargs).warp(rows, history)
        want = log_normalize(LogitsProcessorList(processors)(history, rows.clone()))
        assert torch.equal(ours > -math.inf, want > -math.inf), kwargs
        torch.testing.assert_close(ours[ours > -math.inf], want[want > -math.inf], rtol=1e-12, atol=1e-12)


def _llama_cpp_top_n_sigma(logits: np.ndarray, n: float) -> tuple[np.ndarray, float]:
    """llama.cpp's llama_sampler_top_n_sigma_apply, loop for loop in float32: (kept mask, the cut)."""
    finite = logits[logits != -np.inf]
    mx, total = np.float32(finite[0]), np.float32(0)
    for x in finite:
        mx = max(mx, x)
        total = np.float32(total + x)
    mean = np.float32(total / np.float32(len(finite)))
    acc = np.float32(0)
    for x in finite:
        acc = np.float32(acc + np.float32((float(x) - float(mean)) ** 2))
    std = np.float32(np.sqrt(np.float32(acc / np.float32(len(finite)))))
    cut = np.float32(mx - np.float32(n) * std)
    return logits >= cut, float(cut)


def test_top_n_sigma_is_llama_cpps_definition():
    g = torch.Generator().manual_seed(2)
    for trial in range(200):
        v = int(torch.randint(2, 300, (1,), generator=g))
        row = torch.randn(1, v, generator=g) * float(torch.rand(1, generator=g) * 4 + 0.1)
        row[0, torch.rand(v, generator=g) < 0.2] = -math.inf
        row[0, 0] = 0.0  # at least one finite logit
        n = float(torch.rand(1, generator=g) * 3)
        kept = (Sampling(top_n_sigma=n).warp(row)[0] > -math.inf).numpy()
        want, cut = _llama_cpp_top_n_sigma(row[0].numpy(), n)
        clear = np.abs(row[0].numpy() - cut) > 1e-4  # summation order may move the cut by float32 rounding
        assert (kept[clear] == want[clear]).all(), trial
    flat = torch.tensor([[1.0, 1.0, 1.0]])  # σ = 0 keeps the maxima only; invariant to temperature
    assert (Sampling(top_n_sigma=1.0).warp(flat) > -math.inf).all()
    row = torch.tensor([[2.0, 1.0, 0.0, -1.0, -5.0]])  # mean -.6, σ = √5.84 = 2.417: keep logits >= -.417
    for t in (0.3, 1.0, 4.0):
        assert (Sampling(temperature=t, top_n_sigma=1.0).warp(row) > -math.inf).tolist() == \
            [[True, True, True, False, False]]
    assert "not in transformers" in Sampling(top_n_sigma=1.0).label and not TopNSigma.in_transformers


def test_repetition_penalty_needs_history_and_penalises_seen_tokens():
    lp = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64).log()
    with pytest.raises(ValueError, match="repetition_penalty needs each row's token history"):
        Sampling(repetition_penalty=2.0).warp(lp)
    out = Sampling(repetition_penalty=2.0).warp(lp, torch.tensor([[0, 0]])).exp()[0]
    z = 0.25 + 0.25 + 0.25  # p(0)^2 = .25 before renormalising
    assert out.tolist() == pytest.approx([0.25 / z, 0.25 / z, 0.25 / z])
    assert Sampling(repetition_penalty=1.0).is_identity  # θ = 1 is no penalty at all


def test_sampling_arguments_are_the_chain_in_transformers_order():
    names = [f.name for f in dataclasses.fields(Sampling)]
    assert names == ["temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                     "repetition_penalty", "top_n_sigma"]
    assert sorted(names) == sorted(cls.arg() for cls in CHAIN)  # adding a warper: a class and its argument
    chain = [type(w).__name__ for w in Sampling(0.5, 3, 0.9, 0.1, 0.9, 0.01, 0.01, 1.1, 2.0).chain]
    assert chain == ["RepetitionPenalty", "Temperature", "TopNSigma", "TopK", "TopP", "MinP", "Typical",
                     "EpsilonCutoff", "EtaCutoff"]
    assert repr(Sampling(top_p=0.9)) == "Sampling(top_p=0.9)" and repr(Sampling()) == "Sampling()"
    assert Sampling(min_p=0.05).label == "sampling (τ=1, min-p=0.05)"
    assert Sampling(min_p=0.0).is_identity and Sampling(typical_p=1.0).is_identity and Sampling(top_p=1).is_identity
    assert Sampling(eta_cutoff=0.1).truncates and not Sampling(temperature=2.0).truncates


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(min_p=-0.1), r"min_p must be None or in \[0, 1\], got -0.1"),
        (dict(min_p=1.5), r"min_p must be None or in \[0, 1\], got 1.5"),
        (dict(typical_p=0), r"typical_p must be None or in \(0, 1\], got 0"),
        (dict(epsilon_cutoff=1.0), r"epsilon_cutoff must be None or in \(0, 1\), got 1.0"),
        (dict(eta_cutoff=0.0), r"eta_cutoff must be None or in \(0, 1\), got 0.0"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be None or > 0 and finite, got 0.0"),
        (dict(repetition_penalty=math.inf), "repetition_penalty must be None or > 0 and finite, got inf"),
        (dict(top_n_sigma=-1.0), "top_n_sigma must be None or > 0 and finite, got -1.0"),
        (dict(top_n_sigma="1"), "top_n_sigma must be None or > 0 and finite, got '1'"),
        (dict(temperature=None), "temperature must be > 0 and finite, got None"),
        (dict(top_k=True), "top_k must be None or an integer >= 1, got True"),
    ],
)
def test_bad_warper_arguments_raise_precise_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)
    if "temperature" not in kwargs:
        with pytest.raises(ValueError, match=message):
            warp_logprobs(torch.zeros(3), **kwargs)


NEW_SAMPLERS = [Sampling(min_p=0.3), Sampling(typical_p=0.7), Sampling(epsilon_cutoff=0.12),
                Sampling(eta_cutoff=0.2), Sampling(repetition_penalty=1.8), Sampling(top_n_sigma=0.8),
                Sampling(0.8, top_k=2, min_p=0.1, repetition_penalty=0.7)]


@pytest.mark.parametrize("sampler", NEW_SAMPLERS, ids=repr)
def test_new_samplers_frequencies_pass_chi_square_against_exact_output_distribution(sampler):
    toy = random_table(3, 3, seed=12, alpha=0.7)
    r = output_distribution(sampler, toy, 3)
    assert math.fsum(r.values()) == pytest.approx(1.0, abs=1e-12)
    assert_frequencies_match(map(tuple, sample_many(toy, [], 3, 20000, seed=1, sampler=sampler).tokens.tolist()), r)


def test_exact_risks_of_new_samplers_on_e1():
    e1 = PRESETS["E1"].build()
    joint = {(0, 0): 0.33, (0, 1): 0.27, (1, 0): 0.36, (1, 1): 0.04}
    # top-p .9 cuts B after B (P(A|B) = .9 already reaches .9): KL = ∞ and 0-1 risk .6742 (not .687)
    assert exact_risk(ZeroOne(), e1, Sampling(top_p=0.9), 2) == pytest.approx(1 - (.33**2 + .27**2 + .4 * .36))
    assert exact_risk(DistributionMatch("kl"), e1, Sampling(top_p=0.9), 2) == math.inf
    for sampler in NEW_SAMPLERS:
        r = output_distribution(sampler, e1, 2)
        want = 1 - math.fsum(r.get(y, 0.0) * p for y, p in joint.items())
        assert exact_risk(ZeroOne(), e1, sampler, 2) == pytest.approx(want, abs=1e-12)
    # repetition penalty 2 on E1: after A, p(A) ∝ .55², p(B) ∝ .45; after B, p(B) ∝ .1², p(A) ∝ .9
    r = output_distribution(Sampling(repetition_penalty=2.0), e1, 2)
    a, b = 0.55**2 / (0.55**2 + 0.45), 0.1**2 / (0.1**2 + 0.9)
    assert r == pytest.approx({(0, 0): 0.6 * a, (0, 1): 0.6 * (1 - a), (1, 0): 0.4 * (1 - b), (1, 1): 0.4 * b})
