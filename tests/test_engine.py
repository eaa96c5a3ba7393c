"""Engine: the NextTokenModel view of the multi-head model."""

from __future__ import annotations

import pytest
import torch

from core.protocol import NextTokenModel, start_session


def head1(engine, prefix):
    x = torch.tensor([[engine.bos_id, *prefix]])
    with torch.no_grad():
        return torch.log_softmax(engine.model(x).logits[0, -1].float(), dim=-1)  # [n_heads, V]


def test_engine_is_a_next_token_model(tiny_engine):
    assert isinstance(tiny_engine, NextTokenModel)
    assert tiny_engine.n_heads == 4 and tiny_engine.vocab_size == 8192


def test_logprobs_equal_head1_log_softmax_for_mixed_batches(tiny_engine):
    e = tiny_engine
    ids = e.encode("def foo(x):\n    return x + 1\n")
    batches = [[ids[:5], ids[:7], ids[:5] + [3, 4], [], ids], [ids[:2]], [ids, ids], [ids[:3], ids[:9]]]
    for prefixes in batches:
        out = e.logprobs(prefixes)
        assert out.shape == (len(prefixes), e.vocab_size)
        for p, row in zip(prefixes, out):
            assert torch.allclose(row, head1(e, p)[0], atol=1e-5)
        assert torch.allclose(out.exp().sum(-1), torch.ones(len(prefixes)), atol=1e-4)


def test_head_logprobs_are_every_head(tiny_engine):
    p = tiny_engine.encode("import os")
    assert torch.allclose(tiny_engine.head_logprobs(p), head1(tiny_engine, p), atol=1e-5)


def test_sessions_step_like_full_forwards(tiny_engine):
    e = tiny_engine
    prompt = e.encode("for i in range(10):")
    s = e.start(prompt, batch=3, steps=4)
    assert torch.allclose(s.last[1], head1(e, prompt)[0], atol=1e-5)
    s.advance([1, 2, 3])
    s.advance([4, 5, 6])
    assert torch.allclose(s.last[2], head1(e, prompt + [3, 6])[0], atol=1e-5)
    assert torch.allclose(s.heads()[0], head1(e, prompt + [1, 4]), atol=1e-5)
    picked = s.select([2, 2, 0])
    picked.advance([7, 8, 9])
    assert torch.allclose(picked.last[1], head1(e, prompt + [3, 6, 8])[0], atol=1e-5)
    assert torch.allclose(picked.last[2], head1(e, prompt + [1, 4, 9])[0], atol=1e-5)
    one = e.start(prompt)
    one.feed([11, 12, 13])
    one.rollback(len(prompt) + 1)
    one.feed([14])
    assert one.length == len(prompt) + 2
    assert torch.allclose(one.last[0], head1(e, prompt + [11, 14])[0], atol=1e-5)
    gen = start_session(e, prompt, batch=2, steps=1)
    assert torch.allclose(gen.last[0], head1(e, prompt)[0], atol=1e-5)


def test_text_roundtrip_and_context_guard(tiny_engine):
    e = tiny_engine
    for text in ["", "x", "def f():\n\treturn 'é' + \"✓\"  # ünïcödé 🙂\n", "\x00\x01 tabs\t\tand  spaces"]:
        assert e.decode(e.encode(text)) == text
    with pytest.raises(ValueError, match="context"):
        e.logprobs([[1] * e.max_len])
    with pytest.raises(ValueError, match="context"):
        e.start([1] * 10, steps=e.max_tokens)


def test_deterministic_on_cpu(tiny_engine):
    p = tiny_engine.encode("while True:")
    a = tiny_engine.logprobs([p, p + [5]])
    b = tiny_engine.logprobs([p + [5], p])
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])


def test_select_copies_filled_positions_and_shares_the_base(tiny_engine):
    e = tiny_engine
    prompt = e.encode("def f(x):\n    return x")
    fork = e.start(prompt, batch=3, steps=4)
    fork.advance([1, 2, 3])
    picked = fork.select([2, 0])
    for src, new in zip(fork.cache.layers, picked.cache.layers):
        assert new.base_k.data_ptr() == src.base_k.data_ptr()  # the prompt base is shared, not copied
        filled = fork.cache.length - fork.cache.offset
        assert torch.equal(new.k[:, :, :filled], src.k[[2, 0], :, :filled])
    one = e.start(prompt, steps=3)  # batch 1: capacity is the whole context, only the prompt is filled
    one.advance([4])
    beams = one.select([0, 0])
    assert beams.cache.capacity == one.cache.capacity and beams.cache.length == one.cache.length
    before = one.last.clone()
    beams.advance([5, 6])
    assert torch.equal(one.last, before)  # the source session is untouched
    assert torch.allclose(beams.last[1], head1(e, prompt + [4, 6])[0], atol=1e-5)
