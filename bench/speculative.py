"""Self-speculative decoding vs greedy on the example prompts (wall clock, same prompts, same run).
Goal: >= 1.3x on CPU, >= 2x on GPU. Also reports tokens per forward and acceptance per head, and the
runs with fewer drafting heads (k = 2, 3)."""

from __future__ import annotations

import json

from bench import CPU_TIMES, goal, header, interleaved
from bench.engine import engine_greedy
from core.decoders import Greedy
from core.engine import ASSETS, load_default
from core.speculative import self_speculative

STEPS = 64


def prompts(engine) -> list[list[int]]:
    path = ASSETS / "prompts" / "prompts.json"
    texts = [p["text"] for p in json.loads(path.read_text())] if path.is_file() else ["def fibonacci(n):\n    "]
    return [engine.encode(t) for t in texts]


def main(repeats: int = 3) -> dict[str, float]:
    header(f"speculative: self-speculative vs greedy, {STEPS} tokens on each example prompt")
    engine = load_default()
    ps = prompts(engine)
    results = {}
    for k in range(2, engine.n_heads + 1):
        results[k] = [self_speculative(engine, p, STEPS, heads=k) for p in ps]
    for p, r in zip(ps, results[engine.n_heads]):
        assert r.tokens == Greedy().decode(engine, p, STEPS).tokens, "self-speculative output differs from greedy"
    contenders = {
        "greedy (engine session loop)": lambda: [engine_greedy(engine, p, STEPS) for p in ps],
        "Greedy().decode": lambda: [Greedy().decode(engine, p, STEPS) for p in ps],
    }
    for k in range(2, engine.n_heads + 1):
        contenders[f"self-speculative k={k}"] = lambda k=k: [self_speculative(engine, p, STEPS, heads=k) for p in ps]
    t = interleaved(contenders, repeats)
    n_tok = STEPS * len(ps)
    print(f"  {len(ps)} prompts x {STEPS} tokens = {n_tok} tokens; outputs equal greedy: yes")
    for name, v in t.items():
        print(f"  {name:30s} {v:7.3f} s  {v / n_tok * 1e3:6.2f} ms/token  (CPU time {CPU_TIMES[name]:.3f} s)")
    base = t["greedy (engine session loop)"]
    out = {}
    for k in range(2, engine.n_heads + 1):
        rs = results[k]
        forwards = sum(r.forwards for r in rs)
        drafts = sum(r.draft_passes for r in rs)
        offered = [sum(r.drafts_offered[i] for r in rs) for i in range(k - 1)]
        kept = [sum(round(r.acceptance_per_head[i] * r.drafts_offered[i]) for r in rs if r.drafts_offered[i])
                for i in range(k - 1)]
        acc = ", ".join(f"head {i + 2}: {a / n:.2f}" for i, (a, n) in enumerate(zip(kept, offered)))
        speed = base / t[f"self-speculative k={k}"]
        print(f"  k={k}: {n_tok / forwards:.2f} tokens/forward ({forwards} model passes + {drafts} draft passes "
              f"vs {n_tok} greedy passes); acceptance {acc}; speed-up vs greedy loop {speed:.2f}x, "
              f"vs Greedy().decode {t['Greedy().decode'] / t[f'self-speculative k={k}']:.2f}x")
        out[f"speedup_k{k}"] = speed
        out[f"tokens_per_forward_k{k}"] = n_tok / forwards
    sp = out[f"speedup_k{engine.n_heads}"]
    cpu = CPU_TIMES["greedy (engine session loop)"] / CPU_TIMES[f"self-speculative k={engine.n_heads}"]
    print(f"  same ratio in CPU time of this process: {cpu:.2f}x")
    out["cpu_time_speedup"] = cpu
    want = 2.0 if engine.device.type == "cuda" else 1.3
    print(f"  ratio self-speculative (k={engine.n_heads}) / greedy wall clock: {sp:.2f}x "
          f"(goal >= {want}x on {engine.device.type}: {goal(sp >= want)})")
    return out


if __name__ == "__main__":
    main()
