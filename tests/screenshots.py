"""README screenshot: the Compare page (the home page) on the shipped model with its default prompt.

    .venv/bin/python tests/screenshots.py [--out assets/screenshots/compare.png]

Starts the app like the browser test (Debian Chromium, Playwright, no downloads), waits for the first
run to finish, folds the "Decoder settings" expander and saves a 1400x900 viewport PNG with the toolbar
hidden. The first run decodes 32 tokens with eight decoders and 256 Monte Carlo samples: about a minute on
two loaded cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_browser import ROOT, chromium_page, streamlit_server, wait_idle  # noqa: E402

OUT = ROOT / "assets" / "screenshots" / "compare.png"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the first run (default settings)")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with streamlit_server(extra_args=("--client.toolbarMode", "viewer")) as base, \
            chromium_page({"width": args.width, "height": args.height}) as page:
        page.goto(base + "/")
        page.wait_for_selector("[data-testid='stApp']")
        wait_idle(page, timeout_ms=int(args.timeout * 1000))
        settings = page.locator("[data-testid='stExpander'] summary").filter(has_text="Decoder settings")
        if settings.count():  # fold the settings so the shot shows more of the decoders side by side
            settings.first.click()
            wait_idle(page)
        page.mouse.move(0, args.height - 1)  # no hover effects in the shot
        page.screenshot(path=str(args.out))
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
