"""core.remote against a real llama.cpp server (llama-cpp-python 0.3.36 serving the SmolLM2-135M Q4_1 GGUF
on 127.0.0.1), and the HTTP client against small stub servers (dead, slow, flaky, key-checking)."""

from __future__ import annotations

import math
import os
import time

import pytest
import requests
import torch
from server_fixture import free_port, llama_server, remote_smollm2, stub_server  # noqa: F401

from core.decoders import Greedy, sample_many
from core.remote import (
    ClientSettings,
    RemoteError,
    certify_greedy,
    connect,
    gbnf_literal,
    normalise_base_url,
    row_seeds,
)

STEPS = 8
# In-process SmolLM2 (de-quantized float32) and the server (Q4_1 weights, llama.cpp's quantised matmuls) agree
# on these greedy continuations token for token.
AGREE = ["Once upon a time", "The three primary colors are", "Water boils at",
         "The largest planet in the solar system is", "The chemical symbol for gold is", "Machine learning is"]
# ... and differ here, each time at a near-tie (see test_greedy_differences_are_quantisation_near_ties).
DIFFER = ["The capital of France is", "def fibonacci(n):\n    ", "import numpy as np\n"]
QUANTISATION_NATS = 0.3  # |server - in-process| log-prob of any token with p >= 0.05 (measured max 0.27)
RAW = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0}


@pytest.fixture(scope="module")
def remote(remote_smollm2):  # noqa: F811
    return remote_smollm2


@pytest.fixture(scope="module")
def smollm2():
    from core.hf import load_smollm2

    return load_smollm2()


def server_generation(base: str, prompt: str, max_tokens: int, k: int = 20, **extra) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "logprobs": k, **RAW, **extra}
    return requests.post(f"{base}/v1/completions", json=body, timeout=60).json()["choices"][0]


# ---- capabilities -----------------------------------------------------------------------------------


def test_connect_finds_the_llama_cpp_python_quirks(remote):
    caps = remote.caps
    assert caps.flavour == "llama-cpp-python"
    assert (remote.vocab_size, remote.eos_id) == (49152, 2)  # from the GGUF header (the model id is its path)
    assert not caps.token_prompts  # text prompts only
    assert not caps.batch_prompts  # one prompt per request
    assert not caps.n_choices  # n > 1 returns a single choice
    assert not caps.token_id_keys  # top_logprobs keyed by token strings
    assert caps.echo == "shifted" and not caps.exact_scores
    assert caps.grammar and caps.top_logprobs == 20 and not caps.full_rows
    text = "\n".join(caps.lines())
    assert "shifted by one" in text and "returned 1 choice" in text
    assert "exact sequence scores: unavailable" in text


def test_rows_are_the_servers_top_k_plus_an_explicit_rest(remote, llama_server):  # noqa: F811
    prompt = remote.encode("The capital of France is")
    lp = remote.logprobs([prompt])[0]
    known = torch.isfinite(lp)
    assert int(known.sum()) == 20
    rest = float(remote.rest_mass([prompt])[0])
    assert rest == pytest.approx(1 - float(lp[known].double().exp().sum()), abs=1e-6)  # never renormalised
    assert 0.01 < rest < 0.2
    top = server_generation(llama_server, "The capital of France is", 1)["logprobs"]["top_logprobs"][0]
    shown = {remote.token_text(int(i)): float(lp[i]) for i in torch.nonzero(known).squeeze(1)}
    assert shown == pytest.approx(top, abs=1e-6)  # the server's own generation log-probs, keyed back by id
    bound = float(remote.unknown_bound([prompt])[0])
    assert bound == pytest.approx(min(rest, math.exp(min(top.values()))))  # an unlisted token <= the 20th


def test_tokenizer_round_trip_and_token_text(remote, smollm2):
    text = "def f(x):\n    return x ** 2  # ünïcödé"
    ids = remote.encode(text)
    assert ids == smollm2.encode(text)
    assert remote.decode(ids) == text
    assert remote.token_text(ids[0]) == "def"
    assert remote.token_text(remote.eos_id) == "⟨EOS⟩"  # a special token detokenizes to "" there


# ---- greedy: server vs in-process ---------------------------------------------------------------------


@pytest.mark.parametrize("prompt", AGREE)
def test_greedy_through_the_server_equals_in_process_greedy(remote, smollm2, prompt):
    ids = smollm2.encode(prompt)
    assert remote.encode(prompt) == ids
    server = Greedy().decode(remote, ids, STEPS)
    local = Greedy().decode(smollm2, ids, STEPS)
    assert server.tokens == local.tokens
    assert certify_greedy(remote, ids, server.tokens).exact  # every choice beats any unlisted token
    for a, b in zip(server.step_logprobs, local.step_logprobs):
        assert a == pytest.approx(b, abs=QUANTISATION_NATS)


@pytest.mark.parametrize("prompt", DIFFER)
def test_greedy_differences_are_quantisation_near_ties(remote, smollm2, prompt):
    """Where greedy differs, the first differing step is a near-tie: the in-process margin between its own
    choice and the server's is below the quantisation error, which bounds |server - in-process| for every
    probable token on every row up to there; each side's choice is the other's runner-up."""
    ids = smollm2.encode(prompt)
    server = Greedy().decode(remote, ids, STEPS).tokens
    local = Greedy().decode(smollm2, ids, STEPS).tokens
    t = next(i for i in range(STEPS) if server[i] != local[i])
    rows = [ids + list(local[:i]) for i in range(t + 1)]
    lh, lr = smollm2.logprobs(rows).double(), remote.logprobs(rows).double()
    probable = torch.isfinite(lr) & (lh.exp() >= 0.05)
    assert (lh - lr)[probable].abs().max() < QUANTISATION_NATS
    a, b = local[t], server[t]
    assert 0 <= float(lh[t, a] - lh[t, b]) < QUANTISATION_NATS  # in-process prefers a, by less than the error
    assert 0 <= float(lr[t, b] - lr[t, a]) < QUANTISATION_NATS  # the server prefers b, by less than the error
    assert set(torch.topk(lh[t], 2).indices.tolist()) == {a, b} == set(torch.topk(lr[t], 2).indices.tolist())


def test_greedy_certificate_fails_where_an_unlisted_token_could_win(remote):
    """After a finished chat answer the model's favourite is EOS (p = 0.83 in process), which llama-cpp-python
    reports as "" (unresolvable): the row's rest mass exceeds every listed token, so greedy over the listed
    tokens is not certified."""
    prompt = remote.encode("<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\nYes.")
    path = Greedy().decode(remote, prompt, 1)
    cert = certify_greedy(remote, prompt, path.tokens)
    row = remote.rows([prompt])[0]
    assert remote.eos_id not in row.ids and row.rest > math.exp(row.logprobs[0])
    assert not cert.exact and "approximate: at step 0" in cert.text


# ---- text prompts: non-canonical prefixes, EOS ------------------------------------------------------------


def test_a_non_canonical_prefix_is_reached_by_forced_generation(remote, smollm2):
    """"\\n" "\\n" re-tokenizes as "\\n\\n": the row after it comes from forcing the two tokens (grammar + bias)
    and equals, up to quantisation, the in-process row after the same ids."""
    prompt = remote.encode("The capital of France is Paris.")
    nl, two = remote.encode("\n")[0], remote.encode("2")[0]
    assert remote.encode("\n\n") != [nl, nl]
    prefixes = [prompt + [nl, nl], prompt + [nl, nl, two]]
    lr, lh = remote.logprobs(prefixes).double(), smollm2.logprobs(prefixes).double()
    for r, h in zip(lr, lh):
        probable = torch.isfinite(r) & (h.exp() >= 0.05)
        assert probable.any() and (r - h)[probable].abs().max() < QUANTISATION_NATS
        assert int(r.argmax()) == int(h.argmax())


def test_a_prefix_ending_in_generated_eos_continues_with_eos(remote):
    prompt = remote.encode("Hi")
    row = remote.rows([prompt + [remote.eos_id]])[0]
    assert (row.ids, row.logprobs, row.rest) == ((remote.eos_id,), (0.0,), 0.0)


def test_an_empty_prompt_is_refused_with_a_message(remote):
    with pytest.raises(ValueError, match="non-empty prompt"):
        remote.logprobs([[]])


# ---- sampling on the server ---------------------------------------------------------------------------


def test_server_samples_are_seeded_and_unbiased(remote):
    """48 single-token draws at temperature 1: the same seed gives the same rows (row i's seed does not depend
    on n); the frequency of " Paris" is within a 99.9% binomial interval of its probability (the server's own
    sampler, not the truncated row)."""
    prompt = remote.encode("The capital of France is")
    first = sample_many(remote, prompt, 1, 48, seed=11)
    again = sample_many(remote, prompt, 2, 6, seed=11)
    assert torch.equal(first.tokens[:6], again.tokens[:, :1])
    assert torch.equal(first.step_logprobs[:6], again.step_logprobs[:, :1])
    other = sample_many(remote, prompt, 1, 6, seed=12)
    assert not torch.equal(first.tokens[:6], other.tokens)
    paris = remote.encode(" Paris")[0]
    p = math.exp(float(remote.logprobs([prompt])[0, paris]))
    hits = int((first.tokens[:, 0] == paris).sum())
    half = 3.29 * math.sqrt(48 * p * (1 - p))
    assert abs(hits - 48 * p) <= half, (hits, 48 * p)
    row = remote.rows([prompt])[0]
    row = dict(zip(row.ids, row.logprobs))  # every sampled token's log-prob is the server's exact value
    for tok, lp in zip(first.tokens[:, 0].tolist(), first.step_logprobs[:, 0].tolist()):
        if tok in row:
            assert lp == pytest.approx(row[tok], abs=1e-6)


def test_row_seeds_are_fixed_and_distinct():
    assert row_seeds(5, 4) == row_seeds(5, 4)
    assert len(set(row_seeds(5, 64))) == 64 and all(0 <= s < 2**31 for s in row_seeds(5, 64))


def test_gbnf_literal_escapes_everything_but_letters_digits_and_space():
    assert gbnf_literal('a "b"\n\\é🦄') == '"a \\x22b\\x22\\x0A\\x5C\\u00E9\\U0001F984"'


# ---- the client ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "match"), [
    ("", "must be an http:// or https:// URL"),
    ("ftp://host", "must be an http:// or https:// URL with a host"),
    ("http://user:secret@host:8000", "must not contain credentials"),
    ("http://host:8000/v1?key=abc", "must not have a query"),
    ("http://host:99999", "invalid port"),
])
def test_bad_base_urls(url, match):
    with pytest.raises(ValueError, match=match):
        normalise_base_url(url)


def test_base_url_loses_its_v1_suffix():
    assert normalise_base_url(" http://h:8000/v1/ ") == "http://h:8000"
    assert normalise_base_url("https://h/proxy/v1") == "https://h/proxy"


def test_a_dead_server_is_a_quick_clear_error():
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(RemoteError, match=rf"cannot reach the server at http://127.0.0.1:{port} .* after 2 attempts"):
        connect(f"http://127.0.0.1:{port}", settings=ClientSettings(retries=1, backoff=0.05))
    assert time.monotonic() - start < 10


def test_a_slow_server_times_out_with_a_message():
    def slow(method, path, headers, body):
        time.sleep(1.5)
        return 200, {"data": []}

    with stub_server(slow) as base, pytest.raises(RemoteError, match=r"did not answer /v1/models within 0\.3 s"):
        connect(base, settings=ClientSettings(read_timeout=0.3))


def test_busy_answers_are_retried_with_backoff():
    calls = []

    def flaky(method, path, headers, body):
        calls.append(path)
        return (503, {"error": "busy"}) if len(calls) <= 2 else (200, {"object": "list", "data": []})

    with stub_server(flaky) as base, pytest.raises(RemoteError, match="lists no models"):
        connect(base, settings=ClientSettings(retries=2, backoff=0.01))
    assert calls == ["/v1/models"] * 3


def test_the_api_key_comes_from_the_environment_and_goes_nowhere_else(monkeypatch):
    seen = []

    def check(method, path, headers, body):
        seen.append(headers.get("Authorization"))
        return 401, {"error": {"message": "Invalid API key"}}

    monkeypatch.setenv("EXPLORER_TEST_KEY", "s3cret-value")
    with stub_server(check) as base:
        with pytest.raises(RemoteError, match=r"HTTP 401 \(a missing or wrong API key: set api_key_env\)") as err:
            connect(base, api_key_env="EXPLORER_TEST_KEY")
        assert "s3cret" not in str(err.value)
        with pytest.raises(ValueError, match="EXPLORER_UNSET_KEY .* is not set"):
            connect(base, api_key_env="EXPLORER_UNSET_KEY")
        with pytest.raises(ValueError, match="api_key_env must name an environment variable"):
            connect(base, api_key_env="not a name")
    assert seen == ["Bearer s3cret-value"]
    assert "EXPLORER_TEST_KEY" in os.environ


def test_an_unknown_model_lists_the_served_ones(llama_server):  # noqa: F811
    with pytest.raises(RemoteError, match=r"model 'nope' is not served at .*; it serves: .*SmolLM2"):
        connect(llama_server, model="nope")


def test_repr_shows_no_key(remote, monkeypatch):
    assert repr(remote).startswith("RemoteModel('http://127.0.0.1:") and "Bearer" not in repr(remote)
