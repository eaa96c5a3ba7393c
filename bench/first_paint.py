"""The first visit to a freshly started app, in a real browser (Debian Chromium driven by Playwright), per source:
the shipped model, SmolLM2 and a random local model saved with transformers into a temp dir (allow-listed with
DECODING_EXPLORER_LOCAL_MODELS). For each, a new ``streamlit run app.py`` serves Compare at the defaults
(``/compare?source=...``), and the bench records when the page shell (title, then sidebar), the first decoded
output, the risk table and the finished run appear; then a reload (warm: model loaded and measured). Every time
is printed as a ratio to one greedy 8-token decode of the same model in this process, measured in the same run.

Needs /usr/bin/chromium and the ``playwright`` package (never ``playwright install``). ``BENCH_SMOKE=1``: the
shipped model only, 4 steps x 16 rows (checks that the script runs; its numbers mean nothing).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import header

ROOT = Path(__file__).resolve().parent.parent
SMOKE = bool(os.environ.get("BENCH_SMOKE"))
PROMPT = "The best way to learn a language is"
TIMEOUT_S = 600  # one visit (SmolLM2 at the defaults on 2 busy cores takes minutes without caps)
MILESTONES_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  const text = app ? app.innerText : "";
  const running = !app || app.dataset.testScriptState !== 'notRunning';
  return {
    title: text.includes("Compare decoders"),
    sidebar: !!document.querySelector("[data-testid='stSidebar'] [data-testid='stSelectbox']"),
    output: text.includes("greedy"),
    table: !!document.querySelector("[data-testid='stDataFrame']"),
    done: !running && !!document.querySelector("[data-testid='stDataFrame']")
          && !document.querySelector("[data-testid='stSkeleton']"),
  };
}"""


def _browser_helpers():
    """The server and browser launchers of the browser test (one implementation for both)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_browser

    return test_browser


def random_local_model(directory: Path) -> Path:
    """A random Llama (4 layers, width 256) with the shipped tokenizer, saved by transformers."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.engine import DEFAULT_MODEL_DIR
    from core.train import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    path = directory / "random-llama"
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """``os.environ`` with ``env`` added (a server started inside inherits it), restored after."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def greedy_seconds(source: str, env: dict[str, str]) -> float:
    """Median of 3 greedy 8-token decodes of the PROMPT (after one untimed), in this process."""
    from core import sources
    from core.compute import pin_thread
    from core.decoders import Greedy

    with environment(env):
        model = sources.load(source)
    prompt = model.encode(PROMPT)
    pin_thread()
    Greedy().decode(model, prompt, 8)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        Greedy().decode(model, prompt, 8)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def visit(page, url: str) -> dict[str, float]:
    """Seconds from navigation to each milestone (NaN for those never reached)."""
    marks: dict[str, float] = {}
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    while time.perf_counter() - start < TIMEOUT_S:
        try:
            seen = page.evaluate(MILESTONES_JS)
        except Exception:  # noqa: BLE001 - the page is still navigating
            seen = {}
        now = time.perf_counter() - start
        for name, hit in seen.items():
            if hit and name not in marks:
                marks[name] = now
        if "done" in marks:
            break
        page.wait_for_timeout(50)
    return {name: marks.get(name, float("nan")) for name in ("title", "sidebar", "output", "table", "done")}


def main() -> dict[str, float]:
    header("first paint: a fresh app's first visit to Compare, per source, in Chromium")
    tb = _browser_helpers()
    if tb.chromium_path() is None:
        print("  skipped: /usr/bin/chromium missing")
        return {}
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("  skipped: the playwright package is missing")
        return {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="first-paint-") as tmp:
        sources = [("shipped", "mtp")]
        if not SMOKE:
            sources += [("SmolLM2", "smollm2"), ("random local", f"local:{random_local_model(Path(tmp))}")]
        env = {"DECODING_EXPLORER_LOCAL_MODELS": tmp}
        for name, source in sources:
            greedy = greedy_seconds(source, env)
            query = f"source={source}&prompt={PROMPT}" + ("&steps=4&cmp_n_samples=16" if SMOKE else "")
            with environment(env), tb.streamlit_server() as base, tb.chromium_page() as page:
                cold = visit(page, f"{base}/compare?{query}")
                warm = visit(page, f"{base}/compare?{query}")
            print(f"  {name} ({source if not source.startswith('local:') else 'local'}): one greedy 8-token decode "
                  f"{greedy * 1000:.0f} ms")
            for label, marks in (("cold (fresh server)", cold), ("warm (reload)", warm)):
                shown = ", ".join(f"{k} {v:.1f} s ({v / greedy:.0f}x)" for k, v in marks.items())
                print(f"    {label}: {shown}")
            results[f"{name}_paint_ratio"] = cold["title"] / greedy
            results[f"{name}_done_ratio"] = cold["done"] / greedy
            results[f"{name}_warm_done_ratio"] = warm["done"] / greedy
    return results


if __name__ == "__main__":
    main()
