"""Concurrent users on the shared cached model (issue 7): ten sessions at once give exactly the numbers
each gives alone, and nothing leaks between sessions.

Two levels: ten threads each driving its own AppTest of the Compare page and then the Step inspector
(different seeds and goals, the shipped model shared through ``st.cache_resource``), and ten threads
calling the shared engine directly with prefixes that share and do not share beginnings (the engine's
prefix cache is the shared mutable state)."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from unittest.mock import MagicMock

import streamlit as st
import torch
from streamlit.runtime import Runtime
from streamlit.runtime.caching.storage.dummy_cache_storage import MemoryCacheStorageManager
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

from core.decoders import Greedy, Lookahead, sample_many
from core.engine import load_default

GOALS = ("0-1", "Hamming", "Distribution match (KL)", "N-gram Hamming", "Distribution match (TV)")
PROMPTS = ("def fibonacci(n):\n    ", "import os\n", "class Stack:\n    def push(self, x):\n        ", "for i in")
N_SESSIONS = 10


def session_state(i: int) -> dict:
    return {
        "source": "mtp",
        "prompt": PROMPTS[i % len(PROMPTS)],
        "steps": 3,
        "seed": 1000 + i,
        "goal": GOALS[i % len(GOALS)],
        "ngram_n": 2,
        "cmp_n_samples": 16,
        "cmp_depth": 2,
        "cmp_beam": 2,
        "cmp_shown": 1,
    }


@contextlib.contextmanager
def one_runtime(monkeypatch):
    """One Runtime for all sessions, as in a real server. AppTest installs a mock Runtime in a global
    per run and clears it when the run ends, which breaks runs in other threads; here its
    assignments go to a shadow class while every session's script sees one shared mock runtime
    (one media manager, one cache storage for st.cache_data / st.cache_resource)."""
    from streamlit.runtime.dataframe_source_manager import DataframeSourceManager

    runtime = MagicMock(spec=Runtime)
    runtime.media_file_mgr = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    runtime.dataframe_source_mgr = DataframeSourceManager()
    runtime.cache_storage_manager = MemoryCacheStorageManager()
    runtime.bidi_component_registry = app_test_module.BidiComponentManager()
    monkeypatch.setattr(app_test_module, "Runtime", type("ShadowRuntime", (Runtime,), {}))
    monkeypatch.setattr(Runtime, "_instance", runtime)
    yield


def render(page: str, state: dict) -> AppTest:
    at = AppTest.from_file(f"../pages/{page}.py", default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def session_numbers(i: int) -> dict:
    """Everything session i's pages show as numbers/text: the Compare table (risks, CIs, outputs,
    log-probs), its captions and outputs, and the Step inspector's path, captions and head charts."""
    state = session_state(i)
    cmp = render("compare", state)
    assert not cmp.exception and not cmp.error, [e.value for e in cmp.error]
    assert (cmp.session_state["seed"], cmp.session_state["goal"]) == (state["seed"], state["goal"])
    ins = render("step_inspector", state)
    assert not ins.exception and not ins.error, [e.value for e in ins.error]
    return {
        "table": cmp.dataframe[0].value.to_json(double_precision=15),
        "compare_text": [m.value for m in cmp.markdown] + [c.value for c in cmp.caption],
        "inspector_text": [m.value for m in ins.markdown] + [c.value for c in ins.caption],
        "inspector_charts": [c.proto.spec for c in ins.get("plotly_chart")],
    }


def test_ten_sessions_at_once_match_each_alone(monkeypatch):
    alone = [session_numbers(i) for i in range(N_SESSIONS)]
    barrier = threading.Barrier(N_SESSIONS)

    def concurrent(i: int) -> dict:
        barrier.wait()
        return session_numbers(i)

    with one_runtime(monkeypatch), ThreadPoolExecutor(N_SESSIONS) as pool:
        st.cache_data.clear()  # the concurrent sessions compute again instead of reading cached results
        together = list(pool.map(concurrent, range(N_SESSIONS)))
    for i in range(N_SESSIONS):
        assert together[i] == alone[i], f"session {i} differs when run with the others"
    tables = {n["table"] for n in alone}
    assert len(tables) == N_SESSIONS  # every session showed its own result (seeds and goals differ)


def test_shared_engine_calls_in_threads_are_bitwise_equal_to_sequential():
    """The shared engine's prefix cache makes calls interleave: ten threads with overlapping prompts
    get bitwise the numbers one thread gets, whatever ran before."""
    engine = load_default()
    base = engine.encode("def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + ")

    def work(i: int):
        prompt = base[: 3 + 4 * i]  # prefixes of one another: the prefix cache grows, shrinks, is reused
        batch = [prompt + [t] for t in (11, 12, 13)]
        return (
            engine.logprobs([prompt]),
            engine.logprobs(batch),
            Lookahead(2, node_budget=16).decode(engine, prompt, 2),
            Greedy().decode(engine, prompt, 3),
            sample_many(engine, prompt, 3, 4, seed=i).tokens,
        )

    sequential = [work(i) for i in reversed(range(N_SESSIONS))][::-1]
    for _ in range(2):
        with ThreadPoolExecutor(N_SESSIONS) as pool:
            threaded = list(pool.map(work, range(N_SESSIONS)))
        for i, (a, b) in enumerate(zip(sequential, threaded)):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"logprobs of thread {i}"
            assert a[2] == b[2] and a[3] == b[3], f"decoders of thread {i}"
            assert torch.equal(a[4], b[4]), f"samples of thread {i}"
