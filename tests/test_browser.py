"""Real-browser test: the app as a user sees it, in Debian Chromium driven by Playwright.

Starts ``streamlit run app.py`` on a free port, visits every page declared in ``app.py`` through the
sidebar navigation (routing cannot be tested with AppTest), waits for each run to finish, checks that no
exception or traceback is shown and that the page's own content is there, and saves a full-page
screenshot to ``artifacts/screenshots/<page>.png``. Two real interactions: clicking a bar of the step
inspector's head-1 chart branches the path; changing the goal on Compare changes the risk table. Then
every page is opened directly by its URL with query parameters, and again by the URL the app wrote
back: each opens that page (no "Page not found"), with the parameters applied; / forwards to the first
page, keeping them.

Needs ``/usr/bin/chromium`` (``make test`` installs it with apt) and the ``playwright`` package; never
``playwright install``. Skipped with the reason when either is missing.
"""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_fixture import llama_server, remote_smollm2  # noqa: F401

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
STEPS = 4  # new tokens per page: small, so every page computes in a few seconds on 2 cores
# the first URL: sidebar steps and the Compare page's cheapest Monte Carlo setting (both read once per session)
START_QUERY = f"?steps={STEPS}&cmp_n_samples=16"
SERVER_START_S = 90
RUN_TIMEOUT_MS = 45_000  # one script run (a page, or the rerun after an interaction)

# what each page shows when it works: (text that must be visible, CSS selector that must be visible)
PAGE_CONTENT = {
    "compare": ("Compare decoders", "[data-testid='stDataFrame']"),
    "step_inspector": ("Branches", "[data-testid='stPlotlyChart'] .main-svg"),
    "choice_points": ("What the heads said before head 1", "[data-testid='stPlotlyChart'] .main-svg"),
    "theory_lab": ("Exact risk of every decoder for every goal", "[data-testid='stDataFrame']"),
    "consistency": ("Where each decoder ends up", "[data-testid='stPlotlyChart'] .main-svg"),
    "speculative": ("Speculative decoding", "[data-testid='stPlotlyChart'] .main-svg"),
    "models": ("The shipped multi-head model", "[data-testid='stPlotlyChart'] .main-svg"),
}

IDLE_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.dataset.testScriptState !== 'notRunning' || app.dataset.testConnectionState !== 'CONNECTED')
    return false;
  if (document.querySelector("[data-testid='stSkeleton']")) return false;
  const status = document.querySelector("[data-testid='stStatusWidget']");
  if (status && /Running/i.test(status.innerText)) return false;
  return [...document.querySelectorAll("[data-testid='stPlotlyChart']")].every(c => c.querySelector('.main-svg'));
}"""


# ---- pages declared in app.py ---------------------------------------------------------------------


@dataclass(frozen=True)
class AppPage:
    file: str  # as written in st.Page(...)
    title: str
    url_path: str
    default: bool

    @property
    def name(self) -> str:
        return Path(self.file).stem


def _literal(node: ast.AST | None, fallback=None):
    try:
        return ast.literal_eval(node) if node is not None else fallback
    except ValueError:
        return fallback


def declared_pages(app: Path = APP) -> list[AppPage]:
    """Every ``st.Page("<file>.py", title=..., url_path=..., default=...)`` in app.py, in order. Missing
    title/url_path get Streamlit's defaults (from the file name); without ``default=True`` anywhere the
    first page is the home page. Pages of a callable (app.py's hidden page forwarding / to the first
    page) are left out."""
    pages = []
    calls = [n for n in ast.walk(ast.parse(app.read_text(encoding="utf-8"))) if isinstance(n, ast.Call)
             and getattr(n.func, "attr", getattr(n.func, "id", None)) == "Page"]
    default_declared = False
    for node in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
        kw = {k.arg: k.value for k in node.keywords}
        default_declared |= bool(_literal(kw.get("default"), False))
        file = _literal(node.args[0] if node.args else kw.get("page"))
        if not isinstance(file, str):
            continue
        stem = Path(file).stem
        title = _literal(kw.get("title"), stem.replace("_", " ").title())
        url_path = _literal(kw.get("url_path"), stem)
        pages.append(AppPage(file, title, url_path, bool(_literal(kw.get("default"), False))))
    if pages and not default_declared:
        pages[0] = AppPage(pages[0].file, pages[0].title, pages[0].url_path, True)
    return pages


# ---- server and browser ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path, n: int = 3000) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


class ServerError(RuntimeError):
    pass


@contextlib.contextmanager
def streamlit_server(app: Path = APP, extra_args: tuple[str, ...] = (), log_dir: Path | None = None):
    """``streamlit run <app>`` on a free port (same interpreter, so the same venv); yields the base URL once
    /_stcore/health answers ok; terminates it (then kills it) on exit. ServerError with the log's tail if it
    exits or is not healthy within SERVER_START_S."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="streamlit-log-") as tmp:
        log = Path(log_dir or tmp) / "server.log"
        cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", *extra_args]
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://localhost:{port}"
        try:
            deadline = time.monotonic() + SERVER_START_S
            while True:
                if proc.poll() is not None:
                    raise ServerError(f"streamlit exited with code {proc.returncode}:\n{_log_tail(log)}")
                try:
                    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                        if r.read().decode().strip() == "ok":
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(f"streamlit not healthy after {SERVER_START_S} s:\n{_log_tail(log)}")
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def chromium_page(viewport: dict | None = None):
    """A Playwright page in Debian Chromium with a fresh user-data dir (Playwright refuses --user-data-dir
    in args: a persistent context on a new temporary dir is the same thing)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=chromium_path(), headless=True,
                                                        args=CHROMIUM_ARGS, viewport=viewport or VIEWPORT)
        context.set_default_timeout(RUN_TIMEOUT_MS)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@pytest.fixture(scope="module")
def server():
    if not APP.exists():
        pytest.skip(f"{APP.name} does not exist yet")
    try:
        with streamlit_server() as base:
            yield base
    except ServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser_page():
    if chromium_path() is None:
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium (make test does)")
    pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install playwright")
    with chromium_page() as page:
        yield page


# ---- helpers --------------------------------------------------------------------------------------


def wait_idle(page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the script run has finished and everything is drawn: connected, not running, no
    skeletons, every plotly chart rendered; idle twice in a row 200 ms apart (a rerun can start late)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        page.wait_for_function(IDLE_JS, timeout=max(1, int((deadline - time.monotonic()) * 1000)))
        page.wait_for_timeout(200)
        if page.evaluate(IDLE_JS):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not become idle")


def assert_visible(locator, message: str, timeout_ms: int = 10_000) -> None:
    try:
        locator.wait_for(state="visible", timeout=timeout_ms)
    except Exception as exc:  # noqa: BLE001 - playwright's TimeoutError, as an assertion
        raise AssertionError(message) from exc


def assert_healthy(page, where: str) -> None:
    exceptions = page.locator("[data-testid='stException']")
    assert exceptions.count() == 0, f"{where}: exception shown: {exceptions.first.inner_text()[:1000]}"
    errors = page.locator("[data-testid='stAlertContentError']")
    assert errors.count() == 0, f"{where}: error shown: {errors.first.inner_text()[:500]}"
    text = page.locator("[data-testid='stApp']").inner_text()
    for bad in ("Traceback", "Error running app", "StreamlitAPIException"):
        assert bad not in text, f"{where}: {bad!r} on the page:\n{text[:2000]}"


def screenshot(page, name: str) -> Path:
    """A full-page PNG. Streamlit scrolls inside <main>, so the viewport is grown to the content's height
    for the shot (the width stays, so nothing re-lays out) and restored after."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    height = page.evaluate("""() => Math.max(...["[data-testid='stMain']", "[data-testid='stSidebarContent']"]
        .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight))""")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 8000))})
    try:
        wait_idle(page)
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
    return path


def goto_page(page, base: str, app_page: AppPage) -> None:
    """Open a page through its sidebar link (a client-side page switch, keeping session state); the home
    page's link is '/'."""
    link = page.locator(f"[data-testid='stSidebarNavLink'][href$='/{'' if app_page.default else app_page.url_path}']")
    assert link.count() == 1, f"no sidebar link to {app_page.title!r} ({app_page.url_path})"
    link.click()
    expected = base + "/" + ("" if app_page.default else app_page.url_path)
    page.wait_for_url(lambda url: url.split("?")[0].rstrip("/") == expected.rstrip("/"), timeout=10_000)
    wait_idle(page)


def branch_count(page) -> int:
    return page.locator("[data-testid='stRadio'] input[type='radio']").count()


def path_text(page) -> str:
    """The step inspector's path (the markdown block of tokens with hover titles)."""
    return page.locator("[data-testid='stMarkdownContainer']:has(span[title*='token id'])").first.inner_text()


def click_runner_up_bar(page) -> None:
    """Click head 1's second most likely token: hover the chart, move onto the bar until plotly shows its
    hover label, click. Branching there always gives a different path."""
    chart = page.locator("[data-testid='stPlotlyChart']").first
    bars = chart.locator(".bars path, g.point path")
    boxes = [b for b in (bars.nth(i).bounding_box() for i in range(bars.count())) if b and b["width"] > 0]
    assert len(boxes) >= 2, f"head-1 chart has {len(boxes)} bars"
    bar = sorted(boxes, key=lambda b: -b["width"])[1]
    x, y = bar["x"] + min(bar["width"] / 2, 40), bar["y"] + bar["height"] / 2
    chart.hover()
    page.mouse.move(x, y, steps=4)
    page.wait_for_function("() => document.querySelector('.hoverlayer .hovertext') !== null", timeout=5_000)
    page.mouse.click(x, y)


# ---- the test -------------------------------------------------------------------------------------


def test_every_page_renders_and_interactions_work(browser_page, server):  # browser first: skip before starting
    page = browser_page
    pages = declared_pages()
    assert pages, "app.py declares no st.Page"
    home = next((p for p in pages if p.default), pages[0])  # / opens the default page, or forwards to the first
    started = time.monotonic()

    page.goto(f"{server}/{START_QUERY}")
    page.wait_for_selector("[data-testid='stApp']")
    wait_idle(page, timeout_ms=SERVER_START_S * 1000)  # first run loads the model
    nav = page.locator("[data-testid='stSidebarNavLink']")
    assert nav.count() == len(pages), f"sidebar shows {nav.count()} pages, app.py declares {len(pages)}"

    timings = {}
    for app_page in [home] + [p for p in pages if p is not home]:
        t0 = time.monotonic()
        if app_page is not home:
            goto_page(page, server, app_page)
        where = f"page {app_page.title!r}"
        text, selector = PAGE_CONTENT.get(app_page.name, (app_page.title, "h1"))
        assert_visible(page.get_by_text(text).first, f"{where}: {text!r} not visible")
        assert_visible(page.locator(selector).first, f"{where}: nothing visible matches {selector}")
        wait_idle(page)
        assert_healthy(page, where)
        steps_box = page.get_by_role("spinbutton", name="Steps (new tokens)")
        if steps_box.count():
            assert steps_box.input_value() == str(STEPS), f"{where}: steps did not survive the page switch"

        if app_page.name == "step_inspector":
            check_branch_by_click(page, where)
        if app_page.name == "compare":
            check_goal_change(page, where)
        screenshot(page, app_page.name)
        timings[app_page.name] = time.monotonic() - t0

    print(f"\nbrowser test: {len(pages)} pages in {time.monotonic() - started:.1f} s",
          {k: round(v, 1) for k, v in timings.items()})


def check_branch_by_click(page, where: str) -> None:
    before_count, before_path = branch_count(page), path_text(page)
    for attempt in (1, 2):  # plotly clicks can be lost (hover label not up yet): retry once
        try:
            click_runner_up_bar(page)
            page.wait_for_function(f"""() => document.querySelectorAll(
                "[data-testid='stRadio'] input[type='radio']").length > {before_count}""", timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError
            wait_idle(page)
            if branch_count(page) > before_count:  # the click registered late
                break
            if attempt == 2:
                raise
    wait_idle(page)
    assert_healthy(page, f"{where} after clicking a bar")
    assert branch_count(page) == before_count + 1, f"{where}: clicking a bar did not add a branch"
    after_path = path_text(page)
    assert after_path != before_path, f"{where}: the path did not change after branching:\n{after_path}"


def risk_table_text(page) -> str:
    """The risk table's cells as text (st.dataframe draws on a canvas; its accessible <table> has the cells)."""
    return page.locator("[data-testid='stDataFrame'] table").first.inner_text()


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the sidebar selectbox ``label`` (a react-aria combobox: the first click may only
    focus it, so open it with ArrowDown when it stays closed)."""
    box = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").filter(has_text=label)
    combo = box.get_by_role("combobox")
    combo.click()
    try:
        page.get_by_role("listbox", name=label).wait_for(timeout=2_000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: still closed
        combo.press("ArrowDown")
    page.get_by_role("option", name=option, exact=True).click()


def check_goal_change(page, where: str) -> None:
    before = risk_table_text(page)
    assert "greedy" in before, f"{where}: the risk table has no greedy row:\n{before}"
    choose(page, "Goal", "0-1")  # from the default goal (Hamming) to the sequence goal
    page.wait_for_url(lambda url: "goal=0-1" in url, timeout=10_000)
    wait_idle(page)
    assert_healthy(page, f"{where} after changing the goal")
    page.wait_for_function("""before => {
        const t = document.querySelector("[data-testid='stDataFrame'] table");
        return t && t.innerText !== before;}""", arg=before, timeout=10_000)
    assert "0-1" in page.locator("[data-testid='stMain']").inner_text(), f"{where}: the goal is not named"


# ---- every page's own URL ---------------------------------------------------------------------------

URL_SEED = 3  # a non-default sidebar value each URL carries, to see that the parameters reach the page


def assert_opened(page, base: str, app_page: AppPage, where: str) -> None:
    """The page ``app_page`` is shown at its own URL, without "Page not found", healthy, with the URL's seed."""
    wait_idle(page, timeout_ms=SERVER_START_S * 1000)  # a new session: the first run may load the model
    expected = f"{base}/{app_page.url_path}"
    # the root and old links forward with a rerun, which may still be on its way on a busy machine; a
    # timeout is reported by the assertion below
    with contextlib.suppress(Exception):
        page.wait_for_url(lambda url: url.split("?")[0].rstrip("/") == expected, timeout=30_000)
    wait_idle(page, timeout_ms=SERVER_START_S * 1000)
    path = page.url.split("?")[0].rstrip("/")
    assert path == expected, f"{where}: ended at {page.url}"
    assert page.get_by_text("Page not found").count() == 0, f"{where}: 'Page not found' shown"
    text, selector = PAGE_CONTENT.get(app_page.name, (app_page.title, "h1"))
    assert_visible(page.get_by_text(text).first, f"{where}: {text!r} not visible")
    assert_visible(page.locator(selector).first, f"{where}: nothing visible matches {selector}")
    assert_healthy(page, where)
    seed_box = page.get_by_role("spinbutton", name="Seed")
    assert seed_box.count() and seed_box.first.input_value() == str(URL_SEED), f"{where}: the URL's seed is not used"


def test_every_page_url_opens_that_page(browser_page, server):
    page = browser_page
    pages = declared_pages()
    query = f"?steps={STEPS}&cmp_n_samples=16&seed={URL_SEED}"
    page.goto(f"{server}/{query}")  # the root forwards to the first page, parameters kept
    assert_opened(page, server, pages[0], f"/{query}")  # (also the server's first request: see the test below)
    for app_page in pages:
        where = f"/{app_page.url_path}{query}"
        page.goto(f"{server}/{app_page.url_path}{query}")
        assert_opened(page, server, app_page, where)
        written = page.url  # the URL the app wrote back (its state as query parameters)
        assert f"seed={URL_SEED}" in written, f"{where}: the app wrote {written}"
        page.goto(written)
        assert_opened(page, server, app_page, f"{where}, reopened as {written}")


@pytest.mark.parametrize("name", ["theory_lab", "step_inspector", "compare"])
def test_first_request_after_a_server_start_opens_its_page(browser_page, name):
    """A fresh server's first script run is in Streamlit's legacy pages/ mode; the page still opens
    (pages.common.leave_legacy_pages_mode), with the app's own sidebar and its link's settings."""
    app_page = next(p for p in declared_pages() if p.name == name)
    with streamlit_server() as base:
        browser_page.goto(f"{base}/{app_page.url_path}?seed={URL_SEED}")
        assert_opened(browser_page, base, app_page, f"first request /{app_page.url_path}")


# ---- a model behind a server (llama.cpp's server on 127.0.0.1) ---------------------------------------


@pytest.fixture(scope="module")
def server_on_llama(llama_server, remote_smollm2):  # noqa: F811
    """``streamlit run app.py`` with the llama server on the operator's allow-list."""
    from urllib.parse import quote

    env = {"DECODING_EXPLORER_SERVERS": llama_server, "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="no-config-")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the streamlit process inherits it
    try:
        with streamlit_server() as base:
            yield base, quote(f"server:{remote_smollm2.model_id}@{llama_server}", safe="")
    except ServerError as exc:
        pytest.fail(str(exc))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_compare_and_step_inspector_on_a_server(browser_page, server_on_llama):
    page = browser_page
    base, source = server_on_llama
    page.goto(f"{base}/?source={source}&steps=2&cmp_n_samples=16&prompt=The%20capital%20of%20France%20is")
    page.wait_for_selector("[data-testid='stApp']")
    wait_idle(page, timeout_ms=240_000)  # connects, then a Compare run of a few hundred requests
    assert_healthy(page, "compare on a server")
    assert_visible(page.get_by_text("The server listed its top 20 tokens").first, "no note on the server's truncation")
    assert "greedy" in risk_table_text(page)
    screenshot(page, "compare_server")

    goto_page(page, base, next(p for p in declared_pages() if p.name == "step_inspector"))
    assert_healthy(page, "step inspector on a server")
    assert_visible(page.get_by_text("the grey bar is everything else").first, "no note on the server's truncation")
    chart = page.locator("[data-testid='stPlotlyChart']").first
    assert "rest of the vocabulary" in chart.inner_text()
    before = branch_count(page)
    bars = chart.locator(".bars path, g.point path")
    box = bars.nth(1).bounding_box()  # data order: the runner-up token (the grey rest bar is last)
    x, y = box["x"] + min(box["width"] / 2, 40), box["y"] + box["height"] / 2
    chart.hover()
    page.mouse.move(x, y, steps=4)
    page.wait_for_function("() => document.querySelector('.hoverlayer .hovertext') !== null", timeout=5_000)
    page.mouse.click(x, y)
    page.wait_for_function(f"""() => document.querySelectorAll(
        "[data-testid='stRadio'] input[type='radio']").length > {before}""", timeout=30_000)
    wait_idle(page)
    assert_healthy(page, "step inspector on a server after branching")
    screenshot(page, "step_inspector_server")
