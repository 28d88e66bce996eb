"""The exported HTML report renders in a real browser (headless Chromium): the page is not blank and
the importance colours (red and blue backgrounds) actually show."""
import numpy as np
import pytest

from tests.browser_screenshot import needs_chromium, pixel_stats, screenshot
from tmlib.highlight import write_html_report
from tmlib.importance.types import TokenScores

pytestmark = [pytest.mark.browser,
              needs_chromium("Chromium is not installed (apt-get update && apt-get install -y chromium)")]


def test_report_renders_with_colours(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    words = "the film is an unbelievably boring , overlong mess but the acting is wonderful".split()
    scores = []
    for i in range(12):
        toks = [w for w in words for w in (["un", "##bel", "##ie", "##va", "##bly"] if w == "unbelievably" else [w])]
        scores.append(TokenScores(" ".join(words), toks, rng.normal(size=len(toks)), label=i % 2, pred=1,
                                  important=rng.random(len(toks)) > 0.7, method="occlusion"))
    scores.append(TokenScores("<script>alert(1)</script>", ["<", "script", ">"], [1.0, -1.0, 0.5], method="x"))
    html = write_html_report(tmp_path / "report.html", scores, label_names=["negative", "positive"],
                             title="browser check")
    png = screenshot(html, tmp_path / "shot.png")
    stats = pixel_stats(png)
    assert (stats["width"], stats["height"]) == (1200, 900)
    assert stats["std"] > 10, f"screenshot looks blank: {stats}"
    assert stats["reddish_share"] > 0.002 and stats["bluish_share"] > 0.002, f"importance colours missing: {stats}"
