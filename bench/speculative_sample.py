"""Sampled self-speculative decoding (k = 2, 3, 4 heads) vs ancestral sampling with the same sampler, on
the example prompts: tokens per forward, acceptance per head against its expected value 1 − TV, and the
wall-clock ratio per token (outputs are different draws of the same distribution and may end at EOS at
different lengths, so times are compared per generated token), all measured in the same run."""

from __future__ import annotations

from bench import CPU_TIMES, header, interleaved
from bench.speculative import prompts
from core.decoders import Sampling
from core.engine import load_default
from core.speculative import speculative_sample

STEPS = 64
SAMPLERS = {"τ=1": Sampling(), "τ=0.7, top-p=0.9": Sampling(0.7, top_p=0.9)}


def main(repeats: int = 3, steps: int = STEPS, n_prompts: int | None = None) -> dict[str, float]:
    header(f"speculative_sample: sampled self-speculative vs ancestral sampling, {steps} tokens per prompt")
    engine = load_default()
    ps = prompts(engine)[:n_prompts]
    out: dict[str, float] = {}
    for name, sampler in SAMPLERS.items():
        runs = {"ancestral": lambda s=sampler: [s.decode(engine, p, steps, seed=i) for i, p in enumerate(ps)]}
        for k in range(2, engine.n_heads + 1):
            runs[f"k={k}"] = lambda k=k, s=sampler: [speculative_sample(engine, p, steps, i, s, k)
                                                     for i, p in enumerate(ps)]
        outputs = {key: fn() for key, fn in runs.items()}
        t = interleaved(runs, repeats)
        base_tokens = sum(len(path.tokens) for path in outputs["ancestral"])
        base = t["ancestral"] / base_tokens
        print(f"  sampler {name}: ancestral {base * 1e3:.2f} ms/token ({base_tokens} tokens, one forward each; "
              f"CPU time {CPU_TIMES['ancestral']:.3f} s)")
        for k in range(2, engine.n_heads + 1):
            rs = outputs[f"k={k}"]
            tokens = sum(len(r.tokens) for r in rs)
            forwards = sum(r.forwards for r in rs)
            per = t[f"k={k}"] / tokens
            heads = []
            for i in range(k - 1):
                reached = sum(r.drafts_reached[i] for r in rs)
                kept = sum(t_.accepted > i for r in rs for t_ in r.traces)
                expected = sum(e.expected[i] for r in rs for e in r.traces if len(e.expected) > i)
                if reached:
                    heads.append(f"head {i + 2}: {kept / reached:.2f} (expected {expected / reached:.2f})")
            print(f"  k={k}: {tokens / forwards:.2f} tokens/forward ({forwards} model passes for {tokens} tokens); "
                  f"kept/reached {', '.join(heads)}; {per * 1e3:.2f} ms/token, speed-up vs ancestral "
                  f"{base / per:.2f}x (CPU time {CPU_TIMES[f'k={k}']:.3f} s)")
            out[f"{name} tokens_per_forward_k{k}"] = tokens / forwards
            out[f"{name} speedup_k{k}"] = base / per
    return out


if __name__ == "__main__":
    main()
