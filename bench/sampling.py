"""1024 samples x 32 tokens from the shipped model via ``sample_many`` (the prompt's cache shared by
all rows, one batched forward per step). Goal: <= 2 s. The ratio printed is against the same 1024
rows drawn one ``Sampling().decode`` at a time, extrapolated from 16 of them (same run)."""

from __future__ import annotations

from bench import CPU_TIMES, goal, header, interleaved
from core.decoders import Sampling, sample_many
from core.engine import load_default

PROMPT = "def fibonacci(n):\n    "
N, STEPS, SINGLE = 1024, 32, 16


def main(repeats: int = 3) -> dict[str, float]:
    header(f"sampling: sample_many {N} x {STEPS} tokens")
    engine = load_default()
    prompt = engine.encode(PROMPT)
    t = interleaved({
        "sample_many": lambda: sample_many(engine, prompt, STEPS, N, seed=0),
        f"{SINGLE} x Sampling().decode":
            lambda: [Sampling().decode(engine, prompt, STEPS, seed=s) for s in range(SINGLE)],
    }, repeats)
    batched = t["sample_many"]
    one_by_one = t[f"{SINGLE} x Sampling().decode"] / SINGLE * N
    print(f"  sample_many {N}x{STEPS}: {batched:.3f} s wall ({CPU_TIMES['sample_many']:.3f} s CPU), "
          f"{N * STEPS / batched:,.0f} tokens/s  (goal <= 2 s: {goal(batched <= 2.0)})")
    print(f"  one row at a time (extrapolated from {SINGLE}): {one_by_one:.1f} s; ratio {one_by_one / batched:.0f}x")
    return {"sample_many_s": batched, "ratio_vs_one_by_one": one_by_one / batched}


if __name__ == "__main__":
    main()
