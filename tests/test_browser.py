"""The exported HTML report renders in a real browser (headless Chromium): the page is not blank and
the importance colours (red and blue backgrounds) actually show."""

import numpy as np
import pytest

from tests.browser_screenshot import (
    check_boxes,
    check_colours,
    chromium_page,
    needs_chromium,
    pixel_stats,
    screenshot,
    token_facts,
)
from tmlib.highlight import write_html_report
from tmlib.selective.types import TokenScores

pytestmark = [
    pytest.mark.browser,
    needs_chromium("Chromium is not installed (apt-get update && apt-get install -y chromium)"),
]


def test_report_renders_with_colours(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    words = "the film is an unbelievably boring , overlong mess but the acting is wonderful".split()
    scores = []
    for i in range(12):
        toks = [w for w in words for w in (["un", "##bel", "##ie", "##va", "##bly"] if w == "unbelievably" else [w])]
        scores.append(
            TokenScores(
                " ".join(words),
                toks,
                rng.normal(size=len(toks)),
                label=i % 2,
                pred=1,
                important=rng.random(len(toks)) > 0.7,
                method="occlusion",
            )
        )
    scores.append(TokenScores("<script>alert(1)</script>", ["<", "script", ">"], [1.0, -1.0, 0.5], method="x"))
    html = write_html_report(
        tmp_path / "report.html", scores, label_names=["negative", "positive"], title="browser check"
    )
    png = screenshot(html, tmp_path / "shot.png")
    stats = pixel_stats(png)
    assert (stats["width"], stats["height"]) == (1200, 900)
    assert stats["std"] > 10, f"screenshot looks blank: {stats}"
    assert stats["reddish_share"] > 0.002 and stats["bluish_share"] > 0.002, f"importance colours missing: {stats}"


SENTENCE = "a wonderful film with a boring , awful ending"


@pytest.fixture(scope="module")
def explorer_pages(tokenizer, tmp_path_factory):
    """The explorer (tmlib.widgets) on a tiny model: one text scored by the buffer method and by occlusion, the
    masking preview on; each fragment it shows is opened as a page in Chromium. Returns {method: (token facts
    per row, the explorer's ``last``)} and the page's JavaScript and console errors."""
    pytest.importorskip("playwright")
    from tmlib.core.models import load_classifier
    from tmlib.widgets import TokenImportanceExplorer

    model = load_classifier("scratch:tiny", ["negative", "positive"], seed=0).eval()
    ex = TokenImportanceExplorer(model, tokenizer, method="buffer", auto=False)
    # an untrained model's buffer margins are tiny: put delta between two of them, so that some tokens are
    # important (shown red) and some are not (blue)
    margins = np.sort(ex.scores(SENTENCE, "buffer", delta=0.01).scores)
    k = len(margins) // 2
    ex.delta.value = float(-(margins[k - 1] + margins[k]) / 2)
    ex.preview.value = True
    ex.set_text(SENTENCE)
    shown, tmp = {}, tmp_path_factory.mktemp("explorer")
    with chromium_page(timeout_ms=30_000) as page:
        for method in ("buffer", "occlusion"):
            ex.method.value = method
            ex.on_compute()
            (tmp / f"{method}.html").write_text(f"<!DOCTYPE html><html><body>{ex.html}</body></html>")
            page.goto((tmp / f"{method}.html").as_uri())
            rows = page.locator(".tmhl .ex")
            shown[method] = ([token_facts(rows.nth(i)) for i in range(rows.count())], dict(ex.last))
        errors = {"js": list(page.js_errors), "console": list(page.console_errors)}
    return shown, errors


def test_explorer_scores_differ_between_methods(explorer_pages):
    shown = {m: [f["score"] for f in rows[0]] for m, (rows, _) in explorer_pages[0].items()}
    assert len(shown["buffer"]) == len(shown["occlusion"])
    assert not np.allclose(shown["buffer"], shown["occlusion"], rtol=1e-2, atol=1e-6), shown
    rgb = {m: [f["rgb"] for f in rows[0]] for m, (rows, _) in explorer_pages[0].items()}
    assert rgb["buffer"] != rgb["occlusion"]
    for m, (_, last) in explorer_pages[0].items():  # and each is what tmlib computed with that method
        assert last["main"].method == m
        assert np.allclose(shown[m], last["main"].scores, rtol=1e-3, atol=1e-6), f"{m}: page {shown[m]} != tmlib"


def test_explorer_colours_follow_the_sign(explorer_pages):
    for method, (rows, last) in explorer_pages[0].items():
        ts = last["main"]
        offset = float(ts.meta.get("display_offset", 0.0) or 0.0)
        values = ts.scores + offset
        assert (values > 0).any() and (values < 0).any(), f"{method}: the text needs both signs to test colours"
        check_colours(rows[0], ts.scores, offset)


def test_explorer_boxes_on_the_selected_important_tokens(explorer_pages):
    for method, (rows, last) in explorer_pages[0].items():
        assert len(rows) == 3, f"{method}: scores, selective and random rows"
        assert not any(f["boxed"] for f in rows[0])
        source, sel = last["preview_source"], last["selective"]
        assert [f["underlined"] for f in rows[1]] == [bool(x) for x in source.important]
        assert 1 <= len(sel) < int(np.sum(source.important)), "the mask cap must leave important tokens unboxed"
        assert check_boxes(rows[1], sel) == sorted(sel.tolist())
        assert check_boxes(rows[1]) == sorted(sel.tolist())  # the page alone gives the same choice
        assert sum(f["boxed"] for f in rows[2]) == len(sel)


def test_explorer_page_has_no_console_errors(explorer_pages):
    errors = explorer_pages[1]
    assert errors == {"js": [], "console": []}, errors
