"""Prompt-lookup decoding: drafts exactly as ``transformers``' PromptLookupCandidateGenerator proposes them,
the same passes and output as ``generate(prompt_lookup_num_tokens=...)`` (a small random GPT-2, SmolLM2),
output equal to greedy on the shipped model's stored prompts and near-ties, and one request per draft
block on a server that returns prompt log-probs."""

from __future__ import annotations

import json
import random

import pytest
import torch
from fake_vllm import FakeVLLM, LetterModel
from server_fixture import stub_server
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel
from transformers.generation import candidate_generator

from core.compute import LOGPROB_TOLERANCE
from core.decoders import Greedy
from core.engine import ASSETS, DEFAULT_MODEL_DIR, load_default
from core.hf import HFEngine
from core.prompt_lookup import LookupResult, PromptLookup, lookup_drafts, prompt_lookup_decode
from core.train import load_tokenizer
from tests.conftest import make_tiny_engine
from tests.test_speculative import STEPS, _perturbed_feeds, _stored_prompts, check_bookkeeping

REPEATED = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return"
EOS = 0  # the shipped tokenizer's <|endoftext|>: the EOS HFEngine reads


@pytest.fixture(scope="module")
def engine():
    return load_default()


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---- the drafts ----------------------------------------------------------------------------------


def transformers_drafts(sequence: list[int], num_tokens: int, max_ngram: int, eos: int | None) -> tuple[int, ...]:
    generator = candidate_generator.PromptLookupCandidateGenerator(
        eos_token_id=None if eos is None else torch.tensor([eos]), num_output_tokens=num_tokens,
        max_matching_ngram_size=max_ngram, max_length=len(sequence) + 100)
    ids = torch.tensor([sequence])
    candidates, _ = generator.get_candidates(ids)
    return tuple(candidates[0, len(sequence):].tolist())


def test_drafts_equal_transformers_candidates():
    rng = random.Random(0)
    cases = 0
    for _ in range(3000):
        alphabet = rng.randint(2, 9)  # small alphabets: many n-gram matches, some continuations hit EOS
        sequence = [rng.randrange(alphabet) for _ in range(rng.randint(1, 40))]
        n, m, eos = rng.randint(1, 12), rng.randint(1, 4), rng.choice([None, 0, 3])
        want = transformers_drafts(sequence, n, m, eos)
        assert lookup_drafts(sequence, n, m, eos) == want, (sequence, n, m, eos)
        cases += bool(want)
    assert cases > 1000


@pytest.mark.parametrize(("sequence", "n", "m", "want"), [
    ([5], 10, 2, ()),  # one token: nothing before it to match
    ([1, 2, 3, 1, 2], 10, 2, (3, 1, 2)),  # the bigram (1, 2) at 0; its continuation runs to the end
    ([1, 2, 3, 1, 2], 2, 2, (3, 1)),  # at most N
    ([7, 1, 2, 9, 2], 10, 2, (9, 2)),  # no earlier (9, 2): the unigram (2,) at 2
    ([1, 2, 0, 5, 1, 2], 10, 2, ()),  # the continuation starts with EOS: the match counts, no drafts
    ([1, 2, 8, 0, 5, 1, 2], 10, 2, (8,)),  # cut before EOS
    ([4, 4, 4], 10, 3, (4,)),  # (4, 4) first occurs at 0: its continuation is the last 4
    ([1, 2, 3], 10, 2, ()),  # no match
])
def test_lookup_examples(sequence, n, m, want):
    assert lookup_drafts(sequence, n, m, eos_id=0) == want == transformers_drafts(sequence, n, m, 0)


def test_drafter_reads_the_start_tokens_and_caps_at_the_limit():
    lookup = PromptLookup(num_tokens=10, max_ngram=2, start=(9, 1), eos_id=None)
    assert lookup.draft(None, [3, 4, 9], 10) == [1, 3, 4, 9]  # (9,) first occurs among the start tokens
    assert lookup.draft(None, [3, 4, 9], 2) == [1, 3]
    assert (lookup.positions, lookup.model_pass, lookup.before_prompt_pass) == (10, False, True)


# ---- against generate on a small random GPT-2 --------------------------------------------------


@pytest.fixture(scope="module")
def peaked_gpt2() -> HFEngine:
    """A random 64-token GPT-2 whose greedy outputs fall into cycles (embeddings x 8: peaked rows, so few
    near-ties) and end at EOS now and then (its logit raised by 4 everywhere), behind HFEngine."""
    torch.manual_seed(3)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=128, bos_token_id=EOS,
                     eos_token_id=EOS, pad_token_id=EOS)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        model.transformer.wte.weight *= 8
        w = model.transformer.wte.weight[EOS]
        model.transformer.ln_f.bias += 4.0 * w / w.dot(w)
    engine = HFEngine(model, load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json"), name="peaked-gpt2", device="cpu")
    assert engine.eos_id == EOS and engine.start_ids == [] and engine.vocab_size == 64
    return engine


def generate_with_lookup(engine: HFEngine, prompt: list[int], steps: int, num_tokens: int, max_ngram: int,
                         monkeypatch) -> tuple[list[int], list[tuple[int, ...]], list[int]]:
    """``generate(prompt_lookup_num_tokens=...)``'s new tokens, and per model pass its candidates and matches."""
    candidates, matches = [], []
    get = candidate_generator.PromptLookupCandidateGenerator.get_candidates

    def recorded(self, input_ids, **kwargs):
        out = get(self, input_ids, **kwargs)
        candidates.append(tuple(out[0][0, input_ids.shape[1]:].tolist()))
        return out

    monkeypatch.setattr(candidate_generator.PromptLookupCandidateGenerator, "get_candidates", recorded)
    monkeypatch.setattr(candidate_generator.PromptLookupCandidateGenerator, "update_candidate_strategy",
                        lambda self, ids, scores, n: matches.append(int(n)), raising=False)
    ids = torch.as_tensor([engine.context_ids(prompt)])
    config = GenerationConfig(do_sample=False, max_new_tokens=steps, prompt_lookup_num_tokens=num_tokens,
                              max_matching_ngram_size=max_ngram, eos_token_id=engine.eos_id,
                              pad_token_id=engine.eos_id)
    out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    monkeypatch.undo()
    return out[0, ids.shape[1]:].tolist(), candidates, matches


def test_equals_generate_pass_for_pass_on_a_random_gpt2(peaked_gpt2, monkeypatch):
    """Same output as generate and as Greedy; and where no near-tie was replayed, the same passes: each
    pass's drafts are generate's candidates (ours stop where no more tokens are wanted) and keep as many."""
    rng = random.Random(0)
    compared, ended, accepted = 0, 0, 0
    for _ in range(16):
        prompt = [rng.randrange(1, 64) for _ in range(rng.randrange(1, 30))]
        steps = rng.randrange(1, 60)
        n, m = rng.choice([(10, 2), (3, 1), (5, 3)])
        want, candidates, matches = generate_with_lookup(peaked_gpt2, prompt, steps, n, m, monkeypatch)
        r = prompt_lookup_decode(peaked_gpt2, prompt, steps, n, m)
        assert list(r.tokens) == want == list(Greedy().decode(peaked_gpt2, prompt, steps).tokens)
        check_bookkeeping(r, steps, n, prompt, EOS)
        if r.replays == 0:
            assert len(r.traces) == len(candidates) == len(matches)  # one model pass each, the prompt's too
            done = 0
            for t, c, k in zip(r.traces, candidates, matches):
                assert t.drafted == c[: steps - done - 1]
                assert t.accepted == k
                done += len(t.committed)
            compared += 1
        ended += r.tokens[-1] == EOS
        accepted += r.accepted_tokens
    assert compared >= 12 and ended >= 2 and accepted > 100


@pytest.mark.slow
def test_equals_generate_on_smollm2(monkeypatch):
    from core.hf import load_smollm2

    engine = load_smollm2()
    prompt = engine.encode(REPEATED)
    want, candidates, _ = generate_with_lookup(engine, prompt, 16, 10, 2, monkeypatch)
    r = prompt_lookup_decode(engine, prompt, 16)
    assert list(r.tokens) == want == list(Greedy().decode(engine, prompt, 16).tokens)
    check_bookkeeping(r, 16, 10, prompt, engine.eos_id)
    assert r.tokens_per_forward > 1.5  # the repeated function shape is copied from the prompt
    if r.replays == 0:
        assert [t.drafted for t in r.traces] == [c[: len(t.drafted)] for t, c in zip(r.traces, candidates)]


# ---- the shipped model ---------------------------------------------------------------------------


def test_equals_greedy_on_example_and_stored_prompts(engine):
    """The example prompts and >= 50 stored prompts (near-ties among them) x 64 tokens, several N and M."""
    examples = [engine.encode(p["text"]) for p in json.loads((ASSETS / "prompts" / "prompts.json").read_text())]
    prompts = examples + [p["tokens"] for p in _stored_prompts()]
    settings = [(10, 2), (4, 1), (6, 3)]
    gained = 0
    for i, prompt in enumerate(prompts):
        n, m = settings[i % len(settings)]
        r = prompt_lookup_decode(engine, prompt, STEPS, n, m)
        assert r.tokens == Greedy().decode(engine, prompt, STEPS).tokens, (i, prompt)
        check_bookkeeping(r, STEPS, n, prompt)
        gained += r.tokens_per_forward > 1.5
    assert gained >= len(prompts) // 3


def test_equals_greedy_on_a_tiny_random_model():
    """Flat rows: near-ties everywhere, so replays decide many tokens."""
    eng = make_tiny_engine(seed=3)
    rng = random.Random(1)
    replays = 0
    for _ in range(8):
        base = [rng.randrange(eng.vocab_size) for _ in range(rng.randrange(1, 6))]
        prompt = base * rng.randrange(1, 4)
        steps = rng.randrange(1, 30)
        r = prompt_lookup_decode(eng, prompt, steps, 5)
        assert r.tokens == Greedy().decode(eng, prompt, steps).tokens
        check_bookkeeping(r, steps, 5, prompt)
        replays += r.replays
    assert replays > 0


def test_near_ties_are_replayed_on_greedys_path(engine, monkeypatch):
    """With every multi-token feed pushed by twice the tolerance towards the runner-up, the output still
    equals greedy's."""
    near = [p for p in _stored_prompts() if p["near_tie"]]
    want = [Greedy().decode(engine, p["tokens"], STEPS).tokens for p in near]
    _perturbed_feeds(monkeypatch, 2 * LOGPROB_TOLERANCE)
    got = [prompt_lookup_decode(engine, p["tokens"], STEPS) for p in near]
    assert [r.tokens for r in got] == want
    assert sum(r.replays for r in got) > 0


def test_eos_ends_the_output_as_greedy_does(engine):
    prompt = engine.encode("if __name__ ==")
    greedy = Greedy().decode(engine, prompt, 64).tokens
    assert greedy[-1] == engine.eos_id and len(greedy) < 64  # the shipped model ends this one early
    r = prompt_lookup_decode(engine, prompt, 64)
    assert r.tokens == greedy and all(engine.eos_id not in t.drafted for t in r.traces)


# ---- models without sessions: a toy-like bigram model, a server -----------------------------------


@pytest.mark.parametrize("settings", [{"vocab_size": 16}, {"top_logprobs": -1}], ids=["prompt_logprobs", "batched"])
def test_a_server_verifies_each_draft_block_in_one_request(settings):
    """vLLM: a block's rows come in one request (one prompt with prompt_logprobs, or several prompts in one
    request for whole-vocabulary rows), so every verification pass is one request; greedy needs one per token."""
    from core.remote import connect

    letters = LetterModel(seed=4)
    prompt = letters.encode("abcabcab")
    steps = 24
    want = Greedy().decode(letters, prompt, steps).tokens
    with stub_server(FakeVLLM(letters, max_logprobs=-1)) as base:
        remote = connect(base, eos_id=0, **settings)
        before = remote.requests
        r = prompt_lookup_decode(remote, prompt, steps)
        used = remote.requests - before
        fresh = connect(base, eos_id=0, **settings)
        start = fresh.requests
        assert Greedy().decode(fresh, prompt, steps).tokens == want
        greedy_used = fresh.requests - start
    assert isinstance(r, LookupResult) and r.tokens == want
    check_bookkeeping(r, steps, 10, prompt, letters.eos_id)
    assert used == len(r.traces) < greedy_used == len(want)
    assert r.tokens_per_forward > 1.5


@pytest.mark.parametrize(("caps", "why"), [
    ({"token_prompts": True, "prompt_logprobs": True, "top_logprobs": 20, "batch_prompts": False}, None),
    ({"token_prompts": True, "prompt_logprobs": False, "top_logprobs": -1, "batch_prompts": True}, None),
    ({"token_prompts": True, "prompt_logprobs": True, "top_logprobs": -1, "batch_prompts": False}, "one position's"),
    ({"token_prompts": False, "prompt_logprobs": False, "top_logprobs": 20, "batch_prompts": False}, "text prompts"),
])
def test_which_servers_verify_a_block_in_one_request(caps, why):
    from types import SimpleNamespace

    from core.prompt_lookup import server_verification

    said = server_verification(SimpleNamespace(caps=SimpleNamespace(**caps)))
    assert said is None if why is None else why in said and "N + 1 requests" in said
    assert server_verification(make_tiny_engine()) is None  # a local model: KV-cached feeds


def test_a_model_without_sessions_uses_logprobs():
    letters = LetterModel(seed=5)
    prompt = letters.encode("hello hello hel")
    r = prompt_lookup_decode(letters, prompt, 20, 4, 3)
    assert r.tokens == Greedy().decode(letters, prompt, 20).tokens
    check_bookkeeping(r, 20, 4, prompt, letters.eos_id)


def test_input_validation(engine):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        prompt_lookup_decode(engine, [1, 2], 0)
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens must be an integer >= 1, got 0"):
        prompt_lookup_decode(engine, [1, 2], 4, 0)
    with pytest.raises(ValueError, match="max_matching_ngram_size must be an integer >= 1, got 2.5"):
        prompt_lookup_decode(engine, [1, 2], 4, 3, 2.5)
    with pytest.raises(ValueError, match=r"prompt token ids must be in \[0, 8192\), got 8192"):
        prompt_lookup_decode(engine, [1, 8192], 4)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        prompt_lookup_decode(engine, [1] * 500, 50)
