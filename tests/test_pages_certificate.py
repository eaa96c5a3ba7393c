"""The greedy-optimality certificate on the Step inspector (issue 11, claims.md C13)."""

from __future__ import annotations

from pagetest import open_page


def test_step_inspector_certifies_greedy_when_it_can():
    at = open_page("step_inspector", prompt="import numpy as", steps=2)
    assert not at.exception and not at.error
    assert any("Greedy is exactly the mode — certified, no search needed" in s.value for s in at.success)


def test_step_inspector_says_when_the_certificate_fails():
    at = open_page("step_inspector", source="toy:E1", steps=2)
    assert not at.exception and not at.error
    text = " ".join(c.value for c in at.caption)
    assert "Greedy is not certified as the mode: P(greedy) = 0.33 < 0.4" in text and "only sufficient" in text
    assert not at.success
