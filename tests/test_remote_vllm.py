"""core.remote against vLLM's wire format: an emulator over the tiny random model (tests/fake_vllm.py) for
the vLLM-only fields (prompt_logprobs, logprobs=-1, token-id keys, several prompts per request, n), and
responses recorded in tests/data/vllm_completion.json, parsed exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_engine
from fake_vllm import FakeVLLM, LetterModel
from server_fixture import stub_server

from core.decoders import Greedy, sample_many
from core.remote import Capabilities, RemoteError, RemoteModel, _id_entries, connect

RECORDED = Path(__file__).resolve().parent / "data" / "vllm_completion.json"
PROMPT = "def f(x):"


@pytest.fixture(scope="module")
def engine():
    return make_tiny_engine(seed=3)


@pytest.fixture(scope="module")
def whole_vocabulary(engine):
    """vLLM started with --max-logprobs -1, connected with top_logprobs=-1: whole rows."""
    fake = FakeVLLM(engine, max_logprobs=-1)
    with stub_server(fake) as base:
        yield connect(base, top_logprobs=-1), fake


@pytest.fixture(scope="module")
def capped(engine):
    """vLLM with its default --max-logprobs 20."""
    fake = FakeVLLM(engine, max_logprobs=20)
    with stub_server(fake) as base:
        yield connect(base, top_logprobs=-1, vocab_size=engine.vocab_size), fake


def test_capabilities_of_vllm(whole_vocabulary, engine):
    remote, _ = whole_vocabulary
    caps = remote.caps
    assert caps.flavour == "vllm"
    assert caps.token_prompts and caps.batch_prompts and caps.n_choices and caps.token_id_keys
    assert caps.prompt_logprobs and caps.exact_scores
    assert caps.top_logprobs == -1 and caps.full_rows
    assert (remote.vocab_size, remote.max_tokens) == (engine.vocab_size, engine.max_tokens)  # from the full probe


def test_whole_rows_equal_the_models_own(whole_vocabulary, engine):
    remote, _ = whole_vocabulary
    prompt = engine.encode(PROMPT)
    prefixes = [prompt, prompt + [5], prompt + [5, 77]]
    got, want = remote.logprobs(prefixes), engine.logprobs(prefixes)
    assert torch.allclose(got, want, atol=1e-5)  # -9999 clamps only where the model is below it
    assert float(remote.rest_mass(prefixes).max()) < 1e-5
    path = Greedy().decode(remote, prompt, 6)
    assert path.tokens == Greedy().decode(engine, prompt, 6).tokens


def test_prefixes_of_one_row_go_out_as_one_chain_with_prompt_logprobs(capped, engine):
    """Every prefix of a row comes from one request (prompt_logprobs), not one request per prefix."""
    remote, fake = capped
    prompt = engine.encode("class A:")
    before = len(fake.requests)
    tokens = [11, 12, 13, 14]
    rows = remote.rows([prompt + tokens[:t] for t in range(len(tokens) + 1)])
    assert len(fake.requests) - before == 1 and fake.requests[-1][1]["prompt_logprobs"] == 20
    full = engine.logprobs([prompt + tokens[:t] for t in range(5)])
    for row, lp in zip(rows, full):
        top = torch.topk(lp, 20)
        assert set(top.indices.tolist()) <= set(row.ids)  # the top 20 (plus the prompt token itself)
        assert row.bound == pytest.approx(float(top.values[-1].exp()), rel=1e-5)


def test_exact_sequence_scores_from_prompt_logprobs(whole_vocabulary, engine):
    remote, _ = whole_vocabulary
    prompt, tokens = engine.encode(PROMPT), [9, 8000, 3, 1]  # 8000: far outside any top k
    want = engine.logprobs([prompt + tokens[:t] for t in range(4)])[torch.arange(4), torch.tensor(tokens)]
    assert remote.sequence_logprobs(prompt, tokens) == pytest.approx(want.tolist(), abs=1e-5)


def test_a_capped_server_falls_back_to_its_cap_with_a_note(capped, engine):
    remote, _ = capped
    assert remote.caps.top_logprobs == 20 and not remote.caps.full_rows
    note = "\n".join(remote.caps.notes)
    assert "refused logprobs=-1 (Requested sample logprobs of 8192, which is greater than max allowed: 20)" in note
    assert "--max-logprobs -1" in note
    prompt = engine.encode(PROMPT)
    row = remote.rows([prompt])[0]
    full = engine.logprobs([prompt])[0]
    top = torch.topk(full, 20)
    assert row.ids == tuple(top.indices.tolist())  # the true top 20, by id (token_id keys)
    assert row.rest == pytest.approx(1 - float(top.values.double().exp().sum()), abs=1e-5)
    assert row.bound == pytest.approx(float(top.values[-1].exp()), rel=1e-5)  # an unlisted token <= the 20th


def test_a_server_that_does_not_tell_its_vocabulary_needs_it(engine):
    with stub_server(FakeVLLM(engine, max_logprobs=20)) as base, pytest.raises(RemoteError, match="pass vocab_size"):
        connect(base)


def test_a_server_without_tokenize_endpoints_needs_a_local_tokenizer(engine, tmp_path):
    fake = FakeVLLM(engine, max_logprobs=20, tokenize=False)
    with stub_server(fake) as base:
        with pytest.raises(RemoteError, match=r"offers no tokenize endpoint .* name a local copy of its tokenizer"):
            connect(base, vocab_size=engine.vocab_size)
        engine.tokenizer.save_pretrained(tmp_path)
        remote = connect(base, vocab_size=engine.vocab_size, tokenizer=str(tmp_path))
        assert remote.caps.tokenize == "local"
        prompt = remote.encode(PROMPT)
        assert prompt == engine.encode(PROMPT) and remote.decode(prompt) == PROMPT
        row = remote.rows([prompt])[0]
        assert row.ids == tuple(torch.topk(engine.logprobs([prompt])[0], 20).indices.tolist())
        assert {p for p, _ in fake.requests} == {"/v1/models", "/tokenize", "/extras/tokenize", "/v1/completions"}
    with pytest.raises(ValueError, match="tokenizer must be a local directory"):
        connect(base, tokenizer=str(tmp_path / "nope"))


def test_several_prefixes_share_one_request(capped, engine):
    remote, fake = capped
    prompt = engine.encode("import os")
    before = len(fake.requests)
    remote.logprobs([prompt + [t] for t in range(40, 50)])  # no prefix of another: a batch of prompts
    assert len(fake.requests) - before == 1


def test_samples_come_from_the_server_seeded(whole_vocabulary, engine):
    remote, fake = whole_vocabulary
    prompt = engine.encode(PROMPT)
    a = sample_many(remote, prompt, 3, 4, seed=5)
    b = sample_many(remote, prompt, 3, 4, seed=5)
    assert torch.equal(a.tokens, b.tokens)
    rows = engine.logprobs([prompt + a.tokens[i, :t].tolist() for i in range(4) for t in range(3)]).double()
    want = rows.gather(1, a.tokens.reshape(-1, 1)).reshape(4, 3)
    assert torch.allclose(a.step_logprobs, want, atol=1e-5)  # the server's log-probs of its own draws
    last = fake.requests[-1][1]
    assert last["temperature"] == 1.0 and last["max_tokens"] == 3 and last["seed"] > 0
    assert last["n"] == 4  # n > 1 gives distinct choices here: one request for all four rows


def test_samples_that_end_with_eos_are_padded_with_eos():
    """vLLM reports EOS as a token of the sample (finish_reason "stop"); the row is padded with EOS, log-prob 0,
    and every prefix that ended continues with EOS for sure."""
    letters = LetterModel()
    with stub_server(FakeVLLM(letters, max_logprobs=-1)) as base:
        remote = connect(base, top_logprobs=-1, eos_id=0)  # vLLM does not list its EOS: the config names it
        drawn = sample_many(remote, [3], 6, 32, seed=1)
    ended = [i for i, row in enumerate(drawn.tokens.tolist()) if 0 in row[:-1]]
    assert ended, "no sample ended early"
    for i in ended:
        row = drawn.tokens[i].tolist()
        first = row.index(0)
        assert row[first:] == [0] * (6 - first) and drawn.step_logprobs[i, first + 1 :].eq(0).all()
        assert float(drawn.step_logprobs[i, first]) == pytest.approx(float(letters.logprobs([[3] + row[:first]])[0, 0]),
                                                                     abs=1e-5)
        assert remote.rows([[3] + row[: first + 1]])[0].ids == (0,)


# ---- recorded responses -----------------------------------------------------------------------------


def test_recorded_response_with_prompt_logprobs_and_token_id_keys():
    """A recorded vLLM answer to {"prompt": [504, 3575, 282] ("The capital of"), "max_tokens": 1,
    "temperature": 0, "logprobs": 3, "prompt_logprobs": 2, "return_tokens_as_token_ids": true}."""
    data = json.loads(RECORDED.read_text())["prompt_logprobs"]
    model = RemoteModel(None, "HuggingFaceTB/SmolLM2-135M-Instruct", caps(3, full=False), 49152, 2, 8192)
    (row,) = model._rows_of_choice(data["choices"][0])
    assert row.ids == (260, 4649, 7476)  # " the", " France", " Spain"
    assert row.logprobs == pytest.approx((-2.18449, -2.43867, -3.48545), abs=1e-5)
    assert row.rest == pytest.approx(1 - sum(math.exp(v) for v in row.logprobs))
    assert row.bound == pytest.approx(math.exp(-3.48545), rel=1e-4)  # a true top 3: unlisted tokens are below
    plp = data["choices"][0]["prompt_logprobs"]
    assert plp[0] is None  # nothing predicts the first prompt token
    assert _id_entries(plp[1]) == pytest.approx({3575: -11.53929, 29: -0.86548, 28: -2.65324}, abs=1e-5)
    assert plp[1]["3575"]["rank"] == 2923  # the prompt token itself, far outside the top 2
    assert _id_entries(plp[2]) == pytest.approx({282: -0.33760, 2240: -2.31955}, abs=1e-5)


def test_recorded_whole_vocabulary_response():
    """A recorded answer to logprobs=-1 from a server started with --max-logprobs -1 (a 16-token vocabulary),
    sampling two tokens at temperature 1, the second EOS: every id appears in both rows and nothing is left."""
    data = json.loads(RECORDED.read_text())["whole_vocabulary"]
    choice = data["choices"][0]
    assert choice["logprobs"]["tokens"] == ["token_id:1", "token_id:0"] and choice["finish_reason"] == "stop"
    model = RemoteModel(None, "tiny", caps(-1, full=True), 16, 0, 64)
    rows = model._rows_of_choice(choice, chosen_ids=[1, 0])
    assert [sorted(r.ids) for r in rows] == [list(range(16))] * 2
    assert all(r.rest < 1e-6 and r.bound == r.rest for r in rows)
    assert dict(zip(rows[1].ids, rows[1].logprobs))[0] == pytest.approx(-0.99937, abs=1e-5)  # EOS's own log-prob


def caps(k: int, full: bool) -> Capabilities:
    return Capabilities("vllm", "/tokenize", "/detokenize", token_prompts=True, batch_prompts=True, n_choices=True,
                        token_id_keys=True, top_logprobs=k, full_rows=full, echo="none", prompt_logprobs=True,
                        grammar=False)
