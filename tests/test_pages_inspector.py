"""Step inspector page (AppTest): head charts, branching through the select box, the tree, undo."""

from __future__ import annotations

import pytest
from pagetest import open_page
from streamlit.testing.v1 import AppTest

from core.choice_points import step_heads
from core.engine import load_default
from pages.inspect_helpers import clicked_point


def _page(**state) -> AppTest:
    return open_page("step_inspector", **state)


def _path_html(at: AppTest) -> str:
    return at.markdown[0].value


def test_branch_from_the_select_box_grows_the_tree_and_undo_restores():
    at = _page()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 4  # one chart per head
    engine = load_default()
    prompt_ids = engine.encode(at.session_state["prompt"])
    head1 = step_heads(engine, prompt_ids, 8)[0]
    force = at.selectbox(key="inspector_force")
    assert force.options == [f"{engine.token_text(t).replace(' ', '␣').replace(chr(10), '↵')}  (p = {p:.3f})"
                             for t, p in zip(head1.token_ids, head1.probs)]
    before = _path_html(at)
    assert at.radio(key="inspector_branch").options[0].startswith("#0 root: greedy")

    second = head1.token_ids[1]  # the runner-up at step 0: a different path
    force.select(second).run()
    assert not at.exception and not at.error
    after = _path_html(at)
    assert after != before and f"token id {second}" in after.split("</span>")[1]
    assert len(at.radio(key="inspector_branch").options) == 2
    assert at.radio(key="inspector_branch").value == 1
    assert at.session_state["inspector_step"] == 1  # moved on to what follows the forced token

    at.radio(key="inspector_branch").set_value(0).run()  # view the root again
    assert _path_html(at) == before
    at.button[0].click().run()  # undo the switch
    assert _path_html(at) == after
    at.button[0].click().run()  # undo the branch
    assert _path_html(at) == before and len(at.radio(key="inspector_branch").options) == 1
    assert at.button[0].disabled and not at.exception


def test_single_head_toy_shows_head_one_and_says_why():
    at = _page(source="toy:hidden path", steps=6)
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1
    assert "one head" in at.info[0].value
    force = at.selectbox(key="inspector_force")
    assert force.options == ["A  (p = 0.550)", "B  (p = 0.160)", "C  (p = 0.160)", "D  (p = 0.130)"]
    force.select(3).run()
    assert at.radio(key="inspector_branch").options[1].endswith("#1 step 0: forced “D” · DDDDDD")
    assert not at.exception


def test_invalid_steps_is_an_error_not_a_traceback():
    at = _page(steps=0)
    assert not at.exception
    assert "steps must be an integer from 1" in at.error[0].value


@pytest.mark.parametrize(
    "state, want",
    [
        ({"selection": {"points": [{"customdata": [17, 3], "x": 0.2}], "point_indices": [0]}}, (17, 3)),
        ({"selection": {"points": [], "point_indices": []}}, None),
        ({"selection": {"points": [{"customdata": 17}]}}, None),
        (None, None),
    ],
)
def test_clicked_point_reads_plotly_selection_state(state, want):
    assert clicked_point(state) == want


def test_the_example_box_names_the_prompt_or_says_it_is_your_own():
    """The sidebar's example box shows the example the prompt is, none once the text is the user's own
    (typed or from a link), and picking an example loads its text."""
    import json
    from pathlib import Path

    examples = json.loads((Path(__file__).resolve().parent.parent / "assets/prompts/prompts.json").read_text())
    at = _page(steps=2)
    assert at.selectbox(key="example_prompt").value == examples[0]["name"]
    assert at.text_area(key="prompt").value == examples[0]["text"]
    at.text_area(key="prompt").set_value("x = [1, 2,").run()
    assert not at.exception and at.selectbox(key="example_prompt").value is None
    at.selectbox(key="example_prompt").set_value(examples[1]["name"]).run()
    assert not at.exception and at.text_area(key="prompt").value == examples[1]["text"]
    assert at.selectbox(key="example_prompt").value == examples[1]["name"]
