"""core.compare: the Compare page's computation, exact on toys (claims E1, E2) and Monte Carlo on a
tiny random multi-head model."""

from __future__ import annotations

import json
import math

import pytest

from core.compare import (
    COMPARE_DRAWS,
    MAX_NEURAL_LOOKAHEAD,
    DecoderSettings,
    compare,
    empirical_distribution,
    lineup,
    token_ranks,
)
from core.decoders import Sampling
from core.goals import DistributionMatch, Hamming, ZeroOne
from core.toy import PRESETS


@pytest.fixture(scope="module")
def e1():
    return PRESETS["E1"].build()


def by_key(result):
    return {r.key: r for r in result.rows}


def test_e1_exact_risks_and_regret(e1):
    rows = by_key(compare(e1, [], 2, 0, ZeroOne(), DecoderSettings()))
    assert rows["greedy"].output.tokens == (0, 0) and rows["greedy"].risk.mean == pytest.approx(0.67)
    assert rows["bayes"].output.tokens == (1, 0) and rows["bayes"].risk.mean == pytest.approx(0.64)
    assert rows["greedy"].regret.mean == pytest.approx(0.03) and rows["greedy"].regret.exact
    assert rows["ancestral"].risk.mean == pytest.approx(0.687)  # E3: 1 - sum P(y)^2
    assert all(r.risk.exact and r.regret.exact for r in rows.values())
    # MBR under 0-1 is the most probable candidate: the mode BA is among the decoders' outputs
    assert rows["mbr"].label == "MBR (0-1)" and rows["mbr"].output.tokens == (1, 0)
    assert rows["mbr"].risk.mean == pytest.approx(0.64) and rows["mbr"].regret.mean == pytest.approx(0.0)
    hamming_result = compare(e1, [], 2, 0, Hamming(), DecoderSettings())
    hamming = by_key(hamming_result)
    assert hamming["bayes"].output.tokens == (0, 0) and hamming["bayes"].risk.mean == pytest.approx(0.71)
    assert hamming["lookahead"].risk.mean == pytest.approx(0.91)
    assert hamming["mbr"].output.tokens == (0, 0) and hamming["mbr"].regret.mean == pytest.approx(0.0)
    assert "ε = 0.02" in hamming_result.mbr_method
    # C13: on E1 the certificate fails (bound .4 > P(AA) = .33), consistent with greedy != mode
    cert = hamming_result.certificate
    assert not cert.holds and math.exp(cert.bound) == pytest.approx(0.4)
    assert math.exp(cert.logprob) == pytest.approx(0.33)


def test_e1_distribution_match(e1):
    rows = by_key(compare(e1, [], 2, 0, DistributionMatch("kl"), DecoderSettings(temperature=0.5)))
    assert rows["sampling"].risk.mean == pytest.approx(0.07270, abs=1e-5)  # E4
    assert rows["ancestral"].risk.mean == pytest.approx(0.0, abs=1e-12)
    assert math.isinf(rows["greedy"].risk.mean) and math.isinf(rows["greedy"].regret.mean)
    assert rows["bayes"].risk.mean == pytest.approx(0.0, abs=1e-12)
    assert "mbr" not in rows  # MBR needs a pointwise loss


def test_json_is_byte_identical_and_parses(e1):
    settings = DecoderSettings()
    a = compare(e1, [], 2, 3, DistributionMatch("kl"), settings).to_json(settings)
    b = compare(e1, [], 2, 3, DistributionMatch("kl"), settings).to_json(settings)
    assert a == b
    doc = json.loads(a)
    assert doc["seed"] == 3 and doc["settings"]["temperature"] == 0.7
    assert doc["rows"][0]["risk"]["mean"] == "inf"


def test_lineup_rejects_bad_settings():
    with pytest.raises(ValueError, match="lookahead depth must be an integer from 1 to 4 on a neural model"):
        lineup(DecoderSettings(lookahead_depth=MAX_NEURAL_LOOKAHEAD + 1), 32, exact=False)
    assert len(lineup(DecoderSettings(lookahead_depth=8), 8, exact=True)) == 7  # + MBR and the Bayes output
    with pytest.raises(ValueError, match="MBR candidates must be an integer from 1 to 64, got 0"):
        lineup(DecoderSettings(mbr_candidates=0), 8, exact=True)
    with pytest.raises(ValueError, match="top_p"):
        lineup(DecoderSettings(top_p=1.5), 8, exact=True)
    with pytest.raises(ValueError, match="temperature"):
        lineup(DecoderSettings(temperature=0.0), 8, exact=True)
    with pytest.raises(ValueError, match="beam width"):
        lineup(DecoderSettings(beam_width=0), 8, exact=True)


def test_token_ranks(e1):
    logprobs, ranks = token_ranks(e1, [], [1, 1])
    assert ranks == (2, 2)
    assert math.exp(sum(logprobs)) == pytest.approx(0.04)


def test_empirical_distribution(e1):
    seen = empirical_distribution(e1, Sampling(), 2, 2000, seed=0)
    assert sum(seen.values()) == pytest.approx(1.0)
    assert seen[(1, 0)] == pytest.approx(0.36, abs=0.04)


def test_monte_carlo_on_a_tiny_model(tiny_engine):
    prompt = tiny_engine.encode("def f(x):\n    return")
    settings = DecoderSettings(lookahead_depth=2, beam_width=2, shown_samples=2)
    a = compare(tiny_engine, prompt, 3, 0, Hamming(), settings, n_samples=16)
    b = compare(tiny_engine, prompt, 3, 0, Hamming(), settings, n_samples=16)
    assert a == b  # fixed seed, identical numbers
    assert not a.exact and a.n_samples == 16 and len(a.samples) == 2
    assert [r.key for r in a.rows] == ["greedy", "lookahead", "sampling", "top_k", "top_p", "beam", "ancestral",
                                       "mbr", "bayes"]
    assert a.n_select == 8
    for row in a.rows:
        assert 0.0 <= row.risk.ci_low <= row.risk.mean <= row.risk.ci_high <= 3.0  # clipped to [0, windows]
        assert -3.0 <= row.regret.ci_low <= row.regret.mean <= row.regret.ci_high <= 3.0
        assert isinstance(row.output.text, str) and len(row.output.ranks) == 3
    rows = by_key(a)
    assert rows["bayes"].risk.n == 8 and rows["mbr"].risk.n == 8  # chosen on fold A, scored on fold B
    assert rows["greedy"].risk.n == 16 and rows["greedy"].regret.n == 8
    assert rows["sampling"].risk.n_draws == COMPARE_DRAWS and rows["ancestral"].risk.n == 8  # 8 pairs of truth rows
    assert "greedy" in a.small_n
    with pytest.raises(ValueError, match="Monte Carlo samples"):
        compare(tiny_engine, prompt, 3, 0, Hamming(), settings, n_samples=1)
