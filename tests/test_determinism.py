"""The determinism contract (``core.compute``), one test per bullet:

* same request, same bytes — across processes with different thread settings, after the shared
  engine served other prefixes, among ten concurrent sessions, whatever the worker count or the
  calling thread's ``torch.set_num_threads``;
* a result never depends on whether the prefix cache hit or missed (shipped engine here; the
  transformers backend in tests/test_hf.py);
* ``logprobs`` is a function of the set of prefixes (order and duplicates change no bit).

Numbers across different shapes are compared with a tolerance in tests/test_tolerance.py. These tests
also run under emulated CPUs (``make test``: ATEN_CPU_CAPABILITY=default and avx2 with MKL and oneDNN
held to AVX2)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from core import compute
from core.compare import DecoderSettings, compare
from core.decoders import Greedy, sample_many
from core.engine import load_default
from core.goals import Hamming, NGramHamming
from core.model import MTPModel
from core.prefix_cache import BLOCK, aligned

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
from core.compare import DecoderSettings, compare, empirical_distribution
from core.decoders import Sampling
from core.goals import DistributionMatch, Hamming, ZeroOne
from core.risk import risk_table
from core.toy import PRESETS, random_markov_chain

def exports(engine):
    settings = DecoderSettings(lookahead_depth=2, temperature=0.7, top_k=3, top_p=0.8, beam_width=3, shown_samples=2)
    out = []
    for name in ("E1", "Markov chain"):
        toy = PRESETS[name].build()
        for goal in (ZeroOne(), Hamming(), DistributionMatch("kl"), DistributionMatch("tv")):
            out.append(compare(toy, [], toy.length, 5, goal, settings).to_json(settings))
    chain = random_markov_chain(3, 0.7, 4, seed=11)
    out.append(json.dumps(risk_table([ZeroOne(), Hamming(), DistributionMatch("tv")], chain, [Sampling(0.5)], 4),
                          sort_keys=True, default=str))
    out.append(json.dumps(sorted(empirical_distribution(chain, Sampling(), 4, 500, 3).items())))
    prompt = engine.encode("def fibonacci(n):\n    ")
    out.append(compare(engine, prompt, 3, 7, Hamming(), settings, 16).to_json(settings, prompt))
    return "\n".join(out)

if __name__ == "__main__":
    from core.engine import load_default
    sys.stdout.write(exports(load_default()))
"""

# a prompt of three whole blocks and more, and others sharing its first block or two
LONG = ("import os\nimport sys\nfrom pathlib import Path\n\n\ndef main(argv):\n    for name in argv[1:]:\n"
        "        print(name, len(read_lines(name)))\n\n\n"
        "def read_lines(path):\n    with open(path) as f:\n        return")


def _run(env_extra: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def engine():
    return load_default()


def test_exported_json_is_byte_identical_across_processes_and_histories(engine):
    procs = [_run({}), _run({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}), _run({"OMP_NUM_THREADS": "3"})]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
        outs.append(out)
    assert outs[0] == outs[1] == outs[2]
    assert outs[0].count(b'"goal": ') == 9  # eight toy comparisons and one on the shipped model

    # in this process, after the shared engine served other prefixes (its prefix cache is dirty)
    engine.logprobs([engine.encode("import os\nimport sys\n" * 8)])
    engine.logprobs([engine.encode("def fibonacci(n):\n    return")])
    namespace: dict = {"__name__": "determinism"}
    exec(compile(SCRIPT, "<determinism>", "exec"), namespace)
    assert namespace["exports"](engine).encode() == outs[0]


def _compare_json(engine, text: str, seed: int, goal=None) -> str:
    settings = DecoderSettings(lookahead_depth=2, beam_width=2, shown_samples=2)
    prompt = engine.encode(text)
    return compare(engine, prompt, 4, seed, goal or Hamming(), settings, 16).to_json(settings, prompt)


def test_compare_json_cold_warm_and_among_ten_concurrent_sessions(engine):
    """One Compare request (a prompt of several cache blocks) gives the same bytes with the prefix cache
    cold, after other prefixes (sharing one block, or none) warmed it, and in ten concurrent threads
    beside other requests that keep replacing the cached path."""
    assert aligned(len(engine.encode(LONG)) + 1) >= 2 * BLOCK
    engine.prefix_cache.clear()
    cold = _compare_json(engine, LONG, 3)
    engine.logprobs([engine.encode(LONG[:40] + "x = 1\n" * 9)])  # shares the first block only
    engine.start(engine.encode("class Stack:\n    def push(self, x):\n" * 3), batch=3, steps=2)
    assert _compare_json(engine, LONG, 3) == cold
    others = ["class Stack:\n    def push(self, x):\n" * 2, LONG[:60], "for i in range(10):\n    print(i)\n" * 3]
    barrier = threading.Barrier(10)

    def session(i: int) -> str:
        barrier.wait()
        if i % 2:
            _compare_json(engine, others[i % 3], i, NGramHamming(2))
        return _compare_json(engine, LONG, 3)

    with ThreadPoolExecutor(10) as pool:
        assert set(pool.map(session, range(10))) == {cold}


def test_a_cache_hit_and_a_miss_give_the_same_bits(engine):
    prompt = engine.encode(LONG)
    batch = [prompt[:k] for k in (17, 33, len(prompt))] + [prompt + [5], prompt + [6, 7]]

    def everything():
        session = engine.start(prompt, batch=4, steps=3)
        session.advance([1, 2, 3, 4])
        one = engine.start(prompt, steps=2)
        one.feed([9, 10])
        return [engine.logprobs(batch), engine.logprobs([prompt]), session.last, session.heads(), one.last,
                one.heads(), engine.head_logprobs(prompt[:40])]

    engine.prefix_cache.clear()
    misses = engine.prefix_cache.misses
    cold = everything()
    assert engine.prefix_cache.misses > misses
    hits = engine.prefix_cache.hits
    warm = everything()  # every whole block now comes from the cache
    assert engine.prefix_cache.hits > hits
    engine.logprobs([prompt[:20] + [3] * 30])  # the cached path now diverges after the first block
    diverged = everything()
    for a, b, c in zip(cold, warm, diverged):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_logprobs_is_a_function_of_the_set_of_prefixes(engine):
    p = engine.encode("while True:\n    line = input()")
    rows = [p, p[:3], p + [5], p[:9] + [7, 7], p]
    a = engine.logprobs(rows)
    b = engine.logprobs([rows[3], rows[2], rows[1], rows[0]])
    assert torch.equal(a[0], b[3]) and torch.equal(a[1], b[2]) and torch.equal(a[2], b[1])
    assert torch.equal(a[3], b[0]) and torch.equal(a[4], a[0])


def test_worker_count_and_thread_settings_change_no_bit(engine, monkeypatch):
    seen = set()  # intra-op thread counts every forward ran with, in callers and pool workers
    extend = MTPModel.extend

    def logged_extend(self, cache, ids):
        seen.add(torch.get_num_threads())
        return extend(self, cache, ids)

    monkeypatch.setattr(MTPModel, "extend", logged_extend)
    prompt = engine.encode("def mean(values):\n    ")
    assert len(compute.row_chunks(96)) > 1  # the batch runs in several chunks
    reference = sample_many(engine, prompt, 5, 96, seed=4)
    before = compute.workers()
    try:
        for n in (1, 2, 3):
            compute.set_workers(n)
            again = sample_many(engine, prompt, 5, 96, seed=4)
            assert torch.equal(again.tokens, reference.tokens) and torch.equal(again.step_logprobs,
                                                                                reference.step_logprobs)
    finally:
        compute.set_workers(before)

    def in_thread(threads: int):
        torch.set_num_threads(threads)  # the engine pins the calling thread before computing
        return sample_many(engine, prompt, 5, 96, seed=4), Greedy().decode(engine, prompt, 6)

    with ThreadPoolExecutor(1) as pool:
        drawn, greedy = pool.submit(in_thread, 2).result()
    assert torch.equal(drawn.step_logprobs, reference.step_logprobs)
    assert greedy == Greedy().decode(engine, prompt, 6)
    assert seen == {compute.INTRA_OP_THREADS}


def test_row_chunks_depend_on_the_batch_size_only():
    for n in (1, 2, 31, 63, 64, 65, 128, 1000):
        chunks = compute.row_chunks(n)
        assert chunks[0][0] == 0 and chunks[-1][1] == n
        assert all(b0 == a1 for (_, b0), (a1, _) in zip(chunks, chunks[1:]))
        assert max(b - a for a, b in chunks) - min(b - a for a, b in chunks) <= 1
        assert len(chunks) <= compute.MAX_CHUNKS
    assert compute.row_chunks(2 * compute.CHUNK_MIN_ROWS - 1) == [(0, 2 * compute.CHUNK_MIN_ROWS - 1)]
    with pytest.raises(ValueError, match="n_rows must be >= 1"):
        compute.row_chunks(0)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        compute.set_workers(0)


def test_every_forward_has_a_canonical_shape(engine, monkeypatch):
    """Structural, so it holds on every CPU (the bit tests above need kernels that notice): the prefix
    cache computes only whole blocks at block-aligned positions, and a request's own forwards — their
    positions and shapes — are the same whether its blocks came from the cache or not."""
    blocks, own = [], []
    in_block = threading.local()
    run, extend = engine.prefix_cache.backend.run, MTPModel.extend

    def logged_run(state, tokens):
        in_block.on = True
        try:
            return run(state, tokens)
        finally:
            in_block.on = False

    def logged_extend(self, cache, ids):
        entry = (cache.length, cache.batch, *ids.shape)
        (blocks if getattr(in_block, "on", False) else own).append(entry)
        return extend(self, cache, ids)

    monkeypatch.setattr(engine.prefix_cache.backend, "run", logged_run)
    monkeypatch.setattr(MTPModel, "extend", logged_extend)
    prompt = engine.encode(LONG)

    def request() -> list:
        own.clear()
        _compare_json(engine, LONG, 5)
        engine.logprobs([prompt[:k] for k in (20, 40, 50)])
        return list(own)

    engine.prefix_cache.clear()
    cold = request()
    assert blocks and all(start % BLOCK == 0 and (batch, rows, t) == (1, 1, BLOCK) for start, batch, rows, t in blocks)
    computed = len(blocks)
    assert request() == cold and len(blocks) == computed  # all hits
    engine.logprobs([prompt[:18] + [3] * 40])  # the cached path diverges in the second block
    assert request() == cold
    assert all(start % BLOCK == 0 and (batch, rows, t) == (1, 1, BLOCK) for start, batch, rows, t in blocks)
