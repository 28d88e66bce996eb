"""Screenshot an HTML file (or any URL) with headless Chromium; usable by hand and from tests.

    .venv/bin/python tests/browser_screenshot.py runs/default/02_token_importance_explorer/report.html /tmp/report.png
    .venv/bin/python tests/browser_screenshot.py runs/default/02_token_importance_explorer.ipynb /tmp/nb.png 1200 3000

An ``.ipynb`` (e.g. an executed notebook from the suite) is first converted to static HTML with
nbconvert (the way JupyterLab shows its outputs, without a running kernel), then screenshotted.

Install Chromium once with ``apt-get update && apt-get install -y chromium`` (``make browser``).

The second half drives live pages (JupyterLab, the Voila explorer app) with Playwright on that same
Chromium (``executable_path``; never ``playwright install``): :func:`serve` starts a local server and
stops it with its kernels, :func:`chromium_page` opens a page, :func:`drive_explorer` types, clicks and
checks the token-importance explorer widget (``tmlib.widgets``) the way a person would.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--disable-dev-shm-usage",
]


ROOT = Path(__file__).resolve().parent.parent
KEPT = ROOT / "runs" / "browser"  # screenshots of the browser tests are copied here (runs/ is git-ignored)


def find_chromium() -> str | None:
    """The browser used: ``$TMLIB_CHROMIUM`` when set (a path), else the first of CANDIDATES found."""
    import os

    for c in [os.environ["TMLIB_CHROMIUM"]] if os.environ.get("TMLIB_CHROMIUM") else CANDIDATES:
        path = c if Path(c).is_file() else shutil.which(c)
        if path:
            return path
    return None


def needs_chromium(reason: str):
    """The mark of a browser test: skipped where Chromium is missing, except under ``TMLIB_REQUIRE_BROWSER=1``
    (what ``.ci/run`` sets), where a missing Chromium fails the test with how to install it."""
    import os

    import pytest

    if os.environ.get("TMLIB_REQUIRE_BROWSER") == "1":
        return pytest.mark.usefixtures("chromium_required")
    if find_chromium() is None:
        print(f"\n*** browser tests SKIPPED: {reason} ***")
    return pytest.mark.skipif(find_chromium() is None, reason=reason)


def screenshot(
    target: str | Path, png: str | Path, width: int = 1200, height: int = 900, timeout: float = 60.0
) -> Path:
    """Render ``target`` (a file path or URL) and write a ``width`` x ``height`` PNG to ``png``."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found; install it with: apt-get update && apt-get install -y chromium")
    target = str(target)
    url = target if "://" in target else Path(target).resolve().as_uri()
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="tmlib-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}", url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not png.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return png


def notebook_to_html(notebook: str | Path, html: str | Path) -> Path:
    """Static HTML of an (executed) notebook via nbconvert's lab template."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(str(notebook), as_version=4))
    html = Path(html)
    html.write_text(body, encoding="utf-8")
    return html


def pixel_stats(png: str | Path) -> dict:
    """Size, pixel standard deviation, and the share of strongly coloured (non-grey) pixels."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)
    spread = img.max(-1) - img.min(-1)  # 0 for white/grey/black, large for saturated colours
    return {
        "width": img.shape[1],
        "height": img.shape[0],
        "std": float(img.std()),
        "coloured_share": float((spread > 60).mean()),
        "reddish_share": float(((img[..., 0] - img[..., 2]) > 60).mean()),
        "bluish_share": float(((img[..., 2] - img[..., 0]) > 60).mean()),
    }


# ------------------------------------------------------------------------------ live pages (Playwright)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status < 400
    except OSError:
        return False


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def serve(
    cmd: list[str],
    ready,
    log: Path,
    env: dict | None = None,
    cwd: str | Path | None = None,
    timeout: float = 120.0,
    shutdown_url: str | None = None,
):
    """Run ``cmd`` (a local web server) until the ``with`` block ends; ``ready()`` says it answers.

    Output goes to ``log`` (quoted when the server dies or never gets ready). On exit the server is
    asked to stop (``shutdown_url`` POST, then SIGTERM, then SIGKILL), and any kernel it started that
    is still alive is killed by its pid."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "wb")  # noqa: SIM115 - the server's stdout for its lifetime
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True
    )
    children: set = set()
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready after {timeout:.0f} s"
                )
                raise RuntimeError(f"{cmd[2] if len(cmd) > 2 else cmd[0]} {why}:\n{_tail(log)}")
            time.sleep(0.5)
        yield proc
    finally:
        with contextlib.suppress(psutil.Error):
            children = set(psutil.Process(proc.pid).children(recursive=True))
        if shutdown_url and proc.poll() is None:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(urllib.request.Request(shutdown_url, method="POST"), timeout=10).close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for child in children:  # kernels the server started (their own sessions)
            with contextlib.suppress(psutil.Error):
                child.kill()
        out.close()


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.is_file() else "(no log)"


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 1000, timeout_ms: int = 120_000):
    """A Playwright page on the system Chromium (see :data:`FLAGS`); actions and ``expect`` wait up to
    ``timeout_ms``; JavaScript errors are collected in ``page.js_errors``, console messages of type error in
    ``page.console_errors`` (:func:`assert_no_console_errors`)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=timeout_ms)  # assertions wait as long as actions: kernels on 2 busy cores are slow
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found; install it with: apt-get update && apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=FLAGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            page.js_errors = []
            page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
            page.console_errors = []
            page.on(
                "console",
                lambda msg: (
                    page.console_errors.append(f"{msg.text} @ {msg.location.get('url')}")
                    if msg.type == "error"
                    else None
                ),
            )
            yield page
        finally:
            browser.close()


def wait_for_explorer(page, timeout: float = 300.0, finished=None):
    """Wait until the explorer widget is on the page; fail early, with the traceback, if a cell raised,
    or 15 s after ``finished()`` (e.g. the last cell ran) turned true without an explorer."""
    explorer = page.locator(".tmlib-explorer")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if explorer.count():
            explorer.first.wait_for(state="visible")
            return explorer.first
        if finished is not None and finished():
            deadline = min(deadline, time.monotonic() + 15)
        failed = page.get_by_text("Traceback (most recent call last)")
        if failed.count():
            raise AssertionError("a cell failed:\n" + page.locator("body").inner_text()[-4000:])
        if page.get_by_text("Error displaying widget").count():
            raise AssertionError("the widget front end failed: " + page.locator("body").inner_text()[-2000:])
        time.sleep(1)
    raise AssertionError(
        f"no explorer widget after {timeout:.0f} s; page text:\n{page.locator('body').inner_text()[-3000:]}"
    )


# console errors of the page's host, not of the explorer, seen in Voila on an offline machine (each a known cause):
KNOWN_CONSOLE_ERRORS = (
    # Voila links Font Awesome from a CDN; offline it is unreachable (the button icons are missing, nothing else)
    r"^Failed to load resource: net::ERR_NAME_NOT_RESOLVED @ https://cdn\.jsdelivr\.net/npm/@fortawesome/",
    # jupytext's JupyterLab extension is installed in the venv and Voila's front end cannot load it
    r"(?s)shared module.*\"shareKey\":\"@jupyterlab/docmanager\".*labextensions/jupyterlab-jupytext/",
)


def assert_no_console_errors(page, known=KNOWN_CONSOLE_ERRORS) -> None:
    """No uncaught JavaScript error and no console message of type error on ``page`` (see :func:`chromium_page`),
    except those matching a pattern of ``known``."""
    assert not page.js_errors, f"JavaScript errors: {page.js_errors}"
    errors = [e for e in page.console_errors if not any(re.search(k, e) for k in known)]
    assert not errors, f"console errors: {errors}"


# per token span (``.t``) of a rendered row: its tooltip, the background and outline the browser computed,
# and whether it is underlined (a hard "important" label)
_FACTS_JS = """els => els.map(e => { const s = getComputedStyle(e); return {
    title: e.title, background: s.backgroundColor, outline: s.outlineStyle, outline_width: parseFloat(s.outlineWidth),
    underline: s.textDecorationLine.includes('underline') }; })"""


def token_facts(row) -> list[dict]:
    """What the page shows for each token of ``row`` (a ``.tmhl .ex`` element): ``title``, ``score`` (the
    raw score of the tooltip), ``rgb`` (computed background), ``boxed`` (a visible outline), ``underlined``."""
    facts = row.locator(".t").evaluate_all(_FACTS_JS)
    out = []
    for f in facts:
        m = re.fullmatch(r"(.*): ([+-]?(?:\d|inf|nan).*)", f["title"])
        assert m, f"token tooltip without a score: {f['title']!r}"
        rgb = tuple(int(x) for x in re.findall(r"\d+", f["background"])[:3])
        out.append(
            {
                "title": f["title"],
                "token": m.group(1),
                "score": float(m.group(2)),
                "rgb": rgb,
                "boxed": f["outline"] not in ("none", "") and f["outline_width"] > 0,
                "underlined": f["underline"],
            }
        )
    return out


def check_colours(facts: list[dict], scores=None, offset: float = 0.0) -> None:
    """Each token's rendered background follows the sign of its score: red (r > b) where score + ``offset``
    (the buffer method's display offset) is positive, blue (b > r) where negative, white where 0; and it is
    the colour :func:`tmlib.highlight.token_colors` gives on the row's own scale. ``scores``: the scores tmlib
    computed for the text (default: those of the tooltips, printed to 4 digits)."""
    import numpy as np

    from tmlib.highlight import token_colors

    shown = np.array([f["score"] for f in facts])
    values = (shown if scores is None else np.asarray(scores, dtype=np.float64)) + offset
    assert len(values) == len(facts), f"{len(facts)} token spans for {len(values)} scores"
    if scores is not None:
        assert np.allclose(shown, scores, rtol=1e-3, atol=1e-6), "tooltips do not show tmlib's scores"
    scale = float(np.abs(values).max())
    expected, intensity = token_colors(values, scale)
    for f, v, want, a in zip(facts, values, expected, intensity):
        r, g, b = f["rgb"]
        where = f"token {f['title']!r} (score + offset {v:+.4g}) has background rgb{f['rgb']}"
        if abs(a) >= 0.02:  # a visible tint: its hue is the sign
            assert (r > b) if v > 0 else (b > r), where + (", not red" if v > 0 else ", not blue")
        want = tuple(int(x) for x in re.findall(r"\d+", want))
        assert max(abs(x - y) for x, y in zip(f["rgb"], want)) <= 3, where + f", expected rgb{want}"


def check_boxes(facts: list[dict], positions=None, mask_ratio: float = 0.15) -> list[int]:
    """The outlined (boxed) tokens of a selective-masking row are exactly the ones selective masking picks:
    underlined (important) tokens only, the top-scored of them, as many as the mask cap allows. ``positions``:
    what tmlib chose (default: recomputed with :func:`tmlib.selective.collators.selective_positions` from the tooltips'
    scores and the underlines). Returns the boxed positions."""
    import numpy as np

    from tmlib.selective.collators import selective_positions

    boxed = [i for i, f in enumerate(facts) if f["boxed"]]
    important = [i for i, f in enumerate(facts) if f["underlined"]]
    outside = sorted(set(boxed) - set(important))
    assert not outside, f"boxes on tokens not marked important: {[facts[i]['title'] for i in outside]}"
    if positions is None:
        scores = np.array([f["score"] for f in facts])
        positions = selective_positions(
            scores, np.array([f["underlined"] for f in facts]), len(facts), mask_ratio=mask_ratio
        )
    positions = sorted(int(i) for i in positions)
    assert boxed == positions, (
        f"boxed {[facts[i]['title'] for i in boxed]} != selected {[facts[i]['title'] for i in positions]}"
    )
    return boxed


SENTENCE = "A wonderful film with a boring ending"


def drive_explorer(
    page,
    explorer,
    shots: Path,
    name: str,
    sentence: str = SENTENCE,
    methods: tuple[str, str] = ("occlusion", "integrated_gradients"),
) -> dict:
    """Use the explorer like a person: type ``sentence``, press Compute, switch from ``methods[0]`` to
    ``methods[1]``, tick the masking preview, pick a dataset example. Asserts on the rendered tokens
    at every step; saves ``<name>.png`` (the page) and ``<name>_widget.png`` under ``shots`` and copies
    them to runs/browser/. Returns what it saw."""
    from playwright.sync_api import expect

    out = explorer.locator(".tmlib-output")
    rows = out.locator(".tmhl .ex")
    words = sentence.lower().split()
    seen: dict = {}

    # 1. type a sentence, press Compute
    method = explorer.locator(".tmlib-method select")
    expect(method).to_have_value(methods[0])
    box = explorer.locator(".tmlib-text textarea")
    box.scroll_into_view_if_needed()
    box.click()
    box.press_sequentially(sentence, delay=5)
    expect(box).to_have_value(sentence)
    # the text box sends its value to the kernel throttled, and a click 5 ms after the last key could reach the
    # kernel first (seen once in CI: 'endin' computed for 'ending'): click once the kernel holds the whole text, which
    # the Compute button's tooltip says (the kernel sets it from the value it received)
    box.blur()
    compute = explorer.locator("button.tmlib-compute")
    expect(compute).to_have_attribute(
        "title", f"compute the importance of the {len(sentence)}-character text", timeout=120_000
    )
    compute.click()
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".meth")).to_have_text(methods[0])
    seen["tokens"] = _words(rows.first)
    assert seen["tokens"] == words, f"rendered words {seen['tokens']} != typed {words}"
    titles = rows.first.locator(".t").evaluate_all("els => els.map(e => e.title)")
    assert len(titles) >= len(words) and all(re.fullmatch(r".+: [+-]\d.*", t) for t in titles), titles
    expect(explorer.locator(".tmlib-status")).to_contain_text("predicted")
    assert "gold:" not in rows.first.inner_text(), "a typed text has no gold label"
    seen[methods[0]] = titles
    first = token_facts(rows.first)
    check_colours(first)  # red where the score is positive, blue where negative

    # 2. switch the method: recomputed at once, other scores and other colours
    method.select_option(methods[1])
    expect(rows.first.locator(".meth")).to_have_text(methods[1])
    expect(explorer.locator(".tmlib-status")).to_contain_text(methods[1])
    assert _words(rows.first) == words
    seen[methods[1]] = rows.first.locator(".t").evaluate_all("els => els.map(e => e.title)")
    assert len(seen[methods[1]]) == len(titles)
    second = token_facts(rows.first)
    check_colours(second)
    a, b = ([f["score"] for f in x] for x in (first, second))
    assert max(abs(x - y) for x, y in zip(a, b)) > 1e-4 * max(map(abs, a + b)), (
        f"{methods[0]} and {methods[1]} show the same scores: {a}"
    )
    assert [f["rgb"] for f in first] != [f["rgb"] for f in second], "both methods show the same colours"

    # 3. masking preview: two more rows, the same number of boxed tokens in each
    explorer.locator(".tmlib-preview input[type=checkbox]").check()
    expect(rows).to_have_count(3)
    caps = rows.locator(".cap").all_inner_texts()
    assert any(c.startswith("selective masking") for c in caps) and any(c.startswith("random-count") for c in caps), (
        caps
    )
    boxed = [rows.nth(i).locator(".t.box").count() for i in (1, 2)]
    assert boxed[0] >= 1 and boxed[0] == boxed[1], f"boxed tokens (selective, random): {boxed}"
    assert rows.nth(0).locator(".t.box").count() == 0
    assert not any(f["boxed"] for f in token_facts(rows.nth(0))), "the scores row has no boxes"
    ratio = float(explorer.locator(".tmlib-mask-ratio input").input_value())
    assert len(check_boxes(token_facts(rows.nth(1)), mask_ratio=ratio)) == boxed[0]
    seen["boxed"] = boxed

    # the screenshot: the whole page and the widget alone (its colours must show)
    shots.mkdir(parents=True, exist_ok=True)
    explorer.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / f"{name}.png"))
    explorer.screenshot(path=str(shots / f"{name}_widget.png"))
    stats = pixel_stats(shots / f"{name}_widget.png")
    assert stats["reddish_share"] + stats["bluish_share"] > 0.002, f"no importance colours in the widget: {stats}"
    KEPT.mkdir(parents=True, exist_ok=True)
    for png in (f"{name}.png", f"{name}_widget.png"):
        shutil.copy(shots / png, KEPT / png)

    # 4. a dataset example: its text fills the box and its gold label shows
    example = explorer.locator(".tmlib-example select")
    label = example.locator("option").nth(1).inner_text()
    example.select_option(index=1)
    expect(box).not_to_have_value(sentence)
    expect(rows.first).to_contain_text("gold:")
    expect(rows).to_have_count(3)  # the preview is still on
    seen["example"] = " ".join(label.split())
    assert_no_console_errors(page)
    return seen


def _words(row) -> list[str]:
    return row.locator(".txt").inner_text().split()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    src = sys.argv[1]
    if src.endswith(".ipynb"):
        src = str(notebook_to_html(src, Path(sys.argv[2]).with_suffix(".html")))
    out = screenshot(src, sys.argv[2], *(int(x) for x in sys.argv[3:5]))
    print(out, pixel_stats(out))
