"""Exact lookahead (depth 4, best-first search with one batched forward per frontier) per committed
token on the shipped model. Goal: <= 50 ms per token. Ratio printed: against greedy (depth 1) per
token, same run."""

from __future__ import annotations

from bench import CPU_TIMES, goal, header, interleaved
from core.decoders import Greedy, Lookahead
from core.engine import load_default

PROMPTS = ["def fibonacci(n):\n    ", "import numpy as np\n\n", "The capital of France is"]
STEPS, DEPTH = 16, 4


def main(repeats: int = 3) -> dict[str, float]:
    header(f"lookahead: exact Lookahead(depth={DEPTH}), {STEPS} committed tokens on {len(PROMPTS)} prompts")
    engine = load_default()
    ps = [engine.encode(p) for p in PROMPTS]
    paths = [Lookahead(DEPTH).decode(engine, p, STEPS) for p in ps]
    t = interleaved({
        "lookahead": lambda: [Lookahead(DEPTH).decode(engine, p, STEPS) for p in ps],
        "greedy": lambda: [Greedy().decode(engine, p, STEPS) for p in ps],
    }, repeats)
    n = STEPS * len(ps)
    per = t["lookahead"] / n * 1e3
    cpu = CPU_TIMES["lookahead"] / n * 1e3
    print(f"  lookahead depth {DEPTH}: {per:.1f} ms per committed token wall ({cpu:.1f} ms CPU)"
          f"  (goal <= 50 ms: {goal(per <= 50)}); budget exhausted on {sum(p.budget_exhausted for p in paths)} "
          f"of {len(ps)} prompts")
    print(f"  greedy: {t['greedy'] / n * 1e3:.1f} ms per token; "
          f"lookahead / greedy cost ratio {t['lookahead'] / t['greedy']:.1f}x")
    return {"lookahead_ms_per_token": per}


if __name__ == "__main__":
    main()
