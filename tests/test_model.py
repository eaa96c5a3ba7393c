"""The multi-token-prediction model: shapes, shifted losses, caches, save/load."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.model import MTPConfig, MTPModel, mtp_losses


def tiny(n_heads=3, seed=0, max_len=64):
    torch.manual_seed(seed)
    cfg = MTPConfig(vocab_size=50, d_model=32, n_trunk_layers=2, n_heads=n_heads, n_attn_heads=4, max_len=max_len)
    return MTPModel(cfg).eval()


def test_forward_shapes_and_loss_is_sum_of_heads():
    m = tiny(n_heads=3)
    x = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(1))
    out = m(x, labels=x)
    assert out.logits.shape == (2, 10, 3, 50)
    assert out.head_losses.shape == (3,)
    assert torch.allclose(out.loss, out.head_losses.sum())


def test_head_k_loss_uses_shift_k():
    x = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    V, n = 10, 3
    logits = torch.randn(1, 8, n, V, generator=torch.Generator().manual_seed(0))
    losses = mtp_losses(logits, x)
    for j in range(n):
        k = j + 1
        manual = F.cross_entropy(logits[0, : 8 - k, j], x[0, k:])
        assert torch.allclose(losses[j], manual), k
    # a model that puts all mass on the token k ahead has (near) zero loss on head k only
    perfect = torch.full((1, 8, n, V), -1e4)
    for j in range(n):
        for t in range(8 - j - 1):
            perfect[0, t, j, x[0, t + j + 1]] = 0.0
    assert mtp_losses(perfect, x).max().item() < 1e-6
    # masked labels (-100) are ignored
    y = x.clone()
    y[0, 5:] = -100
    assert torch.isfinite(mtp_losses(logits, y)).all()


def test_cached_stepping_equals_full_forward():
    m = tiny(n_heads=4)
    x = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = m(x).logits
        cache = m.new_cache(3, 20)
        pieces = [m.extend(cache, x[:, :7])] + [m.extend(cache, x[:, t : t + 1]) for t in range(7, 20)]
        stepped = torch.cat(pieces, dim=1)
        assert torch.allclose(stepped, full[:, :, 0], atol=1e-5)
        for pos in (0, 6, 13, 19):
            assert torch.allclose(m.head_logits(cache, pos), full[:, pos], atol=1e-5)
        cache.rollback(12)  # drop positions 12.. and re-feed a different token
        other = (x[:, 12:13] + 1) % 50
        lg = m.extend(cache, other)
        ref = m(torch.cat([x[:, :12], other], dim=1)).logits[:, -1, 0]
        assert torch.allclose(lg[:, 0], ref, atol=1e-5)


def test_fork_shares_a_batch_one_base():
    m = tiny(n_heads=2)
    prompt = torch.tensor([[5, 6, 7, 8]])
    rows = torch.tensor([[1, 2, 3], [4, 4, 4]])
    with torch.no_grad():
        base = m.new_cache(1, 16)
        m.extend(base, prompt)
        fork = base.fork(m, 2, 3)
        lg = m.extend(fork, rows)
        ref = m(torch.cat([prompt.expand(2, 4), rows], dim=1)).logits
        assert torch.allclose(lg, ref[:, 4:, 0], atol=1e-5)
        assert torch.allclose(m.head_logits(fork, 6), ref[:, 6], atol=1e-5)


def test_save_load_roundtrip_identical_logits(tmp_path):
    m = tiny()
    x = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(3))
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    m2 = MTPModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(m(x).logits, m2(x).logits)


def test_bad_config_and_overlong_input_raise():
    import pytest

    with pytest.raises(ValueError, match="n_heads"):
        MTPConfig(n_heads=0)
    with pytest.raises(ValueError, match="divisible"):
        MTPConfig(d_model=30, n_attn_heads=4)
    m = tiny(max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="capacity"):
        m.new_cache(1, 9)
