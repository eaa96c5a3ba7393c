"""Speculative page (AppTest): heads and prompt lookup side by side on the shipped model, prompt lookup on
single-head models and servers, every number shown equal to core's, output check, the cost guard."""

from __future__ import annotations

import json

import pytest
from fake_vllm import FakeVLLM, LetterModel
from pagetest import open_page
from server_fixture import allow, llama_server, stub_server  # noqa: F401
from streamlit.testing.v1 import AppTest

from core.decoders import Greedy
from core.engine import load_default
from core.prompt_lookup import prompt_lookup_decode
from core.speculative import self_speculative

LOOKUP = "Prompt lookup (N = 10, n-gram ≤ 2)"
REPEATED = "user_name = request.args.get('user_name')\nuser_email = request.args.get('user_email')\nuser_phone ="


def _page(**state) -> AppTest:
    return open_page("speculative", **state)


def _metrics(at: AppTest) -> list[dict[str, str]]:
    """The metrics of each drafter's column (four each), in order."""
    shown = [(m.label, m.value) for m in at.metric]
    return [dict(shown[i : i + 4]) for i in range(0, len(shown), 4)]


def _summary(at: AppTest):
    return next(d.value for d in at.dataframe if "drafts from" in d.value.columns)


def test_heads_and_prompt_lookup_side_by_side_match_core():
    at = _page(steps=16, spec_repeats=1)
    assert not at.exception and not at.error and not at.warning
    engine = load_default()
    prompt = engine.encode(at.session_state["prompt"])
    heads = self_speculative(engine, prompt, 16)
    lookup = prompt_lookup_decode(engine, prompt, 16)
    greedy = Greedy().decode(engine, prompt, 16).tokens
    assert heads.tokens == lookup.tokens == greedy
    shown = _metrics(at)
    assert len(shown) == 2
    for values, want in zip(shown, (heads, lookup)):
        assert values["Tokens per forward"] == f"{want.tokens_per_forward:.2f}"
        assert values["Model passes"] == f"{want.forwards} vs 16"
        assert values["Output equals greedy"] == "✅ yes"
        assert float(values["Wall-clock speed-up"].rstrip("×")) > 0
    summary = _summary(at)
    assert list(summary["drafts from"]) == ["Heads 2..4", LOOKUP]
    assert list(summary["model passes"]) == [heads.forwards, lookup.forwards]
    assert summary["draft passes"][0] == heads.draft_passes and summary["draft passes"].isna()[1]  # none: no model
    assert list(summary["passes with drafts"]) == [f"{r.passes_with_drafts} of {len(r.traces)}"
                                                   for r in (heads, lookup)]
    assert list(summary["= greedy"]) == ["✅", "✅"]
    assert list(summary["tokens / forward"]) == [round(r.tokens_per_forward, 2) for r in (heads, lookup)]
    caption = next(c.value for c in at.caption if "same prompt, same request" in c.value)
    assert "median of 1 after a warm-up" in caption and "depends on the hardware" in caption
    head_table = next(d.value for d in at.dataframe if "head" in d.value.columns)
    assert list(head_table["head"]) == ["head 2", "head 3", "head 4"]
    assert list(head_table["drafts verified"]) == list(heads.drafts_offered)
    draft_table = next(d.value for d in at.dataframe if "draft position" in d.value.columns)
    assert list(draft_table["draft position"]) == [f"draft {i}" for i in range(1, 11)]
    assert list(draft_table["drafts verified"]) == list(lookup.drafts_offered)
    boxes = [m.value.count(' token(s)"') for m in at.markdown if ' token(s)"' in m.value]
    assert boxes == [heads.forwards, lookup.forwards]  # one box per forward pass, each drafter

    rerun = _metrics(at.run())  # a rerun reuses the measurement instead of timing again
    assert rerun == shown

    at.slider(key="spec_heads").set_value(2).run()
    at.slider(key="spec_lookup_tokens").set_value(3).run()
    assert not at.exception and not at.error
    two = self_speculative(engine, prompt, 16, heads=2)
    three = prompt_lookup_decode(engine, prompt, 16, 3)
    assert [m["Tokens per forward"] for m in _metrics(at)] == [f"{r.tokens_per_forward:.2f}" for r in (two, three)]
    assert list(_summary(at)["drafts from"]) == ["Heads 2..2", "Prompt lookup (N = 3, n-gram ≤ 2)"]


def test_a_repetitive_prompt_makes_prompt_lookup_shine():
    at = _page(steps=24, spec_repeats=1, prompt=REPEATED)
    assert not at.exception and not at.error
    engine = load_default()
    lookup = prompt_lookup_decode(engine, engine.encode(REPEATED), 24)
    heads, shown = _metrics(at)
    assert shown["Tokens per forward"] == f"{lookup.tokens_per_forward:.2f}"
    assert lookup.tokens_per_forward > float(heads["Tokens per forward"])  # copying the prompt beats the heads here


def test_single_head_model_drafts_by_prompt_lookup():
    at = _page(source="smollm2", steps=8, spec_repeats=1, prompt=REPEATED)
    assert not at.exception and not at.error
    from core.hf import load_smollm2

    engine = load_smollm2()
    want = prompt_lookup_decode(engine, engine.encode(REPEATED), 8)
    [shown] = _metrics(at)
    assert shown["Tokens per forward"] == f"{want.tokens_per_forward:.2f}" and want.tokens_per_forward > 2
    assert shown["Output equals greedy"] == "✅ yes"
    assert list(_summary(at)["drafts from"]) == [LOOKUP]
    assert any("has a single head, so the drafts come from prompt lookup" in c.value for c in at.caption)
    assert not at.radio and "spec_heads" not in [s.key for s in at.slider]  # no heads, no sampling mode


def test_a_toy_is_explained():
    at = _page(source="toy:E1", steps=2)
    assert not at.exception and not at.error
    assert "no forward pass to save" in at.info[0].value and not at.metric


def test_heads_no_draft_reached_show_a_dash():
    at = _page(steps=4, spec_repeats=1)  # the default prompt: 2 verification passes, head 4's drafts never reached
    assert not at.exception and not at.error
    want = self_speculative(load_default(), load_default().encode(at.session_state["prompt"]), 4)
    table = next(d for d in at.dataframe if "head" in d.value.columns)
    for column in ("kept / verified", "kept / reached"):
        assert [v is None or v != v for v in table.value[column]] == [n == 0 for n in want.drafts_offered]
    assert table.proto.placeholder == "—"


def test_the_guard_caps_repeats_then_steps_and_offers_the_full_computation(monkeypatch):
    from core.cost import BUDGET_ENV

    monkeypatch.setenv(BUDGET_ENV, "0.01")  # far below any prediction: cap to 1 repeat and 1 step
    at = _page(steps=12, spec_repeats=3)
    assert not at.exception and not at.error
    [warning] = [w.value for w in at.warning]
    assert warning.startswith("Timing repeats capped at 1 (you asked for 3) and Steps (new tokens) on this page capped "
                              "at 1 (you asked for 12): the full computation is predicted to take ")
    assert "over the 0.0 s budget per click" in warning
    assert [m["Model passes"] for m in _metrics(at)] == ["1 vs 1", "1 vs 1"]
    assert "median of 1 after a warm-up" in next(c.value for c in at.caption if "same request" in c.value)
    button = at.button(key="spec_run_full")
    assert button.label.startswith("Run the full computation (predicted ")
    button.click().run()
    assert not at.exception and not at.error and not at.warning  # the full computation, as asked
    engine = load_default()
    prompt = engine.encode(at.session_state["prompt"])
    full = (self_speculative(engine, prompt, 12), prompt_lookup_decode(engine, prompt, 12))
    assert [m["Model passes"] for m in _metrics(at)] == [f"{r.forwards} vs 12" for r in full]
    assert "median of 3 after a warm-up" in next(c.value for c in at.caption if "same request" in c.value)


def test_the_guard_applies_to_state_from_a_link(monkeypatch):
    """However the state arrived (here preset, as a link sets it): a prediction over the budget is capped."""
    from core.cost import BUDGET_ENV

    monkeypatch.setenv(BUDGET_ENV, "0.01")
    at = _page(steps=64, spec_repeats=3, spec_mode="sampling")
    assert not at.exception and not at.error
    assert at.warning[0].value.startswith("Timing repeats capped at 1 (you asked for 3) and Steps")
    assert at.button(key="spec_run_full")


def test_sampling_mode_matches_core_and_reruns_on_new_settings():
    from core.decoders import Sampling
    from core.speculative_sample import speculative_sample

    at = _page(steps=12, seed=3, spec_mode="sampling", spec_repeats=1)
    assert not at.exception and not at.error
    engine = load_default()
    prompt = engine.encode(at.session_state["prompt"])
    want = speculative_sample(engine, prompt, 12, 3, Sampling())
    [shown] = _metrics(at)
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
    assert "spec_lookup_tokens" not in [s.key for s in at.slider]  # prompt lookup is a greedy drafter here

    at.slider(key="spec_temperature").set_value(0.5).run()
    assert not at.exception and not at.error
    cooler = speculative_sample(engine, prompt, 12, 3, Sampling(0.5))
    assert _metrics(at)[0]["Model passes"] == f"{cooler.forwards} vs {len(cooler.tokens)}"
    assert "τ=0.5" in at.caption[0].value


def test_bad_mode_in_a_link_falls_back_to_greedy():
    at = _page(steps=4, spec_mode="beam", spec_repeats=1)
    assert not at.exception
    assert any("Mode" in e.value and "greedy or sampling" in e.value for e in at.error)
    assert at.session_state["spec_mode"] == "greedy" and "Output equals greedy" in _metrics(at)[0]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("spec_lookup_tokens", 11, "Lookup drafts (N) must be an integer from 1 to 10, got 11; using 10 instead."),
    ("spec_lookup_ngram", 0, "Longest n-gram matched (M) must be an integer from 1 to 4, got 0; using 2 instead."),
])
def test_bad_lookup_settings_in_a_link_are_named(key, value, message):
    at = _page(steps=4, spec_repeats=1, **{key: value})
    assert not at.exception
    assert [e.value for e in at.error] == [message]
    assert at.slider(key=key).value == int(message.split()[-2]) and _metrics(at)


def _served_letters(allow, tmp_path, monkeypatch, fake):  # noqa: F811
    from core import sources

    config = tmp_path / "sources.json"
    stack = stub_server(fake)
    base = stack.__enter__()
    config.write_text(json.dumps({"servers": [{"url": base, "vocab_size": 16, "eos_id": 0}]}))
    monkeypatch.setenv(sources.CONFIG_ENV, str(config))
    return base, stack


def test_a_server_counts_requests(allow, tmp_path, monkeypatch):  # noqa: F811
    """vLLM (prompt_logprobs): prompt lookup verifies a draft block per request; no timing on a server."""
    letters = LetterModel(seed=4)
    fake = FakeVLLM(letters, max_logprobs=20)
    base, stack = _served_letters(allow, tmp_path, monkeypatch, fake)
    try:
        at = open_page("speculative", timeout=120, source=f"server:org/tiny-model@{base}", prompt="abcabcab", steps=24)
    finally:
        stack.__exit__(None, None, None)
    assert not at.exception and not at.error, [e.value for e in at.error]
    want = prompt_lookup_decode(letters, letters.encode("abcabcab"), 24)
    shown = {m.label: m.value for m in at.metric}
    assert shown == {"Tokens per request": f"{want.tokens_per_forward:.2f}",
                     "Requests": f"{want.forwards} vs {len(want.tokens)}", "Output equals greedy": "✅ yes"}
    assert want.forwards < len(want.tokens)
    assert any("the saving is in requests" in c.value for c in at.caption)
    assert "spec_repeats" not in [s.key for s in at.selectbox]


def test_a_text_only_server_says_why_speculative_decoding_is_not_available(allow, llama_server):  # noqa: F811
    """llama-cpp-python's server takes text prompts, one per request: drafts would save nothing."""
    allow(servers=[llama_server])
    at = open_page("speculative", timeout=300, source=f"server:{llama_server}", prompt="The capital of France is",
                   steps=4)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "not available" in at.info[0].value and "text prompts" in at.info[0].value and not at.metric
