"""The shipped multi-token-prediction model as a ``NextTokenModel``.

``Engine`` wraps an ``MTPModel`` and its tokenizer: batched ``logprobs(prefixes)`` (the prefixes'
longest common prefix is cached and extended incrementally, the differing suffixes run as one
right-padded batch on top of it), ``head_logprobs`` for every head, and incremental sessions with
KV caches (``start``) for sampling, speculative decoding and the step inspector. Every prefix is
preceded by the end-of-text token the model was trained with, so an empty prompt is valid.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from core.model import KVCache, MTPModel
from core.protocol import CachedSession, TextModel

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL_DIR = ASSETS / "models" / "mtp-default"


def auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# Longest piece a prefix is fed in by ``_extend_prefix_cache`` (the model attends per query up to 8 rows).
PREFIX_PIECE = 8


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run a CPU forward with one intra-op thread, then restore the caller's setting.

    Why one thread: (1) the same request must give the same bits whatever the machine's thread
    settings or load — MKL's results for a batch depend on how many threads split it, and exported
    numbers, shared links and the concurrency tests rely on byte-identical results (a rule that
    switched threads with batch size or load made them differ); (2) small forwards are faster:
    stepping one token runs ~200 ops on [1, 256]-sized tensors, and with several threads every op
    waits at an OpenMP barrier (measured on 2 cores under load: greedy stepping 48-200 ms/token
    with 2 threads vs 4-7 ms with 1). The cost: large Monte Carlo batches lose the second core
    (Compare, 32 tokens x 64 samples on 2 idle cores: 4.2 s with 2 threads, 6.2 s with 1).
    The setting is per calling thread (OpenMP/MKL thread-local), so concurrent sessions each hold
    their own.
    """
    prev = torch.get_num_threads()
    if device.type != "cpu" or prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


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
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.engine.device)
        if ids.dim() == 1:
            ids = ids[None, :].expand(self.batch, -1)
        self.engine.check_room(self.cache.length + ids.shape[1] - 1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.engine.vocab_size):
            self.engine.check_tokens(ids.flatten().tolist())
        with _one_thread(self.engine.device):
            lp = torch.log_softmax(self.engine.model.extend(self.cache, ids).float(), dim=-1).cpu()
        self.last = lp[:, -1]
        return lp


    @torch.inference_mode()
    def heads(self, index: int | None = None, which: Sequence[int] | None = None) -> torch.Tensor:
        """[B, n_heads, V] log-probs of every head after token ``index`` (default: the last);
        with ``which`` (0-based head indices) only those heads, [B, len(which), V]."""
        pos = self.cache.length - 1 if index is None else index + 1
        which = range(self.engine.n_heads) if which is None else list(which)
        with _one_thread(self.engine.device):
            lg = self.engine.model.head_logits(self.cache, pos, which)
            return torch.log_softmax(lg.float(), dim=-1).cpu()

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` tokens; ``last`` becomes stale until the next feed."""
        self.cache.rollback(length + 1)

    @torch.inference_mode()
    def select(self, rows: Sequence[int]) -> EngineSession:
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        src = self.cache
        new = KVCache.__new__(KVCache)
        new.__dict__.update(src.__dict__)
        new.batch = len(idx)
        dev_idx = idx.to(self.engine.device)
        new.layers = []
        for lc in src.layers:
            c = lc.__class__.__new__(lc.__class__)
            c.__dict__.update(lc.__dict__)
            c.k, c.v = lc.k.index_select(0, dev_idx), lc.v.index_select(0, dev_idx)
            new.layers.append(c)
        new.z = src.z.index_select(0, dev_idx)
        return EngineSession(self.engine, new, self.last[idx])


class Engine(TextModel):
    """A multi-head MTP model + tokenizer behind the ``NextTokenModel`` protocol."""

    def __init__(self, model: MTPModel, tokenizer, name: str = "mtp", device: str | torch.device | None = None):
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
        self._lock = threading.Lock()
        self._prefix_cache: KVCache | None = None
        self._prefix_tokens: list[int] = []
        self._prefix_last: torch.Tensor | None = None

    # ---- text ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


    @property
    def max_tokens(self) -> int:
        """Longest prefix (prompt + generated tokens) the model's context holds."""
        return self.max_len - 1



    # ---- NextTokenModel -----------------------------------------------------------------------
    @torch.inference_mode()
    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        if len(prefixes) == 0:
            return torch.empty(0, self.vocab_size)
        rows = [[self.bos_id, *map(int, p)] for p in prefixes]
        for r in rows:
            self.check_room(len(r) - 1)
            if len(r) > 1 and (min(r) < 0 or max(r) >= self.vocab_size):
                self.check_tokens(r)
        common = _common_prefix_length(rows)
        with self._lock, _one_thread(self.device):
            base_last = self._extend_prefix_cache(rows[0][:common])
            suffixes = [r[common:] for r in rows]
            out = base_last.expand(len(rows), -1).clone()
            todo = [i for i, s in enumerate(suffixes) if s]
            if todo:
                width = max(len(suffixes[i]) for i in todo)
                ids = torch.zeros(len(todo), width, dtype=torch.long)
                for j, i in enumerate(todo):
                    ids[j, : len(suffixes[i])] = torch.as_tensor(suffixes[i])
                fork = self._prefix_cache.fork(self.model, len(todo), width)
                logits = self.model.extend(fork, ids.to(self.device))
                ends = torch.as_tensor([len(suffixes[i]) - 1 for i in todo], device=self.device)
                last = logits[torch.arange(len(todo), device=self.device), ends]
                out[todo] = torch.log_softmax(last.float(), dim=-1).cpu()
        return out

    def _extend_prefix_cache(self, tokens: list[int]) -> torch.Tensor:
        """Make the shared cache hold exactly ``tokens`` (reusing what matches); return head-1
        log-probs after the last of them."""
        cached = self._prefix_tokens
        keep = _common_prefix_length([cached, tokens]) if self._prefix_cache is not None else 0
        if keep == len(tokens) == len(cached):
            return self._prefix_last
        if self._prefix_cache is None or keep == 0:
            self._prefix_cache = self.model.new_cache(1, self.max_len)
            keep = 0
        if keep == len(tokens):  # a strict prefix of what is cached: recompute its last position
            keep -= 1
        self._prefix_cache.rollback(keep)
        # Fed in pieces of at most PREFIX_PIECE tokens, position 0 alone: every piece then runs the
        # model's per-query attention, bitwise like one-token steps, so the cached rows do not depend
        # on how earlier calls (other sessions included) split the prefix, and neither does any result.
        starts = [keep] if keep else [0, 1]
        starts += range(starts[-1] + PREFIX_PIECE, len(tokens), PREFIX_PIECE)
        for a, b in zip(starts, [*starts[1:], len(tokens)]):
            if a < b:
                ids = torch.as_tensor(tokens[a:b], dtype=torch.long, device=self.device)[None]
                logits = self.model.extend(self._prefix_cache, ids)
        self._prefix_tokens = list(tokens)
        self._prefix_last = torch.log_softmax(logits[0, -1].float(), dim=-1).cpu()
        return self._prefix_last

    @torch.inference_mode()
    def head_logprobs(self, prefix: Sequence[int]) -> torch.Tensor:
        """[n_heads, V]: head k's log p(token k positions after the prefix's end)."""
        return self.start(prefix).heads()[0]

    # ---- incremental sessions -----------------------------------------------------------------
    @torch.inference_mode()
    def start(self, prompt: Sequence[int], batch: int = 1, steps: int = 0) -> EngineSession:
        """A session of ``batch`` rows that all continue ``prompt``, with room for ``steps`` more
        tokens (more can be fed until the context is full when batch == 1)."""
        prompt = [int(t) for t in prompt]
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.check_room(len(prompt) + steps)
        self.check_tokens(prompt)
        with _one_thread(self.device):
            return self._start(prompt, batch, steps)

    def _start(self, prompt: list[int], batch: int, steps: int) -> EngineSession:
        ids = torch.as_tensor([self.bos_id, *prompt], dtype=torch.long, device=self.device)[None]
        if batch == 1:
            cache = self.model.new_cache(1, self.max_len)
            logits = self.model.extend(cache, ids)
            return EngineSession(self, cache, torch.log_softmax(logits[:, -1].float(), dim=-1).cpu())
        # the prompt once (batch 1) as a frozen base shared by all rows; the last prompt token is
        # re-fed per row so every row holds its own trunk output for head queries.
        base = self.model.new_cache(1, len(prompt) + 1)
        if len(prompt) > 0:
            self.model.extend(base, ids[:, :-1])
            cache = base.fork(self.model, batch, steps + 1)
        else:
            cache = self.model.new_cache(batch, steps + 1)
        logits = self.model.extend(cache, ids[:, -1:].expand(batch, 1))
        return EngineSession(self, cache, torch.log_softmax(logits[:, -1].float(), dim=-1).cpu())


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
