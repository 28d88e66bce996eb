"""Buffer method: batched == reference on real MR sentences, and the rules of REFERENCE section 1."""
import numpy as np
import pytest
import torch

from tmlib.importance.buffer import BufferConfig, buffer_importance, buffer_importance_reference, expand_sentences
from tmlib.importance.stopwords import STOPWORDS, stopword_mask, word_spans


@pytest.fixture(scope="module")
def scorer():
    """MiniLM with a seeded head whose weights are scaled up so its probabilities move with the input."""
    from tmlib.models import load_classifier

    m = load_classifier("minilm", ["negative", "positive"], seed=0)
    with torch.no_grad():
        m.classifier.weight.mul_(40.0)
    return m.eval()


@pytest.fixture(scope="module")
def mr():
    from tmlib.data import load_task

    ds = load_task("mr", max_examples=40)["dev"]
    return ds["text"][:14], ds["label"][:14]


def test_stopwords():
    assert len(STOPWORDS) >= 140 and "not" not in STOPWORDS and "the" in STOPWORDS
    toks = ["the", "film", "is", "un", "##watch", "##able", ",", "the", "##re", "!"]
    assert word_spans(toks)[3] == (3, 6)
    assert stopword_mask(toks).tolist() == [1, 0, 1, 0, 0, 0, 1, 1, 1, 1]
    assert stopword_mask(toks, punctuation=False).tolist() == [1, 0, 1, 0, 0, 0, 0, 1, 1, 0]


@pytest.mark.parametrize("only_correct", [True, False])
def test_batched_equals_reference(scorer, tokenizer, mr, only_correct):
    texts, labels = mr
    cfg = BufferConfig(delta=0.01, sentence_batch=5, only_correct=only_correct, progress=False)
    fast = buffer_importance(scorer, tokenizer, texts, labels, cfg)
    ref = buffer_importance_reference(scorer, tokenizer, texts, labels, cfg)
    assert [f.tokens for f in fast] == [r.tokens for r in ref]
    for f, r in zip(fast, ref):
        assert f.important.tolist() == r.important.tolist()
        np.testing.assert_allclose(f.scores, r.scores, atol=2e-5)
        assert f.pred == r.pred and f.label == r.label
    n_imp = sum(int(f.important.sum()) for f in fast)
    assert n_imp > 0, "the test must exercise important tokens"
    assert sum(int((f.important == 0).sum()) for f in fast if f.correct) > 0


def test_rules(scorer, tokenizer, mr):
    texts, labels = mr
    cfg = BufferConfig(progress=False, sentence_batch=4)
    out = buffer_importance(scorer, tokenizer, texts, labels, cfg)
    for ts in out:
        assert ts.important[0] == 0, "the buffer seed is never labelled"
        assert not ts.important[stopword_mask(ts.tokens)].any(), "stop words are forced to 0"
        if not ts.correct:
            assert ts.important.sum() == 0 and np.all(ts.scores == 0), "misclassified -> all zero"
        else:  # one-sided test on the stored margin (stop words excepted)
            imp = (ts.scores > -cfg.delta) & ~stopword_mask(ts.tokens)
            imp[0] = False
            assert ts.important.astype(bool).tolist() == imp.tolist()
    # a larger delta marks at least as many candidates important at the first tested token
    loose = buffer_importance(scorer, tokenizer, texts, labels, BufferConfig(delta=1.0, progress=False))
    for ts in loose:
        if ts.correct:
            assert ts.important.sum() == (~stopword_mask(ts.tokens))[1:].sum()


def test_aspect_and_truncation(scorer, tokenizer):
    texts, labels, aspects = ["the pasta was great but the service was slow"] * 2, [1, 0], ["pasta", "service"]
    cfg = BufferConfig(progress=False, only_correct=False, max_length=9)
    fast = buffer_importance(scorer, tokenizer, texts, labels, cfg, aspects=aspects)
    ref = buffer_importance_reference(scorer, tokenizer, texts, labels, cfg, aspects=aspects)
    assert [f.important.tolist() for f in fast] == [r.important.tolist() for r in ref]
    assert len(fast[0].tokens) == 9 - 4 and fast[0].meta["aspect"] == "pasta"
    with pytest.raises(ValueError, match="one label per text"):
        buffer_importance(scorer, tokenizer, texts, [1], cfg)
    with pytest.raises(TypeError, match="wrap it"):
        buffer_importance(scorer, tokenizer, "a text", [1], cfg)
    with pytest.raises(ValueError, match="nothing of the text fits"):
        buffer_importance(scorer, tokenizer, texts, labels, BufferConfig(max_length=4), aspects=["a long aspect phrase"] * 2)


def test_expand_sentences():
    s, l, a, src = expand_sentences(["One sentence here. Another one there!", "Short text is fine."], [1, 0])
    assert s == ["One sentence here.", "Another one there!", "Short text is fine."] and l == [1, 1, 0] and src == [0, 0, 1]
    assert a is None


def test_length_groups_cover_rows_once_with_bounded_padding():
    from tmlib.importance.buffer import _length_groups

    lengths = [5, 40, 6, 7, 41, 12, 13, 5, 50, 9]
    groups = _length_groups(lengths)
    assert sorted(int(i) for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        ls = [lengths[i] for i in g]
        assert max(ls) <= 2 * min(ls)
    assert len(groups) < len(lengths)          # similar lengths share a pass
    assert len(_length_groups([7] * 30)) == 1  # equal lengths: one pass
