"""Notebook 02's explorer in a real JupyterLab: the ipywidgets front end, not just the Python methods.

JupyterLab runs on localhost (a temporary root with a copy of notebook 02 whose parameters cell ends
with the smoke parameters, the venv's kernel); Playwright drives Debian's Chromium: Run > Run All
Cells, type a sentence, press Compute, switch methods, tick the masking preview, pick an example,
asserting on the rendered token spans. Screenshots: the test's tmp dir and runs/browser/.
"""

import json
import os
import re
import secrets
import sys

import nbformat
import pytest

from tests.browser_screenshot import (
    chromium_page,
    drive_explorer,
    free_port,
    http_ok,
    needs_chromium,
    serve,
    wait_for_explorer,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium("Chromium is not installed (make browser, i.e. apt-get install -y chromium)"),
]

NB = "02_token_importance_explorer.ipynb"
SETTINGS = {  # JupyterLab user settings: every cell in the DOM (no windowing), no news/update toasts
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def lab_notebook(dest, out_dir):
    """Notebook 02 as a person would have it, with the smoke parameters appended to its parameters cell."""
    from tmlib.core.config import load_yaml
    from tmlib.suite import NOTEBOOKS, _kernel_name, params_file

    values = {**load_yaml(params_file(NOTEBOOKS / NB, "smoke")), "out_dir": str(out_dir), "progress": False}
    del values["interactive"]  # smoke.yaml (a batch set) turns the explorer off; here the notebook's default stays
    nb = nbformat.read(NOTEBOOKS / NB, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert re.search(r"^interactive(?:: bool)? = True\b", cell.source, re.M), (
        "a person running notebook 02 gets the explorer"
    )
    cell.source += "\n# browser test: the smoke parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())
    # the venv's interpreter (tmlib.suite installs this kernel spec under the venv on first use)
    nb.metadata.kernelspec = {"name": _kernel_name(), "display_name": "Python (tmlib)", "language": "python"}
    nbformat.write(nb, dest)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "root"
    root.mkdir()
    lab_notebook(root / NB, tmp / "out")
    for rel, value in SETTINGS.items():
        (tmp / "settings" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "settings" / rel).write_text(json.dumps(value))
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={tmp / 'settings'}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    base = f"http://127.0.0.1:{port}"
    with serve(
        cmd,
        lambda: http_ok(f"{base}/api/status?token={token}"),
        tmp / "jupyterlab.log",
        env=env,
        shutdown_url=f"{base}/api/shutdown?token={token}",
    ):
        yield {"url": f"{base}/lab/tree/{NB}?token={token}", "tmp": tmp}


def test_explorer_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect

    with chromium_page() as page:
        page.goto(lab["url"])
        cells = page.locator(".jp-Notebook .jp-Cell")
        expect(cells.first).to_be_visible()
        status = page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle"))
        expect(status.first).to_contain_text("Python (tmlib)")  # the kernel started and is the venv's
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
        last_prompt = cells.last.locator(".jp-InputPrompt")
        explorer = wait_for_explorer(
            page,
            timeout=360,
            finished=lambda: bool(re.search(r"\[\d+\]", last_prompt.inner_text())) and status.count() > 0,
        )
        seen = drive_explorer(page, explorer, tmp_path / "shots", "jupyterlab_explorer")
    assert seen["boxed"][0] >= 1 and seen["example"].startswith("#1 ")
    assert (lab["tmp"] / "out" / "report.html").is_file(), "the notebook ran to its end in JupyterLab"
