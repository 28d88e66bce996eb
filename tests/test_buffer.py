"""Buffer method: the official rule (REFERENCE section 1) stated plainly here == the batched labels on
real MR sentences; batched == tmlib's reference; the old rules as named options."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tmlib.selective.buffer import (
    BufferConfig,
    buffer_importance,
    buffer_importance_reference,
    compare_rules,
    expand_sentences,
)
from tmlib.selective.stopwords import STOPWORDS, stopword_mask, word_spans


@pytest.fixture(scope="module")
def scorer():
    """MiniLM with a seeded head whose weights are scaled up so its probabilities move with the input."""
    from tmlib.core.models import load_classifier

    m = load_classifier("minilm", ["negative", "positive"], seed=0)
    with torch.no_grad():
        m.classifier.weight.mul_(40.0)
    return m.eval()


@pytest.fixture(scope="module")
def mr():
    from tmlib.tasks.data import load_task

    ds = load_task("mr", max_examples=40)["dev"]
    return ds["text"][:14], ds["label"][:14]


def test_stopwords_tmlib_list():
    """tmlib's earlier list, still available as stopwords="tmlib" (negations kept, punctuation zeroed)."""
    assert len(STOPWORDS) >= 140 and "not" not in STOPWORDS and "the" in STOPWORDS
    toks = ["the", "film", "is", "un", "##watch", "##able", ",", "the", "##re", "!"]
    assert word_spans(toks)[3] == (3, 6)
    assert stopword_mask(toks, stopwords="tmlib").tolist() == [1, 0, 1, 0, 0, 0, 1, 1, 1, 1]
    assert stopword_mask(toks, punctuation=False, stopwords="tmlib").tolist() == [1, 0, 1, 0, 0, 0, 0, 1, 1, 0]


# ------------------------------------------------------------- the official rule, stated separately


def _official_labels(model, tokenizer, text, gold, delta=0.01):
    """thunlp/SelectiveMasking ``SC.forward`` written out plainly, one sentence, one input at a time.

    orig = P(gold | [CLS] sentence [SEP]); a misclassified sentence gets no important token. The buffer
    starts empty; for every WordPiece i = 0..n-1 append it, p = P(gold | [CLS] buffer [SEP]); if
    orig - p < delta it is important and popped again. An important spaCy stop word
    (``nlp.vocab[piece].is_stop``) is never masked, i.e. its label is 0.
    """
    import spacy

    pieces = tokenizer.tokenize(text)

    def p_gold(tokens):
        ids = tokenizer.convert_tokens_to_ids(["[CLS]"] + tokens + ["[SEP]"])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        return float(torch.softmax(logits.float(), -1)[gold]), int(logits.argmax())

    orig, pred = p_gold(pieces)
    labels = [0] * len(pieces)
    if pred != gold:
        return pieces, labels
    buffer = []
    for i, piece in enumerate(pieces):
        buffer.append(piece)
        p, _ = p_gold(buffer)
        if orig - p < delta:
            labels[i] = 1
            buffer.pop()
    vocab = spacy.blank("en").vocab
    return pieces, [0 if vocab[piece].is_stop else lab for piece, lab in zip(pieces, labels)]


@pytest.fixture(scope="module")
def mr_more():
    from tmlib.tasks.data import load_task

    ds = load_task("mr", max_examples=60)["train"]
    return ds["text"][:10], ds["label"][:10]


def test_official_rule_equals_batched(scorer, tokenizer, mr_more):
    texts, labels = mr_more
    fast = buffer_importance(scorer, tokenizer, texts, labels, BufferConfig(sentence_batch=4, progress=False))
    n_imp = n_zero = 0
    for text, y, ts in zip(texts, labels, fast):
        pieces, official = _official_labels(scorer, tokenizer, text, y)
        assert ts.tokens == pieces
        assert ts.important.tolist() == official, text
        n_imp, n_zero = n_imp + sum(official), n_zero + (len(official) - sum(official)) * ts.correct
    assert n_imp > 0 and n_zero > 0, "the test must exercise both outcomes"


def test_first_token_popped(scorer, tokenizer):
    """Token 0 important -> popped: token 1 is then scored alone, P(gold | [CLS] t_1 [SEP]); same as the
    plain statement of the official rule. (delta 1: every tested token is important.)"""
    text, y = "utterly charming and hilarious film", 1
    cfg = BufferConfig(progress=False, stopwords="none", only_correct=False, delta=1.0)
    ts = buffer_importance(scorer, tokenizer, [text], [y], cfg)[0]
    assert ts.important[0] == 1
    if ts.correct:  # the official labels also zero spaCy stop words ("and")
        official = buffer_importance(scorer, tokenizer, [text], [y], replace(cfg, stopwords="spacy"))[0]
        assert official.important.tolist() == _official_labels(scorer, tokenizer, text, y, delta=1.0)[1]
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        alone = torch.softmax(scorer(input_ids=torch.tensor([[ids[0], ids[2], ids[-1]]])).logits[0], -1)[y]
    assert ts.scores[1] == pytest.approx(float(alone) - ts.meta["orig"], abs=2e-5)
    keep = buffer_importance(scorer, tokenizer, [text], [y], replace(cfg, first_token="keep"))[0]
    assert keep.important[0] == 0 and keep.scores[0] == pytest.approx(ts.scores[0], abs=2e-5)


def test_first_token_keep_is_the_old_rule(scorer, tokenizer, mr_more):
    """first_token="keep": token 0 seeds the buffer, never tested; batched == reference."""
    texts, labels = mr_more[0][:6], mr_more[1][:6]
    cfg = BufferConfig(first_token="keep", stopwords="tmlib", sentence_batch=5, progress=False)
    fast = buffer_importance(scorer, tokenizer, texts, labels, cfg)
    ref = buffer_importance_reference(scorer, tokenizer, texts, labels, cfg)
    for f, r in zip(fast, ref):
        assert f.important[0] == 0
        assert f.important.tolist() == r.important.tolist()
        np.testing.assert_allclose(f.scores, r.scores, atol=2e-5)


def test_config_options():
    with pytest.raises(ValueError, match="first_token must be one of"):
        BufferConfig(first_token="skip")
    with pytest.raises(ValueError, match="stopwords must be one of"):
        BufferConfig(stopwords="nltk")
    assert BufferConfig(stopwords=False).stopwords == "none"
    with pytest.warns(FutureWarning, match="old switch"):
        assert BufferConfig(stopwords=True).stopwords == "tmlib"
    assert BufferConfig().first_token == "official" and BufferConfig().stopwords == "spacy"


def test_compare_rules(scorer, tokenizer, mr):
    texts, labels = mr[0][:6], mr[1][:6]
    base = BufferConfig(progress=False)
    first = compare_rules(scorer, tokenizer, texts, labels, base, first_token="keep")
    row = first.iloc[0]
    assert row["variant"] == "first_token='keep'" and row["sentences"] == len(texts)
    assert row["first_important_variant"] == 0
    assert row["tokens_flipped"] == row["flipped_0_to_1"] + row["flipped_1_to_0"] >= row["sentences_differ"]
    stop = compare_rules(scorer, tokenizer, texts, labels, base, stopwords="tmlib").iloc[0]
    a = buffer_importance(scorer, tokenizer, texts, labels, base)
    b = buffer_importance(scorer, tokenizer, texts, labels, BufferConfig(progress=False, stopwords="tmlib"))
    assert stop["important_base"] == sum(int(x.important.sum()) for x in a)
    assert stop["important_variant"] == sum(int(x.important.sum()) for x in b)
    assert stop["tokens_flipped"] == sum(int((x.important != y.important).sum()) for x, y in zip(a, b))
    with pytest.raises(TypeError, match="unknown BufferConfig option"):
        compare_rules(scorer, tokenizer, texts, labels, base, first="keep")


def _variant_walks(model, tokenizer, texts, labels, base, variants, monkeypatch):
    """The walks compare_rule_variants makes over ``variants``, after checking that its rows equal compare_rules
    called once per variant."""
    import pandas as pd

    from tmlib.selective import buffer as B

    one_by_one = pd.concat(
        [compare_rules(model, tokenizer, texts, labels, base, **v) for v in variants], ignore_index=True
    )
    walks = []
    real = B.buffer_importance
    monkeypatch.setattr(B, "buffer_importance", lambda *a, **k: walks.append(a[4]) or real(*a, **k))
    pd.testing.assert_frame_equal(B.compare_rule_variants(model, tokenizer, texts, labels, base, variants), one_by_one)
    return walks


def test_compare_rule_variants_walks_each_rule_once(scorer, tokenizer, mr, monkeypatch):
    """Notebook 01's four variants: the base and the three stop-word variants share one walk, first_token
    'keep' needs a second; the rows equal compare_rules called once per variant."""
    texts, labels = mr[0][:6], mr[1][:6]
    base = BufferConfig(progress=False)
    variants = [{"first_token": "keep"}, {"stopwords": "tmlib"}, {"stopwords": "none"}, {"stopwords": "spacy_words"}]
    walks = _variant_walks(scorer, tokenizer, texts, labels, base, variants, monkeypatch)
    assert len(walks) == 2 and {w.first_token for w in walks} == {"official", "keep"}
    assert all(w.stopwords == "none" for w in walks)  # stop words are a mask applied after the walk


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


@pytest.mark.parametrize("first_token", ["official", "keep"])
def test_rules(scorer, tokenizer, mr, first_token):
    texts, labels = mr
    cfg = BufferConfig(progress=False, sentence_batch=4, first_token=first_token)
    out = buffer_importance(scorer, tokenizer, texts, labels, cfg)
    for ts in out:
        stop = stopword_mask(ts.tokens)  # default: spaCy's list, per WordPiece
        assert not ts.important[stop].any(), "stop words are forced to 0"
        if not ts.correct:
            assert ts.important.sum() == 0 and np.all(ts.scores == 0), "misclassified -> all zero"
        else:  # one-sided test on the stored margin (stop words excepted)
            imp = (ts.scores > -cfg.delta) & ~stop
            if first_token == "keep":
                imp[0] = False  # the old rule: the buffer seed is never labelled
            assert ts.important.astype(bool).tolist() == imp.tolist()
    # delta 1 marks every tested candidate important (every token is popped again)
    loose = buffer_importance(
        scorer, tokenizer, texts, labels, BufferConfig(delta=1.0, progress=False, first_token=first_token)
    )
    for ts in loose:
        if ts.correct:
            free = ~stopword_mask(ts.tokens)
            assert ts.important.sum() == (free[1:].sum() if first_token == "keep" else free.sum())


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
        buffer_importance(
            scorer, tokenizer, texts, labels, BufferConfig(max_length=4), aspects=["a long aspect phrase"] * 2
        )


def test_expand_sentences():
    s, labels, a, src = expand_sentences(["One sentence here. Another one there!", "Short text is fine."], [1, 0])
    assert (
        s == ["One sentence here.", "Another one there!", "Short text is fine."]
        and labels == [1, 1, 0]
        and src == [0, 0, 1]
    )
    assert a is None


def test_length_groups_cover_rows_once_with_bounded_padding():
    from tmlib.selective.buffer import _length_groups

    lengths = [5, 40, 6, 7, 41, 12, 13, 5, 50, 9]
    groups = _length_groups(lengths)
    assert sorted(int(i) for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        ls = [lengths[i] for i in g]
        assert max(ls) <= 2 * min(ls)
    assert len(groups) < len(lengths)  # similar lengths share a pass
    assert len(_length_groups([7] * 30)) == 1  # equal lengths: one pass


def test_mixed_precision_option_validates():
    assert BufferConfig().mixed_precision == "no"
    assert BufferConfig(mixed_precision="bf16").mixed_precision == "bf16"
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        BufferConfig(mixed_precision="fp8")


def test_fp16_needs_cuda(scorer, tokenizer, mr):
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    texts, labels = mr
    with pytest.raises(ValueError, match="needs a CUDA device"):
        buffer_importance(
            scorer, tokenizer, texts[:1], labels[:1], BufferConfig(progress=False, mixed_precision="fp16")
        )


def test_bf16_labels_mostly_agree_with_fp32(scorer, tokenizer, mr):
    """bf16 autocast moves the probabilities by ~1e-3: only tokens at the delta threshold (and, through the
    buffer, later ones of their sentence) may flip. The caller's model stays fp32 and its mode unchanged."""
    from tmlib.selective.buffer import label_difference

    texts, labels = mr
    base = BufferConfig(progress=False, only_correct=False)
    fp32 = buffer_importance(scorer, tokenizer, texts, labels, base)
    with torch.inference_mode():  # the walk leaves inference mode for autocast's weight cache; still works here
        bf16 = buffer_importance(scorer, tokenizer, texts, labels, replace(base, mixed_precision="bf16"))
    d = label_difference(fp32, bf16)
    assert d["tokens_flipped"] <= 0.05 * d["tokens"], d
    assert d["sentences_differ"] <= max(1, len(texts) // 4), d
    first = [abs(float(a.scores[0] - b.scores[0])) for a, b in zip(fp32, bf16) if len(a.scores)]
    assert max(first) < 2e-2  # same input (the one-token buffer): bf16 rounding only
    assert all(p.dtype == torch.float32 for p in scorer.parameters()) and not scorer.training
    assert torch.is_autocast_enabled("cpu") is False


def test_a_long_walk_reports_its_progress(scorer, tokenizer, mr_more):
    """`report` gets a line with the sentences done, so a stage's progress.log shows a long walk moving."""
    texts, labels = mr_more
    lines = []
    buffer_importance(
        scorer,
        tokenizer,
        texts,
        labels,
        BufferConfig(sentence_batch=4, progress=False),
        report=lines.append,
        report_every=0.0,
    )
    assert len(texts) == 10 and lines == [f"buffer importance: {k} / 10 sentences" for k in (0, 4, 8)]


# ------------------------------------------------- a tiny random BERT: the same rules, each walk in milliseconds

TINY_TEXTS = [
    "a great , wonderful film that moved me",
    "truly awful acting",
    "the plot is thin but the cast is not bad at all",
    "boring",
    "an unwatchable mess of a movie , hated it",
    "loved the story and the music",
    "it was fine .",
    "the best thing i have seen this year , and the worst ending",
]


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer BERT at random init (std 0.2: its probabilities move with the input without saturating)."""
    from transformers import BertForSequenceClassification

    from tmlib.core.models import scratch_config

    torch.manual_seed(0)
    model = BertForSequenceClassification(scratch_config("tiny", num_labels=2, initializer_range=0.2)).eval()
    return model


@pytest.fixture(scope="module")
def tiny_data(tiny, tokenizer):
    """Gold labels equal to the tiny model's predictions except texts 1 and 4: correct and misclassified
    sentences, important and unimportant tokens."""
    enc = tokenizer(TINY_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = tiny(**enc).logits.argmax(-1).tolist()
    labels = [1 - p if i in (1, 4) else p for i, p in enumerate(preds)]
    assert len(set(labels)) == 2
    return list(TINY_TEXTS), labels


@pytest.mark.parametrize("first_token", ["official", "keep"])
@pytest.mark.parametrize("only_correct", [True, False])
def test_tiny_batched_equals_reference(tiny, tokenizer, tiny_data, only_correct, first_token):
    """Batches of 3 sentences (3 batches, candidate rows cut into length groups) == one pass per token."""
    texts, labels = tiny_data
    cfg = BufferConfig(sentence_batch=3, only_correct=only_correct, first_token=first_token, progress=False)
    tiny.train()  # both walks run the model in eval mode and give it back as they found it
    fast = buffer_importance(tiny, tokenizer, texts, labels, cfg)
    assert tiny.training
    ref = buffer_importance_reference(tiny, tokenizer, texts, labels, cfg)
    assert tiny.training
    tiny.eval()
    assert [f.tokens for f in fast] == [r.tokens for r in ref] == [tokenizer.tokenize(t) for t in texts]
    for f, r, y in zip(fast, ref, labels):
        assert f.important.tolist() == r.important.tolist()
        np.testing.assert_allclose(f.scores, r.scores, atol=2e-5)
        assert f.pred == r.pred and f.label == r.label == y and f.text == r.text == texts[fast.index(f)]
        assert f.meta["orig"] == pytest.approx(r.meta["orig"], abs=2e-6) and f.meta.keys() == r.meta.keys()
        assert f.meta["delta"] == 0.01 and f.meta["first_token"] == first_token and f.meta["stopwords"] == "spacy"
        assert (f.method, r.method) == ("buffer", "buffer_reference")
        if first_token == "keep":
            assert f.important[0] == 0
        if only_correct and not f.correct:
            assert f.important.sum() == 0 and np.all(f.scores == 0)
    assert sum(not f.correct for f in fast) == 2
    scored = [f for f in fast if f.correct or not only_correct]
    assert sum(int(f.important.sum()) for f in fast) > 0 and all(np.any(f.scores != 0) for f in scored)
    assert sum(int((f.important == 0).sum()) for f in scored) > 0


def test_tiny_official_rule_equals_batched(tiny, tokenizer, tiny_data):
    texts, labels = tiny_data
    fast = buffer_importance(tiny, tokenizer, texts, labels, BufferConfig(sentence_batch=2, progress=False))
    for text, y, ts in zip(texts, labels, fast):
        pieces, official = _official_labels(tiny, tokenizer, text, y)
        assert ts.tokens == pieces and ts.important.tolist() == official, text


@pytest.mark.parametrize("first_token", ["official", "keep"])
def test_tiny_rules(tiny, tokenizer, tiny_data, first_token):
    """The labels are the one-sided test on the stored margin, stop words and misclassified sentences 0;
    delta 1 marks every tested token important."""
    texts, labels = tiny_data
    for cfg in (BufferConfig(progress=False, first_token=first_token), BufferConfig(progress=False, delta=0.1)):
        for ts in buffer_importance(tiny, tokenizer, texts, labels, replace(cfg, first_token=first_token)):
            stop = stopword_mask(ts.tokens)
            assert not ts.important[stop].any()
            if not ts.correct:
                assert ts.important.sum() == 0 and np.all(ts.scores == 0)
                continue
            imp = (ts.scores > -cfg.delta) & ~stop
            if first_token == "keep":
                imp[0] = False
            assert ts.important.astype(bool).tolist() == imp.tolist()
    loose = BufferConfig(delta=1.0, progress=False, first_token=first_token, stopwords="none")
    for ts in buffer_importance(tiny, tokenizer, texts, labels, loose):
        want = len(ts.tokens) - (first_token == "keep") if ts.correct else 0
        assert ts.important.sum() == want


def test_tiny_compare_rules(tiny, tokenizer, tiny_data, monkeypatch):
    """compare_rules' row counts equal the two labellings; compare_rule_variants walks each rule once and
    equals compare_rules per variant."""

    from tmlib.selective import buffer as B

    texts, labels = tiny_data
    base = BufferConfig(progress=False, sentence_batch=3, delta=0.05)  # not the default: the base is used
    a = buffer_importance(tiny, tokenizer, texts, labels, base)
    for variant in ({"first_token": "keep"}, {"stopwords": "tmlib"}, {"delta": 0.2}, {"punctuation": True}):
        row = compare_rules(tiny, tokenizer, texts, labels, base, **variant).iloc[0]
        b = buffer_importance(tiny, tokenizer, texts, labels, replace(base, **variant))
        ((k, v),) = variant.items()
        assert row["base"] == f"{k}={getattr(base, k)!r}" and row["variant"] == f"{k}={v!r}"
        assert row["sentences"] == len(texts) and row["sentences_scored"] == sum(x.correct for x in a)
        assert row["tokens"] == sum(len(x.tokens) for x in a)
        assert row["important_base"] == sum(int(x.important.sum()) for x in a)
        assert row["important_variant"] == sum(int(x.important.sum()) for x in b)
        up = sum(int(((x.important == 0) & (y.important == 1)).sum()) for x, y in zip(a, b))
        down = sum(int(((x.important == 1) & (y.important == 0)).sum()) for x, y in zip(a, b))
        assert (row["flipped_0_to_1"], row["flipped_1_to_0"], row["tokens_flipped"]) == (up, down, up + down)
        assert row["sentences_differ"] == sum(x.important.tolist() != y.important.tolist() for x, y in zip(a, b))
        assert row["rate_base"] == pytest.approx(row["important_base"] / row["tokens"])
        assert row["rate_variant"] == pytest.approx(row["important_variant"] / row["tokens"])
        assert row["first_important_base"] == sum(int(x.important[0]) for x in a)
        assert row["first_important_variant"] == sum(int(y.important[0]) for y in b)
        assert up + down > 0, variant
    two = compare_rules(tiny, tokenizer, texts, labels, base, first_token="keep", delta=0.2).iloc[0]
    assert two["base"] == "delta=0.05, first_token='official'" and two["variant"] == "delta=0.2, first_token='keep'"
    same = compare_rules(tiny, tokenizer, texts, labels, base, delta=0.05).iloc[0]
    assert same["base"] == same["variant"] == "(same)" and same["tokens_flipped"] == 0
    variants = [{"first_token": "keep"}, {"stopwords": "tmlib"}, {"stopwords": "none"}, {"punctuation": True}]
    walks = _variant_walks(tiny, tokenizer, texts, labels, base, variants, monkeypatch)
    assert len(walks) == 2 and {w.first_token for w in walks} == {"official", "keep"}
    assert all(w.stopwords == "none" and w.punctuation is False for w in walks)
    with pytest.raises(TypeError, match=r"unknown BufferConfig option\(s\): \['first'\]"):
        B.compare_rule_variants(tiny, tokenizer, texts, labels, base, [{"delta": 0.1}, {"first": "keep"}])
    assert walks[2:] == []  # every variant is checked before the first walk
    walks.clear()
    B.compare_rule_variants(tiny, tokenizer, texts, labels, base, [{"sentence_batch": 2}, {"progress": True}])
    assert len(walks) == 1  # options that cannot change a label share the base's walk
    aspects = ["plot", "acting", "cast", "film", "movie", "music", "film", "ending"]
    walks.clear()
    row = compare_rules(tiny, tokenizer, texts, labels, base, aspects=aspects, first_token="keep").iloc[0]
    with_aspect = buffer_importance(tiny, tokenizer, texts, labels, base, aspects=aspects)
    assert all(w.meta["aspect"] == asp for w, asp in zip(with_aspect, aspects))
    assert row["important_base"] == sum(int(x.important.sum()) for x in with_aspect)
    assert row["tokens"] == sum(len(x.tokens) for x in with_aspect)


def test_label_difference_needs_the_same_texts_and_tokens(tiny, tokenizer, tiny_data):
    from tmlib.selective.buffer import label_difference

    texts, labels = tiny_data
    a = buffer_importance(tiny, tokenizer, texts[:3], labels[:3], BufferConfig(progress=False))
    assert label_difference(a, a)["tokens_flipped"] == 0
    with pytest.raises(ValueError, match="^the two labellings must cover the same texts with the same tokens$"):
        label_difference(a, a[:2])
    one = [replace(a[0], tokens=a[0].tokens[:1], scores=a[0].scores[:1], important=np.ones(1, np.int8))]
    d = label_difference(one, one)
    assert d["tokens"] == 1 and d["rate_base"] == d["rate_variant"] == 1.0 and d["first_important_base"] == 1
    second = [replace(a[0], important=np.eye(len(a[0].tokens), dtype=np.int8)[1])]  # token 1 important, not 0
    assert label_difference(second, second)["first_important_base"] == 0
    with pytest.raises(ValueError, match="same texts with the same tokens"):
        label_difference(a, [a[1], a[0], a[2]])


def test_tiny_walk_reports_its_progress(tiny, tokenizer, tiny_data):
    texts, labels = tiny_data
    lines = []
    cfg = BufferConfig(sentence_batch=3, progress=False)
    buffer_importance(tiny, tokenizer, texts, labels, cfg, report=lines.append, report_every=0.0)
    assert lines == [f"buffer importance: {k} / 8 sentences" for k in (0, 3, 6)]
    quiet = []
    buffer_importance(tiny, tokenizer, texts, labels, cfg, report=quiet.append)  # every 30 s by default
    assert quiet == []


def test_tiny_bf16_walk_leaves_the_model_fp32(tiny, tokenizer, tiny_data):
    texts, labels = tiny_data
    base = BufferConfig(progress=False, only_correct=False)
    fp32 = buffer_importance(tiny, tokenizer, texts, labels, base)
    bf16 = buffer_importance(tiny, tokenizer, texts, labels, replace(base, mixed_precision="bf16"))
    assert [a.tokens for a in fp32] == [b.tokens for b in bf16]
    first = [abs(float(a.scores[0] - b.scores[0])) for a, b in zip(fp32, bf16)]
    assert 0 < max(first) < 5e-2  # bf16 rounding: close, not identical
    assert all(p.dtype == torch.float32 for p in tiny.parameters()) and not tiny.training
    assert torch.is_autocast_enabled("cpu") is False


def test_cls_only_and_the_full_forward_give_the_same_labels(tiny, tokenizer, tiny_data):
    texts, labels = tiny_data
    a = buffer_importance(tiny, tokenizer, texts, labels, BufferConfig(progress=False))
    b = buffer_importance(tiny, tokenizer, texts, labels, BufferConfig(progress=False, cls_only=False))
    assert [x.important.tolist() for x in a] == [y.important.tolist() for y in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.scores, y.scores, atol=2e-5)


def test_buffer_config_bounds():
    assert BufferConfig(max_length=4, sentence_batch=1).sentence_batch == 1
    with pytest.raises(ValueError, match=r"max_length must be >= 4 \(got 3\)"):
        BufferConfig(max_length=3)
    with pytest.raises(ValueError, match=r"sentence_batch must be >= 1 \(got 0\)"):
        BufferConfig(sentence_batch=0)


def _aspect_scores(text, tokens, important, aspect, label=1, pred=1, scores=None, **meta):
    from tmlib.selective.types import TokenScores

    scores = np.asarray(scores if scores is not None else important, dtype=np.float32)
    meta = {"aspect": aspect, "delta": 0.01, "first_token": "official", "stopwords": "spacy", **meta}
    return TokenScores(text, tokens, scores, np.asarray(important, np.int8), label, pred, "buffer", meta)


def test_merge_aspects_is_the_union_per_text():
    from tmlib.selective.buffer import has_aspects, merge_aspects
    from tmlib.selective.types import TokenScores

    toks = ["the", "pasta", "was", "great", "but", "service", "slow"]
    scores = [
        _aspect_scores("t1", toks, [0, 1, 0, 1, 0, 0, 0], "pasta", scores=[-1, 0.5, -1, 0.9, -1, -1, -0.2]),
        _aspect_scores("t2", ["so", "good"], [0, 1], "food", scores=[-0.5, 0.0]),
        _aspect_scores("t1", toks, [0, 0, 0, 0, 0, 1, 1], "service", 0, 0, [-2, 0.1, -2, 0.2, -2, 0.7, 0.8]),
        _aspect_scores("t1", toks[:5], [1, 0, 0, 0, 1], "price", 0, 1, [-0.5, -3, -3, -3, -0.4]),
        _aspect_scores("t3", ["meh"], [0], "food", 0, 1, [-0.3]),
    ]
    assert has_aspects(scores) and not has_aspects([replace(s, meta={}) for s in scores])
    assert not has_aspects([replace(scores[0], meta=None)])
    merged = merge_aspects(scores)
    assert [m.text for m in merged] == ["t1", "t2", "t3"]
    m = merged[0]
    assert m.tokens == toks and m.important.tolist() == [1, 1, 0, 1, 1, 1, 1] and m.important.dtype == np.int8
    np.testing.assert_allclose(m.scores, [-0.5, 0.5, -1, 0.9, -0.4, 0.7, 0.8])  # per-token max over aspects
    assert m.label is None and m.pred is None and m.method == "buffer+aspects"
    assert m.meta == {
        "aspects": ["pasta", "service", "price"],
        "labels": [1, 0, 0],
        "preds": [1, 0, 1],
        "correct": True,
        "merged": 3,
        "delta": 0.01,
        "first_token": "official",
        "stopwords": "spacy",
    }
    assert merged[1].important.tolist() == [0, 1] and merged[1].meta["merged"] == 1 and merged[1].meta["correct"]
    np.testing.assert_allclose(merged[1].scores, [-0.5, 0.0])
    assert merged[2].meta["correct"] is False and merged[2].important.tolist() == [0]
    bare = merge_aspects([replace(scores[1], method=None, meta={"aspect": "food"}, scores=np.full(2, -np.inf))])[0]
    assert bare.method == "buffer+aspects" and "delta" not in bare.meta and bare.scores.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="from method 'ig' have no hard labels to merge"):
        merge_aspects([TokenScores("t", ["a"], np.zeros(1), method="ig")])
    other = _aspect_scores("t1", ["the", "pas", "##ta"], [0, 1, 1], "x")
    with pytest.raises(ValueError, match=r"tokenized differently \('t1'\); merge labels of one tokenizer"):
        merge_aspects([scores[0], other])
    long = "a" * 59 + "bc"
    with pytest.raises(ValueError, match=r"differently \('a{59}b'\); merge"):  # the first 60 characters
        merge_aspects([replace(scores[0], text=long), replace(other, text=long)])


def test_document_sentences_and_expand_sentences_keep_the_labels():
    from tmlib.selective.buffer import document_sentences

    texts, labels, docs = document_sentences(["A fine film. But too long!", "no boundary here", "  "], [1, 0, 1])
    assert texts == ["A fine film.", "But too long!", "no boundary here", "  "]
    assert labels == [1, 1, 0, 1] and docs == [0, 0, 1, 2]
    s, y, a, src = expand_sentences(["a. b", "c"], [1, 0], splitter=lambda t: t.split(". ") + [" "], aspects=["x", "y"])
    assert (s, y, a, src) == (["a", "b", "c"], [1, 1, 0], ["x", "x", "y"], [0, 0, 1])


@pytest.mark.parametrize("walk", [buffer_importance, buffer_importance_reference])
def test_tiny_delta_zero_is_strict(tiny, tokenizer, tiny_data, walk):
    """With delta 0 a token is important only when the buffer plus it beats the full sentence: a one-token
    sentence's buffer IS the sentence (the same input, p == orig), so its token is not important."""
    texts, labels = tiny_data
    cfg = BufferConfig(delta=0.0, stopwords="none", only_correct=False, sentence_batch=1, progress=False)
    ts = walk(tiny, tokenizer, [texts[3]], [labels[3]], cfg)[0]
    assert ts.tokens == ["boring"] and ts.scores.tolist() == [0.0] and ts.important.tolist() == [0]


def test_tiny_reference_keeps_the_aspect(tiny, tokenizer, tiny_data):
    texts, labels = tiny_data
    cfg = BufferConfig(progress=False, only_correct=False)
    ref = buffer_importance_reference(tiny, tokenizer, texts[:2], labels[:2], cfg, aspects=["plot", "cast"])
    fast = buffer_importance(tiny, tokenizer, texts[:2], labels[:2], cfg, aspects=["plot", "cast"])
    assert [r.meta["aspect"] for r in ref] == ["plot", "cast"] == [f.meta["aspect"] for f in fast]


def test_inputs_are_padded_with_segments_after_an_aspect():
    from tmlib.selective.buffer import _inputs

    got = _inputs([([101], [7, 8]), ([101, 5, 102], [9])], 102, 0, "cpu")
    assert got["input_ids"].tolist() == [[101, 7, 8, 102, 0], [101, 5, 102, 9, 102]]
    assert got["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert got["token_type_ids"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]
    assert got["attention_mask"].dtype == got["input_ids"].dtype == torch.long
    empty_aspect = _inputs([([101, 102], [7])], 102, 0, "cpu")  # [CLS] [SEP] text [SEP]: still two segments
    assert empty_aspect["token_type_ids"].tolist() == [[0, 0, 1, 1]]


def test_length_groups_keep_a_row_twice_the_shortest():
    from tmlib.selective.buffer import _length_groups

    assert [g.tolist() for g in _length_groups([5, 10, 11])] == [[0, 1], [2]]


def test_inputs_are_checked_with_messages_naming_the_fix(tiny, tokenizer):
    cfg = BufferConfig(progress=False)
    with pytest.raises(TypeError, match=r"^texts must be a list of strings, got a single string; wrap it: \[text\]$"):
        buffer_importance(tiny, tokenizer, "a text", [1], cfg)
    with pytest.raises(ValueError, match=r"^the buffer method needs the gold labels \(one int per text\); use tmlib"):
        buffer_importance(tiny, tokenizer, ["a"], None, cfg)
    with pytest.raises(ValueError, match=r"^2 texts but 1 aspects; pass one aspect per text \(or None\)$"):
        buffer_importance(tiny, tokenizer, ["a", "b"], [1, 0], cfg, aspects=["x"])
    with pytest.raises(TypeError, match=r"^texts\[1\] is int, not a string$"):
        buffer_importance(tiny, tokenizer, ["a", 3, 4.0], [1, 0, 1], cfg)

    class NoCls:
        cls_token_id, sep_token_id = None, 102

    with pytest.raises(ValueError, match=r"^the buffer method needs a BERT-style tokenizer with \[CLS\] and \[SEP\]"):
        buffer_importance(tiny, NoCls(), ["a"], [1], cfg)


def test_one_text_token_fits_and_punctuation_is_zeroed_on_request(tiny, tokenizer, tiny_data):
    texts, labels = tiny_data
    one = buffer_importance(
        tiny, tokenizer, [texts[0]], [labels[0]], BufferConfig(max_length=5, progress=False), aspects=["pasta"]
    )[0]
    assert one.tokens == ["a"]  # [CLS] pasta [SEP] a [SEP]
    cfg = BufferConfig(progress=False, only_correct=False, stopwords="none", delta=1.0)
    loose = buffer_importance(tiny, tokenizer, texts, labels, cfg)
    punct = buffer_importance(tiny, tokenizer, texts, labels, replace(cfg, punctuation=True))
    marks = [(i, j) for i, ts in enumerate(loose) for j, t in enumerate(ts.tokens) if t in {",", "."}]
    assert marks and all(loose[i].important[j] == 1 and punct[i].important[j] == 0 for i, j in marks)


def test_the_batched_walk_reads_cls_only_where_it_can(tiny, tokenizer, tiny_data, monkeypatch):
    """cls_only (default): the last layer for [CLS] only on a BERT classifier; a model it does not support
    (DistilBERT) runs its own forward, with the same labels as the reference."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from tmlib.selective import buffer as B

    texts, labels = tiny_data
    calls = []
    real = B.cls_logits
    monkeypatch.setattr(B, "cls_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    B.buffer_importance(tiny, tokenizer, texts[:2], labels[:2], BufferConfig(progress=False))
    assert calls
    calls.clear()
    B.buffer_importance(tiny, tokenizer, texts[:2], labels[:2], BufferConfig(progress=False, cls_only=False))
    assert not calls
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64, initializer_range=0.2)
    distil = DistilBertForSequenceClassification(cfg).eval()
    fast = B.buffer_importance(distil, tokenizer, texts, labels, BufferConfig(progress=False, only_correct=False))
    ref = B.buffer_importance_reference(distil, tokenizer, texts, labels, BufferConfig(only_correct=False))
    assert not calls and [f.important.tolist() for f in fast] == [r.important.tolist() for r in ref]


def test_a_walk_reports_every_30_seconds_by_default(tiny, tokenizer, tiny_data, monkeypatch):
    import time

    texts, labels = tiny_data
    clock = iter(range(0, 10_000, 30))  # each reading 30 s after the last
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    lines = []
    buffer_importance(
        tiny, tokenizer, texts, labels, BufferConfig(sentence_batch=4, progress=False), report=lines.append
    )
    assert lines == ["buffer importance: 0 / 8 sentences", "buffer importance: 4 / 8 sentences"]
