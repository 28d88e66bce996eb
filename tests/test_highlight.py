"""Standalone HTML highlighting: escaping, WordPiece joining, colours, hard labels, boxes, long texts, speed."""

import re

import numpy as np
import pytest

from tmlib.highlight import render_html, token_colors, write_html_report
from tmlib.selective.types import TokenScores


def ts(tokens, scores=None, **kw):
    scores = np.linspace(-1, 1, len(tokens)) if scores is None else scores
    return TokenScores(" ".join(tokens), tokens, scores, **kw)


def test_everything_from_data_is_escaped():
    evil = ts(["<script>", "alert", "(", "1", ")", "</script>", "&", '"q"'], label=0, pred=1, method="<b>m</b>")
    page = render_html([evil], label_names=["<neg>", "pos"], title="<script>x</script>", captions=["<i>c</i>"])
    assert "<script>" not in page and "</script>" not in page and "<b>m</b>" not in page and "<i>c</i>" not in page
    assert "&lt;script&gt;" in page and "&amp;" in page and "&quot;q&quot;" in page and "&lt;neg&gt;" in page
    assert (
        page.startswith("<!DOCTYPE html>")
        and "<style>" in page
        and "<script" not in page.lower().replace("&lt;script", "")
    )  # no JS at all


def test_wordpieces_join_into_one_unbreakable_word():
    page = render_html([ts(["un", "##bel", "##ie", "##va", "##bly", "boring", "film"])])
    words = re.findall(r'<span class="w[^"]*">(.*?)</span>(?= |</div>)', page)
    assert len(words) == 3
    text_of = [re.sub(r"<[^>]+>", "", w) for w in words]
    assert text_of == ["unbelievably", "boring", "film"] and "##" not in re.sub(r'title="[^"]*"', "", page)
    assert page.count('class="t c') == 4  # continuation pieces carry the seam class
    assert 'title="##bel:' in page  # the tooltip keeps the real WordPiece
    assert ".tmhl .w{white-space:nowrap}" in page


def test_colours_diverge_and_scale():
    colors, a = token_colors(np.array([-2.0, -1.0, 0.0, 0.5, 1.0]), scale=1.0)
    assert (
        colors[2] == "rgb(255,255,255)"
        and colors[4] == "rgb(178,24,43)"
        and colors[0] == colors[1] == "rgb(33,102,172)"
    )
    assert a.tolist() == [-1.0, -1.0, 0.0, 0.5, 1.0]
    # per-text scaling: the strongest token of each text is fully coloured; batch scaling keeps ratios
    small, big = ts(["a", "b"], [0.0, 0.1]), ts(["c", "d"], [0.0, 1.0])
    assert render_html([small, big], scale="text").count("background:rgb(178,24,43)") == 2
    assert render_html([small, big], scale="batch").count("background:rgb(178,24,43)") == 1
    with pytest.raises(ValueError, match="unknown scale"):
        render_html([small], scale="global")
    zero = render_html([ts(["x", "y"], [0.0, 0.0])])  # no division by zero
    assert zero.count("background:rgb(255,255,255)") == 2


def test_hard_labels_boxes_and_header():
    a = ts(
        ["good", "film", "really"],
        [0.3, 0.0, 0.1],
        important=[1, 0, 1],
        label=1,
        pred=0,
        method="buffer",
        meta={"target": 0, "p_target": 0.75},
    )
    page = render_html(
        [a, a],
        label_names=["negative", "positive"],
        boxes=[np.array([1]), np.array([False, False, True])],
        captions=["tagger", None],
    )
    assert page.count(" hard") == 4 and page.count(" box") == 2
    assert "gold: <b>positive</b>" in page and "pred: <b>negative</b> (0.75)" in page and 'class="wrong"' in page
    assert "underlined</span> = important" in page and "boxed</span> = selected for masking" in page
    assert "tagger" in page
    with pytest.raises(ValueError, match="out of range"):
        render_html([a], boxes=[np.array([3])])
    with pytest.raises(ValueError, match="1 texts but 2 boxes"):
        render_html([a], boxes=[None, None])
    with pytest.raises(TypeError, match="pass TokenScores"):
        render_html(["text"])


def test_long_text_wraps_and_fragment_mode(tmp_path):
    long = ts(["word"] * 2000 + ["a" * 80])
    frag = render_html([long], full_document=False)
    assert frag.startswith("<style>") and "<html" not in frag
    assert frag.count('class="w"') == 2000 and 'class="w long"' in frag  # a giant word may still wrap
    assert "overflow-wrap:anywhere" in frag
    path = write_html_report(tmp_path / "r" / "report.html", [long], title="long")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not [p for p in path.parent.iterdir() if p.name != "report.html"]  # atomic: no temp files left


def test_hundreds_of_texts_render():
    # speed is measured in benchmarks/, not asserted here
    rng = np.random.default_rng(0)
    batch = [ts([f"tok{j}" for j in range(40)], rng.normal(size=40), label=i % 2, pred=1) for i in range(500)]
    page = render_html(batch, label_names=["n", "p"])
    blocks = page.split('<div class="ex">')[1:]
    assert len(blocks) == 500
    # every text in order under its own number, labels and scores; coloured on its own scale (max |score|)
    for i, (block, b) in enumerate(zip(blocks, batch)):
        gold, mark = ("n", "wrong") if i % 2 == 0 else ("p", "right")
        assert (
            f'<span class="idx">#{i}</span><span>gold: <b>{gold}</b></span><span class="{mark}">pred: <b>p</b>' in block
        )
        titles = re.findall(r'title="([^"]*)"', block)
        assert titles == [f"tok{j}: {s:+.4g}" for j, s in enumerate(b.scores)], i
        colors, _ = token_colors(b.scores, float(np.abs(b.scores).max()))
        assert re.findall(r'style="background:(rgb\([0-9,]+\))', block) == colors, i


def test_display_offset_shifts_colours_not_tooltips():
    # buffer margins: important iff margin > -delta; with the offset the important token turns red
    b = ts(["keep", "drop"], [-0.005, -0.3], important=[1, 0], meta={"display_offset": 0.01})
    page = render_html([b])
    assert 'title="keep: -0.005"' in page
    keep = page.split('title="keep')[0].rsplit("background:", 1)[1]
    r, g, bl = map(int, keep.split(")")[0].removeprefix("rgb(").split(","))
    assert r > bl, "the important token (margin > -delta) must be on the red side"
