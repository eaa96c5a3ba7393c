"""The Compare page's computation (``core.compare.compare``: every decoder, 32 tokens, 256-sample risk
estimates) on the shipped model, warm (second call onward, model loaded). Goal: <= 1 s. Ratio printed:
against one greedy decode of the same 32 tokens (same run)."""

from __future__ import annotations

from bench import CPU_TIMES, goal, header, interleaved
from core.decoders import Greedy
from core.engine import load_default

PROMPT = "def fibonacci(n):\n    "
STEPS, N_SAMPLES = 32, 256


def main(repeats: int = 2) -> dict[str, float]:
    header(f"compare: Compare page compute, all decoders, {STEPS} tokens, {N_SAMPLES}-sample risk estimates")
    try:
        from core.compare import DecoderSettings, compare
        from core.goals import Hamming
    except ImportError as err:
        print(f"  core.compare not available: {err}")
        return {}
    engine = load_default()
    prompt = engine.encode(PROMPT)
    settings = DecoderSettings()
    t = interleaved({
        "compare": lambda: compare(engine, prompt, STEPS, 0, Hamming(), settings, n_samples=N_SAMPLES),
        "greedy": lambda: Greedy().decode(engine, prompt, STEPS),
    }, repeats)
    print(f"  settings {settings}; goal Hamming")
    print(f"  compare: {t['compare']:.2f} s wall ({CPU_TIMES['compare']:.2f} s CPU)  (goal <= 1 s warm: "
          f"{goal(t['compare'] <= 1.0)}); one greedy decode {t['greedy'] * 1e3:.0f} ms; "
          f"ratio {t['compare'] / t['greedy']:.0f}x")
    return {"compare_s": t["compare"]}


if __name__ == "__main__":
    main()
