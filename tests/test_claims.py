"""The claims of ../shared/claims.md that core.claims builds (C1/C2 as consistency, C6, C7, C8, C11,
C12, C13, C14), each against its stated numbers, plus the checks on random toys behind them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from core.claims import (
    C6_BETTER,
    C6_WORSE,
    C8_TREE,
    CLAIM_TOYS,
    EOS_MARK,
    all_claims,
    certificate_check,
    greedy_is_exact_mode,
    greedy_regrets,
    hidden_path_toy,
    mode_queries,
    named_toys,
    output_text,
    random_trees,
    sampling_consistency,
    sat_toy,
    tempering_kl,
    uniform_on_support,
)
from core.consistency import learned_model, mixture_model
from core.decoders import Greedy, Lookahead
from core.goals import Hamming, ZeroOne
from core.risk import bayes_output, exact_risk, greedy_certificate, greedy_is_mode
from core.toy import PRESETS, binary_tree, eos_toy, random_markov_chain, random_table

A, B = 0, 1


def approx(d: dict, **kw) -> dict:
    return {k: pytest.approx(v, **kw) for k, v in d.items()}


def test_c6_lookahead_is_worse_than_greedy_on_the_first_tree():
    tree = binary_tree(list(C6_WORSE), 3)
    joint = {"".join("AB"[t] for t in y): p for y, p in tree.support()}
    assert joint == approx({"AAA": .12375, "AAB": .12375, "ABA": .257125, "ABB": .045375, "BAA": .2025,
                            "BAB": .135, "BBA": .0675, "BBB": .045}, abs=1e-12)
    assert Greedy().decode(tree, [], 3).tokens == (A, B, A) == bayes_output(ZeroOne(), tree, 3)
    assert Lookahead(2).decode(tree, [], 3).tokens == (B, A, A)  # scores A: .3025, B: .3375 at the root
    assert tree.prob((B, A, A)) == pytest.approx(.2025)
    assert Lookahead(3).decode(tree, [], 3).tokens == (A, B, A)  # not monotone in the depth


def test_c6_lookahead_is_better_than_greedy_on_the_second_tree():
    tree = binary_tree(list(C6_BETTER), 3)
    assert Greedy().decode(tree, [], 3).tokens == (B, A, B) and tree.prob((B, A, B)) == pytest.approx(.287375)
    assert Lookahead(2).decode(tree, [], 3).tokens == (A, B, A) == bayes_output(ZeroOne(), tree, 3)
    assert tree.prob((A, B, A)) == pytest.approx(.363375)


def test_c7_greedy_and_every_short_lookahead_miss_the_mode():
    toy = sat_toy()
    assert toy.prob((1, 0, 1, 1)) == pytest.approx(.45 * .55 * .45) == pytest.approx(.111375)
    assert toy.prob((1, 0, 1, 0)) == 0.0
    assert bayes_output(ZeroOne(), toy, 4) == (1, 0, 1, 1)
    for decoder in (Greedy(), Lookahead(2), Lookahead(3)):
        assert decoder.decode(toy, [], 4).tokens == (0, 0, 0, 1)
    assert toy.prob((0, 0, 0, 1)) == pytest.approx(.55**3 * .6) == pytest.approx(.099825)
    assert Lookahead(4).decode(toy, [], 4).tokens == (1, 0, 1, 1)
    assert bayes_output(Hamming(), toy, 4) == (0, 0, 0, 1)
    assert exact_risk(Hamming(), toy, Greedy(), 4) == pytest.approx(1.70545, abs=1e-9)


def test_c7_generalises_to_longer_formulas():
    toy = sat_toy(p_one_unsat=0.5, formula=(1, 0, 1, 1, 0))  # .45³·.55² > .55⁵·.5
    mode = bayes_output(ZeroOne(), toy, 6)
    assert mode == (1, 0, 1, 1, 0, 1)
    assert all(Lookahead(t).decode(toy, [], 6).tokens != mode for t in range(1, 6))
    assert Lookahead(6).decode(toy, [], 6).tokens == mode


def test_c8_temperature_is_harmless_exactly_when_conditionals_are_uniform_on_their_support():
    c8, e1 = binary_tree(C8_TREE, 2), PRESETS["E1"].build()
    assert uniform_on_support(c8) and not uniform_on_support(e1)
    for tau in (0.1, 0.5, 2.0, 10.0):
        assert tempering_kl(c8, tau) == pytest.approx(0.0, abs=1e-12)
        assert tempering_kl(e1, tau) > 1e-3
    assert tempering_kl(e1, 0.5) == pytest.approx(0.07270, abs=5e-6)  # E4
    trees = random_trees(300, 3, seed=11, values=(0.0, 0.5, 1.0, math.nan))
    flags = [uniform_on_support(t) for t in trees]
    assert 30 < sum(flags) < 270  # both kinds occur
    for tree, uniform in zip(trees, flags):
        assert (tempering_kl(tree, 0.5) <= 1e-12) == uniform
        assert (tempering_kl(tree, 3.0) <= 1e-12) == uniform


def test_c11_hidden_path_greedy_finds_two_of_sixteen_and_the_worst_case_needs_eight_queries():
    found, queries = [], []
    for target in itertools.product((0, 1), repeat=4):
        toy = hidden_path_toy(target)
        assert toy.prob(target) == 0.125
        assert max(p for y, p in toy.support() if y != target) == 0.0625
        found.append(Greedy().decode(toy, [], 4).tokens == target)
        mode, n = mode_queries(toy)
        assert mode == target
        queries.append(n)
    assert sum(found) == 2 and found[:2] == [True, True]  # y* = 0000 and 0001
    assert queries == [k // 2 + 1 for k in range(16)]  # best-first asks the 8 last-step prefixes in order
    assert max(queries) == 8


def test_c12_eos_mode_is_the_empty_output_and_greedy_runs_to_the_end():
    for length, p_greedy in ((3, .216), (5, .07776), (10, .6**10)):
        toy = eos_toy(0.4, length)
        eos = toy.eos_id
        assert bayes_output(ZeroOne(), toy, length) == (eos,) * length  # the empty output, padded
        assert toy.prob((eos,)) == toy.prob((eos,) * length) == pytest.approx(.4, abs=1e-15)
        greedy = Greedy().decode(toy, [], length).tokens
        assert greedy == (1 - eos,) * length and toy.prob(greedy) == pytest.approx(p_greedy, abs=1e-15)
        assert exact_risk(ZeroOne(), toy, Greedy(), length) == pytest.approx(1 - p_greedy, abs=1e-12)
    toy = eos_toy(0.4, 3)
    assert bayes_output(Hamming(), toy, 3) == (0, 1, 1)  # P(Y2 = a) = .36 < .5: stop after one a
    assert exact_risk(Hamming(), toy, Greedy(), 3) == pytest.approx(.4 + .64 + .784)
    assert output_text(toy, (0, 1, 1)) == f"a{EOS_MARK}{EOS_MARK}" and output_text(toy, (1, 1, 1)) == EOS_MARK * 3
    assert output_text(PRESETS["E1"].build(), (1, 0)) == "BA"
    c12 = all_claims()["C12"]
    assert c12.holds and [r["L"] for r in c12.rows] == [3, 5, 10]
    assert [r["P(greedy)"] for r in c12.rows] == pytest.approx([.216, .07776, .6**10], abs=1e-15)
    assert all(r["P(mode)"] == pytest.approx(.4) for r in c12.rows)
    assert "0.216 (L = 3), 0.0778 (L = 5), 0.00605 (L = 10)" in c12.evidence
    assert c12.rows[0]["mode (0-1)"] == "⏹⏹⏹" and c12.rows[0]["greedy"] == "aaa"


def test_c13_certificate_numbers_and_zero_violations_on_random_trees():
    e1 = greedy_certificate(PRESETS["E1"].build(), [], 2)
    assert e1.tokens == (A, A) and math.exp(e1.logprob) == pytest.approx(.33)
    assert math.exp(e1.bound) == pytest.approx(.4) and not e1.holds
    peaked = greedy_certificate(binary_tree([0.9, 0.9, 0.5], 2), [], 2)
    assert peaked.holds and math.exp(peaked.logprob) == pytest.approx(.81)
    assert math.exp(peaked.bound) == pytest.approx(.1)
    for length, alpha, seed in [(2, 0.3, 0), (3, 0.3, 1), (4, 1.0, 2), (5, 0.2, 3)]:
        check = certificate_check(150, length, alpha, seed)
        assert check.violations == 0 and 0 < check.certified <= check.greedy_is_mode <= check.n


def test_c13_certificate_check_agrees_with_greedy_is_mode_on_the_random_trees():
    for length, alpha, seed in [(3, 0.3, 0), (5, 0.3, 1), (5, 1.0, 2)]:
        trees = random_trees(100, length, seed, alpha=alpha)
        certified = [greedy_is_mode(tree, [], length) for tree in trees]
        assert set(certified) <= {True, None}
        check = certificate_check(100, length, alpha, seed)
        assert check.certified == sum(c is True for c in certified) > 0
        for tree, c in zip(trees, certified):
            if c:
                assert greedy_is_exact_mode(tree, Greedy().decode(tree, [], length).tokens)


def test_c13_certificate_never_lies_on_other_toys():
    toys = [random_table(3, 3, s, alpha=0.3) for s in range(40)] + [random_markov_chain(3, 0.3, 4, s)
                                                                     for s in range(40)]
    for toy in toys:
        cert = greedy_certificate(toy, [], toy.length)
        if cert.holds:
            assert toy.prob(cert.tokens) >= toy.prob(bayes_output(ZeroOne(), toy, toy.length)) * (1 - 1e-12)


def test_c14_sampling_kl_is_the_summed_per_step_kl_and_tv_is_bounded():
    cases = [(PRESETS["E1"].build(), 0.5), (binary_tree(list(C6_WORSE), 3), 0.1),
             (random_markov_chain(3, 0.5, 4, 2), 0.05), (random_table(2, 4, 5, zero_fraction=0.3), 0.3)]
    for truth, eps in cases:
        for q in (mixture_model(truth, eps, 3), learned_model(truth, 50, 3)):
            s = sampling_consistency(truth, q)
            assert len(s.kl_steps) == truth.length and all(k >= 0 for k in s.kl_steps)
            assert s.kl == pytest.approx(math.fsum(s.kl_steps), rel=1e-9, abs=1e-14)
            assert s.tv <= math.fsum(s.tv_steps) + 1e-12
    e1 = PRESETS["E1"].build()
    same = sampling_consistency(e1, mixture_model(e1, 0.0, 0))
    assert same.kl == pytest.approx(0.0, abs=1e-14) and same.tv == pytest.approx(0.0, abs=1e-14)


def test_c1_c2_greedy_regret_stays_positive_as_q_approaches_p():
    e1, e2 = PRESETS["E1"].build(), PRESETS["E2"].build()
    grid = (1e-2, 1e-4, 1e-6, 1e-8)
    assert greedy_regrets(e1, ZeroOne(), grid) == pytest.approx([0.03] * 4)
    assert greedy_regrets(e2, ZeroOne(), grid) == pytest.approx([0.07] * 4)
    assert greedy_regrets(e2, Hamming(), grid) == pytest.approx([0.34] * 4)
    assert greedy_regrets(e1, Hamming(), grid) == pytest.approx([0.0] * 4, abs=1e-12)  # AA is Hamming-optimal on E1


def test_every_claim_holds_with_its_numbers():
    claims = all_claims()
    assert list(claims) == ["E1", "E2", "temperature", "C1/C2", "C6", "C7", "C8", "C11", "C12", "C13", "C14"]
    assert all(c.holds for c in claims.values()), [c.key for c in claims.values() if not c.holds]
    assert "0.64" in claims["E1"].evidence and "0.71" in claims["E1"].evidence
    assert "0.66512, 0.6582, 0.65422" in claims["E2"].evidence
    assert "KL = 0.07270 and TV = 0.09231" in claims["temperature"].evidence
    assert "0.03 (E1, 0-1), 0.07 (E2, 0-1), 0.34 (E2, Hamming)" in claims["C1/C2"].evidence
    c6 = {(r["tree"], r["decoder"]): r for r in claims["C6"].rows}
    assert c6["C6 (worse)", "lookahead (depth 2)"]["output"] == "BAA"
    assert c6["C6 (better)", "greedy"]["P(output)"] == pytest.approx(.287375)
    assert "0.111375" in claims["C7"].evidence and "0.099825" in claims["C7"].evidence
    assert "1.70545" in claims["C7"].evidence
    assert [r["last-step queries"] for r in claims["C11"].rows][-1] == 8
    c13 = claims["C13"].rows
    assert c13[0]["bound"] == pytest.approx(.4) and all(r["violations"] == 0 for r in c13[2:])
    assert all(r["KL(P‖r_q)"] == pytest.approx(r["Σ_t E KL(p‖q)"]) for r in claims["C14"].rows)


def test_named_toys_offer_the_presets_and_the_claim_toys():
    toys = named_toys()
    assert list(toys)[: len(PRESETS)] == list(PRESETS) and set(CLAIM_TOYS) <= set(toys)
    for name, (description, build) in CLAIM_TOYS.items():
        toy = build()
        assert description and toy.length >= 2, name
    assert np.isclose(toys["C11 (hidden path, y*=BABB)"][1]().prob((1, 0, 1, 1)), 0.125)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sat_toy(p_false=0.4), r"p_false must be in \(0.5, 1\)"),
        (lambda: sat_toy(formula=(1, 2)), "formula must be a non-empty 0/1 assignment"),
        (lambda: hidden_path_toy((1,)), "target must be a 0/1 sequence of length >= 2"),
        (lambda: hidden_path_toy((0, 3, 1)), "target must be a 0/1 sequence"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
