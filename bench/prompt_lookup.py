"""Prompt lookup vs greedy on the shipped model and on SmolLM2, and the heads vs prompt lookup on the shipped
model (greedy speculative decoding: every output equals greedy's, asserted): tokens per forward, drafts kept,
and wall-clock ratios against ``Greedy().decode`` measured in the same run (interleaved, medians). For
reference, ``generate(prompt_lookup_num_tokens=N)`` vs plain ``generate`` on SmolLM2 in the same run. And the
Speculative page's guard: its predicted seconds (``core.speculative.predict_seconds`` from
``core.cost.measure``) against the measured time of the page's computation (goal: measured <= 1.5x
predicted). ``BENCH_SMOKE=1`` shrinks every size (checks that the script runs; its numbers mean nothing)."""

from __future__ import annotations

import json
import os
import time

import torch
from transformers import GenerationConfig

from bench import CPU_TIMES, goal, header, interleaved
from core.cost import measure
from core.decoders import Greedy
from core.engine import ASSETS, load_default
from core.prompt_lookup import prompt_lookup_decode
from core.speculative import predict_seconds, self_speculative, time_against_greedy

SMOKE = bool(os.environ.get("BENCH_SMOKE"))
STEPS = {"shipped": 8 if SMOKE else 64, "smollm2": 4 if SMOKE else 32}
SETTINGS = [(10, 2)] if SMOKE else [(3, 2), (5, 2), (10, 2), (10, 3)]  # (N, M)
PAGE_STEPS, PAGE_REPEATS = (4, 1) if SMOKE else (16, 3)  # the page's defaults


def example_texts(kinds: tuple[str, ...] = ("code", "text")) -> list[str]:
    path = ASSETS / "prompts" / "prompts.json"
    prompts = json.loads(path.read_text()) if path.is_file() else [{"kind": "code", "text": "def fibonacci(n):\n    "}]
    texts = [p["text"] for p in prompts if p.get("kind") in kinds]
    return texts[:2] if SMOKE else texts


def drafter_runs(engine, prompts: list[list[int]], steps: int, heads: bool) -> dict:
    runs = {f"lookup N={n} M={m}": (lambda n=n, m=m: [prompt_lookup_decode(engine, p, steps, n, m) for p in prompts])
            for n, m in SETTINGS}
    if heads:
        runs[f"heads k={engine.n_heads}"] = lambda: [self_speculative(engine, p, steps) for p in prompts]
    return runs


def report(name: str, engine, prompts: list[list[int]], steps: int, repeats: int, heads: bool) -> dict[str, float]:
    runs = drafter_runs(engine, prompts, steps, heads)
    greedy = [Greedy().decode(engine, p, steps).tokens for p in prompts]
    results = {key: fn() for key, fn in runs.items()}
    for key, rs in results.items():
        assert [r.tokens for r in rs] == greedy, f"{key}: output differs from greedy"
    t = interleaved({"greedy": lambda: [Greedy().decode(engine, p, steps) for p in prompts], **runs}, repeats)
    n_tok = sum(len(g) for g in greedy)
    print(f"  {name}: {len(prompts)} prompts, {n_tok} tokens; every output equals greedy's")
    print(f"  {'greedy':24s} {t['greedy'] / n_tok * 1e3:7.2f} ms/token (CPU time {CPU_TIMES['greedy']:.3f} s)")
    out = {}
    for key, rs in results.items():
        forwards = sum(r.forwards for r in rs)
        drafted = sum(r.drafted_tokens for r in rs)
        kept = sum(r.accepted_tokens for r in rs)
        with_drafts = sum(r.passes_with_drafts for r in rs)
        passes = sum(len(r.traces) for r in rs)
        speed = t["greedy"] / t[key]
        print(f"  {key:24s} {t[key] / n_tok * 1e3:7.2f} ms/token; {n_tok / forwards:.2f} tokens/forward "
              f"({forwards} model passes vs {n_tok}); drafts kept {kept}/{drafted} "
              f"({kept / drafted if drafted else float('nan'):.2f}); passes with drafts {with_drafts}/{passes}; "
              f"speed-up vs greedy {speed:.2f}x wall, {CPU_TIMES['greedy'] / CPU_TIMES[key]:.2f}x CPU time")
        out[f"{name} {key} tokens_per_forward"] = n_tok / forwards
        out[f"{name} {key} speedup"] = speed
    if heads:
        best = max((k for k in results if k.startswith("lookup")), key=lambda k: out[f"{name} {k} speedup"])
        ratio = t[f"heads k={engine.n_heads}"] / t[best]
        print(f"  heads vs prompt lookup ({best}): lookup is {ratio:.2f}x the heads' speed")
        out[f"{name} lookup/heads speed"] = ratio
    return out


def generate_reference(engine, prompts: list[list[int]], steps: int, repeats: int) -> None:
    """transformers' own prompt lookup against its own greedy generate, same model, same run."""
    def gen(ids, **extra):
        config = GenerationConfig(do_sample=False, max_new_tokens=steps, eos_token_id=engine.eos_id,
                                  pad_token_id=engine.eos_id, **extra)
        with torch.inference_mode():
            return engine.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)

    ids = [torch.as_tensor([engine.context_ids(p)]) for p in prompts]
    t = interleaved({"generate": lambda: [gen(i) for i in ids],
                     "generate lookup N=10": lambda: [gen(i, prompt_lookup_num_tokens=10) for i in ids]}, repeats)
    ratio = t["generate"] / t["generate lookup N=10"]
    print(f"  reference: generate(prompt_lookup_num_tokens=10) vs generate: {ratio:.2f}x wall (transformers, same "
          "model, same run)")


def guard(name: str, engine, text: str, heads: bool) -> float:
    """The page's computation at its defaults: predicted vs measured seconds."""
    prompt = engine.encode(text)
    cost = measure(engine, prompt)
    drafters = ([(engine.n_heads - 1, True)] if heads else []) + [(10, False)]
    predicted = predict_seconds(cost, len(prompt), PAGE_STEPS, PAGE_REPEATS, drafters)
    decoders = {"lookup": lambda: prompt_lookup_decode(engine, prompt, PAGE_STEPS)}
    if heads:
        decoders["heads"] = lambda: self_speculative(engine, prompt, PAGE_STEPS)
    start = time.perf_counter()
    time_against_greedy(engine, prompt, PAGE_STEPS, decoders, PAGE_REPEATS)
    measured = time.perf_counter() - start
    ok = goal(measured <= 1.5 * predicted)
    print(f"  page guard on {name} ({PAGE_STEPS} tokens, {PAGE_REPEATS} repeats): predicted {predicted:.2f} s, "
          f"measured {measured:.2f} s, measured/predicted {measured / predicted:.2f} ({ok}: <= 1.5)")
    return measured / predicted


def main(repeats: int = 1 if SMOKE else 3) -> dict[str, float]:
    header("prompt_lookup: prompt lookup vs greedy (shipped model, SmolLM2), heads vs prompt lookup (shipped model)")
    engine = load_default()
    out = report("shipped", engine, [engine.encode(t) for t in example_texts()], STEPS["shipped"], repeats, True)
    out["shipped guard"] = guard("the shipped model", engine, example_texts()[0], True)
    try:
        from core.hf import load_smollm2
        smol = load_smollm2()
    except (ImportError, ValueError, OSError) as err:
        print(f"  SmolLM2 not available: {err}")
        return out
    prompts = [smol.encode(t) for t in example_texts(("code",))]
    out.update(report("smollm2", smol, prompts, STEPS["smollm2"], repeats, False))
    generate_reference(smol, prompts, STEPS["smollm2"], repeats)
    out["smollm2 guard"] = guard("SmolLM2", smol, example_texts()[0], False)
    return out


if __name__ == "__main__":
    main()
