"""SmolLM2-135M through a local llama.cpp server (``core.remote``) vs in process (``core.hf``), same run:
ms per greedy step and per Compare, and the server requests a Compare takes. Then how batching cuts
requests, counted on the vLLM wire-format emulator (tests/fake_vllm.py over the tiny random model): one
prompt and one sample per request (llama-cpp-python's case) vs several prompts per request, n samples
per request and prompt_logprobs chains (vLLM's).

``BENCH_REMOTE_SMOKE=1`` runs it at tiny sizes (a check that it works, not a measurement)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from bench import CPU_TIMES, header, interleaved

PROMPT = "The capital of France is"


def sizes() -> dict:
    if os.environ.get("BENCH_REMOTE_SMOKE"):
        return {"steps": 2, "compare_steps": 2, "n_samples": 16, "repeats": 1}
    return {"steps": 16, "compare_steps": 8, "n_samples": 16, "repeats": 3}


def cold(model) -> None:
    """Forget a served model's cached rows, so a repeat asks the server again."""
    with model._lock:
        model._rows.clear()
        model._canonical.clear()


def main(repeats: int | None = None) -> dict[str, float]:
    size = sizes()
    repeats = repeats or size["repeats"]
    header("remote: SmolLM2-135M through a local llama.cpp server vs in process (greedy steps, Compare)")
    try:
        import llama_cpp.server  # noqa: F401

        from core.hf import load_smollm2, smollm2_path
        from core.remote import connect, serve_gguf

        gguf, local = smollm2_path(), load_smollm2()
    except (ImportError, ValueError, OSError) as err:
        print(f"  not available: {err}")
        return {}
    from core.compare import DecoderSettings, compare
    from core.decoders import Greedy
    from core.goals import Hamming

    out: dict[str, float] = {}
    settings = DecoderSettings(lookahead_depth=2, beam_width=4, shown_samples=3)
    with serve_gguf(gguf) as base:
        remote = connect(base)
        prompt = remote.encode(PROMPT)
        steps = size["steps"]
        t = interleaved({"server": lambda: (cold(remote), Greedy().decode(remote, prompt, steps)),
                         "in process": lambda: Greedy().decode(local, prompt, steps)}, repeats)
        for k, v in t.items():
            print(f"  greedy {k:10s} {v / steps * 1e3:8.1f} ms/step  (CPU time of this process "
                  f"{CPU_TIMES[k] / steps * 1e3:.1f} ms/step)")
        print(f"  greedy: server / in process time per step {t['server'] / t['in process']:.1f}x "
              f"(2 requests per step: a tokenize check of the text prompt, then the completion)")
        out["greedy_ratio"] = t["server"] / t["in process"]

        cs, n = size["compare_steps"], size["n_samples"]
        before = remote.requests
        run = {"server": lambda: (cold(remote), compare(remote, prompt, cs, 0, Hamming(), settings, n)),
               "in process": lambda: compare(local, prompt, cs, 0, Hamming(), settings, n)}
        t = interleaved(run, repeats, warmup=0)
        per_compare = (remote.requests - before) / repeats
        for k, v in t.items():
            print(f"  Compare ({cs} tokens, {n} samples, Hamming) {k:10s} {v * 1e3:9.0f} ms")
        print(f"  Compare: server / in process {t['server'] / t['in process']:.1f}x; {per_compare:.0f} requests per "
              "Compare to llama-cpp-python (one prompt and one sample per request)")
        out.update(compare_ratio=t["server"] / t["in process"], requests_per_compare=per_compare)
    out.update(batching(cs, n, settings))
    return out


def batching(steps: int, n_samples: int, settings) -> dict[str, float]:
    """Requests per Compare on the vLLM emulator, with and without its batching capabilities."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import make_tiny_engine
    from fake_vllm import FakeVLLM
    from server_fixture import stub_server

    from core.compare import compare
    from core.goals import Hamming
    from core.remote import connect

    engine = make_tiny_engine(seed=3)
    counts = {}
    with stub_server(FakeVLLM(engine, max_logprobs=20)) as base:
        served = connect(base, vocab_size=engine.vocab_size)
        prompt = served.encode("def f(x):")
        plain = dataclasses.replace(served.caps, batch_prompts=False, n_choices=False, prompt_logprobs=False)
        for name, caps in (("one prompt, one sample per request", plain), ("batched (vLLM)", served.caps)):
            served.caps = caps
            cold(served)
            before = served.requests
            compare(served, prompt, steps, 0, Hamming(), settings, n_samples)
            counts[name] = served.requests - before
    for name, c in counts.items():
        print(f"  requests per Compare ({steps} tokens, {n_samples} samples), {name:36s} {c:5d}")
    plain_n, batched_n = counts.values()
    print(f"  batching (several prompts per request, n samples per request, prompt_logprobs chains) cuts requests "
          f"{plain_n / batched_n:.1f}x")
    return {"batching_cut": plain_n / batched_n}


if __name__ == "__main__":
    main()
