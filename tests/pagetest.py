"""Running one page file under ``streamlit.testing`` AppTest, with session state set first."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parent.parent / "pages"


def open_page(name: str, timeout: int = 60, **state) -> AppTest:
    """Run ``pages/<name>.py`` once with ``state`` preset in session state."""
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=timeout)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()
