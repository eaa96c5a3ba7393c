"""core.hf and core.gguf_cache: local Hugging Face models and GGUF files as NextTokenModels.

Small randomly initialised GPT-2 and Llama models are saved with ``save_pretrained`` into a temp
dir and loaded back through ``load_local_model``; their decodes are checked token for token against
``generate``. SmolLM2-135M-Instruct (the shipped real model) is checked the same way on a few short
prompts; its first load on a machine de-quantizes the GGUF into the user cache (tens of seconds).
"""

from __future__ import annotations

import json
import shutil
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers.processors import TemplateProcessing
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import core.hf as hf
from core.engine import DEFAULT_MODEL_DIR
from core.gguf_cache import CACHE_ENV, cached_dir, dequantized_dir
from core.hf import SMOLLM2, HFEngine, ModelTooLargeError, check_memory, load_local_model, load_smollm2
from core.protocol import NextTokenModel, start_session
from core.train import load_tokenizer

PROMPTS = ["def add(a, b):\n    return", "The quick brown fox", "import numpy as np\n"]


def _tokenizer(bos_by_default: bool):
    tok = load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json")
    if bos_by_default:  # like Llama's tokenizers: BOS in front of every encoded text
        tok.backend_tokenizer.post_processor = TemplateProcessing(
            single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", tok.bos_token_id)]
        )
    return tok


def _save_gpt2(path):
    torch.manual_seed(0)
    tok = _tokenizer(bos_by_default=False)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                     bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _save_llama(path):
    torch.manual_seed(1)
    tok = _tokenizer(bos_by_default=True)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=0, initializer_range=0.2, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return _save_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return _save_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def gpt2(gpt2_dir) -> HFEngine:
    return load_local_model(str(gpt2_dir), device="cpu")


@pytest.fixture(scope="session")
def llama(llama_dir) -> HFEngine:
    return load_local_model(llama_dir, device="cpu")


@pytest.fixture(scope="session")
def smollm2() -> HFEngine:
    """Uses the real cache directory, so a machine de-quantizes the GGUF once across test runs."""
    return load_smollm2()


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test: the models here step with small ops, and with two threads on a
    shared 2-core machine each op waits at a barrier for a time slice (measured 4-8x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def generate_tokens(engine: HFEngine, prompt: list[int], steps: int, num_beams: int = 1) -> list[int]:
    """New tokens from ``model.generate`` on the context the engine reads for ``prompt``, with EOS off:
    our decoders never stop at EOS, so every run has exactly ``steps`` tokens (see ``core.decoders.Beam``)."""
    ids = torch.as_tensor([engine.context_ids(prompt)])
    config = GenerationConfig(do_sample=False, num_beams=num_beams, max_new_tokens=steps,
                              eos_token_id=None, pad_token_id=None, bos_token_id=None)
    out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return out[0, ids.shape[1]:].tolist()


def greedy_by_logprobs(model, prompt: list[int], steps: int) -> list[int]:
    out: list[int] = []
    for _ in range(steps):
        out.append(int(model.logprobs([prompt + out])[0].argmax()))
    return out


def greedy_by_session(model, prompt: list[int], steps: int, batch: int = 1) -> list[int]:
    session = start_session(model, prompt, batch=batch, steps=steps)
    out: list[int] = []
    for _ in range(steps):
        out.append(int(session.last[-1].argmax()))
        session.advance([out[-1]] * batch)
    return out


def full_forward_logprobs(engine: HFEngine, prefix: list[int]) -> torch.Tensor:
    """The reference: one uncached forward pass over the whole context."""
    with torch.inference_mode():
        logits = engine.model(torch.as_tensor([engine.context_ids(prefix)])).logits
    return torch.log_softmax(logits[0, -1].float(), dim=-1)


# ---- tiny random models against generate --------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_matches_generate(name, request):
    engine = request.getfixturevalue(name)
    for text in PROMPTS:
        prompt = engine.encode(text)
        expected = generate_tokens(engine, prompt, 12)
        assert len(expected) == 12
        assert greedy_by_logprobs(engine, prompt, 12) == expected
        assert greedy_by_session(engine, prompt, 12) == expected
        assert greedy_by_session(engine, prompt, 12, batch=3) == expected


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_decoders_match_generate(name, request):
    decoders = pytest.importorskip("core.decoders")
    engine = request.getfixturevalue(name)
    for text in PROMPTS[:2]:
        prompt = engine.encode(text)
        assert list(decoders.Greedy().decode(engine, prompt, 10).tokens) == generate_tokens(engine, prompt, 10)
        for width in (2, 4):
            beam = decoders.Beam(width).decode(engine, prompt, 10).tokens
            assert list(beam) == generate_tokens(engine, prompt, 10, num_beams=width), (text, width)


def test_protocol_and_interface(gpt2, llama):
    for engine in (gpt2, llama):
        assert isinstance(engine, NextTokenModel)
        assert engine.n_heads == 1 and engine.vocab_size == len(engine.tokenizer) == 8192
        assert engine.eos_id == engine.bos_id == 0
        assert engine.max_len == 64
        assert engine.decode(engine.encode("x = 1")) == "x = 1"
        assert engine.token_text(engine.encode(" return")[0]) == " return"
    assert gpt2.start_ids == [] and gpt2.max_tokens == 64
    assert llama.start_ids == [0] and llama.max_tokens == 63
    assert gpt2.name.startswith("gpt2") and llama.name.startswith("llama")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_batched_logprobs_equal_full_forward(name, request):
    engine = request.getfixturevalue(name)
    a, b = engine.encode(PROMPTS[0]), engine.encode(PROMPTS[1])
    batches = [
        [a, a[:4], a[:4] + [7], a + [9, 10, 11]],  # shared prefix, suffixes of several lengths, one empty
        [a[:3], b],  # nothing shared (GPT-2) or only BOS (Llama)
        [a[:6]],  # a strict prefix of what the cache holds
        [b + [1], b + [2], b + [3]],
        [[], [5], a[:2]],  # the empty prefix
    ]
    for prefixes in batches:
        lp = engine.logprobs(prefixes)
        assert lp.shape == (len(prefixes), engine.vocab_size) and lp.dtype == torch.float32
        for row, p in zip(lp, prefixes):
            torch.testing.assert_close(row, full_forward_logprobs(engine, p), atol=2e-5, rtol=0)
    assert engine.logprobs([]).shape == (0, engine.vocab_size)
    torch.testing.assert_close(engine.head_logprobs(a), engine.logprobs([a]))


def test_session_feed_select_rollback_heads(gpt2):
    prompt = gpt2.encode(PROMPTS[0])
    session = gpt2.start(prompt, batch=2, steps=8)
    assert session.length == len(prompt) and session.batch == 2
    lp = session.feed(torch.tensor([[5, 6, 7], [8, 9, 10]]))
    assert lp.shape == (2, 3, gpt2.vocab_size)
    for row, tail in enumerate(([5, 6, 7], [8, 9, 10])):
        for t in range(3):
            torch.testing.assert_close(lp[row, t], full_forward_logprobs(gpt2, prompt + tail[: t + 1]), atol=2e-5,
                                       rtol=0)
    swapped = session.select([1, 1, 0])
    assert swapped.batch == 3 and swapped.tokens(0) == prompt + [8, 9, 10] and swapped.tokens(2) == prompt + [5, 6, 7]
    after = swapped.advance([1, 2, 3])
    torch.testing.assert_close(after[0], full_forward_logprobs(gpt2, prompt + [8, 9, 10, 1]), atol=2e-5, rtol=0)
    torch.testing.assert_close(session.last, lp[:, -1])  # select copied the cache: the source is unchanged
    heads = session.heads(len(prompt))
    assert heads.shape == (2, 1, gpt2.vocab_size)
    torch.testing.assert_close(heads[1, 0], full_forward_logprobs(gpt2, prompt + [8]), atol=2e-5, rtol=0)
    session.rollback(len(prompt) + 1)
    assert session.length == len(prompt) + 1
    again = session.advance([4, 4])
    torch.testing.assert_close(again[0], full_forward_logprobs(gpt2, prompt + [5, 4]), atol=2e-5, rtol=0)
    torch.testing.assert_close(session.heads()[:, 0], again)
    session.rollback(0)
    assert session.length == 0
    torch.testing.assert_close(session.advance([3, 3])[1], full_forward_logprobs(gpt2, [3]), atol=2e-5, rtol=0)


def test_empty_prompt_starts_from_bos(gpt2, llama):
    # GPT-2's tokenizer adds nothing: the empty prefix is read as BOS, as generate() does with no input
    torch.testing.assert_close(gpt2.logprobs([[]])[0], full_forward_logprobs(gpt2, [gpt2.bos_id]), atol=2e-5, rtol=0)
    first = int(gpt2.logprobs([[]])[0].argmax())
    assert first == generate_tokens(gpt2, [], 1)[0]
    # ... and not kept in front of later tokens: one function of the tokens, sessions agree
    assert greedy_by_session(gpt2, [], 6) == greedy_by_logprobs(gpt2, [], 6)
    session = gpt2.start([], steps=2)
    assert session.length == 0
    torch.testing.assert_close(session.advance([first])[0], gpt2.logprobs([[first]])[0])
    # Llama-style: BOS is always in front, so the empty prompt is just BOS and greedy equals generate
    assert greedy_by_session(llama, [], 8) == greedy_by_logprobs(llama, [], 8) == generate_tokens(llama, [], 8)


def test_empty_prompt_without_bos_or_eos_is_refused(gpt2):
    engine = HFEngine(gpt2.model, gpt2.tokenizer, name="no-specials", device="cpu")
    engine.bos_id = engine.eos_id = engine._empty_start = None
    with pytest.raises(ValueError, match="prompt is empty.*no BOS or EOS"):
        engine.logprobs([[]])
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.start([])
    assert engine.logprobs([[5]]).shape == (1, engine.vocab_size)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_concurrent_logprobs_give_the_bits_each_gives_alone(name, request):
    """The determinism contract (core.compute): the same request, the same bits, whatever other threads
    do with the shared prefix cache meanwhile."""
    engine = request.getfixturevalue(name)
    long = engine.encode(" ".join(PROMPTS) * 2)[:40]
    prefixes = [engine.encode(t) for t in PROMPTS] + [long[:k] for k in (2, 17, 33, 40)]
    expected = [engine.logprobs([p, prefixes[(i + 1) % len(prefixes)]]) for i, p in enumerate(prefixes)]
    results: dict[int, list[torch.Tensor]] = {}

    def work(i):
        results[i] = [engine.logprobs([prefixes[i], prefixes[(i + 1) % len(prefixes)]]) for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prefixes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, runs in results.items():
        assert all(torch.equal(lp, expected[i]) for lp in runs), i


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_prefix_cache_hit_and_a_miss_give_the_same_bits(name, request):
    engine = request.getfixturevalue(name)
    prompt = engine.encode(" ".join(PROMPTS) * 2)[:45]  # two whole blocks and a bit (blocks of 16)

    def everything():
        session = engine.start(prompt, batch=2, steps=3)
        session.advance([1, 2])
        return [engine.logprobs([prompt[:20], prompt[:33], prompt, prompt + [7]]), engine.logprobs([prompt]),
                session.last, engine.start(prompt[:38]).feed([4, 5])]

    engine.prefix_cache.clear()
    cold = everything()
    misses = engine.prefix_cache.misses
    warm = everything()
    assert engine.prefix_cache.misses == misses  # every block came from the cache
    engine.logprobs([prompt[:18] + [3] * 20])  # the cached path diverges in the second block
    diverged = everything()
    for a, b, c in zip(cold, warm, diverged):
        assert torch.equal(a, b) and torch.equal(a, c)
    for row, p in zip(cold[0], [prompt[:20], prompt[:33], prompt, prompt + [7]]):  # and they are right
        torch.testing.assert_close(row, full_forward_logprobs(engine, p), atol=2e-5, rtol=0)


def test_engine_bad_inputs(gpt2):
    prompt = gpt2.encode("x")
    with pytest.raises(ValueError, match="batch must be >= 1"):
        gpt2.start(prompt, batch=0)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        gpt2.start(prompt, steps=-1)
    with pytest.raises(ValueError, match="exceeds the model's context of 64 tokens"):
        gpt2.start(prompt, steps=64)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        gpt2.logprobs([[1] * 65])
    with pytest.raises(ValueError, match=r"token id 8192 is outside this model's vocabulary \[0, 8192\)"):
        gpt2.logprobs([[1, 8192]])
    with pytest.raises(ValueError, match="token id -1"):
        gpt2.start([-1])
    with pytest.raises(ValueError, match="text must be a str"):
        gpt2.encode(None)
    session = gpt2.start(prompt, batch=2, steps=4)
    with pytest.raises(ValueError, match=r"advance needs one token per row \(2\)"):
        session.advance([1])
    with pytest.raises(ValueError, match=r"feed needs tokens of shape \[2, T>=1\]"):
        session.feed(torch.ones(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        session.advance([1, 10**6])
    with pytest.raises(ValueError, match=r"length must be in \[0, 1\]"):
        session.rollback(2)
    with pytest.raises(ValueError, match=r"index must be in \[0, 1\)"):
        session.heads(1)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        gpt2.start(prompt).feed([1] * 64)


# ---- loading: bad inputs ------------------------------------------------------------------------
def _drop(*names):
    def edit(d):
        for name in names:
            (d / name).unlink()
    return edit


def _write(name, text):
    def edit(d):
        (d / name).write_text(text)
    return edit


def _pickle_only(d):
    (d / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, d / "pytorch_model.bin")


def _truncate_weights(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _foreign_weights(d):
    _save_llama(d / "other")
    shutil.copy(d / "other" / "model.safetensors", d / "model.safetensors")


BAD_DIRECTORIES = {
    "no config": (_drop("config.json"), "has no config.json; expected a directory saved by transformers"),
    "pickle only": (_pickle_only, r"only pickle weights \(pytorch_model.bin\).*only \*.safetensors"),
    "no weights": (_drop("model.safetensors"), r"has no weights; expected \*.safetensors"),
    "no tokenizer": (_drop("tokenizer.json", "tokenizer_config.json"),
                     "has no tokenizer; expected one of tokenizer.json"),
    "corrupt safetensors": (_truncate_weights, "model.safetensors is damaged or not safetensors"),
    "foreign weights": (_foreign_weights, "do not match its config.json"),
    "bad json": (_write("config.json", "{not json"), "config.json is not valid JSON"),
    "json list": (_write("config.json", "[1, 2]"), "config.json must hold a JSON object, got list"),
    "unknown architecture": (_write("config.json", json.dumps({"model_type": "foo"})),
                             r"model_type 'foo' .* is not a causal LM .*allowed model types: .*gpt2"),
    "remote code": (_write("config.json", json.dumps({"model_type": "foo", "auto_map": {"AutoConfig": "x.C"}})),
                    "needs its own Python code .*trust_remote_code is never used"),
    "not a causal LM": (_write("config.json", json.dumps({"model_type": "t5"})), "model_type 't5'"),
}


@pytest.mark.parametrize("case", sorted(BAD_DIRECTORIES))
def test_load_local_model_rejects_bad_directories(case, gpt2_dir, tmp_path):
    edit, message = BAD_DIRECTORIES[case]
    d = shutil.copytree(gpt2_dir, tmp_path / "model")
    edit(d)
    with pytest.raises(ValueError, match=message):
        load_local_model(d)


def test_load_local_model_rejects_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist; expected a directory saved by transformers .* or a .gguf"):
        load_local_model(tmp_path / "nope")
    (tmp_path / "weights.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"is a \.txt file; expected a directory .* or a \.gguf file"):
        load_local_model(tmp_path / "weights.txt")
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="broken.gguf is not a readable GGUF file"):
        load_local_model(tmp_path / "broken.gguf")
    for bad in (None, "", "  ", 3):
        with pytest.raises(ValueError, match="model path must be a non-empty path"):
            load_local_model(bad)


def test_memory_warning(gpt2_dir, monkeypatch):
    assert check_memory(gpt2_dir) is None  # ~0.3M weights
    monkeypatch.setattr(hf, "_available_memory", lambda: 1_000_000)
    warning = check_memory(gpt2_dir)
    assert warning and "in float32, but only 0.0 GB of memory is available" in warning
    with pytest.raises(ModelTooLargeError, match="pass allow_large=True to load it anyway"):
        load_local_model(gpt2_dir)
    assert load_local_model(gpt2_dir, allow_large=True, device="cpu").vocab_size == 8192
    monkeypatch.setattr(hf, "_available_memory", lambda: None)  # unknown: no warning
    assert check_memory(gpt2_dir) is None


def _tiny_gguf(path):
    """A GGUF file with one small tensor and no tokenizer: readable, but not a model transformers loads."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_cache_location_space_check_and_unloadable_file(monkeypatch, tmp_path):
    gguf_file = _tiny_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    target = cached_dir(gguf_file)
    assert target.parent == tmp_path / "cache" and target.name.startswith("tiny-")
    with pytest.raises(ValueError, match="cannot load the GGUF file .*GGUF architectures it reads: .*llama"):
        load_local_model(gguf_file)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written left behind
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=1, used=0, free=1))
    with pytest.raises(OSError, match=f"needs about 0.00 GB but only 0.00 GB is free .*; set {CACHE_ENV}"):
        dequantized_dir(gguf_file)


# ---- SmolLM2-135M-Instruct ----------------------------------------------------------------------
SMOL_PROMPTS = ["The capital of France is", "def fibonacci(n):\n", "Once upon a time"]


def test_smollm2_is_a_real_model_from_the_cache(smollm2):
    assert SMOLLM2.description == "real pretrained English + code model, single head"
    assert sum(p.numel() for p in smollm2.model.parameters()) == SMOLLM2.n_params
    assert smollm2.name == SMOLLM2.name and smollm2.n_heads == 1 and smollm2.vocab_size == 49152
    assert smollm2.start_ids == [] and smollm2.max_len == 8192
    assert smollm2.eos_id == 2 and smollm2.token_text(2) == "<|im_end|>"
    cached = cached_dir(hf.smollm2_path())
    assert (cached / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((cached / "config.json").read_text())
    assert load_smollm2() is smollm2
    paris = greedy_by_session(smollm2, smollm2.encode("The capital of France is"), 2)
    assert smollm2.decode(paris) == " Paris."


def test_smollm2_prefix_cache_hit_and_miss_give_the_same_bits(smollm2):
    prompt = smollm2.encode("Once upon a time, in a small village at the edge of a forest, there lived an old "
                            "clockmaker who")
    assert len(prompt) > 16
    smollm2.prefix_cache.clear()
    cold = smollm2.logprobs([prompt, prompt[:10] + [11]])
    smollm2.logprobs([prompt[:17] + [5, 6]])
    assert torch.equal(smollm2.logprobs([prompt, prompt[:10] + [11]]), cold)
    torch.testing.assert_close(cold[0], full_forward_logprobs(smollm2, prompt), atol=1e-4, rtol=0)


def test_smollm2_greedy_matches_generate(smollm2):
    for text in SMOL_PROMPTS:
        prompt = smollm2.encode(text)
        assert greedy_by_logprobs(smollm2, prompt, 8) == generate_tokens(smollm2, prompt, 8), text


def test_smollm2_decoders_match_generate(smollm2):
    decoders = pytest.importorskip("core.decoders")
    for text in SMOL_PROMPTS:
        prompt = smollm2.encode(text)
        assert list(decoders.Greedy().decode(smollm2, prompt, 8).tokens) == generate_tokens(smollm2, prompt, 8)
        beam = decoders.Beam(3).decode(smollm2, prompt, 8).tokens
        assert list(beam) == generate_tokens(smollm2, prompt, 8, num_beams=3), text


def test_a_core_train_directory_loads_as_the_multi_head_engine():
    from core.engine import DEFAULT_MODEL_DIR, Engine

    engine = load_local_model(str(DEFAULT_MODEL_DIR))
    assert isinstance(engine, Engine) and engine.n_heads == 4
