"""The training script end to end on a tiny corpus, on CPU, in seconds."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core import train
from core.engine import load_engine


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rnd = random.Random(0)
    names = ["alpha", "beta", "gamma", "delta", "value", "items", "result", "index"]
    for i in range(300):
        a, b = rnd.sample(names, 2)
        lines = (f"    {a} = {b} + {j}\n    if {a} > {j}:\n        return {b}" for j in range(rnd.randint(3, 8)))
        body = "\n".join(lines)
        (root / f"mod_{i:03d}.py").write_text(f"def func_{i}({a}, {b}):\n{body}\n    return None\n")
    data = tmp_path_factory.mktemp("data")
    meta = train.prepare(str(root), data, vocab_size=300)
    assert meta["val"]["files"] >= 1 and meta["train"]["files"] > 100
    return data


def _cfg(**kw):
    return train.TrainConfig(d_model=32, n_trunk_layers=1, n_heads=2, n_attn_heads=4, context=32, batch_size=8,
                             lr=3e-3, warmup_steps=5, eval_every=10, eval_windows=8, **kw)


def fit(data_dir, out, **kw):
    return train.fit(data_dir, out, _cfg(**kw), "cpu", log=lambda *_: None)


def test_tokenizer_roundtrips_any_text(data_dir):
    tok = train.load_tokenizer(data_dir / "tokenizer.json")
    for text in ["def f(x):\n    return x", "ünïcödé ✓ 🙂 \t\x00", "   leading spaces", ""]:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_training_lowers_validation_loss_and_writes_everything(data_dir, tmp_path):
    report = fit(data_dir, tmp_path, max_steps=40)
    first, last = report["history"][0]["val_loss"], report["val_nats_per_token"]
    assert last[0] < first[0] - 0.3  # head 1 learns in 40 steps
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.json", "README.md"):
        assert (tmp_path / name).exists(), name
    assert all(t.dtype == torch.bfloat16 for t in load_file(tmp_path / "model.safetensors").values())
    card = (tmp_path / "README.md").read_text()
    assert "bits/byte" in card and "| 2 | t+2 |" in card
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["steps"] == 40 and len(log["val_bits_per_byte"]) == 2
    engine = load_engine(tmp_path, device="cpu")
    assert engine.n_heads == 2 and engine.logprobs([[1, 2]]).shape == (1, engine.vocab_size)


def test_resume_continues_exactly(data_dir, tmp_path):
    whole = fit(data_dir, tmp_path / "whole", max_steps=20)
    assert train.fit(data_dir, tmp_path / "split", _cfg(max_steps=20), "cpu", log=lambda *_: None,
                     stop_at_step=10) is None
    resumed = train.fit(data_dir, tmp_path / "split",
                        _cfg(max_steps=20),
                        "cpu", resume=True, log=lambda *_: None)
    assert resumed["steps"] == 20
    np.testing.assert_allclose(resumed["val_nats_per_token"], whole["val_nats_per_token"], rtol=1e-5)


def test_skip_bigram_baseline_on_a_deterministic_stream():
    stream = np.array([1, 2, 3] * 200, dtype=np.uint16)
    # a perfectly periodic stream: counts make the next token (and the one k ahead) nearly certain
    assert train.skip_bigram_nats(stream, stream[:90], vocab=5, k=1) < 0.02
    assert train.skip_bigram_nats(stream, stream[:90], vocab=5, k=2) < 0.02


def test_bad_corpus_spec_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not 'stdlib'"):
        train.corpus_files(str(tmp_path / "missing"))
