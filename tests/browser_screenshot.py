"""Screenshot an HTML file (or any URL) with headless Chromium; usable by hand and from tests.

    .venv/bin/python tests/browser_screenshot.py runs/default/02_token_importance_explorer/report.html /tmp/report.png
    .venv/bin/python tests/browser_screenshot.py runs/default/02_token_importance_explorer.ipynb /tmp/nb.png 1200 3000

An ``.ipynb`` (e.g. an executed notebook from the suite) is first converted to static HTML with
nbconvert (the way JupyterLab shows its outputs, without a running kernel), then screenshotted.

Install Chromium once with ``apt-get update && apt-get install -y chromium`` (``make browser``).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-dev-shm-usage"]


def find_chromium() -> str | None:
    for c in CANDIDATES:
        path = c if Path(c).is_file() else shutil.which(c)
        if path:
            return path
    return None


def screenshot(target: str | Path, png: str | Path, width: int = 1200, height: int = 900, timeout: float = 60.0) -> Path:
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
    return {"width": img.shape[1], "height": img.shape[0], "std": float(img.std()),
            "coloured_share": float((spread > 60).mean()),
            "reddish_share": float(((img[..., 0] - img[..., 2]) > 60).mean()),
            "bluish_share": float(((img[..., 2] - img[..., 0]) > 60).mean())}


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    src = sys.argv[1]
    if src.endswith(".ipynb"):
        src = str(notebook_to_html(src, Path(sys.argv[2]).with_suffix(".html")))
    out = screenshot(src, sys.argv[2], *(int(x) for x in sys.argv[3:5]))
    print(out, pixel_stats(out))
