"""Greedy tokens/s of ``Engine`` (the shipped MTP model, head 1) vs ``transformers`` ``generate`` on a
GPT-2 of the same width/depth/vocabulary (n_layer = trunk + 1 = 7, n_embd 256, n_head 4, vocab 8192,
random init; greedy with its KV cache). Goal on CPU: Engine >= 1.5x.

Both generate the same number of new tokens after the same prompt (prefill included in both).
``Engine`` runs small forwards with one intra-op thread by itself; ``generate`` is timed at the
process's thread setting (as a user would call it) and also with 1 thread, for a like-for-like view.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

from bench import CPU_TIMES, device, goal, header, interleaved
from core.decoders import Greedy
from core.engine import load_default

PROMPT = "def fibonacci(n):\n    "
STEPS = 128


def engine_greedy(engine, prompt: list[int], steps: int) -> list[int]:
    """Plain greedy stepping on the engine's session: one 1-token forward per new token."""
    session = engine.start(prompt, batch=1, steps=steps)
    out = [int(session.last[0].argmax())]
    for _ in range(steps - 1):
        out.append(int(session.advance(out[-1:])[0].argmax()))
    return out


def same_size_gpt2(engine) -> GPT2LMHeadModel:
    cfg = engine.model.config
    torch.manual_seed(0)
    g = GPT2Config(n_layer=cfg.n_trunk_layers + 1, n_embd=cfg.d_model, n_head=cfg.n_attn_heads,
                   vocab_size=cfg.vocab_size, n_positions=cfg.max_len, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(g).to(engine.device).eval()


def with_threads(n: int, fn):
    def run():
        prev = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(prev)
    return run


def main(repeats: int = 5) -> dict[str, float]:
    header("engine: greedy tokens/s, Engine vs transformers generate (same-size GPT-2)")
    engine = load_default()
    prompt = engine.encode(PROMPT)
    gpt2 = same_size_gpt2(engine)
    ids = torch.as_tensor([[engine.bos_id, *prompt]], device=engine.device)
    gen_cfg = GenerationConfig(max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False, num_beams=1,
                               eos_token_id=None, pad_token_id=0, use_cache=True)

    @torch.inference_mode()
    def hf():
        out = gpt2.generate(ids, generation_config=gen_cfg, attention_mask=torch.ones_like(ids))
        assert out.shape[1] == ids.shape[1] + STEPS

    contenders = {
        "Engine greedy (session loop)": lambda: engine_greedy(engine, prompt, STEPS),
        "Engine Greedy().decode": lambda: Greedy().decode(engine, prompt, STEPS),
        "GPT-2 generate": hf,
    }
    if engine.device.type == "cpu" and torch.get_num_threads() > 1:
        contenders["GPT-2 generate, 1 thread"] = with_threads(1, hf)
    t = interleaved(contenders, repeats)
    for k, v in t.items():
        print(f"  {k:32s} {v / STEPS * 1e3:7.2f} ms/token  {STEPS / v:7.1f} tokens/s  "
              f"(CPU time {CPU_TIMES[k] / STEPS * 1e3:.2f} ms/token)")
    ratio = t["GPT-2 generate"] / t["Engine greedy (session loop)"]
    print(f"  ratio Engine / generate tokens/s: {ratio:.2f}x  (goal >= 1.5x on CPU: {goal(ratio >= 1.5)})")
    res = {"engine_ms_per_token": t["Engine greedy (session loop)"] / STEPS * 1e3, "ratio_vs_generate": ratio,
           "decoder_greedy_ms_per_token": t["Engine Greedy().decode"] / STEPS * 1e3}
    if "GPT-2 generate, 1 thread" in t:
        r1 = t["GPT-2 generate, 1 thread"] / t["Engine greedy (session loop)"]
        print(f"  ratio Engine / generate (1 thread): {r1:.2f}x")
        res["ratio_vs_generate_1_thread"] = r1
    r_dec = t["GPT-2 generate"] / t["Engine Greedy().decode"]
    print(f"  ratio Greedy().decode / generate tokens/s: {r_dec:.2f}x")
    return res


if __name__ == "__main__":
    if device().type != "cpu":
        print("note: the goal is stated for CPU")
    main()
