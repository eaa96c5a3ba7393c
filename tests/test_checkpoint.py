"""The shipped default checkpoint: files, size, and quality on held-out code."""

from __future__ import annotations

import json
import math

import torch

from core.engine import DEFAULT_MODEL_DIR, load_default
from core.train import stdlib_root


def test_files_are_bf16_safetensors_under_16_mib():
    files = sorted(DEFAULT_MODEL_DIR.iterdir())
    assert not [f for f in files if f.suffix in {".bin", ".pt", ".pth", ".pkl"}]
    for f in files:
        assert f.stat().st_size < 16 * 2**20, f
    cfg = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert cfg["n_heads"] == 4 and cfg["max_len"] >= 256


def test_shipped_model_beats_its_ngram_baselines_on_held_out_code():
    """timeit.py is in the validation split (path hash); every head must beat its skip-bigram."""
    log = json.loads((DEFAULT_MODEL_DIR / "train_log.json").read_text())
    baselines = log["baseline_nats_per_token"]
    engine = load_default()
    assert engine.model.num_parameters() <= 16_000_000
    text = (stdlib_root() / "timeit.py").read_text()
    ids = [engine.bos_id, *engine.encode(text)]
    nll = torch.zeros(engine.n_heads, dtype=torch.float64)
    count = torch.zeros(engine.n_heads)
    for start in range(0, len(ids) - 1, 511):  # non-overlapping windows of the model's context
        x = torch.tensor([ids[start : start + 512]])
        with torch.inference_mode():
            lp = torch.log_softmax(engine.model(x).logits[0].float(), dim=-1)  # [T, heads, V]
        for j in range(engine.n_heads):
            k = j + 1
            nll[j] -= lp[: x.shape[1] - k, j].gather(1, x[0, k:, None]).sum().item()
            count[j] += max(x.shape[1] - k, 0)
    nats = (nll / count).tolist()
    for j, (model_nats, base) in enumerate(zip(nats, baselines)):
        assert model_nats < base - 1.0, (j + 1, model_nats, base)
    head1_bpb = nll[0].item() / (math.log(2) * len(text.encode()))
    assert head1_bpb < 1.3, head1_bpb


def test_shipped_model_continues_code_sensibly():
    engine = load_default()
    s = engine.start(engine.encode("class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self"))
    out = []
    for _ in range(4):
        t = int(torch.argmax(s.last[0]))
        out.append(t)
        s.advance([t])
    assert engine.decode(out).startswith(".y = y")
