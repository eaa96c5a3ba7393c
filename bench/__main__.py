"""Run every benchmark: ``python -m bench`` (``make bench``). ``BENCH_DEVICE=cuda|cpu`` picks the
device; ``BENCH_THREADS=n`` sets torch's intra-op threads for the whole run first."""

from __future__ import annotations

import os
import time

import torch

from bench import (
    compare,
    engine,
    first_paint,
    labs,
    lookahead,
    prompt_lookup,
    remote,
    sampling,
    smollm2,
    speculative,
    speculative_sample,
    threads,
)


def main() -> None:
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    t = time.perf_counter()
    failed = []
    for mod in (engine, speculative, speculative_sample, prompt_lookup, sampling, lookahead, compare, smollm2, threads,
                remote, labs, first_paint):
        try:
            mod.main()
        except Exception as err:  # one broken benchmark must not hide the others' numbers
            failed.append(mod.__name__)
            print(f"  {mod.__name__} failed: {type(err).__name__}: {err}")
    print(f"\nbench suite finished in {time.perf_counter() - t:.0f} s" + (f"; failed: {failed}" if failed else ""))


if __name__ == "__main__":
    main()
