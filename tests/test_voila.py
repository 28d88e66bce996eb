"""The standalone explorer page (``make explore``): Voila serves notebooks/explorer_app.ipynb; Playwright on
Debian's Chromium uses it like a person (type, Compute, switch methods, masking preview, an example)."""

import sys

import pytest

from tests.browser_screenshot import (
    ROOT,
    chromium_page,
    drive_explorer,
    free_port,
    needs_chromium,
    port_open,
    serve,
    wait_for_explorer,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium("Chromium is not installed (make browser, i.e. apt-get install -y chromium)"),
]

APP = ROOT / "notebooks" / "explorer_app.ipynb"


def test_explorer_app_in_voila(tmp_path):
    from playwright.sync_api import expect

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "voila",
        str(APP),
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
        "--show_tracebacks=True",
    ]
    env = {
        "TMLIB_EXPLORER_PARAMS": "smoke",
        "TMLIB_EXPLORER_OUT": str(tmp_path / "out"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    with serve(cmd, lambda: port_open(port), tmp_path / "voila.log", env=env, cwd=ROOT), chromium_page() as page:
        page.goto(f"http://127.0.0.1:{port}/")
        explorer = wait_for_explorer(page, timeout=300)
        info = page.locator(".tmlib-app-info")
        expect(info).to_contain_text("scratch:tiny")  # smoke.yaml's scorer, from TMLIB_EXPLORER_PARAMS
        expect(info).to_contain_text("12 dev sentences")
        assert page.get_by_text("make_explorer(").count() == 0, "Voila shows outputs only, no code"
        seen = drive_explorer(page, explorer, tmp_path / "shots", "voila_explorer")
    assert seen["boxed"][0] >= 1
    assert (tmp_path / "out" / "scorer").is_dir(), "the scorer is cached where TMLIB_EXPLORER_OUT says"
