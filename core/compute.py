"""How the engines use the CPU, and the determinism contract that rests on it.

Determinism contract (``core.engine.Engine``, ``core.hf.HFEngine`` and everything computed from them):

1. **Same request, same bytes.** The same request — model, prompt, settings, seed — gives
   byte-identical results and exports within a process and across processes on one machine,
   whatever ran before it or runs beside it: the prefix cache's contents, other sessions, other
   threads, their interleaving, the process's ``torch.set_num_threads`` / ``OMP_NUM_THREADS`` and the
   number of worker threads. Three rules make it so:

   * *Canonical shapes.* Every forward pass a request runs has shapes that are a function of the
     request alone. A prefix goes through fixed, position-aligned blocks (``core.prefix_cache``:
     positions [0, B), [B, 2B), ..., each block one forward on top of the blocks before it), so a
     cached block and a freshly computed one are the same computation; the part after the last
     full block runs with the request's own shapes. ``logprobs`` treats its prefixes as a set
     (deduplicated, in a canonical order), so the order they are given in changes nothing either.
   * *One intra-op thread per computing thread, fixed.* ``pin_thread`` sets the calling thread's
     count to ``INTRA_OP_THREADS`` on every engine entry and never restores it, so no kernel a
     request runs splits its work differently because of another thread's setting (torch 2.13 keeps
     both the OpenMP and the MKL count per thread; a fresh thread starts from a process-wide value
     another thread may have changed, which a per-call toggle made timing-dependent).
   * *Canonical row chunks.* A large batched forward is cut into row chunks whose sizes depend on
     the batch size only (``row_chunks``), and the chunks run on a small fixed pool of worker
     threads (``map_chunks``; torch releases the GIL, so a second core works on the second chunk).
     A row's result depends on its chunk, never on which worker ran it or how many workers exist.

2. **A cache hit is invisible.** No result depends on whether a prefix-cache lookup hit or missed
   (rule "canonical shapes" above; ``tests/test_determinism.py`` checks it).

3. **Across shapes and devices: numbers, not bits.** Results of *different* computations of the same
   quantity — a k-token feed vs k one-token steps, a row alone vs inside a batch, ``sample_groups``
   vs ``sample_many``, CPU vs CUDA, one CPU vs another (an AVX2-only AMD EPYC vs an AVX-512 Intel,
   whose BLAS kernels sum in different orders) — agree within ``LOGPROB_TOLERANCE`` nats per
   log-prob, and make the same decisions except at near-ties. Nothing assumes equal bits there.
   Decisions that must not differ (self-speculative decoding must reproduce greedy) are recomputed
   on the canonical path when their margin is below ``NEAR_TIE_MARGIN`` (``core.speculative``).

On CUDA the shape rules apply unchanged and thread counts play no part (rows are not chunked there);
it relies on cuBLAS and SDPA forward kernels giving the same bits for the same shapes on one GPU model,
as cuBLAS documents for a fixed architecture and SM count. ``tests/test_tolerance.py`` compares CUDA
with the CPU where a GPU is present.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")

INTRA_OP_THREADS = 1
# Measured on the shipped model (50 prompts x 64 greedy tokens, contexts up to ~100 tokens; k-token
# feeds vs one-token steps, batched logprobs vs steps, a row of a 64-row batch vs alone), natively on
# an AVX-512 AMD EPYC and under ATEN_CPU_CAPABILITY=default / avx2 with MKL and oneDNN at AVX2: the
# largest difference of any log-prob was 1.8e-4 nats (top-2 margins: 1.2e-4); the tiny random model
# 2e-6. The same computation on the native vs an emulated CPU, contexts up to 500 tokens: 6e-5.
# The stated bound has a factor of 5 of margin.
LOGPROB_TOLERANCE = 1e-3
# Top-2 margins of head-1 log-probs below this are near-ties, decided on the canonical path
# (ten times the tolerance: two values each within the tolerance cannot swap order above it).
NEAR_TIE_MARGIN = 1e-2

# Row chunks: batches of fewer than 2 * CHUNK_MIN_ROWS rows run whole; larger ones split into
# min(MAX_CHUNKS, rows // CHUNK_MIN_ROWS) chunks of (almost) equal size.
CHUNK_MIN_ROWS = 32
MAX_CHUNKS = 4


def pin_thread() -> None:
    """Give the calling thread ``INTRA_OP_THREADS`` intra-op threads (once; never restored).

    Why one: (1) the same request must give the same bits whatever the load and the process's thread
    settings — a kernel's result can depend on how many threads split it; (2) small forwards are
    faster: stepping one token runs ~200 ops on [1, 256]-sized tensors, and with several threads
    every op waits at an OpenMP barrier (measured on 2 busy cores: 48-200 ms/token with 2 threads vs
    4-7 ms with 1). Large batches use the other cores through ``map_chunks`` instead."""
    if torch.get_num_threads() != INTRA_OP_THREADS:
        torch.set_num_threads(INTRA_OP_THREADS)


def row_chunks(n_rows: int) -> list[tuple[int, int]]:
    """Canonical [start, end) row chunks of a batch of ``n_rows`` rows: a function of ``n_rows`` only
    (not of the machine, the worker count or the load), so each row's computation is too."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    count = max(1, min(MAX_CHUNKS, n_rows // CHUNK_MIN_ROWS))
    size, extra = divmod(n_rows, count)
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + size + (i < extra))
    return list(zip(bounds, bounds[1:]))


def default_workers() -> int:
    """Threads that compute chunks: one per CPU this process may run on (the caller counts as one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_workers = default_workers()


def set_workers(n: int) -> None:
    """Compute chunks on ``n`` threads (the caller and n - 1 pool workers). Changes speed only: each
    chunk's computation is fixed by ``row_chunks``, so results are the same for every ``n``."""
    global _pool, _workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"workers must be an integer >= 1, got {n!r}")
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _workers = None, n


def workers() -> int:
    return _workers


def _worker_init() -> None:
    pin_thread()


def _executor() -> ThreadPoolExecutor | None:
    global _pool
    if _workers <= 1:
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_workers - 1, thread_name_prefix="decoding-explorer-rows",
                                       initializer=_worker_init)
        return _pool


def _in_inference_mode(fn: Callable[[int, int], T], a: int, b: int) -> T:
    with torch.inference_mode():  # grad mode is per thread
        return fn(a, b)


def map_chunks(fn: Callable[[int, int], T], chunks: Sequence[tuple[int, int]]) -> list[T]:
    """``[fn(a, b) for a, b in chunks]``, computed by the caller and the pool workers together, each taking the
    next chunk not yet taken (so 4 chunks on 2 threads take 2 chunk-times, not 3). A chunk's result does not
    depend on which thread computes it. Every thread that runs ``fn`` holds ``INTRA_OP_THREADS`` intra-op
    threads."""
    pin_thread()
    pool = _executor() if len(chunks) > 1 else None
    if pool is None:
        return [fn(a, b) for a, b in chunks]
    results: list = [None] * len(chunks)
    order = iter(range(len(chunks)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(order, None)
            if i is None:
                return
            results[i] = fn(*chunks[i])

    futures = [pool.submit(_in_inference_mode, lambda a, b: work(), 0, 0)
               for _ in range(min(_workers - 1, len(chunks) - 1))]
    work()
    for f in futures:
        f.result()
    return results
