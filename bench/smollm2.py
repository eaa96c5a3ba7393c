"""Greedy tokens/s on SmolLM2-135M (``core.hf.load_smollm2``): the explorer's session loop (one
1-token forward per token with the model's KV cache) vs ``transformers`` ``generate`` on the same
model, same prompt, same number of tokens, measured in the same run."""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from bench import CPU_TIMES, header, interleaved
from bench.engine import engine_greedy

PROMPT = "def fibonacci(n):\n    "
STEPS = 16


def main(repeats: int = 3) -> dict[str, float]:
    header(f"smollm2: greedy {STEPS} tokens, session loop vs transformers generate (SmolLM2-135M)")
    try:
        from core.hf import load_smollm2
        engine = load_smollm2()
    except (ImportError, ValueError, OSError) as err:
        print(f"  SmolLM2 not available: {err}")
        return {}
    prompt = engine.encode(PROMPT)
    ids = torch.as_tensor([engine.context_ids(prompt)], device=engine.device)
    cfg = GenerationConfig(max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False, num_beams=1,
                           eos_token_id=None, pad_token_id=engine.eos_id or 0, use_cache=True)

    @torch.inference_mode()
    def hf():
        return engine.model.generate(ids, generation_config=cfg, attention_mask=torch.ones_like(ids))

    ours = engine_greedy(engine, prompt, STEPS)
    theirs = hf()[0, ids.shape[1]:].tolist()
    t = interleaved({"session loop": lambda: engine_greedy(engine, prompt, STEPS), "generate": hf}, repeats)
    for k, v in t.items():
        print(f"  {k:14s} {v / STEPS * 1e3:7.2f} ms/token  {STEPS / v:6.1f} tokens/s  "
              f"(CPU time {CPU_TIMES[k] / STEPS * 1e3:.2f} ms/token)")
    print(f"  same tokens as generate: {ours == theirs}; ratio session loop / generate tokens/s: "
          f"{t['generate'] / t['session loop']:.2f}x")
    return {"smollm2_ratio": t["generate"] / t["session loop"]}


if __name__ == "__main__":
    main()
