"""Train the multi-token-prediction model: ``python -m core.train --help``.

Three stages, each resumable and deterministic for a given seed:

1. ``prepare``: gather a local corpus (default: the Python standard library's source, present on
   every machine), hold out 2% of the standard-library files (by a hash of the path) for
   validation, train a byte-level BPE tokenizer with ``tokenizers`` and write the token streams
   as uint16 arrays (``train.bin``, ``val.bin``) plus ``meta.json``.
2. ``fit``: train on random windows (their positions come from (seed, step), so a resumed run sees
   the same data), AdamW + warmup + cosine, bf16 autocast and optional ``torch.compile`` on CUDA,
   periodic per-head validation loss, a checkpoint (weights + optimizer + step) to resume from.
3. the end of ``fit`` writes the Hugging Face directory: ``config.json``, safetensors weights
   (bf16, sharded under 16 MiB), ``tokenizer.json``, ``train_log.json`` and a model card
   ``README.md`` with per-head validation loss against bigram / skip-bigram baselines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

EOT = "<|endoftext|>"
VAL_FRACTION_MOD = 50  # one stdlib file in 50 goes to validation


# ---------------------------------------------------------------------------------------------
# corpus and tokenizer
# ---------------------------------------------------------------------------------------------
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def site_root() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def corpus_files(spec: str) -> list[tuple[str, Path]]:
    """Resolve a corpus spec into sorted (source, path) pairs.

    spec: comma-separated items; ``stdlib`` = the standard library's ``.py`` files (without
    site-packages); ``site:NAME`` = the ``.py`` files of installed package NAME; anything else =
    a directory whose ``.py``/``.txt``/``.md`` files are read.
    """
    out: list[tuple[str, Path]] = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        if item == "stdlib":
            root = stdlib_root()
            files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts]
            out += [("stdlib", p) for p in files]
        elif item.startswith("site:"):
            root = site_root() / item[5:]
            if not root.is_dir():
                raise ValueError(f"corpus: package directory {root} not found")
            out += [(item, p) for p in root.rglob("*.py")]
        else:
            root = Path(item)
            if not root.is_dir():
                raise ValueError(f"corpus: {item!r} is not 'stdlib', 'site:NAME' or a directory")
            out += [(str(root), p) for ext in ("*.py", "*.txt", "*.md") for p in root.rglob(ext)]
    return sorted(out, key=lambda sp: str(sp[1]))


def is_val(source: str, path: Path) -> bool:
    """Validation files: one in VAL_FRACTION_MOD of the first source's files, by path hash."""
    rel = path.name if source != "stdlib" else str(path.relative_to(stdlib_root()))
    return int(hashlib.md5(rel.encode()).hexdigest(), 16) % VAL_FRACTION_MOD == 0


def read_texts(files, max_bytes=1_000_000):
    seen = set()
    for source, path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not data or len(data) > max_bytes:
            continue
        digest = hashlib.md5(data).digest()
        if digest in seen:  # exact duplicates (vendored copies) only once
            continue
        seen.add(digest)
        try:
            yield source, path, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def train_tokenizer(texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path: str | Path):
    """A transformers fast tokenizer over a saved tokenizer.json (EOT doubles as BOS/EOS)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token=EOT, eos_token=EOT)


def prepare(corpus: str, data_dir: Path, vocab_size: int) -> dict:
    data_dir.mkdir(parents=True, exist_ok=True)
    files = corpus_files(corpus)
    first = corpus.split(",")[0].strip()
    train_docs, val_docs = [], []
    for source, path, text in read_texts(files):
        (val_docs if source == first and is_val(source, path) else train_docs).append(text)
    if not train_docs or not val_docs:
        raise ValueError(
            f"corpus {corpus!r} gave {len(train_docs)} training and {len(val_docs)} validation files; need both"
        )
    tok = train_tokenizer(train_docs, vocab_size)
    tok.save(str(data_dir / "tokenizer.json"))
    eot = tok.token_to_id(EOT)
    meta = {"corpus": corpus, "vocab_size": tok.get_vocab_size(), "eot_id": eot}
    for name, docs in (("train", train_docs), ("val", val_docs)):
        ids = [eot]
        for enc in tok.encode_batch(docs):
            ids.extend(enc.ids)
            ids.append(eot)
        np.asarray(ids, dtype=np.uint16).tofile(data_dir / f"{name}.bin")
        meta[name] = {"files": len(docs), "bytes": sum(len(d.encode()) for d in docs), "tokens": len(ids)}
    meta["packages"] = _package_versions(corpus)
    meta["python"] = platform.python_version()
    (data_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def _package_versions(corpus: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for item in corpus.split(","):
        if item.strip().startswith("site:"):
            name = item.strip()[5:]
            try:
                out[name] = version(name)
            except PackageNotFoundError:
                out[name] = "unknown"
    return out


# ---------------------------------------------------------------------------------------------
# n-gram baselines
# ---------------------------------------------------------------------------------------------
def skip_bigram_nats(train: np.ndarray, val: np.ndarray, vocab: int, k: int) -> float:
    """Held-out cross-entropy (nats/token) of p(x_{t+k} | x_t) from train counts, smoothed toward
    the unigram with a Dirichlet prior (the best of a few strengths: a generous baseline)."""
    tr = train.astype(np.int64)
    pairs = tr[:-k] * vocab + tr[k:]
    keys, counts = np.unique(pairs, return_counts=True)
    ctx = np.bincount(tr[:-k], minlength=vocab).astype(np.float64)
    uni = (np.bincount(tr, minlength=vocab) + 1.0) / (len(tr) + vocab)
    va = val.astype(np.int64)
    vp = va[:-k] * vocab + va[k:]
    idx = np.searchsorted(keys, vp)
    idx_c = np.minimum(idx, len(keys) - 1)
    c = np.where(keys[idx_c] == vp, counts[idx_c], 0).astype(np.float64)
    best = math.inf
    for beta in (1.0, 3.0, 10.0, 30.0, 100.0):
        p = (c + beta * uni[va[k:]]) / (ctx[va[:-k]] + beta)
        best = min(best, float(-np.log(p).mean()))
    return best


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    d_model: int = 256
    n_trunk_layers: int = 6
    n_heads: int = 4
    n_attn_heads: int = 4
    context: int = 512
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    max_steps: int = 2000
    time_budget_s: float = 0.0  # > 0: schedule by elapsed time instead of steps
    weight_decay: float = 0.1
    eval_every: int = 200
    eval_windows: int = 64
    seed: int = 0

    def __post_init__(self):
        for name in ("d_model", "n_trunk_layers", "n_heads", "n_attn_heads", "context", "batch_size", "max_steps",
                     "eval_every", "eval_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if self.d_model % self.n_attn_heads:
            raise ValueError(f"d_model must be divisible by n_attn_heads ({self.n_attn_heads}), got {self.d_model}")
        for name, low, high in (("lr", 0.0, math.inf), ("min_lr_ratio", 0.0, 1.0), ("time_budget_s", 0.0, math.inf),
                                ("weight_decay", 0.0, math.inf)):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and math.isfinite(value) and low <= value <= high
            if not ok or (name == "lr" and value == 0):
                allowed = "> 0 and finite" if name == "lr" else (f"in [{low:g}, {high:g}]" if math.isfinite(high)
                                                                 else ">= 0 and finite")
                raise ValueError(f"{name} must be {allowed}, got {value!r}")


def batch_at(data: np.ndarray, step: int, cfg: TrainConfig, device) -> torch.Tensor:
    """The training batch of a given step: random windows drawn from (seed, step)."""
    rng = np.random.default_rng([cfg.seed, step])
    starts = rng.integers(0, len(data) - cfg.context, size=cfg.batch_size)
    x = np.stack([data[s : s + cfg.context] for s in starts]).astype(np.int64)
    return torch.from_numpy(x).to(device, non_blocking=True)


def val_windows(val: np.ndarray, cfg: TrainConfig, limit: int | None = None) -> np.ndarray:
    """Non-overlapping validation windows; ``limit`` of them spread evenly (None: all)."""
    n = len(val) // cfg.context
    idx = np.linspace(0, n - 1, num=n if limit is None else min(limit, n)).astype(np.int64)
    return np.stack([val[i * cfg.context : (i + 1) * cfg.context] for i in idx]).astype(np.int64)


@torch.no_grad()
def evaluate(model, windows: np.ndarray, device, batch: int = 16, mixed: bool = True) -> list[float]:
    """Mean per-head validation cross-entropy (nats/token); ``mixed=False`` forces fp32."""
    model.eval()
    total = torch.zeros(model.config.n_heads, dtype=torch.float64)
    for i in range(0, len(windows), batch):
        x = torch.from_numpy(windows[i : i + batch]).to(device)
        with _autocast(device if mixed else "cpu"):
            total += model(x, labels=x).head_losses.double().cpu() * len(x)
    model.train()
    return (total / len(windows)).tolist()


def _autocast(device):
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def lr_at(progress: float, step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def fit(data_dir: Path, out_dir: Path, cfg: TrainConfig, device: str, compile_model: bool = False,
        resume: bool = False, log=print, stop_at_step: int | None = None) -> dict | None:
    """Train (or resume from ``out_dir/checkpoint.pt``) and write the model directory.

    ``stop_at_step`` pauses the run there: the checkpoint is saved and None returned, so a long
    CPU run can go in pieces (``--resume`` continues it with the same schedule and data)."""
    from tqdm import tqdm

    from core.model import MTPConfig, MTPModel

    meta = json.loads((data_dir / "meta.json").read_text())
    train = np.fromfile(data_dir / "train.bin", dtype=np.uint16)
    val = np.fromfile(data_dir / "val.bin", dtype=np.uint16)
    torch.manual_seed(cfg.seed)
    mcfg = MTPConfig(vocab_size=meta["vocab_size"], d_model=cfg.d_model, n_trunk_layers=cfg.n_trunk_layers,
                     n_heads=cfg.n_heads, n_attn_heads=cfg.n_attn_heads, max_len=cfg.context,
                     bos_token_id=meta["eot_id"], eos_token_id=meta["eot_id"])
    model = MTPModel(mcfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95), fused=torch.device(device).type == "cuda")
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    history: list[dict] = []
    step, elapsed_before = 0, 0.0
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, elapsed_before, history = ck["step"], ck["elapsed_s"], ck["history"]
        log(f"resumed at step {step}")
    fwd = torch.compile(model) if compile_model else model
    windows = val_windows(val, cfg, cfg.eval_windows)
    t0 = time.time()
    total = cfg.max_steps
    bar = tqdm(total=None if cfg.time_budget_s > 0 else total, initial=step, desc="train",
               mininterval=1 if sys.stderr.isatty() else 30, disable="CI" in os.environ)
    model.train()
    while True:
        elapsed = elapsed_before + time.time() - t0
        progress = elapsed / cfg.time_budget_s if cfg.time_budget_s > 0 else step / cfg.max_steps
        if progress >= 1.0 or (cfg.time_budget_s <= 0 and step >= cfg.max_steps):
            break
        if stop_at_step is not None and step >= stop_at_step:
            save_checkpoint(ckpt_path, model, opt, step, elapsed, history)
            bar.close()
            log(f"paused at step {step}; continue with --resume")
            return None
        lr = lr_at(progress, step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch_at(train, step, cfg, device)
        try:
            with _autocast(device):
                out = fwd(x, labels=x)
        except Exception as exc:  # torch.compile unavailable here: fall back to eager once
            if fwd is model:
                raise
            log(f"torch.compile failed ({type(exc).__name__}: {exc}); continuing eagerly")
            fwd = model
            with _autocast(device):
                out = fwd(x, labels=x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{out.loss.item() / cfg.n_heads:.3f}", lr=f"{lr:.2e}")
        if step % cfg.eval_every == 0:
            vl = evaluate(model, windows, device)
            history.append({"step": step, "tokens": step * cfg.batch_size * cfg.context,
                            "elapsed_s": round(elapsed_before + time.time() - t0, 1),
                            "train_loss": out.loss.item() / cfg.n_heads, "val_loss": vl})
            log(f"step {step} val per head {[round(v, 3) for v in vl]}")
            save_checkpoint(ckpt_path, model, opt, step, elapsed_before + time.time() - t0, history)
    bar.close()
    elapsed = elapsed_before + time.time() - t0
    final = evaluate(model, val_windows(val, cfg), device, mixed=False)
    history.append({"step": step, "tokens": step * cfg.batch_size * cfg.context, "elapsed_s": round(elapsed, 1),
                    "val_loss": final})
    return finish(model, data_dir, out_dir, cfg, meta, train, val, final, history, step, elapsed, device)


def save_checkpoint(path: Path, model, opt, step: int, elapsed_s: float, history: list) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "elapsed_s": elapsed_s, "history": history}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never corrupts the last good checkpoint


def finish(model, data_dir, out_dir, cfg, meta, train, val, final, history, step, elapsed, device) -> dict:
    import shutil

    baselines = [skip_bigram_nats(train, val, meta["vocab_size"], k) for k in range(1, cfg.n_heads + 1)]
    bytes_per_token = meta["val"]["bytes"] / meta["val"]["tokens"]
    to_bpb = 1.0 / (math.log(2) * bytes_per_token)
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = model.wte.weight.numel() + model.wpe.weight.numel()
    report = {
        "steps": step, "tokens_seen": step * cfg.batch_size * cfg.context, "train_seconds": round(elapsed, 1),
        "device": _device_name(device), "parameters": n_params, "non_embedding_parameters": n_params - n_embed,
        "val_nats_per_token": final, "val_bits_per_byte": [v * to_bpb for v in final],
        "baseline_nats_per_token": baselines, "baseline_bits_per_byte": [b * to_bpb for b in baselines],
        "val_bytes_per_token": bytes_per_token, "config": asdict(cfg), "data": meta, "history": history,
        "torch": torch.__version__,
    }
    model.to(torch.bfloat16).save_pretrained(out_dir, max_shard_size="15MB", safe_serialization=True)
    model.float()
    shutil.copy(data_dir / "tokenizer.json", out_dir / "tokenizer.json")
    (out_dir / "train_log.json").write_text(json.dumps(report, indent=1))
    (out_dir / "README.md").write_text(model_card(report))
    return report


def _device_name(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def model_card(r: dict) -> str:
    d, c = r["data"], r["config"]
    rows = "\n".join(
        f"| {k + 1} | t+{k + 1} | {r['val_nats_per_token'][k]:.3f} | {r['val_bits_per_byte'][k]:.3f} | "
        f"{r['baseline_nats_per_token'][k]:.3f} | {r['baseline_bits_per_byte'][k]:.3f} |"
        for k in range(len(r["val_nats_per_token"]))
    )
    pkgs = ", ".join(f"{k} {v}" for k, v in d.get("packages", {}).items()) or "none"
    return f"""# Decoding Explorer default multi-token-prediction model

A small causal transformer with a shared trunk and {c['n_heads']} output heads; head k predicts
the token k positions ahead (Gloeckle et al., 2024). Shipped so the app can show every head's
distribution and run self-speculative decoding offline.

## Model
- {r['parameters']:,} parameters ({r['non_embedding_parameters']:,} without embeddings); stored in bf16 safetensors.
- d_model {c['d_model']}, {c['n_trunk_layers']} trunk blocks, {c['n_heads']} head blocks,
  {c['n_attn_heads']} attention heads, context {c['context']} tokens, learned positions,
  tied embedding/unembedding, vocabulary {d['vocab_size']} (byte-level BPE).

## Data
- Corpus spec `{d['corpus']}`: `.py` source files of the Python {d.get('python', '?')} standard library
  (site-packages excluded) and of the installed packages named with `site:` ({pkgs});
  exact duplicate files kept once, files over 1 MB skipped.
- Validation: the standard-library files whose path hash is 0 mod {VAL_FRACTION_MOD}
  ({d['val']['files']} files, {d['val']['bytes']:,} bytes, {d['val']['tokens']:,} tokens); never trained on.
- Training: {d['train']['files']} files, {d['train']['bytes']:,} bytes, {d['train']['tokens']:,} tokens.

## Training
- {r['steps']:,} steps × batch {c['batch_size']} × {c['context']} tokens = {r['tokens_seen']:,} tokens
  in {r['train_seconds']:.0f} s on {r['device']} (torch {r['torch']}).
- AdamW (β = 0.9, 0.95, weight decay {c['weight_decay']}), peak LR {c['lr']}, {c['warmup_steps']} warm-up steps,
  cosine to {c['min_lr_ratio']}× peak, gradient clip 1.0, seed {c['seed']}; loss = sum of the head cross-entropies.

## Held-out quality
Validation bytes per token: {r['val_bytes_per_token']:.3f}. Baseline for head k: the skip-bigram
p(x_(t+k) | x_t) counted on the training tokens (k = 1 is the ordinary bigram), smoothed toward
the unigram with the best of five Dirichlet strengths on the validation set (a generous baseline).

| head | predicts | model nats/token | model bits/byte | baseline nats/token | baseline bits/byte |
|---|---|---|---|---|---|
{rows}

Reproduce: `python -m core.train prepare --corpus '{d['corpus']}' --data DATA` then
`python -m core.train fit --data DATA --out OUT` with the configuration above
(`train_log.json` holds it and the validation curve).
"""


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m core.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="gather the corpus, train the tokenizer, write token streams")
    p.add_argument("--corpus", default="stdlib")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--vocab-size", type=int, default=8192)
    f = sub.add_parser("fit", help="train (or resume) and write the model directory")
    f.add_argument("--data", type=Path, required=True)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    f.add_argument("--compile", action="store_true")
    f.add_argument("--resume", action="store_true")
    f.add_argument("--stop-at-step", type=int, default=None, help="pause here (checkpoint saved); resume later")
    for field, default in asdict(TrainConfig()).items():
        f.add_argument("--" + field.replace("_", "-"), type=type(default), default=default)
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        print(json.dumps(prepare(a.corpus, a.data, a.vocab_size), indent=1))
        return
    cfg = TrainConfig(**{k: getattr(a, k) for k in asdict(TrainConfig())})
    if torch.device(a.device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    r = fit(a.data, a.out, cfg, a.device, compile_model=a.compile, resume=a.resume, stop_at_step=a.stop_at_step)
    if r is None:
        return
    print(json.dumps({k: r[k] for k in ("steps", "tokens_seen", "train_seconds", "val_nats_per_token",
                                         "val_bits_per_byte", "baseline_nats_per_token")}, indent=1))


if __name__ == "__main__":
    main()
