"""Model sources: one registry of every model the explorer can open, and the operator's allow-list.

A source is a string (it travels in links as ``?source=...``):

=============================  ==================================================================
``mtp``                        the shipped multi-head model (``core.engine.load_default``)
``smollm2``                    SmolLM2-135M-Instruct (``core.hf.load_smollm2``)
``toy:<preset>``               an exact toy (``core.toy.PRESETS``)
``local:<path>``               a transformers directory or a .gguf file (``core.hf.load_local_model``)
``server:<base URL>``          the first model an OpenAI-compatible server lists (``core.remote.connect``)
``server:<model>@<base URL>``  a named model on such a server
=============================  ==================================================================

The shipped model, SmolLM2 and the toys are always allowed. Local paths and servers only when the
operator allows them (``AllowList``), from the environment or a JSON config file:

* ``DECODING_EXPLORER_LOCAL_MODELS``: local directories, separated by ``os.pathsep`` (``:``); a path is
  allowed when it lies inside one of them (after resolving ``~``, ``..`` and symbolic links).
* ``DECODING_EXPLORER_SERVERS``: server base URLs separated by commas or whitespace; ``<model>@<URL>``
  allows one model there, a bare URL every model it serves.
* ``DECODING_EXPLORER_CONFIG`` (default ``~/.config/decoding-explorer/sources.json``)::

    {"local_models": ["/srv/models"],
     "servers": [{"url": "http://gpu1:8000", "model": "Qwen/Qwen2.5-72B-Instruct",
                  "api_key_env": "VLLM_API_KEY", "top_logprobs": -1}]}

  A server entry may name the environment variable holding its API key (``api_key_env``), and
  ``top_logprobs`` / ``vocab_size`` / ``eos_id`` / ``tokenizer`` for ``connect``; keys never appear in a
  source string.

A source that is not allowed, or does not parse, gets one message (``UNKNOWN``) that says nothing about
whether a path exists or a server answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

LOCAL_ENV = "DECODING_EXPLORER_LOCAL_MODELS"
SERVERS_ENV = "DECODING_EXPLORER_SERVERS"
CONFIG_ENV = "DECODING_EXPLORER_CONFIG"
BUILTIN = ("mtp", "smollm2")
LABELS = {
    "mtp": "Shipped multi-head model (4 heads, Python code)",
    "smollm2": "SmolLM2-135M-Instruct (pretrained English + code, 1 head)",
}
SERVER_KEYS = ("url", "model", "api_key_env", "top_logprobs", "vocab_size", "eos_id", "tokenizer")


class SourceNotAllowed(ValueError):
    """A source the registry does not know or the allow-list does not allow (one message for both)."""


def unknown(source: object, allowed: Iterable[str]) -> SourceNotAllowed:
    """The one message for every unknown or forbidden source: it names the allowed ones only."""
    return SourceNotAllowed(f"unknown model source {source!r}; allowed: {', '.join(allowed)} "
                            "(local models and servers the operator allows are opened on the Models page)")


# ---- the allow-list ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerEntry:
    """An allowed server: ``model`` None allows every model it serves."""

    url: str
    model: str | None = None
    api_key_env: str | None = None
    top_logprobs: int | None = None
    vocab_size: int | None = None
    eos_id: int | None = None
    tokenizer: str | None = None  # a local tokenizer directory, for servers without tokenize endpoints

    def allows(self, url: str, model: str | None) -> bool:
        return self.url == url and (self.model is None or self.model == model)


@dataclass(frozen=True)
class AllowList:
    """Which local model paths and servers pages may open."""

    local_roots: tuple[Path, ...] = ()
    servers: tuple[ServerEntry, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AllowList:
        """The allow-list from ``DECODING_EXPLORER_LOCAL_MODELS``, ``DECODING_EXPLORER_SERVERS`` and the
        config file; ValueError naming a malformed entry."""
        env = os.environ if environ is None else environ
        config = _read_config(env)
        roots = [r for r in env.get(LOCAL_ENV, "").split(os.pathsep) if r.strip()]
        roots += _string_list(config.get("local_models", []), "local_models")
        servers = [_server_entry(s) for s in re.split(r"[\s,]+", env.get(SERVERS_ENV, "")) if s]
        entries = config.get("servers", [])
        if not isinstance(entries, list):
            raise ValueError(f"'servers' in the sources config must be a list, got {type(entries).__name__}")
        servers += [_server_entry(s) for s in entries]
        return cls(tuple(_root(r) for r in roots), tuple(servers))

    def allows_local(self, path: str) -> bool:
        try:
            resolved = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return False
        return any(resolved == root or resolved.is_relative_to(root) for root in self.local_roots)

    def server(self, url: str, model: str | None) -> ServerEntry | None:
        """The entry allowing ``model`` at ``url`` (a normalised base URL), if any."""
        return next((e for e in self.servers if e.allows(url, model)), None)


def _read_config(env: Mapping[str, str]) -> dict:
    path = env.get(CONFIG_ENV)
    if path:
        file = Path(path).expanduser()
    else:
        base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
        file = Path(base).expanduser() / "decoding-explorer" / "sources.json"
    if not file.is_file():
        if path:
            raise ValueError(f"{CONFIG_ENV} names {file}, which is not a file")
        return {}
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"the sources config {file} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"the sources config {file} must hold a JSON object")
    return config


def _string_list(value, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{name}' in the sources config must be a list of strings")
    return value


def _root(path: str) -> Path:
    return Path(path.strip()).expanduser().resolve()


def _server_entry(spec) -> ServerEntry:
    from core.remote import normalise_base_url

    if isinstance(spec, str):
        model, url = split_server(spec)
        return ServerEntry(normalise_base_url(url), model)
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
        raise ValueError(f"a server in the sources config must be an object with a 'url', got {spec!r}")
    extra = sorted(set(spec) - set(SERVER_KEYS))
    if extra:
        raise ValueError(f"unknown key(s) {', '.join(extra)} in a sources config server; allowed: "
                         f"{', '.join(SERVER_KEYS)}")
    return ServerEntry(normalise_base_url(spec["url"]), spec.get("model"), spec.get("api_key_env"),
                       spec.get("top_logprobs"), spec.get("vocab_size"), spec.get("eos_id"), spec.get("tokenizer"))


# ---- source strings -----------------------------------------------------------------------------------


def split_server(spec: str) -> tuple[str | None, str]:
    """``<model>@<url>`` or ``<url>`` -> (model or None, url). A base URL holds no ``@`` (no credentials)."""
    model, sep, url = spec.rpartition("@")
    return (model or None, url) if sep else (None, spec)


def server_source(url: str, model: str | None = None) -> str:
    from core.remote import normalise_base_url

    url = normalise_base_url(url)
    return f"server:{model}@{url}" if model else f"server:{url}"


def kind(source: str) -> str:
    """"shipped" | "smollm2" | "toy" | "local" | "server" | "" (not a source string)."""
    if source == "mtp":
        return "shipped"
    if source == "smollm2":
        return "smollm2"
    for prefix in ("toy", "local", "server"):
        if isinstance(source, str) and source.startswith(prefix + ":"):
            return prefix
    return ""


def is_large(source: str) -> bool:
    """A pretrained single-head model, far larger (or slower, behind a server) than the shipped one."""
    return kind(source) in ("smollm2", "local", "server")


def label(source: str) -> str:
    """The sidebar's name for a source."""
    k = kind(source)
    if source in LABELS:
        return LABELS[source]
    if k == "toy":
        return f"Toy: {source[4:]} (exact)"
    if k == "local":
        return f"Local: {Path(source[6:]).name}"
    if k == "server":
        model, url = split_server(source[7:])
        name = Path(model).name if model and model.endswith(".gguf") else model  # llama.cpp names a file
        return f"Server: {name or 'default model'} at {url}"
    return str(source)


def toy_presets() -> dict:
    from core.toy import PRESETS

    return PRESETS


def builtin_sources() -> list[str]:
    """Sources every page may open: the shipped model, SmolLM2 and every toy."""
    return list(BUILTIN) + [f"toy:{name}" for name in toy_presets()]


def check(source, allow: AllowList | None = None) -> str:
    """``source`` if the registry knows it and the allow-list allows it, else ``SourceNotAllowed`` (one
    message, whatever the reason)."""
    allow = AllowList.from_environment() if allow is None else allow
    builtins = builtin_sources()
    if isinstance(source, str):
        k = kind(source)
        if source in builtins:
            return source
        if k == "local" and source[6:].strip() and allow.allows_local(source[6:]):
            return source
        if k == "server":
            try:
                from core.remote import normalise_base_url

                model, url = split_server(source[7:])
                if allow.server(normalise_base_url(url), model) is not None:
                    return source
            except ValueError:
                pass
    raise unknown(source, builtins)


# ---- loading ------------------------------------------------------------------------------------------

_LARGE_OK: set[str] = set()
_LARGE_LOCK = threading.Lock()


def allow_large(source: str) -> None:
    """Let ``load`` open ``source`` even when its memory check warns (the Models page's override)."""
    with _LARGE_LOCK:
        _LARGE_OK.add(source)


def load(source: str, allow: AllowList | None = None):
    """The model behind an allowed source (ValueError naming the problem; ``SourceNotAllowed`` for one that
    is not allowed). Not cached: pages cache it (``st.cache_resource``)."""
    allow = AllowList.from_environment() if allow is None else allow
    source = check(source, allow)
    k = kind(source)
    if k == "shipped":
        from core.engine import load_default

        return load_default()
    if k == "smollm2":
        from core.hf import load_smollm2

        return load_smollm2()
    if k == "toy":
        return toy_presets()[source[4:]].build()
    if k == "local":
        from core.hf import load_local_model

        with _LARGE_LOCK:
            large = source in _LARGE_OK
        return load_local_model(source[6:], allow_large=large)
    from core.remote import connect, normalise_base_url

    model, url = split_server(source[7:])
    url = normalise_base_url(url)
    entry = allow.server(url, model)
    return connect(url, model, entry.api_key_env, top_logprobs=entry.top_logprobs, vocab_size=entry.vocab_size,
                   eos_id=entry.eos_id, tokenizer=entry.tokenizer)


def list_server_models(url: str, allow: AllowList | None = None) -> list[str]:
    """The models an allowed server lists at /v1/models (for the Models page's choice)."""
    from core.remote import Client, normalise_base_url

    allow = AllowList.from_environment() if allow is None else allow
    url = normalise_base_url(url)
    entries = [e for e in allow.servers if e.url == url]
    if not entries:
        raise unknown(f"server:{url}", builtin_sources())
    client = Client(url, entries[0].api_key_env)
    try:
        data = client.get("/v1/models").get("data") or []
    finally:
        client.close()
    served = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    named = {e.model for e in entries}
    return served if None in named else [m for m in served if m in named]


# ---- what exports say about a source -----------------------------------------------------------------


def source_info(source: str, model=None) -> dict:
    """What an export must say about where its numbers come from: the source string, its kind and
    label, and the model's identity: the shipped checkpoint's weights hash, a local model's path and the
    hash of its weights, or a server's base URL (never credentials) and served model id."""
    info = {"source": source, "kind": kind(source), "label": label(source)}
    k = kind(source)
    if k == "shipped":
        from core.engine import DEFAULT_MODEL_DIR

        info.update(name="mtp-default", revision=_weights_hash(DEFAULT_MODEL_DIR))
    elif k == "smollm2":
        from core.hf import SMOLLM2, smollm2_path

        info.update(name=SMOLLM2.name, revision=_file_hash(smollm2_path()))
    elif k == "toy":
        info.update(name=source[4:], revision="exact toy (core.toy.PRESETS)")
    elif k == "local":
        path = Path(source[6:]).expanduser()
        info.update(name=path.name, path=str(path),
                    revision=_file_hash(path) if path.is_file() else _weights_hash(path))
    elif k == "server":
        model_id, url = split_server(source[7:])
        info.update(base_url=url, name=getattr(model, "model_id", None) or model_id)
        if model is not None and hasattr(model, "caps"):
            info.update(server=model.caps.flavour, top_logprobs=model.caps.top_logprobs,
                        full_rows=model.caps.full_rows)
    return info


def _file_hash(path: Path) -> str:
    """sha256 of a file (cached by path, size and modification time)."""
    stat = path.stat()
    return _hash_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


_HASHES: dict[tuple, str] = {}


def _hash_cached(path: str, size: int, mtime: int) -> str:
    key = (path, size, mtime)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = "sha256:" + digest.hexdigest()
    return _HASHES[key]


def _weights_hash(directory: Path) -> str | None:
    """sha256 over a directory's weight files (*.safetensors, *.gguf), in name order."""
    files = sorted(list(directory.glob("*.safetensors")) + list(directory.glob("*.gguf")))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + _file_hash(f).encode())
    return "sha256:" + digest.hexdigest()
