"""The shipped multi-token-prediction model as a ``NextTokenModel``.

``Engine`` wraps an ``MTPModel`` and its tokenizer: batched ``logprobs(prefixes)``, ``head_logprobs``
for every head, and incremental sessions with KV caches (``start``) for sampling, speculative
decoding and the step inspector. Every prefix is preceded by the end-of-text token the model was
trained with, so an empty prompt is valid.

Determinism (the contract is in ``core.compute``): prefixes go through the shared canonical-block
prefix cache (``core.prefix_cache``), every forward's shapes are a function of the request, each
computing thread holds one intra-op thread, and large batches run in canonical row chunks on a
fixed worker pool. A request's numbers therefore do not depend on the cache, on other sessions or
on the thread settings.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from core.compute import map_chunks, pin_thread, row_chunks
from core.model import KVCache, MTPModel
from core.prefix_cache import PrefixCache
from core.protocol import CachedSession, TextModel

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL_DIR = ASSETS / "models" / "mtp-default"


def auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class EngineSession(CachedSession):
    """Rows continuing one prompt with KV caches; see ``core.protocol.Session``.

    Beyond the protocol: ``feed`` several tokens per row at once (one forward pass), ``heads`` for
    every head's log-probs at a position, ``rollback`` to discard positions (speculative decoding).
    ``length`` counts tokens (prompt + generated), without the leading end-of-text token.
    """

    def __init__(self, engine: Engine, cache: KVCache, last: torch.Tensor):
        self.engine = engine
        self.cache = cache
        self.last = last

    @property
    def length(self) -> int:
        return self.cache.length - 1

    @property
    def batch(self) -> int:
        return self.cache.batch

    @torch.inference_mode()
    def feed(self, tokens) -> torch.Tensor:
        """Append tokens [B, T] (or [T] for one row); return head-1 log-probs [B, T, V] after each."""
        pin_thread()
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.engine.device)
        if ids.dim() == 1:
            ids = ids[None, :].expand(self.batch, -1)
        self.engine.check_room(self.cache.length + ids.shape[1] - 1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.engine.vocab_size):
            self.engine.check_tokens(ids.flatten().tolist())
        lp = self.engine._extend(self.cache, ids)
        self.last = lp[:, -1]
        return lp

    @torch.inference_mode()
    def heads(self, index: int | None = None, which: Sequence[int] | None = None) -> torch.Tensor:
        """[B, n_heads, V] log-probs of every head after token ``index`` (default: the last);
        with ``which`` (0-based head indices) only those heads, [B, len(which), V]."""
        pin_thread()
        pos = self.cache.length - 1 if index is None else index + 1
        which = range(self.engine.n_heads) if which is None else list(which)
        lg = self.engine.model.head_logits(self.cache, pos, which)
        return torch.log_softmax(lg.float(), dim=-1).cpu()

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` tokens; ``last`` becomes stale until the next feed."""
        self.cache.rollback(length + 1)

    @torch.inference_mode()
    def select(self, rows: Sequence[int]) -> EngineSession:
        """Row i of the new session is a copy of row ``rows[i]``: only filled positions are copied
        (a beam step or fork costs the prefix's length, not the context's capacity), and a shared
        prompt base stays shared."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        cache = self.cache.copy(rows=idx.to(self.engine.device))
        return EngineSession(self.engine, cache, self.last[idx])


class _BlockBackend:
    """``core.prefix_cache.BlockBackend`` over ``MTPModel`` caches of batch 1."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def empty(self) -> KVCache:
        return self.engine.model.new_cache(1, self.engine.max_len)

    def run(self, state: KVCache, tokens: list[int]) -> KVCache:
        self.engine.model.extend(state, torch.as_tensor(tokens, dtype=torch.long, device=self.engine.device)[None])
        return state

    def truncate(self, state: KVCache, length: int) -> KVCache:
        state.rollback(length)
        return state

    def private(self, state: KVCache, length: int, capacity: int) -> KVCache:
        return state.copy(length, capacity)


class Engine(TextModel):
    """A multi-head MTP model + tokenizer behind the ``NextTokenModel`` protocol."""

    def __init__(self, model: MTPModel, tokenizer, name: str = "mtp", device: str | torch.device | None = None):
        pin_thread()
        self.device = torch.device(device) if device is not None else auto_device()
        self.model = model.to(self.device, dtype=torch.float32).eval()
        self.tokenizer = tokenizer
        self.name = name
        cfg = model.config
        self.vocab_size = cfg.vocab_size
        self.bos_id = cfg.bos_token_id
        self.eos_id = cfg.eos_token_id
        self.n_heads = cfg.n_heads
        self.max_len = cfg.max_len
        self.prefix_cache = PrefixCache(_BlockBackend(self))

    # ---- text ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @property
    def max_tokens(self) -> int:
        """Longest prefix (prompt + generated tokens) the model's context holds."""
        return self.max_len - 1

    # ---- forwards -----------------------------------------------------------------------------
    def _ids(self, tokens: Sequence[int]) -> torch.Tensor:
        return torch.as_tensor(list(tokens), dtype=torch.long, device=self.device)[None]

    def _extend(self, cache: KVCache, ids: torch.Tensor) -> torch.Tensor:
        """Feed ids [B, T] into the cache; head-1 log-probs [B, T, V] (CPU float32). Large batches on
        CPU run in canonical row chunks (``core.compute.row_chunks``) on the worker pool."""
        B, T = ids.shape
        chunks = row_chunks(B) if self.device.type == "cpu" else [(0, B)]
        if len(chunks) == 1:
            return torch.log_softmax(self.model.extend(cache, ids).float(), dim=-1).cpu()
        start = cache.length

        def part(a: int, b: int) -> torch.Tensor:
            return torch.log_softmax(self.model.extend(cache.rows(a, b), ids[a:b]).float(), dim=-1)

        out = torch.cat(map_chunks(part, chunks))
        cache.length = start + T
        return out

    # ---- NextTokenModel -----------------------------------------------------------------------
    @torch.inference_mode()
    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] head-1 log-probs after each prefix. The prefixes are computed as a set, in a canonical
        order: their common part once (cached whole blocks, then the rest on a private copy), then
        every distinct row's own tokens in one right-padded batch on top of it."""
        pin_thread()
        if len(prefixes) == 0:
            return torch.empty(0, self.vocab_size)
        rows = [(self.bos_id, *map(int, p)) for p in prefixes]
        for r in rows:
            self.check_room(len(r) - 1)
            if len(r) > 1 and (min(r) < 0 or max(r) >= self.vocab_size):
                self.check_tokens(r)
        distinct = sorted(set(rows), key=lambda r: (len(r), r))
        common = _common_prefix_length(distinct)
        a, base = self.prefix_cache.base(distinct[0][:common], capacity=common)
        shared = self.model.extend(base, self._ids(distinct[0][a:common]))
        result = {distinct[0][:common]: torch.log_softmax(shared[0, -1].float(), dim=-1).cpu()}
        tails = [r for r in distinct if len(r) > common]
        if tails:
            width = max(len(r) for r in tails) - common
            ids = torch.zeros(len(tails), width, dtype=torch.long)
            for j, r in enumerate(tails):
                ids[j, : len(r) - common] = torch.as_tensor(r[common:])
            lp = self._extend(base.fork(self.model, len(tails), width), ids.to(self.device))
            ends = torch.as_tensor([len(r) - common - 1 for r in tails])
            result.update(zip(tails, lp[torch.arange(len(tails)), ends]))
        return torch.stack([result[r] for r in rows])

    @torch.inference_mode()
    def head_logprobs(self, prefix: Sequence[int]) -> torch.Tensor:
        """[n_heads, V]: head k's log p(token k positions after the prefix's end)."""
        return self.start(prefix).heads()[0]

    # ---- incremental sessions -----------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompt: Sequence[int], batch: int = 1, steps: int = 0) -> EngineSession:
        """A session of ``batch`` rows that all continue ``prompt``, with room for ``steps`` more
        tokens (more can be fed until the context is full when batch == 1). The prompt's whole
        blocks come from the prefix cache; the rest runs in one forward (batch 1), or — for several
        rows — up to its last token once as a shared base, then the last token per row."""
        pin_thread()
        prompt = [int(t) for t in prompt]
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.check_room(len(prompt) + steps)
        self.check_tokens(prompt)
        tokens = [self.bos_id, *prompt]
        if batch == 1:
            a, cache = self.prefix_cache.base(tokens, capacity=self.max_len)
            return EngineSession(self, cache, self._extend(cache, self._ids(tokens[a:]))[:, -1])
        if len(tokens) > 1:
            a, base = self.prefix_cache.base(tokens[:-1], capacity=len(tokens) - 1)
            self.model.extend(base, self._ids(tokens[a:-1]))
            cache = base.fork(self.model, batch, steps + 1)
        else:
            cache = self.model.new_cache(batch, steps + 1)
        last = self._extend(cache, self._ids(tokens[-1:]).expand(batch, 1))
        return EngineSession(self, cache, last[:, -1])


def _common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    n = min(len(r) for r in rows)
    first = rows[0]
    for i in range(n):
        t = first[i]
        if any(r[i] != t for r in rows):
            return i
    return n


def load_engine(path: str | Path, device: str | torch.device | None = None) -> Engine:
    """An Engine over a directory written by ``core.train`` (config.json, safetensors, tokenizer.json)."""
    from core.train import load_tokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"model directory {path} has no config.json")
    if not (path / "tokenizer.json").is_file():
        raise ValueError(f"model directory {path} has no tokenizer.json")
    model = MTPModel.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    return Engine(model, load_tokenizer(path / "tokenizer.json"), name=path.name, device=device)


_DEFAULT: Engine | None = None
_DEFAULT_LOCK = threading.Lock()


def load_default() -> Engine:
    """The shipped checkpoint's engine (loaded once per process)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = load_engine(DEFAULT_MODEL_DIR)
        return _DEFAULT
