"""GGUF checkpoints, de-quantized once into a cached safetensors directory.

``transformers`` reads a ``.gguf`` file by de-quantizing every tensor to float32, which takes seconds
to tens of seconds even for SmolLM2-135M. ``dequantized_dir`` does that once per file and keeps the
result (``config.json``, ``model.safetensors``, tokenizer files) under the cache root, outside the
repository, so later loads read plain float32 safetensors. The cache root is
``$DECODING_EXPLORER_CACHE`` if set, else ``$XDG_CACHE_HOME/decoding-explorer`` (``~/.cache/...``).

A cached copy is named after the file's stem and a fingerprint of its size and first and last MiB,
so a changed file gets a fresh copy. It is written to a temporary directory and renamed into place,
so a crash or a concurrent loader never leaves a half-written copy behind. Nothing touches the network.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import threading
import uuid
from pathlib import Path

CACHE_ENV = "DECODING_EXPLORER_CACHE"
_FINGERPRINT_BYTES = 1 << 20
_LOCK = threading.Lock()


def cache_root() -> Path:
    """Where de-quantized copies live: ``$DECODING_EXPLORER_CACHE``, else the user cache directory."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "decoding-explorer"


def cached_dir(gguf_path: str | Path) -> Path:
    """The directory that holds (or will hold) the de-quantized copy of ``gguf_path``."""
    path = Path(gguf_path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(_FINGERPRINT_BYTES))
        f.seek(max(0, size - _FINGERPRINT_BYTES))
        digest.update(f.read())
    return cache_root() / f"{path.stem}-{digest.hexdigest()[:12]}"


def gguf_parameter_count(gguf_path: str | Path) -> int:
    """Number of weights in a GGUF file (read from its tensor headers); ValueError if unreadable."""
    stat = Path(gguf_path).stat()
    return _parameter_count(str(Path(gguf_path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _parameter_count(path: str, size: int, mtime_ns: int) -> int:
    import gguf

    try:
        reader = gguf.GGUFReader(path)  # parses the whole vocabulary too: seconds, hence the cache
    except Exception as err:  # the reader raises bare ValueError/KeyError/struct errors on bad files
        raise ValueError(f"{path} is not a readable GGUF file ({err})") from err
    return sum(int(t.n_elements) for t in reader.tensors)


def load_gguf(gguf_path: str | Path):
    """(model, tokenizer) from a GGUF file, every weight de-quantized to float32; ValueError if
    ``transformers`` cannot read it (unsupported architecture, damaged file)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path)
    extra = {}
    try:  # transformers >= 5 can keep GGUF blocks packed; ask for plain dense weights
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    where = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32, **extra)
    except (ValueError, KeyError, OSError, RuntimeError, NotImplementedError) as err:
        from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

        archs = ", ".join(sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer")))
        raise ValueError(
            f"transformers cannot load the GGUF file {path} ({err}); GGUF architectures it reads: {archs}"
        ) from err
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dense now: drop the GGUF marker so the model saves plainly
        quantizer.remove_quantization_config(model)
    return model.eval(), tokenizer


def dequantized_dir(gguf_path: str | Path) -> Path:
    """A directory with the de-quantized model and tokenizer of ``gguf_path``, made on first use.

    Raises ValueError for a file ``transformers`` cannot read and OSError when the cache root is not
    writable or lacks space (set ``$DECODING_EXPLORER_CACHE`` to another directory)."""
    target = cached_dir(gguf_path)
    with _LOCK:
        if (target / "config.json").is_file():
            return target
        need = 4 * gguf_parameter_count(gguf_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target.parent).free
        if free < need * 1.1:
            raise OSError(
                f"the de-quantized copy of {Path(gguf_path).name} needs about {need / 1e9:.2f} GB but only "
                f"{free / 1e9:.2f} GB is free under {target.parent}; set {CACHE_ENV} to another directory"
            )
        model, tokenizer = load_gguf(gguf_path)
        partial = target.parent / f".partial-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            try:
                partial.rename(target)
            except OSError:
                if not (target / "config.json").is_file():  # not a concurrent writer that finished first
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target
