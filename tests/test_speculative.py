"""Self-speculative decoding: output identical to greedy, honest counts, bitwise-consistent feeds."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from core.decoders import Greedy
from core.engine import ASSETS, load_default
from core.speculative import SpeculativeResult, self_speculative
from tests.conftest import make_tiny_engine

PROMPTS = ASSETS / "prompts" / "prompts.json"


@pytest.fixture(scope="module")
def engine():
    return load_default()


def _example_prompts() -> list[tuple[str, str]]:
    if not PROMPTS.is_file():
        pytest.skip("assets/prompts/prompts.json not present")
    return [(p["name"], p["text"]) for p in json.loads(PROMPTS.read_text())]


def _check_bookkeeping(r: SpeculativeResult, steps: int, k: int) -> None:
    assert len(r.tokens) == steps
    assert r.forwards == len(r.traces)
    assert sum(len(t.committed) for t in r.traces) == steps
    assert tuple(x for t in r.traces for x in t.committed) == r.tokens
    assert r.traces[0].fed == () and r.traces[0].drafted == ()
    for prev, t in zip(r.traces, r.traces[1:]):
        assert t.fed == (prev.bonus, *t.drafted)  # each pass feeds the last bonus, then drafts
        assert len(t.drafted) <= k - 1
        assert 0 <= t.accepted <= len(t.drafted)
        assert t.drafted[: t.accepted] == t.predicted[: t.accepted]  # kept drafts were head 1's argmax
        if t.accepted < len(t.drafted):
            assert t.drafted[t.accepted] != t.predicted[t.accepted]  # the first rejected one was not
        assert t.bonus == t.predicted[t.accepted]
    assert r.tokens_per_forward == pytest.approx(steps / r.forwards)
    assert 1.0 <= r.tokens_per_forward <= k
    assert r.draft_passes <= r.forwards - 1
    for n, a, c in zip(r.drafts_offered, r.acceptance_per_head, r.conditional_acceptance_per_head):
        if n == 0:  # a head that never drafted has no rate
            assert math.isnan(a) and math.isnan(c)
        else:  # nan conditional rate: offered but never reached (an earlier draft always rejected)
            assert 0.0 <= a <= 1.0 and (math.isnan(c) and a == 0.0 or a <= c <= 1.0)


def test_equals_greedy_on_every_example_prompt(engine):
    for name, text in _example_prompts():
        prompt = engine.encode(text)
        greedy = Greedy().decode(engine, prompt, 48).tokens
        for steps in (1, 48):
            r = self_speculative(engine, prompt, steps)
            assert r.tokens == greedy[:steps], (name, steps)
            _check_bookkeeping(r, steps, engine.n_heads)


def test_equals_greedy_on_random_prompts_and_head_counts(engine):
    rng = random.Random(0)
    for i in range(6):
        prompt = [rng.randrange(engine.vocab_size) for _ in range(rng.randrange(0, 40))]
        steps = rng.randrange(1, 40)
        greedy = Greedy().decode(engine, prompt, steps).tokens
        k = 2 + i % (engine.n_heads - 1)
        r = self_speculative(engine, prompt, steps, heads=k)
        assert r.tokens == greedy, (prompt, steps, k)
        _check_bookkeeping(r, steps, k)


def test_equals_greedy_on_a_tiny_random_model():
    # near-ties are common in a random model's flat distributions: a strong check of bitwise equality
    eng = make_tiny_engine(seed=3)
    rng = random.Random(1)
    for _ in range(8):
        prompt = [rng.randrange(eng.vocab_size) for _ in range(rng.randrange(0, 20))]
        steps = rng.randrange(1, 30)
        r = self_speculative(eng, prompt, steps)
        assert r.tokens == Greedy().decode(eng, prompt, steps).tokens
        _check_bookkeeping(r, steps, eng.n_heads)


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_multi_token_feed_is_bitwise_equal_to_single_steps(which, engine):
    eng = make_tiny_engine(seed=5) if which == "tiny" else engine
    prompt = [5, 17, 300, 42, 9]
    tokens = [11, 250, 3, 3, 4000, 12, 7, 99]
    one = eng.start(prompt, 1, len(tokens))
    single = torch.cat([one.feed([t])[0] for t in tokens])
    for width in (2, 3, 4):
        s = eng.start(prompt, 1, len(tokens))
        multi = torch.cat([s.feed(tokens[i : i + width])[0] for i in range(0, len(tokens), width)])
        assert torch.equal(multi, single), width
        # and the caches written by either agree: the head drafts at the end are identical too
        assert torch.equal(s.heads(), one.heads())


def test_forward_counts():
    eng = make_tiny_engine(seed=0)
    r = self_speculative(eng, [1, 2, 3], 20)
    verify = r.traces[1:]
    assert r.forwards == 1 + len(verify)  # the prompt pass, then one verification pass each
    assert len(r.tokens) == 1 + sum(t.accepted + 1 for t in verify)
    assert r.drafts_offered[0] == sum(1 for t in verify if t.drafted) == r.draft_passes


def test_argmax_ties_break_to_the_lowest_id():
    x = torch.tensor([[0.0, 3.0, 1.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
    assert torch.argmax(x, dim=-1).tolist() == [1, 0]


def test_input_validation(engine):
    single = make_tiny_engine(seed=0, n_heads=1)
    with pytest.raises(ValueError, match="extra heads"):
        self_speculative(single, [1, 2], 4)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        self_speculative(engine, [1, 2], 0)
    with pytest.raises(ValueError, match=r"heads must be an integer in \[2, 4\]"):
        self_speculative(engine, [1, 2], 4, heads=5)
    with pytest.raises(ValueError, match=r"heads must be an integer in \[2, 4\]"):
        self_speculative(engine, [1, 2], 4, heads=1)
    with pytest.raises(ValueError, match=r"prompt token ids must be in \[0, 8192\)"):
        self_speculative(engine, [1, 8192], 4)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        self_speculative(engine, [1] * 500, 50)
