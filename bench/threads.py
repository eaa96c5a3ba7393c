"""The second core, used without changing results (issue 10 item 4): one compute thread vs canonical
row chunks on two (``core.compute.set_workers``), and, for reference, the rejected alternative of two
intra-op threads per forward. Measured in one run, interleaved:

* greedy ms/token on the shipped model (single-row forwards: chunking never applies) vs
  ``transformers`` ``generate`` on a same-size GPT-2 at 1 and 2 intra-op threads;
* ``sample_many`` 1024 x 32;
* the Compare page's computation at its defaults (16 tokens, 64 samples, Hamming).

Results are identical under every setting (checked here too): chunks are a function of the batch
size only. Prints the CPU model and its vector extensions, which decide the BLAS kernels."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import torch

from bench import CPU_TIMES, header, interleaved
from bench.engine import PROMPT, engine_greedy, same_size_gpt2
from core import compute
from core.decoders import sample_many
from core.engine import load_default

N, STEPS = 1024, 32
CMP_STEPS, CMP_SAMPLES = 16, 64
GREEDY_STEPS = 64


def vector_extensions() -> str:
    """The CPU's x86 vector extensions (from lscpu) and the level torch's kernels run at."""
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        flags = ""
    found = sorted(set(re.findall(r"\b(avx\w*|amx\w*|fma)\b", flags)))
    return f"{' '.join(found) or 'unknown'}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def setting(workers: int, intra_op: int = 1) -> Callable[[Callable[[], object]], Callable[[], object]]:
    """Run a workload with ``workers`` chunk threads, each forward at ``intra_op`` intra-op threads."""
    def wrap(fn):
        def run():
            previous = compute.INTRA_OP_THREADS
            compute.set_workers(workers)
            compute.INTRA_OP_THREADS = intra_op
            compute.pin_thread()
            try:
                return fn()
            finally:
                compute.INTRA_OP_THREADS = previous
                compute.set_workers(compute.default_workers())
                compute.pin_thread()
        return run
    return wrap


SETTINGS = {"1 thread": setting(1), "2 workers (row chunks)": setting(2), "2 intra-op threads": setting(1, 2)}


def report(title: str, times: dict[str, float], unit: float = 1.0, suffix: str = "s") -> dict[str, float]:
    base = times["1 thread"]
    for k, v in times.items():
        print(f"  {title:12s} {k:24s} {v * unit:8.3f} {suffix}  (CPU {CPU_TIMES[k] * unit:.3f})  "
              f"speed-up vs 1 thread {base / v:.2f}x")
    return {f"{title} {k}": base / v for k, v in times.items()}


def main(repeats: int = 3, n: int = N, steps: int = STEPS, cmp_samples: int = CMP_SAMPLES,
         greedy_steps: int = GREEDY_STEPS) -> dict[str, float]:
    header("threads: 1 compute thread vs 2 workers on canonical row chunks")
    print(f"  vector extensions: {vector_extensions()}; default workers {compute.default_workers()}")
    engine = load_default()
    prompt = engine.encode(PROMPT)
    out: dict[str, float] = {}

    # identical results under every setting (the contract), on a batch that runs in chunks
    results = [setting(w, t)(lambda: sample_many(engine, prompt, 4, 128, seed=1).step_logprobs)()
               for w, t in ((1, 1), (2, 1))]
    assert torch.equal(results[0], results[1]), "worker count changed a result"

    gpt2 = same_size_gpt2(engine)
    ids = torch.as_tensor([[engine.bos_id, *prompt]], device=engine.device)

    @torch.inference_mode()
    def hf():
        gpt2.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=greedy_steps,
                      min_new_tokens=greedy_steps, do_sample=False, pad_token_id=0, eos_token_id=None)

    greedy = {k: wrap(lambda: engine_greedy(engine, prompt, greedy_steps)) for k, wrap in SETTINGS.items()}
    greedy["generate 1 thread"] = setting(1)(hf)
    greedy["generate 2 threads"] = setting(1, 2)(hf)
    t = interleaved(greedy, repeats)
    out.update(report("greedy", t, 1e3 / greedy_steps, "ms/token"))
    for k in ("generate 1 thread", "generate 2 threads"):
        out[f"greedy vs {k}"] = t[k] / t["1 thread"]
        print(f"  Engine greedy (1 thread) vs {k}: {t[k] / t['1 thread']:.2f}x tokens/s")

    t = interleaved({k: wrap(lambda: sample_many(engine, prompt, steps, n, seed=0)) for k, wrap in SETTINGS.items()},
                    repeats)
    out.update(report(f"sample {n}x{steps}", t))

    from core.compare import DecoderSettings, compare
    from core.goals import Hamming

    def page():
        compare(engine, prompt, CMP_STEPS, 0, Hamming(), DecoderSettings(), n_samples=cmp_samples)

    t = interleaved({k: wrap(page) for k, wrap in SETTINGS.items()}, repeats)
    out.update(report("compare", t))
    return out


if __name__ == "__main__":
    main()
