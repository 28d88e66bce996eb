"""The explorer is driven without a browser: set widget values, call methods or click, read the HTML."""

import sys
import types

import numpy as np
import pytest

from tmlib.selective.types import TokenScores

TEXTS = ["a great , wonderful film", "an awful , boring mess <script>alert(1)</script>", "truly moving"]
LABELS = [1, 0, 1]


@pytest.fixture(scope="module")
def model():
    from tmlib.core.models import load_classifier

    return load_classifier("scratch:tiny", ["negative", "positive"], seed=0).eval()


@pytest.fixture
def explorer(model, tokenizer):
    from tmlib.widgets import TokenImportanceExplorer

    return TokenImportanceExplorer(
        model, tokenizer, TEXTS, labels=LABELS, method_kwargs={"integrated_gradients": {"n_steps": 4}}
    )


def test_pick_example_and_type_text(explorer):
    html = explorer.set_example(1)
    assert html == explorer.html and "gold: <b>negative</b>" in html and ">awful<" in html
    assert "<script>alert" not in html and "&lt;" in html
    assert explorer.text.value == TEXTS[1] and explorer.example.value == 1
    assert "predicted <b>" in explorer.status.value and "gold <b>negative</b>" in explorer.status.value
    assert explorer.n_computed == 1, "selecting an example computes once (no observer echo)"
    html = explorer.set_text("a <b>bold</b> claim")
    assert explorer.gold is None and explorer.example.value is None
    assert "gold:" not in html and "&lt;" in html and ">claim<" in html


def test_compute_tooltip_follows_the_text_the_kernel_holds(explorer):
    """The page-side signal the browser tests wait on (not a fixed pause): the Compute button's tooltip names the
    length of the text the kernel has, whether typed (a front-end update of the value) or set by the explorer."""
    assert explorer.compute.tooltip == "type a text or pick an example first"
    explorer.text.value = "a wonderful film"  # what a front-end update of the text box does in the kernel
    assert explorer.compute.tooltip == "compute the importance of the 16-character text"
    explorer.set_example(1)
    assert explorer.compute.tooltip == f"compute the importance of the {len(explorer.text.value)}-character text"


def test_dropdown_click_and_edit_drop_gold(explorer):
    explorer.example.value = 0  # as if the user picked it in the dropdown
    assert explorer.n_computed == 1 and "gold: <b>positive</b>" in explorer.html and ">wonderful<" in explorer.html
    explorer.text.value = TEXTS[0] + " , not"
    explorer.compute.click()  # the button runs on_compute
    assert explorer.gold is None and explorer.example.value is None and ">not<" in explorer.html
    assert "gold:" not in explorer.html


def test_scores_are_cached_per_text_method_delta(explorer):
    explorer.set_example(0)
    explorer.method.value = "grad_x_input"
    explorer.method.value = "occlusion"
    assert explorer.n_computed == 2 and explorer.last["main"].method == "occlusion"
    explorer.delta.value = 0.05  # occlusion ignores delta: still cached
    assert explorer.n_computed == 2
    explorer.method.value = "buffer"
    explorer.delta.value = 0.2  # the buffer method depends on delta: recomputed
    assert explorer.n_computed == 4 and explorer.last["main"].meta["delta"] == pytest.approx(0.2)
    explorer.delta.value = 0.05  # back to a cached delta
    assert explorer.n_computed == 4 and explorer.last["main"].important is not None


def _token_classes(html: str) -> list[str]:
    """The class attribute of every token span in the rendered HTML, in order."""
    import re

    return re.findall(r'<span class="(t(?: [a-z]+)*)" style=', html)


def test_buffer_labels_are_underlined(explorer):
    """The buffer method's hard labels are what the HTML underlines, token by token: example 1 (the
    untrained model classifies it correctly) has important tokens, each underlined and no other;
    example 0 is misclassified, so (only_correct) its labels are all 0 and nothing is underlined."""
    explorer.method.value = "buffer"
    explorer.delta.value = 0.05
    explorer.set_example(1)
    main = explorer.last["main"]
    assert main.method == "buffer" and main.pred == main.label == 0
    classes = _token_classes(explorer.html)
    assert len(classes) == len(main.tokens)
    underlined = ["hard" in c.split() for c in classes]
    assert main.important.sum() >= 3 and underlined == main.important.astype(bool).tolist()
    assert "underlined</span> = important (hard label)" in explorer.html  # the legend explains it
    explorer.set_example(0)
    main = explorer.last["main"]
    assert main.pred != main.label and main.important.sum() == 0
    assert not any("hard" in c.split() for c in _token_classes(explorer.html))


def test_tagger_row_gold_buffer_row_and_masking_preview(model, tokenizer, monkeypatch):
    from tmlib.widgets import TokenImportanceExplorer

    def predict_importance(tagger, tok, texts):
        out = []
        for t in texts:
            toks = tok.tokenize(t)
            s = np.linspace(0.1, 0.9, len(toks))
            out.append(TokenScores(t, toks, s, important=(s > 0.5).astype(int), method="tagger"))
        return out

    fake = types.ModuleType("tmlib.selective.tagger")
    fake.predict_importance = predict_importance
    monkeypatch.setitem(sys.modules, "tmlib.selective.tagger", fake)
    ex = TokenImportanceExplorer(model, tokenizer, TEXTS, labels=LABELS, tagger=object(), mask_ratio=0.5)
    ex.preview.value = True
    html = ex.set_example(1)
    assert "tagger prediction" in html and "buffer labels, delta=0.01, gold label" in html
    assert ex.last["buffer"].method == "buffer" and ex.last["tagger"].method == "tagger"
    sel, rnd = ex.last["selective"], ex.last["random"]
    n = len(ex.last["tagger"].tokens)
    assert len(sel) == len(rnd) == max(1, int(0.5 * n)), "the control masks the same number of tokens"
    tag = ex.last["tagger"]
    assert set(sel) <= set(np.flatnonzero(tag.important)), "selective masking picks predicted-important tokens"
    assert html.count(' box" style=') == 2 * len(sel) and "random-count control" in html


def test_preview_degrades_without_collators(explorer, monkeypatch):
    monkeypatch.setitem(sys.modules, "tmlib.selective.collators", None)  # import fails as if the module were absent
    explorer.preview.value = True
    explorer.set_example(2)
    assert "masking preview unavailable" in explorer.status.value
    assert ">moving<" in explorer.html and ' box" style=' not in explorer.html  # the scores still show, no boxes


def test_errors_are_shown_and_bad_setup_rejected(model, tokenizer, explorer):
    from tmlib.widgets import TokenImportanceExplorer

    bad = TokenImportanceExplorer(
        model, tokenizer, TEXTS, method="integrated_gradients", method_kwargs={"integrated_gradients": {"n_steps": 1}}
    )
    assert (
        bad.set_example(0) == "" and "integrated_gradients failed" in bad.status.value and "n_steps" in bad.status.value
    )
    with pytest.raises(ValueError, match="unknown importance method 'lime'"):
        TokenImportanceExplorer(model, tokenizer, TEXTS, methods=["occlusion", "lime"])
    with pytest.raises(IndexError, match="3 examples"):
        explorer.set_example(7)
    explorer.text.value = "   "
    assert explorer.on_compute() == "" and "pick an example" in explorer.status.value


def test_accepts_a_dataset(model, tokenizer, tiny_task):
    from tmlib.widgets import TokenImportanceExplorer

    ex = TokenImportanceExplorer(model, tokenizer, tiny_task["dev"], auto=False)
    assert len(ex.example.options) == len(tiny_task["dev"]) and ex.label_names == ["negative", "positive"]
    assert ex.set_example(0) == "" and ex.n_computed == 0  # auto=False: nothing runs until Compute
    ex.compute.click()
    assert ex.n_computed == 1 and "gold: <b>" in ex.html
    assert "VBox" in type(ex.widget).__name__ and "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()
