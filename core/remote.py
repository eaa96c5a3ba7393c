"""A model hosted by a serving engine (vLLM, SGLang, llama.cpp's server, llama-cpp-python's server) as a
``NextTokenModel``, through the OpenAI-compatible ``/v1/completions`` API with log-probabilities.

``connect(base_url, model=None, api_key_env=None)`` checks what the server can do (``Capabilities``)
against its own generation log-probs and returns a ``RemoteModel`` with ``encode``, ``decode`` and
``logprobs``.

Truncated distributions. A server returns the log-probs of its top k tokens per position (vLLM caps k
at ``--max-logprobs``, 20 by default; ``-1`` lifts the cap and ``logprobs=-1`` returns the whole
vocabulary). A ``RemoteModel`` row therefore holds the returned tokens' log-probs and ``-inf`` for
every token it was not told about, so a row sums to ``1 - rest`` where ``rest`` (``rest_mass``) is the
probability of "the rest of the vocabulary". Rows are never renormalised: a decoder that draws from a
row or takes its argmax sees only the known tokens, and ``unknown_bound`` gives the largest probability
any single unknown token can have (the k-th returned probability when the server returned a true top k,
else ``rest``). Consequences, each checked by ``certify_greedy`` / said by ``outputs_note``:

* greedy is exact when every chosen token's probability is at least its row's ``unknown_bound``
  (always, when the top k are all resolved: an unknown token is at most the k-th);
* beam search, lookahead and the mode search only look at known tokens: any output through an unknown
  token has probability at most the largest ``unknown_bound`` of the rows they visited;
* a teacher-forced probability of a token outside the top k reads 0 (true value <= ``unknown_bound``),
  so Hamming / N-gram risks estimated from truncated rows are upper bounds;
* Monte Carlo truth rows are drawn by the server itself (``sample_groups``: completions at the
  sampler's temperature), so they are unbiased whatever the truncation.

Prompts. vLLM, SGLang and llama.cpp's ``llama-server`` take token-id prompts. llama-cpp-python's server
takes text only, so a prefix is sent as text and checked to re-tokenize to the same ids; a prefix that
does not (byte-level BPE merges ``"\\n" "\\n"`` into ``"\\n\\n"``; ~2.5% of sampled SmolLM2 prefixes) is
reached by forced generation from its longest prefix that does: a grammar that allows only its text
plus a logit bias on its tokens, and a check that the server generated exactly those tokens (the
reported log-probs are the raw model's, before any bias or grammar).

Quirks found at connect and worked around (llama-cpp-python 0.3.36): ``echo`` reports each prompt
token's log-prob from the distribution one position later (used with the shift corrected for the
top-k rows; exact sequence scores are then unavailable); ``n`` > 1 returns one choice (one request per
row instead); ``top_logprobs`` are keyed by token strings, a partial UTF-8 token or a special token
showing as "" (strings are mapped to ids through the tokenize endpoint; ambiguous ones stay in the
rest of the vocabulary, so EOS is never visible there); an empty prompt fails.

The API key is read from the environment variable named by ``api_key_env`` and sent as a bearer token;
it is never part of the URL, ``repr``, ``source_info`` or any export.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch

from core.protocol import TextModel

DEFAULT_TOP_LOGPROBS = 20  # vLLM's default --max-logprobs; llama-cpp-python has no cap
PROBE_TEXT = "The capital of France is"
RETRY_STATUS = (429, 502, 503, 504)
SAMPLES_PER_REQUEST = 32  # rows per sampling request where n > 1 gives distinct choices
BATCH_PROMPTS = 32  # prompts per request where the server takes several
CHAIN_MAX_K = 100  # prompt_logprobs only up to this k (it returns k rows' worth per prompt position)
RESOLVE_CHUNK = 1000  # token strings tokenized per request (llama.cpp's special-token split is quadratic)
CACHE_ROWS = 1 << 16  # next-token rows kept per model (sparse: the returned tokens only)
FORCE_BIAS = 100.0  # logit bias that makes a token the argmax (its raw log-prob is reported unchanged)
EOS_CANDIDATES = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|end|>")
RAW_SAMPLING = {"top_k": -1, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                "frequency_penalty": 0.0}  # vLLM names: every warper off
RAW_SAMPLING_LLAMA = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0,
                      "presence_penalty": 0.0, "frequency_penalty": 0.0}  # llama-cpp-python names


class RemoteError(ValueError):
    """A server problem in words: unreachable, too slow, an HTTP error, or a missing capability."""


# ---- progress -----------------------------------------------------------------------------------

_PROGRESS: contextvars.ContextVar[Callable[[int, str], None] | None] = contextvars.ContextVar(
    "remote_progress", default=None)


@contextlib.contextmanager
def progress(callback: Callable[[int, str], None]) -> Iterator[None]:
    """Within the block, ``callback(requests_done, what)`` is called (in the calling thread) after every
    batch of server requests, so a page can show that work is going on."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


# ---- HTTP client ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """Timeouts in seconds, bounded retries and how many requests run at once."""

    connect_timeout: float = 3.0
    read_timeout: float = 60.0
    retries: int = 2  # extra attempts after a connection error or HTTP 429/502/503/504
    backoff: float = 0.25  # seconds before the first retry, doubled each time
    concurrency: int = 4

    def __post_init__(self):
        for name in ("connect_timeout", "read_timeout", "backoff"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name, low in (("retries", 0), ("concurrency", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def normalise_base_url(base_url: str) -> str:
    """``base_url`` without a trailing ``/`` or ``/v1``; ValueError for anything but an http(s) URL
    with a host and no credentials, query or fragment (keys go in an environment variable)."""
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
    url = base_url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("base_url must not contain credentials; put the API key in an environment variable "
                         "and pass its name as api_key_env")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as err:
        raise ValueError(f"base_url has an invalid port: {url!r}") from err
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}"


class Client:
    """One pooled HTTP session to a server: timeouts, bounded retries with backoff, a concurrency limit
    and the bearer key from the environment (never stored anywhere else)."""

    def __init__(self, base_url: str, api_key_env: str | None = None, settings: ClientSettings | None = None):
        import requests
        from requests.adapters import HTTPAdapter

        self.base_url = normalise_base_url(base_url)
        self.settings = settings or ClientSettings()
        self.api_key_env = api_key_env
        self._headers = {"Content-Type": "application/json"}
        if api_key_env is not None:
            if not isinstance(api_key_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
                raise ValueError(f"api_key_env must name an environment variable (letters, digits, _), "
                                 f"got {api_key_env!r}")
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"the environment variable {api_key_env} (api_key_env) is not set or empty")
            self._headers["Authorization"] = f"Bearer {key}"
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.settings.concurrency, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._pool = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="remote")
        self.requests = 0  # sent so far (retries included), for benchmarks and progress
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    def get(self, path: str) -> dict:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict) -> dict:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict | None) -> dict:
        import requests

        s = self.settings
        url = self.base_url + path
        delay = s.backoff
        for attempt in range(s.retries + 1):
            last = attempt == s.retries
            with self._count_lock:
                self.requests += 1
            try:
                resp = self._session.request(method, url, data=None if body is None else json.dumps(body),
                                             headers=self._headers, timeout=(s.connect_timeout, s.read_timeout))
            except requests.exceptions.ReadTimeout as err:
                raise RemoteError(f"the server at {self.base_url} did not answer {path} within "
                                  f"{s.read_timeout:g} s; it may be overloaded, or lower steps / samples") from err
            except requests.exceptions.RequestException as err:  # refused, DNS, reset, connect timeout
                if last:
                    raise RemoteError(f"cannot reach the server at {self.base_url} ({type(err).__name__}) after "
                                      f"{s.retries + 1} attempts; is it running, and is the URL right?") from err
            else:
                if resp.status_code in RETRY_STATUS and not last:
                    pass
                elif resp.status_code >= 400:
                    raise HTTPStatusError(resp.status_code, path, _error_text(resp))
                else:
                    try:
                        return resp.json()
                    except ValueError as err:
                        raise RemoteError(f"the server at {self.base_url} answered {path} with something that is "
                                          "not JSON") from err
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def map(self, fn: Callable, items: Sequence, what: str = "requests") -> list:
        """``[fn(x) for x in items]`` with at most ``concurrency`` at once; results in order. Progress is
        reported from the calling thread as results arrive."""
        if len(items) <= 1 or threading.current_thread().name.startswith("remote"):  # no nested waits
            out = [fn(x) for x in items]
            _report(len(out), what)
            return out
        ctx = contextvars.copy_context()
        futures = [self._pool.submit(ctx.copy().run, fn, x) for x in items]
        out = []
        for i, f in enumerate(futures):
            out.append(f.result())
            _report(i + 1, what)
        return out


def _report(done: int, what: str) -> None:
    callback = _PROGRESS.get()
    if callback is not None:
        callback(done, what)


class HTTPStatusError(RemoteError):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, path: str, detail: str):
        self.status, self.path, self.detail = status, path, detail
        hint = {401: " (a missing or wrong API key: set api_key_env)", 403: " (forbidden)",
                404: " (not offered by this server)"}.get(status, "")
        super().__init__(f"the server answered {path} with HTTP {status}{hint}: {detail}")


def _error_text(resp) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err).splitlines()[0][:300] if str(err) else ""
    return str(data)[:300]


# ---- capabilities ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What the server offers, as checked at connect (not as documented)."""

    flavour: str  # "vllm" | "llama-cpp-python" | "llama.cpp" | "openai-compatible"
    tokenize: str  # tokenize endpoint path
    detokenize: str  # detokenize endpoint path
    token_prompts: bool  # prompts as token ids (else text, checked to re-tokenize to the same ids)
    batch_prompts: bool  # several prompts in one request
    n_choices: bool  # n > 1 returns n different choices for one seed
    token_id_keys: bool  # top_logprobs keyed "token_id:<id>" (vLLM return_tokens_as_token_ids)
    top_logprobs: int  # tokens per position the explorer asks for (-1: the whole vocabulary)
    full_rows: bool  # rows hold the whole vocabulary (rest of the vocabulary = rounding only)
    echo: str  # "aligned" | "shifted" | "none": prompt log-probs through echo
    prompt_logprobs: bool  # vLLM's prompt_logprobs
    grammar: bool  # GBNF grammars (llama.cpp) for forced generation of non-canonical text
    notes: tuple[str, ...] = ()  # fallbacks taken, in words

    @property
    def exact_scores(self) -> bool:
        """Exact log-probs of any token sequence by teacher forcing (prompt log-probs)."""
        return self.prompt_logprobs or self.echo == "aligned"

    def lines(self) -> list[str]:
        """A human summary, one capability per line."""
        k = "the whole vocabulary" if self.top_logprobs < 0 else f"top {self.top_logprobs}"
        return [
            f"server: {self.flavour}",
            f"next-token rows: {k} per position" + ("" if self.full_rows else
                                                    " + the rest of the vocabulary as one mass"),
            "prompts: token ids" if self.token_prompts else
            "prompts: text (each prefix checked to re-tokenize to its ids)",
            f"prompts per request: {'many' if self.batch_prompts else 'one'}; n > 1 choices: "
            f"{'yes' if self.n_choices else 'no (one request per sample)'}",
            "exact sequence scores: " + ("yes (prompt_logprobs)" if self.prompt_logprobs else
                                         "yes (echo)" if self.echo == "aligned" else
                                         "unavailable (top-k rows only)"),
            *self.notes,
        ]


# ---- next-token rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One prefix's next-token distribution as the server reported it.

    Attributes:
        ids: token ids the server gave a log-prob for, most probable first.
        logprobs: their log-probs (the raw model's, before any sampling warper).
        rest: 1 - the known probabilities: the rest of the vocabulary (>= 0, never spread over it).
        bound: the largest probability any single unknown token can have.
    """

    ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    rest: float
    bound: float

    @classmethod
    def point(cls, token: int) -> Row:
        return cls((int(token),), (0.0,), 0.0, 0.0)

    @classmethod
    def build(cls, entries: dict[int, float], complete_top: int | None) -> Row:
        """From {id: log-prob}. ``complete_top``: k when the entries hold the server's true top k (all
        resolved), so an unknown token is at most the k-th probability; None otherwise."""
        order = sorted(entries.items(), key=lambda kv: (-kv[1], kv[0]))
        ids = tuple(int(i) for i, _ in order)
        lps = tuple(float(v) for _, v in order)
        rest = max(0.0, 1.0 - math.fsum(math.exp(v) for v in lps))
        bound = rest
        if complete_top is not None and 0 < complete_top <= len(lps):
            bound = min(rest, math.exp(lps[complete_top - 1]))
        return cls(ids, lps, rest, bound)


# ---- the model ------------------------------------------------------------------------------------


class RemoteModel(TextModel):
    """A served model behind the ``NextTokenModel`` protocol (one head); see the module doc for what a
    truncated row means. Thread-safe: rows are cached per prefix behind a lock."""

    n_heads = 1

    def __init__(self, client: Client, model_id: str, caps: Capabilities, vocab_size: int, eos_id: int | None,
                 max_tokens: int, bos_id: int | None = None):
        self.client = client
        self.model_id = model_id
        self.caps = caps
        self.vocab_size = int(vocab_size)
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.max_tokens = int(max_tokens)
        self.name = model_id
        self._lock = threading.Lock()
        self._rows: OrderedDict[tuple[int, ...], Row] = OrderedDict()
        self._texts: OrderedDict[tuple[int, ...], str] = OrderedDict()  # ids -> the text they came from
        self._encoded: dict[str, tuple[int, ...]] = {}  # text -> ids (the inverse of _texts)
        self._canonical: dict[tuple[int, ...], bool] = {}  # ids -> re-tokenizes to itself (text servers)
        self._token_text: dict[int, str] = {}
        self._resolved: dict[str, int | None] = {}  # top_logprobs key -> token id (None: ambiguous)
        self._separator: tuple[str, int] | None = None  # a special token's text and id, to batch tokenizing
        self.local_tokenizer = None  # a transformers tokenizer, for servers without tokenize endpoints

    def __repr__(self) -> str:
        return f"RemoteModel({self.client.base_url!r}, model={self.model_id!r})"

    @property
    def base_url(self) -> str:
        return self.client.base_url

    @property
    def requests(self) -> int:
        return self.client.requests

    # ---- text -------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if not text:
            return []
        with self._lock:
            known = self._encoded.get(text)
        ids = list(known) if known is not None else self._tokenize(text)  # pages encode the prompt every run
        with self._lock:
            self._encoded[text] = tuple(ids)
            self._texts[tuple(ids)] = text
            self._texts.move_to_end(tuple(ids))
            while len(self._texts) > 256:
                self._encoded.pop(self._texts.popitem(last=False)[1], None)
        return ids

    def decode(self, tokens: Sequence[int]) -> str:
        tokens = [int(t) for t in tokens]
        self.check_tokens(tokens)
        if not tokens:
            return ""
        try:
            return self._detokenize(tokens)
        except RemoteError:  # e.g. llama-cpp-python cannot detokenize a partial UTF-8 character
            return "".join(self.token_text(t) for t in tokens)

    def token_text(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id not in self._token_text:
            try:
                text = self._detokenize([token_id])
            except RemoteError:
                text = f"⟨token {token_id}⟩"  # a byte of a UTF-8 character, or a special token
            if text == "" and token_id == self.eos_id:
                text = "⟨EOS⟩"
            self._token_text[token_id] = text
        return self._token_text[token_id]

    def _tokenize(self, text: str) -> list[int]:
        path = self.caps.tokenize
        if path == "local":
            return list(self.local_tokenizer.encode(text, add_special_tokens=False))
        if path == "/tokenize" and self.caps.flavour == "llama.cpp":
            data = self.client.post(path, {"content": text})
        elif path == "/tokenize":
            data = self.client.post(path, {"model": self.model_id, "prompt": text, "add_special_tokens": False})
        else:
            data = self.client.post(path, {"model": self.model_id, "input": text})
        return _int_list(data.get("tokens"), "tokenize")

    def _detokenize(self, tokens: list[int]) -> str:
        path = self.caps.detokenize
        if path == "local":
            return self.local_tokenizer.decode(tokens, clean_up_tokenization_spaces=False)
        data = self.client.post(path, {"model": self.model_id, "tokens": tokens})
        for key in ("prompt", "text", "content"):
            if isinstance(data.get(key), str):
                return data[key]
        raise RemoteError(f"the server's {path} answer has no text")

    # ---- NextTokenModel ---------------------------------------------------------------------------
    def logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, V] float32: each row's known log-probs, -inf elsewhere (a row sums to 1 - its rest mass)."""
        rows = self.rows(prefixes)
        out = torch.full((len(rows), self.vocab_size), -math.inf, dtype=torch.float32)
        for b, row in enumerate(rows):
            if row.ids:
                out[b, list(row.ids)] = torch.tensor(row.logprobs, dtype=torch.float32)
        return out

    def head_logprobs(self, prefix: Sequence[int]) -> torch.Tensor:
        return self.logprobs([prefix])

    def rest_mass(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B] float64: the probability of the tokens each row does not show (the rest of the vocabulary)."""
        return torch.tensor([r.rest for r in self.rows(prefixes)], dtype=torch.float64)

    def unknown_bound(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B] float64: the largest probability any one token missing from each row can have."""
        return torch.tensor([r.bound for r in self.rows(prefixes)], dtype=torch.float64)

    def rows(self, prefixes: Sequence[Sequence[int]]) -> list[Row]:
        """The ``Row`` after each prefix (cached; missing ones fetched in as few requests as the server
        allows)."""
        keys = [tuple(int(t) for t in p) for p in prefixes]
        for k in keys:
            self.check_tokens(k)
            if not k:
                raise ValueError("a remote model needs a non-empty prompt (servers differ on what an empty one means)")
        missing = [k for k in dict.fromkeys(keys) if self._cached(k) is None]
        if missing:
            self._fetch(missing)
        rows = []
        for k in keys:
            row = self._cached(k)
            if row is None:  # evicted between fetch and read (a very large batch): fetch alone
                self._fetch([k])
                row = self._cached(k)
            rows.append(row)
        return rows

    def _cached(self, key: tuple[int, ...]) -> Row | None:
        if self.eos_id is not None and key[-1] == self.eos_id and self._is_generated_eos(key):
            return Row.point(self.eos_id)
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
            return row

    def _is_generated_eos(self, key: tuple[int, ...]) -> bool:
        """A prefix ending in EOS that is not a prompt the user typed: the sequence has ended, and an
        ended sequence continues with EOS for sure (``core.protocol.pad_after_eos``)."""
        with self._lock:
            return key not in self._texts

    def _store(self, key: tuple[int, ...], row: Row) -> None:
        with self._lock:
            self._rows[key] = row
            self._rows.move_to_end(key)
            while len(self._rows) > CACHE_ROWS:
                self._rows.popitem(last=False)

    # ---- fetching rows ----------------------------------------------------------------------------
    def _fetch(self, keys: list[tuple[int, ...]]) -> None:
        """Fetch the rows of ``keys``. Token-id servers: a key with several needed prefixes goes as one prompt
        with prompt_logprobs (rows for all its prefixes; only for small k: whole rows per prompt position
        would be huge), others as one-token completions; up to ``BATCH_PROMPTS`` prompts per request where
        the server takes several. Text servers: one request per key."""
        self.check_room(max(len(k) for k in keys) + 1)
        if not self.caps.token_prompts:
            self.client.map(self._fetch_text, keys, "next-token rows")
            return
        chains: list[tuple[int, ...]] = []
        singles = list(keys)
        if self.caps.prompt_logprobs and 0 < self.caps.top_logprobs <= CHAIN_MAX_K:
            tops = _maximal(keys)
            chains = [m for m in tops if sum(k == m[: len(k)] for k in keys) > 1]
            singles = [k for k in keys if not any(k == m[: len(k)] for m in chains)]
        size = BATCH_PROMPTS if self.caps.batch_prompts else 1
        jobs = [(chains[i : i + size], True) for i in range(0, len(chains), size)]
        jobs += [(singles[i : i + size], False) for i in range(0, len(singles), size)]
        self.client.map(lambda job: self._fetch_ids(*job), jobs, "next-token rows")

    def _fetch_ids(self, keys: list[tuple[int, ...]], chain: bool) -> None:
        """One request for prompts ``keys`` (token ids): the row after each, and with ``chain`` the rows after
        each of its prefixes too (prompt_logprobs)."""
        prompt = [list(k) for k in keys] if len(keys) > 1 else list(keys[0])
        extra = {"prompt_logprobs": self.caps.top_logprobs} if chain else {}
        data = self.client.post("/v1/completions", self._completion_body(prompt, **extra))
        for key, choice in zip(keys, _choices(data, len(keys))):
            plp = choice.get("prompt_logprobs")
            if chain and isinstance(plp, list) and len(plp) == len(key):
                for i in range(1, len(key)):
                    entries = _id_entries(plp[i])
                    if entries:
                        self._store(key[:i], Row.build(entries, self.caps.top_logprobs))
            self._store(key, self._rows_of_choice(choice)[0])

    def _completion_body(self, prompt, max_tokens: int = 1, *, sampling: bool = False, **extra) -> dict:
        """A /v1/completions request: greedy with every warper off unless ``extra`` says otherwise."""
        body = {"model": self.model_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                "logprobs": self.caps.top_logprobs, **_raw_sampling(self.caps)}
        if self.caps.token_id_keys:
            body["return_tokens_as_token_ids"] = True
        bias = dict(extra.pop("logit_bias", {}))
        if self.caps.flavour == "llama-cpp-python" and self.eos_id is not None and not sampling:
            # it reports nothing for a position where it picks EOS; the bias only steers its pick (the
            # log-probs it reports are the raw model's), and EOS stays in the rest of the vocabulary
            bias[str(self.eos_id)] = -FORCE_BIAS
        if bias:
            body["logit_bias"] = bias
        body.update(extra)
        return body

    def _fetch_text(self, key: tuple[int, ...]) -> None:
        """One prefix through a text-prompt server: directly when its text re-tokenizes to it, else by
        forced generation from its longest prefix that does."""
        text = self._text_of(key)
        if self._is_canonical(key, text):
            data = self.client.post("/v1/completions", self._completion_body(text))
            self._store(key, self._rows_of_choice(_choices(data, 1)[0])[0])
            return
        base = self._canonical_base(key)
        self._forced(base, list(key[len(base):]))

    def _text_of(self, key: tuple[int, ...]) -> str:
        """The text a text-prompt server must receive for ``key``: the typed text of the longest prompt
        it starts with, then the detokenized rest."""
        with self._lock:
            best = max((p for p in self._texts if len(p) <= len(key) and key[: len(p)] == p), key=len, default=())
            head = self._texts.get(best, "")
        rest = list(key[len(best):])
        if not rest:
            return head
        try:
            return head + self._detokenize(rest)
        except RemoteError as err:
            raise ValueError(f"the server takes text prompts and cannot detokenize the tokens {rest[:8]} "
                             f"(a prefix that ends inside a UTF-8 character or holds a special token)") from err

    def _is_canonical(self, key: tuple[int, ...], text: str) -> bool:
        with self._lock:
            known = self._canonical.get(key)
            if known is None and key in self._texts:
                known = True
        if known is None:
            known = tuple(self._tokenize(text)) == key if text else False
            with self._lock:
                self._canonical[key] = known
        return known

    def _canonical_base(self, key: tuple[int, ...]) -> tuple[int, ...]:
        """The longest prefix of ``key`` known to re-tokenize to itself (at least the prompt)."""
        with self._lock:
            good = [p for p, ok in self._canonical.items() if ok] + list(self._texts)
        return max((p for p in good if len(p) < len(key) and key[: len(p)] == p), key=len, default=())

    def _forced(self, base: tuple[int, ...], forced: list[int]) -> None:
        """Rows after base + forced[:j] for every j, by generating ``forced`` after ``base``'s text with a
        grammar allowing only its text and a logit bias on its tokens; checked token by token."""
        if not base:
            raise ValueError("the server takes text prompts, and this prefix cannot be sent as text")
        if not self.caps.grammar:
            raise ValueError(f"the server takes text prompts, and the tokens {forced[:8]} re-tokenize differently "
                             "(a non-canonical tokenization); this server offers no grammar to force them")
        text = self._text_of(base)
        pieces = [self.token_text(t) for t in forced]
        extra = {"grammar": f"root ::= {gbnf_literal(''.join(pieces))} .*",
                 "logit_bias": {str(t): FORCE_BIAS for t in set(forced)}}
        data = self.client.post("/v1/completions", self._completion_body(text, len(forced) + 1, **extra))
        choice = _choices(data, 1)[0]
        got = list((choice.get("logprobs") or {}).get("tokens") or [])
        if got[: len(forced)] != pieces or any(p == "" or p.startswith("⟨token") for p in pieces):
            raise ValueError(f"the server takes text prompts, and forcing the non-canonical tokens {forced[:8]} "
                             f"after the prompt produced {got[: len(forced)]!r} instead of {pieces!r}")
        rows = self._rows_of_choice(choice, chosen_ids=forced)
        for j, row in enumerate(rows[: len(forced) + 1]):
            self._store(base + tuple(forced[:j]), row)

    def _rows_of_choice(self, choice: dict, chosen_ids: Sequence[int] | None = None) -> list[Row]:
        """One Row per generated position of a completion choice (the first: after the prompt).
        ``chosen_ids``: the ids of the generated tokens, whose exact log-probs (``token_logprobs``) join
        their rows even when their strings do not resolve."""
        lp = choice.get("logprobs")
        if not isinstance(lp, dict) or not isinstance(lp.get("top_logprobs"), list) or not lp["top_logprobs"]:
            raise RemoteError("the server returned no top_logprobs (is logprobs supported for this model?)")
        values = lp.get("token_logprobs") or []
        k = self.caps.top_logprobs
        rows = []
        for j, top in enumerate(lp["top_logprobs"]):
            if not isinstance(top, dict):
                raise RemoteError("the server's top_logprobs entries are not objects")
            entries, resolved = self._entries(top)
            if chosen_ids is not None and j < len(chosen_ids) and j < len(values) and _finite(values[j]):
                entries.setdefault(int(chosen_ids[j]), float(values[j]))
            # a true top k (every key resolved, none merged): an unlisted token is at most the k-th
            complete = resolved and not self.caps.full_rows and 0 < k <= len(top)
            rows.append(Row.build(entries, k if complete else None))
        return rows

    def _entries(self, top: dict) -> tuple[dict[int, float], bool]:
        """{id: log-prob} of a top_logprobs object, and whether every key was resolved to an id."""
        if self.caps.token_id_keys:
            return _id_entries(top), True
        keys = [k for k in top if k not in self._resolved]
        if keys:
            self._resolve(keys)
        entries, complete = {}, True
        for key, value in top.items():
            tid = self._resolved.get(key)
            if tid is None or not _finite(value):
                complete = False
            elif tid not in entries:
                entries[tid] = float(value)
        return entries, complete

    def _resolve(self, strings: list[str]) -> None:
        """Map token strings to ids: a string that tokenizes to exactly one id, which detokenizes back to
        the string, is that token; "" (a partial UTF-8 or special token) and anything else stays unresolved
        (in the rest mass). Strings are tokenized together, joined by a special token (which the tokenizer
        never merges across), and checked together by detokenizing all their ids at once; a batch that
        fails the check is resolved string by string."""
        todo = [s for s in dict.fromkeys(strings) if s != ""]
        for s in strings:
            if s == "":
                self._resolved[s] = None
        found: dict[str, int] = {}
        if self._separator is not None and len(todo) > 1:
            chunks = [todo[i : i + RESOLVE_CHUNK] for i in range(0, len(todo), RESOLVE_CHUNK)]
            for part in self.client.map(self._resolve_joined, chunks, "token strings"):
                found.update(part)
            if found and self._detokenize(list(found.values())) != "".join(found):
                found = {}  # e.g. a tokenizer that adds a space after special tokens: check one by one
        alone = [s for s in todo if s not in found]

        def one(s: str) -> int | None:
            ids = self._tokenize(s)
            if len(ids) != 1:
                return None
            try:
                return int(ids[0]) if self._detokenize(ids) == s else None
            except RemoteError:
                return None

        found.update(zip(alone, self.client.map(one, alone, "token strings")))
        self._resolved.update(found)

    def _resolve_joined(self, strings: list[str]) -> dict[str, int]:
        text, sep = self._separator
        pieces = _split(self._tokenize(text.join(strings)), sep)
        if len(pieces) != len(strings):
            return {}
        return {s: int(ids[0]) for s, ids in zip(strings, pieces) if len(ids) == 1}

    # ---- sampling on the server --------------------------------------------------------------------
    def sample_groups(self, prompt: Sequence[int], steps: int, groups, observe=None):
        """``core.decoders.sample_groups`` drawn by the server itself, so the rows are unbiased draws
        whatever the truncation of the reported rows: completions of ``steps`` tokens at the sampler's
        settings. Each request gets a seed derived from the group's seed (``row_seeds``): one request per
        row, or, where ``n`` > 1 returns distinct choices, up to ``SAMPLES_PER_REQUEST`` rows per request
        (then the rows depend on how many are drawn). Rows that end with EOS are padded with EOS (as
        ``core.protocol.pad_after_eos``). ``observe`` sees the first group's rows."""
        from core.decoders import Samples, Sampling, check_call, check_count

        prompt = check_call(self, prompt, steps)
        if not groups:
            raise ValueError("groups must hold at least one (n, seed, sampler)")
        self.check_room(len(prompt) + steps)
        out = []
        for g, (n, seed, sampler) in enumerate(groups):
            check_count("n", n)
            if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
                raise ValueError(f"seed must be an integer for a random decoder, got {seed!r}")
            sampler = sampler or Sampling()
            params = _server_sampler(sampler, self.caps)
            per = SAMPLES_PER_REQUEST if self.caps.n_choices else 1
            counts = [min(per, int(n) - i) for i in range(0, int(n), per)]
            jobs = list(zip(row_seeds(int(seed), len(counts)), counts))
            rows = [r for batch in self.client.map(lambda job, p=params: self._sample_request(prompt, steps, *job, p),
                                                   jobs, "samples") for r in batch]
            tokens = torch.tensor([r[0] for r in rows], dtype=torch.long)
            step_lp = torch.tensor([r[1] for r in rows], dtype=torch.float64)
            out.append(Samples(tokens, step_lp, self._warped(prompt, tokens, sampler, step_lp)))
            if g == 0 and observe is not None:
                for t in range(steps):
                    observe(t, self.logprobs([prompt + row[:t] for row in tokens.tolist()]), tokens[:, t])
        return out

    def _sample_request(self, prompt: list[int], steps: int, seed: int, n: int, params: dict) -> list:
        """n rows (token ids, their log-probs) from one seeded completion request."""
        send = list(prompt) if self.caps.token_prompts else self._text_of(tuple(prompt))
        extra = {"n": n} if n > 1 else {}
        body = self._completion_body(send, steps, sampling=True, seed=seed, **extra)
        body.update(params)
        return [self._sampled_row(prompt, steps, c) for c in _choices(self.client.post("/v1/completions", body), n)]

    def _sampled_row(self, prompt: list[int], steps: int, choice: dict) -> tuple[list[int], list[float]]:
        lp = choice.get("logprobs") or {}
        strings = list(lp.get("tokens") or [])
        values = list(lp.get("token_logprobs") or [])
        ids = self._sampled_ids(prompt, strings, choice.get("text"))
        rows = self._rows_of_choice(choice, chosen_ids=ids) if strings else []
        tokens, step_lp = [], []
        for j, (tid, value) in enumerate(zip(ids, values)):
            self._store(tuple(prompt + tokens), rows[j])
            tokens.append(tid)
            step_lp.append(float(value))
        if len(tokens) < steps and (not tokens or tokens[-1] != self.eos_id):  # stopped at an unreported EOS
            if self.eos_id is None or choice.get("finish_reason") not in ("stop", "eos", None):
                raise RemoteError(f"the server stopped a sample after {len(tokens)} of {steps} tokens (finish_reason "
                                  f"{choice.get('finish_reason')!r}) and its EOS id is unknown: pass eos_id")
            row = self.rows([prompt + tokens])[0]
            # llama-cpp-python never reports EOS's log-prob (its key is ""): its upper bound stands in
            tokens.append(self.eos_id)
            step_lp.append(dict(zip(row.ids, row.logprobs)).get(self.eos_id, math.log(max(row.rest, 1e-300))))
        while len(tokens) < steps:  # an ended sequence continues with EOS for sure
            tokens.append(self.eos_id)
            step_lp.append(0.0)
        return tokens[:steps], step_lp[:steps]

    def _sampled_ids(self, prompt: list[int], strings: list[str], text) -> list[int]:
        """Token ids of a sampled row from its token strings (or the ids themselves)."""
        if self.caps.token_id_keys:
            return [_token_id_key(s) for s in strings]
        missing = [s for s in dict.fromkeys(strings) if s not in self._resolved]
        if missing:
            self._resolve(missing)
        ids = [self._resolved.get(s) for s in strings]
        if all(i is not None for i in ids):
            return ids
        if isinstance(text, str):  # e.g. a character split over byte tokens: its canonical tokens
            full = self._tokenize(self._text_of(tuple(prompt)) + text)
            if full[: len(prompt)] == prompt and len(full) - len(prompt) == len(strings):
                new = full[len(prompt):]
                if all(i is None or i == j for i, j in zip(ids, new)):
                    return new
        raise RemoteError(f"cannot tell which tokens the server sampled: {strings!r} do not map to token ids")

    def _warped(self, prompt, tokens: torch.Tensor, sampler, step_lp: torch.Tensor) -> torch.Tensor:
        if sampler.is_identity:
            return step_lp.clone()
        n, steps = tokens.shape
        rows = self.logprobs([prompt + tokens[i, :t].tolist() for i in range(n) for t in range(steps)])
        warped = sampler.warp(rows)
        return warped.gather(1, tokens.reshape(-1, 1)).squeeze(1).double().reshape(n, steps)

    # ---- exact sequence scores ---------------------------------------------------------------------
    def sequence_logprobs(self, prompt: Sequence[int], tokens: Sequence[int]) -> tuple[float, ...]:
        """Exact log p(token_t | prompt, tokens_<t) for every token, by teacher forcing through the
        server's prompt log-probs (vLLM ``prompt_logprobs``, or ``echo`` where it is aligned). RemoteError
        where the server offers neither (``caps.exact_scores`` is False)."""
        prompt, tokens = [int(t) for t in prompt], [int(t) for t in tokens]
        self.check_tokens(prompt + tokens)
        if not self.caps.exact_scores:
            raise RemoteError("exact sequence scores are unavailable on this server: it reports no prompt "
                              "log-probs that agree with its own generation log-probs")
        if not tokens:
            return ()
        full = prompt + tokens
        if self.caps.prompt_logprobs:
            data = self.client.post("/v1/completions", self._completion_body(full, prompt_logprobs=1))
            choice = _choices(data, 1)[0]
            plp = choice.get("prompt_logprobs") or data.get("prompt_logprobs")
            return tuple(_id_entries(plp[i])[full[i]] for i in range(len(prompt), len(full)))
        send = full if self.caps.token_prompts else self._text_of(tuple(full))
        if not self.caps.token_prompts and not self._is_canonical(tuple(full), send):
            raise RemoteError("exact sequence scores need a text that re-tokenizes to the same tokens")
        data = self.client.post("/v1/completions", self._completion_body(send, echo=True))
        values = (_choices(data, 1)[0].get("logprobs") or {}).get("token_logprobs") or []
        return tuple(float(values[i]) for i in range(len(prompt), len(full)))


def _raw_sampling(caps: Capabilities) -> dict:
    return dict(RAW_SAMPLING_LLAMA if caps.flavour == "llama-cpp-python" else RAW_SAMPLING)


def _server_sampler(sampler, caps: Capabilities) -> dict:
    """Server parameters for a ``core.decoders.Sampling``: ValueError for a setting the server cannot
    apply the way ``warp_logprobs`` does."""
    params = {"temperature": float(sampler.temperature)}
    if sampler.top_k is not None:
        params["top_k"] = int(sampler.top_k)
    if sampler.top_p is not None:
        params["top_p"] = float(sampler.top_p)
    if caps.flavour == "llama-cpp-python" and sampler.temperature != 1 and sampler.truncates:
        raise ValueError("llama.cpp applies top-k / top-p before the temperature (transformers after it): "
                         "combine them only on in-process models")
    for name in ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "top_n_sigma"):
        if getattr(sampler, name, None) is not None:
            raise ValueError(f"{name} is not sent to servers (their definitions differ from transformers'); "
                             "use it on in-process models")
    return params


def row_seeds(seed: int, n: int) -> list[int]:
    """n per-row server seeds (31-bit) derived from ``seed``: the same seed, the same rows."""
    state = np.random.SeedSequence([seed % 2**63, 7]).generate_state(n, dtype=np.uint32)
    return [int(s) & 0x7FFFFFFF for s in state]


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (every character outside [A-Za-z0-9 ] escaped)."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch.isascii() and (ch.isalnum() or ch == " "):
            out.append(ch)
        elif o < 0x80:
            out.append(f"\\x{o:02X}")
        elif o <= 0xFFFF:
            out.append(f"\\u{o:04X}")
        else:
            out.append(f"\\U{o:08X}")
    return '"' + "".join(out) + '"'


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _token_id_key(key: str) -> int:
    if not isinstance(key, str) or not key.startswith("token_id:"):
        raise RemoteError(f"expected a 'token_id:<id>' key (return_tokens_as_token_ids), got {key!r}")
    return int(key[len("token_id:"):])


def _id_entries(top) -> dict[int, float]:
    """{id: log-prob} from a vLLM top_logprobs object ({"token_id:12": lp}) or a prompt_logprobs entry
    ({"12": {"logprob": lp, "rank": r, "decoded_token": s}})."""
    entries: dict[int, float] = {}
    if not isinstance(top, dict):
        return entries
    for key, value in top.items():
        tid = _token_id_key(key) if str(key).startswith("token_id:") else int(key)
        lp = value.get("logprob") if isinstance(value, dict) else value
        if _finite(lp) and tid not in entries:
            entries[tid] = float(lp)
    return entries


def _choices(data: dict, n: int) -> list[dict]:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or len(choices) < n:
        raise RemoteError(f"the server returned {0 if not isinstance(choices, list) else len(choices)} choices, "
                          f"expected {n}")
    return sorted(choices, key=lambda c: c.get("index", 0))[:n] if n > 1 else choices[:1]


def _int_list(value, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise RemoteError(f"the server's {what} answer has no list of token ids")
    return list(value)


def _split(ids: list[int], sep: int) -> list[list[int]]:
    out: list[list[int]] = [[]]
    for t in ids:
        if t == sep:
            out.append([])
        else:
            out[-1].append(int(t))
    return out


def _maximal(keys: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The keys that are not a prefix of another key (their chains cover all keys)."""
    out = []
    for k in sorted(keys, key=len, reverse=True):
        if not any(o[: len(k)] == k for o in out):
            out.append(k)
    return out


# ---- connect --------------------------------------------------------------------------------------


def connect(base_url: str, model: str | None = None, api_key_env: str | None = None, *,
            top_logprobs: int | None = None, vocab_size: int | None = None, eos_id: int | None = None,
            tokenizer: str | None = None, settings: ClientSettings | None = None) -> RemoteModel:
    """A ``RemoteModel`` over the OpenAI-compatible server at ``base_url`` (e.g. ``http://host:8000``).

    Args:
        model: the served model's id (``/v1/models``); None takes the only (or first) one.
        api_key_env: name of the environment variable holding the API key (sent as a bearer token).
        top_logprobs: tokens per position to ask for; None: 20 (vLLM's default cap), -1: the whole
            vocabulary where the server allows it (vLLM ``--max-logprobs -1``).
        vocab_size, eos_id: for servers that do not tell (llama-cpp-python serving a file this machine
            cannot read).
        tokenizer: a local directory with the served model's tokenizer files, used only when the server
            offers no tokenize / detokenize endpoint (it must be the server's own tokenizer).

    Raises RemoteError (a ValueError) naming what is missing: an unreachable server, no
    ``/v1/completions`` with log-probs, no tokenize endpoint, or log-probs that disagree with the
    server's own generation.
    """
    if top_logprobs is not None and (not isinstance(top_logprobs, int) or isinstance(top_logprobs, bool)
                                     or not (top_logprobs == -1 or top_logprobs >= 1)):
        raise ValueError("top_logprobs must be None, -1 (the whole vocabulary) or an integer >= 1, "
                         f"got {top_logprobs!r}")
    client = Client(base_url, api_key_env, settings)
    try:
        return _probe(client, model, top_logprobs, vocab_size, eos_id, _local_tokenizer(tokenizer))
    except BaseException:
        client.close()
        raise


def _local_tokenizer(path: str | None):
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike) or not Path(path).expanduser().is_dir():
        raise ValueError(f"tokenizer must be a local directory with tokenizer files, got {path!r}")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(Path(path).expanduser()), local_files_only=True,
                                             trust_remote_code=False)
    except Exception as err:  # tokenizer classes raise anything from OSError to TypeError on bad files
        raise ValueError(f"could not load the tokenizer in {path} ({type(err).__name__}: {err})") from err


def _probe(client: Client, model: str | None, top_logprobs, vocab_size, eos_id, local_tokenizer) -> RemoteModel:
    listing = client.get("/v1/models")
    data = listing.get("data") if isinstance(listing, dict) else None
    ids = [m.get("id") for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    if not ids:
        raise RemoteError(f"the server at {client.base_url} lists no models at /v1/models")
    if model is None:
        model = ids[0]
    elif model not in ids:
        raise RemoteError(f"model {model!r} is not served at {client.base_url}; it serves: {', '.join(ids)}")
    meta = next(m for m in data if isinstance(m, dict) and m.get("id") == model)
    flavour = _flavour(meta)
    tokenize, detokenize = _tokenizer_paths(client, model, flavour, local_tokenizer is not None)
    vocab, eos, max_len = _model_facts(meta, model, vocab_size, eos_id)
    max_len = max_len or 1 << 20  # unknown: the server's own error names its context
    notes: list[str] = []
    caps = Capabilities(flavour, tokenize, detokenize, token_prompts=False, batch_prompts=False, n_choices=False,
                        token_id_keys=False, top_logprobs=top_logprobs or DEFAULT_TOP_LOGPROBS, full_rows=False,
                        echo="none", prompt_logprobs=False, grammar=flavour in ("llama-cpp-python", "llama.cpp"))

    separator = None

    def probe_model(c: Capabilities) -> RemoteModel:
        m = RemoteModel(client, model, c, vocab or 1 << 20, eos, max_len)
        m._separator, m.local_tokenizer = separator, local_tokenizer
        if not m.encode(PROBE_TEXT):
            raise RemoteError(f"the server's tokenizer turned {PROBE_TEXT!r} into no tokens")
        return m

    m = probe_model(caps)
    prompt_ids = m.encode(PROBE_TEXT)
    separator = _find_separator(m)
    try:  # token-id prompts, and log-probs keyed by token id
        first = client.post("/v1/completions", m._completion_body(prompt_ids, 1, logprobs=1,
                                                                   return_tokens_as_token_ids=True))
        caps = _replace(caps, token_prompts=True)
    except HTTPStatusError as err:
        try:
            first = client.post("/v1/completions", m._completion_body(PROBE_TEXT, 1, logprobs=1))
        except HTTPStatusError:
            raise err from None
    tops = (_choices(first, 1)[0].get("logprobs") or {}).get("top_logprobs")
    if not tops or not isinstance(tops[0], dict):
        raise RemoteError("the server's /v1/completions returned no top_logprobs: log-probabilities are required")
    caps = _replace(caps, token_id_keys=bool(tops[0]) and all(str(k).startswith("token_id:") for k in tops[0]))
    caps = _replace(caps, **_logprob_cap(client, probe_model(caps), prompt_ids, top_logprobs, notes))
    if vocab is None and caps.full_rows and caps.token_id_keys:
        vocab = _full_row_size(client, probe_model(caps), prompt_ids)
    if vocab is None:
        raise RemoteError("the server does not tell its vocabulary size; pass vocab_size (the Models page: "
                          "'Vocabulary size')")
    m = probe_model(caps)
    if eos is None:
        eos = _guess_eos(m, notes)
        m = probe_model(caps)

    # the server's own greedy generation: its rows are the reference for every later check
    send = list(prompt_ids) if caps.token_prompts else PROBE_TEXT
    gen = _choices(client.post("/v1/completions", m._completion_body(send, 2)), 1)[0]
    greedy = _generated_ids(m, gen)
    generated = m._rows_of_choice(gen, chosen_ids=greedy)
    if len(greedy) < 2 or generated[0].ids[:1] != (greedy[0],):
        raise RemoteError("the server's greedy tokens are not the top of its own log-probs; its logprobs cannot "
                          "be trusted for this model")
    if not caps.token_id_keys:  # learn every token string's id now: later rows then need no tokenize calls
        _resolve_vocabulary(client, m, send)
    caps = _replace(caps, batch_prompts=_try_batch(client, m, prompt_ids))
    caps = _replace(caps, n_choices=_try_n(client, m, prompt_ids, notes))
    caps = _replace(caps, **_try_prompt_scores(client, m, prompt_ids, greedy, generated, notes))
    remote = RemoteModel(client, model, _replace(caps, notes=tuple(notes)), vocab, eos, max_len)
    remote._separator, remote.local_tokenizer = separator, local_tokenizer
    remote._resolved.update(m._resolved)
    remote.encode(PROBE_TEXT)
    after = remote.rows([tuple(prompt_ids) + (greedy[0],)])[0]  # through the path every later row takes
    if not _rows_agree(after, generated[1]):
        raise RemoteError("the server's next-token log-probs for a prefix disagree with its own generation "
                          "log-probs at the same position")
    return remote


def _replace(caps: Capabilities, **changes) -> Capabilities:
    import dataclasses

    return dataclasses.replace(caps, **changes)


def _flavour(meta: dict) -> str:
    if meta.get("owned_by") == "vllm" or "max_model_len" in meta:
        return "vllm"
    if meta.get("owned_by") == "me" or "permissions" in meta:  # llama-cpp-python's /v1/models
        return "llama-cpp-python"
    if isinstance(meta.get("meta"), dict) and "n_vocab" in meta["meta"]:
        return "llama.cpp"
    if meta.get("owned_by") == "sglang":
        return "sglang"
    return "openai-compatible"


def _tokenizer_paths(client: Client, model: str, flavour: str, local: bool) -> tuple[str, str]:
    tries = [("/extras/tokenize", {"model": model, "input": "a"}, "/extras/detokenize")] if \
        flavour == "llama-cpp-python" else []
    tries += [("/tokenize", {"model": model, "prompt": "a", "add_special_tokens": False}, "/detokenize"),
              ("/tokenize", {"content": "a"}, "/detokenize"),
              ("/extras/tokenize", {"model": model, "input": "a"}, "/extras/detokenize")]
    for path, body, detok in tries:
        try:
            if isinstance(client.post(path, body).get("tokens"), list):
                return path, detok
        except HTTPStatusError:
            continue
    if local:
        return "local", "local"
    raise RemoteError("the server offers no tokenize endpoint (/tokenize or /extras/tokenize), which the explorer "
                      "needs to turn text into token ids; name a local copy of its tokenizer (tokenizer=, or "
                      "'tokenizer' in the sources config)")


def _model_facts(meta: dict, model: str, vocab_size, eos_id) -> tuple[int | None, int | None, int | None]:
    """(vocabulary size, EOS id, context length) from the arguments, the listing, or a local GGUF file."""
    for name, value in (("vocab_size", vocab_size), ("eos_id", eos_id)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be None or an integer >= 0, got {value!r}")
    vocab, eos = vocab_size, eos_id
    max_len = meta.get("max_model_len") if isinstance(meta.get("max_model_len"), int) else None
    info = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
    if vocab is None and isinstance(info.get("n_vocab"), int):
        vocab = info["n_vocab"]
    if max_len is None and isinstance(info.get("n_ctx_train"), int):
        max_len = None  # the training context; the server's own n_ctx may be smaller: let it say so
    if (vocab is None or eos is None) and model.endswith(".gguf") and Path(model).is_file():
        g_vocab, g_eos = gguf_facts(model)
        vocab = g_vocab if vocab is None else vocab
        eos = g_eos if eos is None else eos
    return vocab, eos, max_len


_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # scalar type -> bytes


@functools.lru_cache(maxsize=8)
def gguf_facts(path: str) -> tuple[int, int | None]:
    """(vocabulary size, EOS id) from a GGUF file's metadata header (read directly: ``gguf.GGUFReader``
    parses every tensor and takes seconds)."""
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise RemoteError(f"{path} is not a GGUF file")
        _, n_kv = struct.unpack_from("<QQ", buf, 8)
        pos, vocab, eos = 24, None, None

        def string(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", buf, at)
            return buf[at + 8 : at + 8 + n].decode("utf-8", "replace"), at + 8 + n

        def skip(kind: int, at: int) -> int:
            if kind == 8:
                return string(at)[1]
            if kind == 9:
                inner, count = struct.unpack_from("<IQ", buf, at)
                at += 12
                if inner in _GGUF_SIZES:
                    return at + count * _GGUF_SIZES[inner]
                for _ in range(count):
                    at = skip(inner, at)
                return at
            return at + _GGUF_SIZES[kind]

        for _ in range(n_kv):
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if key == "tokenizer.ggml.tokens" and kind == 9:
                vocab = struct.unpack_from("<IQ", buf, pos)[1]
            elif key == "tokenizer.ggml.eos_token_id" and kind in (4, 5):
                eos = struct.unpack_from("<I" if kind == 4 else "<i", buf, pos)[0]
            pos = skip(kind, pos)
    if vocab is None:
        raise RemoteError(f"{path} has no tokenizer.ggml.tokens")
    return int(vocab), (int(eos) if eos is not None else None)


def _logprob_cap(client: Client, m: RemoteModel, prompt_ids, wanted, notes: list[str]) -> dict:
    """How many log-probs per position the server gives (falling back from -1 or k to the cap it states)."""
    if m.caps.flavour == "llama-cpp-python":
        if wanted == -1:
            notes.append("llama-cpp-python has no logprobs=-1; asking for 1,000,000 (its whole vocabulary, keyed "
                         "by strings: tokens sharing a string stay in the rest of the vocabulary)")
            return {"top_logprobs": 1_000_000, "full_rows": False}
        return {"top_logprobs": wanted or DEFAULT_TOP_LOGPROBS, "full_rows": False}
    k = wanted or DEFAULT_TOP_LOGPROBS
    send = list(prompt_ids) if m.caps.token_prompts else PROBE_TEXT
    try:
        client.post("/v1/completions", m._completion_body(send, logprobs=k))
        return {"top_logprobs": k, "full_rows": k == -1}
    except HTTPStatusError as err:
        if err.status >= 500:
            raise
        cap = re.search(r"max(?:imum)? allowed:? (\d+)", err.detail)
        fallback = min(int(cap.group(1)), DEFAULT_TOP_LOGPROBS if k == -1 else k) if cap else 5
        notes.append(f"the server refused logprobs={k} ({err.detail[:120]}); using {max(1, fallback)} per position "
                     "(vLLM: start it with --max-logprobs -1 for whole rows)")
        return {"top_logprobs": max(1, fallback), "full_rows": False}


def _full_row_size(client: Client, m: RemoteModel, prompt_ids) -> int:
    data = client.post("/v1/completions", m._completion_body(list(prompt_ids)))
    top = (_choices(data, 1)[0].get("logprobs") or {}).get("top_logprobs") or [{}]
    return max(_id_entries(top[0])) + 1


def _generated_ids(model: RemoteModel, choice: dict) -> list[int]:
    strings = (choice.get("logprobs") or {}).get("tokens") or []
    if model.caps.token_id_keys:
        return [_token_id_key(s) for s in strings]
    model._resolve([s for s in strings if s not in model._resolved])
    ids = [model._resolved.get(s) for s in strings]
    if not ids or ids[0] is None:
        raise RemoteError(f"cannot map the server's generated token {strings[:1]!r} to a token id")
    return ids


def _guess_eos(model: RemoteModel, notes: list[str]) -> int | None:
    for text in EOS_CANDIDATES:
        try:
            ids = model._tokenize(text)
        except RemoteError:
            continue
        if len(ids) == 1:
            notes.append(f"EOS taken to be {text} (id {ids[0]}); pass eos_id if the model ends otherwise")
            return int(ids[0])
    notes.append("no EOS token found: samples that stop early cannot be padded")
    return None


def _resolve_vocabulary(client: Client, m: RemoteModel, send) -> None:
    """Map every token string the server can show to its id, from one whole-vocabulary log-probs request
    and one tokenize request (the strings joined by a special token). Without a separator it is left to
    the rows as they come."""
    if m._separator is None:
        return
    data = client.post("/v1/completions", m._completion_body(send, logprobs=max(m.vocab_size, 1)))
    top = (_choices(data, 1)[0].get("logprobs") or {}).get("top_logprobs") or [{}]
    m._resolve(list(top[0]))


def _find_separator(m: RemoteModel) -> tuple[str, int] | None:
    """A special token's text that tokenizes to one id and detokenizes to "" (never merged with text)."""
    for text in EOS_CANDIDATES:
        try:
            ids = m._tokenize(text)
            if len(ids) == 1 and m._detokenize(ids) == "":
                return text, int(ids[0])
        except RemoteError:
            continue
    return None


def _try_batch(client: Client, model: RemoteModel, prompt_ids) -> bool:
    prompts = [list(prompt_ids), list(prompt_ids[:-1]) or list(prompt_ids)] if model.caps.token_prompts else \
        [PROBE_TEXT, PROBE_TEXT + " the"]
    try:
        data = client.post("/v1/completions", model._completion_body(prompts))
    except HTTPStatusError:
        return False
    return isinstance(data.get("choices"), list) and len(data["choices"]) == 2


def _try_n(client: Client, model: RemoteModel, prompt_ids, notes: list[str]) -> bool:
    send = list(prompt_ids) if model.caps.token_prompts else PROBE_TEXT
    body = model._completion_body(send, 6, sampling=True, n=4, seed=1, temperature=1.0)
    try:
        data = client.post("/v1/completions", body)
    except HTTPStatusError:
        notes.append("n > 1 refused: one request per sample")
        return False
    choices = data.get("choices") or []
    if len(choices) != 4:
        notes.append(f"n = 4 returned {len(choices)} choice(s): one request per sample")
        return False
    if len({c.get("text") for c in choices}) == 1:
        notes.append("n = 4 with a seed returned 4 identical samples: one request per sample")
        return False
    return True


def _try_prompt_scores(client: Client, model: RemoteModel, prompt_ids, greedy_ids, generated, notes) -> dict:
    """Whether prompt log-probs (vLLM prompt_logprobs, or echo) agree with the generation log-probs."""
    full = list(prompt_ids) + [greedy_ids[0]]
    want = dict(zip(generated[0].ids, generated[0].logprobs))[greedy_ids[0]]
    if model.caps.token_prompts:
        try:
            data = client.post("/v1/completions", model._completion_body(full, prompt_logprobs=1))
            plp = _choices(data, 1)[0].get("prompt_logprobs") or data.get("prompt_logprobs")
            if isinstance(plp, list) and len(plp) == len(full):
                got = _id_entries(plp[-1]).get(full[-1])
                if got is not None and abs(got - want) < 1e-3:
                    return {"prompt_logprobs": True, "echo": "none"}
                notes.append("prompt_logprobs disagree with the generation log-probs: not used")
        except HTTPStatusError:
            pass
    send = full if model.caps.token_prompts else model._text_of(tuple(full))
    try:
        data = client.post("/v1/completions", model._completion_body(send, echo=True))
    except HTTPStatusError:
        notes.append("echo refused: exact sequence scores unavailable")
        return {"prompt_logprobs": False, "echo": "none"}
    lp = _choices(data, 1)[0].get("logprobs") or {}
    values, tops = lp.get("token_logprobs") or [], lp.get("top_logprobs") or []
    n = len(full)
    if len(values) >= n and _finite(values[n - 1]) and abs(values[n - 1] - want) < 1e-3:
        return {"prompt_logprobs": False, "echo": "aligned"}
    if len(tops) >= n - 1 and isinstance(tops[n - 2], dict):
        entries, _ = model._entries(tops[n - 2])
        if greedy_ids[0] in entries and abs(entries[greedy_ids[0]] - want) < 1e-3:
            notes.append("echo reports each prompt token's log-prob from the next position's distribution "
                         "(shifted by one): exact sequence scores unavailable")
            return {"prompt_logprobs": False, "echo": "shifted"}
    notes.append("echo log-probs disagree with the generation log-probs: not used")
    return {"prompt_logprobs": False, "echo": "none"}


def _rows_agree(a: Row, b: Row, tol: float = 1e-3) -> bool:
    da, db = dict(zip(a.ids, a.logprobs)), dict(zip(b.ids, b.logprobs))
    shared = set(da) & set(db)
    return bool(shared) and a.ids[:1] == b.ids[:1] and all(abs(da[t] - db[t]) < tol for t in shared)


# ---- certificates and notes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """Whether an output found over truncated rows is what the full distribution would give.

    ``exact``: certainly the same; ``bound``: the largest probability an unknown token (greedy: at any
    step; searches: in any visited row) can have; ``margin``: the smallest gap between a chosen token's
    probability and its row's bound (greedy)."""

    exact: bool
    bound: float
    rest: float
    text: str = field(default="")


def certify_greedy(model: RemoteModel, prompt: Sequence[int], tokens: Sequence[int]) -> Certificate:
    """Greedy over truncated rows is exact iff every chosen token's probability is at least the largest
    probability an unknown token in its row can have."""
    prompt, tokens = [int(t) for t in prompt], [int(t) for t in tokens]
    rows = model.rows([prompt + tokens[:t] for t in range(len(tokens))])
    worst, rest, exact, where = 0.0, 0.0, True, None
    for t, (tok, row) in enumerate(zip(tokens, rows)):
        p = math.exp(dict(zip(row.ids, row.logprobs)).get(tok, -math.inf))
        worst, rest = max(worst, row.bound), max(rest, row.rest)
        if p <= row.bound and row.bound > 0 and where is None:
            exact, where = False, (t, p, row.bound)
    text = ("exact: every chosen token beats any token the server did not list" if exact else
            f"approximate: at step {where[0]} the chosen token has p = {where[1]:.3g}, and a token the server did "
            f"not list may have up to {where[2]:.3g}")
    return Certificate(exact, worst, rest, text)


def outputs_note(model: RemoteModel, prompt: Sequence[int], outputs: Mapping[str, Sequence[int]],
                 greedy: str | None = "greedy") -> str:
    """What truncation means for these outputs (label -> tokens), from the rows along them (cached by the
    run that produced them): the largest rest of the vocabulary, the largest probability any unlisted token
    can have, whether the ``greedy`` output is certified, and which outputs hold a token the server did not
    list (its probability reads 0)."""
    prompt = [int(t) for t in prompt]
    rest = bound = 0.0
    unlisted = []
    for name, tokens in outputs.items():
        tokens = [int(t) for t in tokens]
        rows = model.rows([prompt + tokens[:t] for t in range(len(tokens))])
        rest = max([rest, *(r.rest for r in rows)])
        bound = max([bound, *(r.bound for r in rows)])
        if any(t not in r.ids for t, r in zip(tokens, rows)):
            unlisted.append(name)
    if rest <= 1e-6:
        return "The server returned whole next-token distributions: nothing is truncated."
    k = "its whole vocabulary" if model.caps.top_logprobs < 0 else f"its top {model.caps.top_logprobs} tokens"
    parts = [f"The server listed {k} per position; along these outputs the rest of the vocabulary held up to "
             f"{rest:.3g} of the probability (shown as its own mass, never spread over the listed tokens), and any "
             f"one unlisted token at most {bound:.3g}."]
    if greedy in outputs:
        parts.append("Greedy: " + certify_greedy(model, prompt, outputs[greedy]).text + ".")
    parts.append(f"Beam search, lookahead and the mode search compare listed tokens only: an output through an "
                 f"unlisted token has probability ≤ {bound:.3g} per such step. Teacher-forced probabilities of "
                 "unlisted tokens read 0, so Hamming / N-gram risks are upper bounds; the Monte Carlo truth rows "
                 "are the server's own samples (unbiased).")
    if unlisted:
        parts.append(f"Outputs with a token the server did not list (its probability reads 0): {', '.join(unlisted)}.")
    return " ".join(parts)


# ---- a local llama.cpp server -------------------------------------------------------------------------


@contextlib.contextmanager
def serve_gguf(gguf: str | Path, *, port: int | None = None, n_ctx: int = 512, threads: int = 1,
               start_timeout: float = 60.0, extra: Sequence[str] = ()) -> Iterator[str]:
    """Run llama-cpp-python's server (``python -m llama_cpp.server``, installed by ``make install``) on
    127.0.0.1 serving ``gguf``; yield its base URL once ``/v1/models`` answers; stop it on exit. The model id
    is the file's path, so ``connect`` reads the vocabulary size and EOS from the file's header."""
    import socket
    import subprocess
    import sys
    import tempfile
    import urllib.request

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log = Path(tmp) / "server.log"
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch",
               str(threads), "--verbose", "False", *extra]
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                if proc.poll() is not None:
                    raise RemoteError(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RemoteError(f"llama_cpp.server not up after {start_timeout:g} s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
