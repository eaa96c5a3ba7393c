"""Speculative page (AppTest): the statistics shown equal core's, output check, single-head models."""

from __future__ import annotations

import pytest
from pagetest import open_page
from streamlit.testing.v1 import AppTest

from core.engine import load_default

self_speculative = pytest.importorskip("core.speculative").self_speculative



def _page(**state) -> AppTest:
    return open_page("speculative", **state)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_speculative_page_matches_core_and_greedy():
    at = _page(steps=16)
    assert not at.exception and not at.error
    engine = load_default()
    prompt = engine.encode(at.session_state["prompt"])
    want = self_speculative(engine, prompt, 16)
    shown = _metrics(at)
    assert shown["Tokens per forward"] == f"{want.tokens_per_forward:.2f}"
    assert shown["Model passes"] == f"{want.forwards} vs 16"
    assert shown["Output equals greedy"] == "✅ yes"
    assert float(shown["Wall-clock speed-up"].rstrip("×")) > 0
    assert "same prompt, same request" in at.caption[0].value
    assert "median of 3 after a warm-up" in at.caption[0].value  # default: 3 alternating repeats
    assert "depends on the hardware" in at.caption[0].value
    table = at.dataframe[0].value
    assert list(table["head"]) == ["head 2", "head 3", "head 4"]
    assert list(table["drafts verified"]) == list(want.drafts_offered)
    assert at.dataframe[0].proto.placeholder == "—"  # shown for a head no draft reached, not a grey "None"
    assert at.markdown[0].value.count('title="pass ') == want.forwards  # one box per forward pass

    rerun = _metrics(at.run())  # a rerun reuses the measurement instead of timing again
    assert rerun == shown

    at.slider(key="spec_heads").set_value(2).run()
    assert not at.exception
    two = self_speculative(engine, prompt, 16, heads=2)
    assert _metrics(at)["Tokens per forward"] == f"{two.tokens_per_forward:.2f}"
    assert list(at.dataframe[0].value["head"]) == ["head 2"]


def test_single_head_model_is_explained():
    at = _page(source="toy:E1", steps=2)
    assert not at.exception and not at.error
    assert "single head" in at.info[0].value and not at.metric


def test_heads_no_draft_reached_show_a_dash():
    at = _page(steps=4)  # the default prompt: 2 verification passes, head 4's drafts never reached
    assert not at.exception and not at.error
    want = self_speculative(load_default(), load_default().encode(at.session_state["prompt"]), 4)
    table = at.dataframe[0].value
    for column in ("kept / verified", "kept / reached"):
        assert [v is None or v != v for v in table[column]] == [n == 0 for n in want.drafts_offered]
    assert at.dataframe[0].proto.placeholder == "—"


def test_sampling_mode_matches_core_and_reruns_on_new_settings():
    from core.decoders import Sampling
    from core.speculative_sample import speculative_sample

    at = _page(steps=12, seed=3, spec_mode="sampling", spec_repeats=1)
    assert not at.exception and not at.error
    engine = load_default()
    prompt = engine.encode(at.session_state["prompt"])
    want = speculative_sample(engine, prompt, 12, 3, Sampling())
    shown = _metrics(at)
    assert shown["Tokens per forward"] == f"{want.tokens_per_forward:.2f}"
    assert shown["Model passes"] == f"{want.forwards} vs {len(want.tokens)}"
    assert shown["Output distribution"] == "= ancestral"
    assert float(shown["Wall-clock speed-up"].rstrip("×")) > 0
    caption = at.caption[0].value
    assert "min(1, p/q)" in caption and "1 − TV(q_k, p)" in caption and "seed 3" in caption
    table = at.dataframe[0].value
    assert list(table["head"]) == ["head 2", "head 3", "head 4"]
    assert list(table["drafts reached"]) == list(want.drafts_reached)
    for shown_rate, rate in zip(table["expected 1 − TV"], want.expected_acceptance_per_head):
        assert (shown_rate is None or shown_rate != shown_rate) if rate != rate else shown_rate == round(rate, 4)
    assert at.markdown[0].value.count('title="pass ') == want.forwards

    at.slider(key="spec_temperature").set_value(0.5).run()
    assert not at.exception and not at.error
    cooler = speculative_sample(engine, prompt, 12, 3, Sampling(0.5))
    assert _metrics(at)["Model passes"] == f"{cooler.forwards} vs {len(cooler.tokens)}"
    assert "τ=0.5" in at.caption[0].value


def test_bad_mode_in_a_link_falls_back_to_greedy():
    at = _page(steps=4, spec_mode="beam")
    assert not at.exception
    assert any("Mode" in e.value and "greedy or sampling" in e.value for e in at.error)
    assert at.session_state["spec_mode"] == "greedy" and "Output equals greedy" in _metrics(at)
