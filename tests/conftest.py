"""Shared fixtures: small randomly initialised models so unit tests never wait on the checkpoint."""

from __future__ import annotations

import pytest
import torch

from core.engine import DEFAULT_MODEL_DIR, Engine
from core.model import MTPConfig, MTPModel
from core.train import load_tokenizer


def make_tiny_engine(seed: int = 0, n_heads: int = 4, max_len: int = 128) -> Engine:
    """A random 4-head MTP model (d=32, 2 trunk blocks) with the shipped tokenizer, on CPU."""
    torch.manual_seed(seed)
    tok = load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json")
    cfg = MTPConfig(vocab_size=len(tok), d_model=32, n_trunk_layers=2, n_heads=n_heads, n_attn_heads=4,
                    max_len=max_len, bos_token_id=0, eos_token_id=0)
    return Engine(MTPModel(cfg).eval(), tok, name="tiny-random", device="cpu")


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    return make_tiny_engine()
