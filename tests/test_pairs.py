"""Sentence-pair and aspect tasks end to end, offline on small files the tests write: loaders (CSV,
JSONL, a local hub stand-in), classifier inputs ``[CLS] a [SEP] b [SEP]`` / ``[CLS] aspect [SEP] text
[SEP]``, the buffer method on aspect input, and the merge of one text's aspect labels (official
``ASC.forward``: one set of important positions per text)."""

import csv
import json

import numpy as np
import pytest
import torch

from tmlib.core.training import fit
from tmlib.selective.types import TokenScores
from tmlib.tasks.data import DataError, load_task, validate_task

POS = [
    "a great film",
    "truly wonderful acting",
    "loved every minute",
    "great fun",
    "a wonderful story",
    "great cast",
    "moving and great",
    "wonderful , wonderful",
]
NEG = [
    "a terrible film",
    "truly awful acting",
    "hated every minute",
    "boring mess",
    "an awful story",
    "terrible cast",
    "boring and awful",
    "awful , awful",
]


def _pair_csv(path, first="s1", second="s2"):
    """Paraphrase-style pairs: label 1 when both sentences have the same sentiment."""
    rows = []
    for i in range(len(POS)):
        rows.append({first: POS[i], second: POS[(i + 1) % len(POS)], "label": "1"})
        rows.append({first: NEG[i], second: NEG[(i + 3) % len(NEG)], "label": "1"})
        rows.append({first: POS[i], second: NEG[i], "label": "0"})
        rows.append({first: NEG[i], second: POS[(i + 2) % len(POS)], "label": "0"})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[first, second, "label"])
        w.writeheader()
        w.writerows(rows)
    return rows


SENTS = [
    ("the {} was great but the {} was awful", "positive", "negative"),
    ("the {} was terrible and the {} was wonderful", "negative", "positive"),
    ("loved the {} , hated the {}", "positive", "negative"),
]
ASPECTS = [
    ("food", "service"),
    ("pasta", "staff"),
    ("pizza", "waiter"),
    ("wine", "music"),
    ("soup", "decor"),
    ("dessert", "price"),
    ("steak", "view"),
    ("salad", "seating"),
]


def _aspect_jsonl(path, aspect_key="category"):
    """SemEval-style rows: one row per (text, aspect), each text with two aspects of opposite polarity."""
    rows = []
    for tpl, p1, p2 in SENTS:
        for a1, a2 in ASPECTS:
            text = tpl.format(a1, a2)
            rows.append({"text": text, aspect_key: a1, "polarity": p1})
            rows.append({"text": text, aspect_key: a2, "polarity": p2})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return rows


# ---------------------------------------------------------------------------------------- loaders


def test_csv_pair_task_loads(tmp_path):
    p = tmp_path / "pairs.csv"
    rows = _pair_csv(p)
    dd = load_task(f"csv:{p}", text_column="s1", pair_column="s2")
    for split in ("train", "dev", "test"):
        assert dd[split].column_names == ["text", "text_pair", "label"]
    assert sum(len(dd[s]) for s in dd) == len(rows)
    got = {(r["text"], r["text_pair"], dd["train"].features["label"].names[r["label"]]) for s in dd for r in dd[s]}
    assert got == {(r["s1"], r["s2"], r["label"]) for r in rows}
    # a column already named text_pair is picked up without naming it
    q = tmp_path / "named.csv"
    _pair_csv(q, first="text", second="text_pair")
    assert load_task(f"csv:{q}")["train"].column_names == ["text", "text_pair", "label"]
    # single-text loading of the same kind of file is unchanged
    assert load_task(f"csv:{p}", text_column="s1")["train"].column_names == ["text", "label"]


def test_pair_and_aspect_errors(tmp_path):
    p = tmp_path / "pairs.csv"
    _pair_csv(p)
    with pytest.raises(DataError, match="no column 'sentence2'.*pair_column="):
        load_task(f"csv:{p}", text_column="s1", pair_column="sentence2")
    with pytest.raises(DataError, match="not both"):
        load_task(f"csv:{p}", text_column="s1", pair_column="s2", aspect_column="s2")
    with pytest.raises(DataError, match="builtin task 'mr' has a single text column"):
        load_task("mr", pair_column="s2")
    j = tmp_path / "absa.jsonl"
    rows = _aspect_jsonl(j)
    rows[2]["category"] = "  "
    j.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"1 row\(s\) with an empty aspect \('category'\), e.g. rows \[3\]"):
        load_task(f"jsonl:{j}", aspect_column="category", label_column="polarity")
    rows[2].pop("category")  # absent in one JSON row: also empty, same row number
    j.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"rows \[3\]"):
        load_task(f"jsonl:{j}", aspect_column="category", label_column="polarity")
    with pytest.raises(DataError, match="no column 'term'"):
        load_task(f"jsonl:{j}", aspect_column="term", label_column="polarity")


def test_jsonl_aspect_task_loads_with_texts_kept_together(tmp_path):
    j = tmp_path / "absa.jsonl"
    rows = _aspect_jsonl(j)
    dd = load_task(f"jsonl:{j}", aspect_column="category", label_column="polarity")
    assert dd["train"].column_names == ["text", "aspect", "label"]
    assert dd["train"].features["label"].names == ["negative", "positive"]
    assert sum(len(dd[s]) for s in dd) == len(rows)
    where = {}
    for s in dd:
        for r in dd[s]:
            assert where.setdefault(r["text"], s) == s  # a text's aspects never straddle two splits
    got = {(r["text"], r["aspect"], dd["train"].features["label"].names[r["label"]]) for s in dd for r in dd[s]}
    assert got == {(r["text"], r["category"], r["polarity"]) for r in rows}
    # the canonical name needs no argument; the split is seeded
    k = tmp_path / "named.jsonl"
    _aspect_jsonl(k, aspect_key="aspect")
    a, b = load_task(f"jsonl:{k}", label_column="polarity"), load_task(f"jsonl:{k}", label_column="polarity")
    assert a["train"]["aspect"] == b["train"]["aspect"] and a["train"]["text"] == b["train"]["text"]


def test_validate_task_checks_the_second_column():
    from datasets import Dataset, DatasetDict

    def split(aspects):
        return Dataset.from_dict({"text": ["good", "bad"], "aspect": aspects, "label": [1, 0]})

    ok = DatasetDict(train=split(["food", "food"]), dev=split(["a", "b"]), test=split(["a", "b"]))
    assert validate_task(ok, "t") is ok
    bad = DatasetDict(train=split(["food", "food"]), dev=split(["a", ""]), test=split(["a", "b"]))
    with pytest.raises(DataError, match=r"split 'dev' has 1 empty 'aspect' value\(s\), e.g. rows \[1\]"):
        validate_task(bad, "t")
    missing = DatasetDict(
        train=split(["a", "b"]), dev=split(["a", "b"]).remove_columns("aspect"), test=split(["a", "b"])
    )
    with pytest.raises(DataError, match="split 'dev' has second column"):
        validate_task(missing, "t")
    both = DatasetDict({s: split(["a", "b"]).add_column("text_pair", ["x", "y"]) for s in ("train", "dev", "test")})
    with pytest.raises(DataError, match="both a 'text_pair' and an 'aspect'"):
        validate_task(both, "t")


def test_hub_pair_task_from_a_local_stand_in(tmp_path, monkeypatch):
    """load_hub_task's real load_dataset call against a local dataset folder: GLUE-style sentence1 /
    sentence2 columns are found by name, a named aspect column is renamed."""
    import tmlib.core.hub

    d = tmp_path / "glue_like"
    d.mkdir()
    for split, n in (("train", 16), ("validation", 8), ("test", 8)):
        rows = [
            {"sentence1": POS[i % 8], "sentence2": (POS if i % 2 else NEG)[(i + 1) % 8], "label": i % 2, "idx": i}
            for i in range(n)
        ]
        (d / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    monkeypatch.setattr(tmlib.core.hub, "hub_reachable", lambda *a, **k: True)
    dd = load_task(f"hub:{d}")
    assert dd["train"].column_names == ["text", "text_pair", "label"] and len(dd["dev"]) == 8
    assert dd["train"][0]["text"] == POS[0] and dd["train"][0]["text_pair"] == NEG[1]
    dd = load_task(f"hub:{d}", text_column="sentence2", aspect_column="sentence1")
    assert dd["train"].column_names == ["text", "aspect", "label"] and dd["train"][0]["aspect"] == POS[0]
    with pytest.raises(DataError, match="no column 'term'"):
        load_task(f"hub:{d}", text_column="sentence2", aspect_column="term")


# ---------------------------------------------------------------------------------- fine-tuning


def _segments(tokenizer, row):
    """(tokens of segment 0 without [CLS]/[SEP], tokens of segment 1 without [SEP])."""
    toks = tokenizer.convert_ids_to_tokens(row["input_ids"])
    tt = list(row["token_type_ids"])
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    assert tt == sorted(tt) and tt[0] == 0 and tt[-1] == 1  # 0 ... 0 1 ... 1
    k = tt.index(1)
    assert toks[k - 1] == "[SEP]"
    return toks[1 : k - 1], toks[k:-1]


def test_encode_orders_the_segments(tmp_path, tokenizer):
    from tmlib.tasks.classify import encode

    p = tmp_path / "pairs.csv"
    _pair_csv(p)
    dd = load_task(f"csv:{p}", text_column="s1", pair_column="s2")
    enc = encode(dd["train"], tokenizer, 32)
    for row, src in zip(enc, dd["train"]):
        a, b = _segments(tokenizer, row)
        assert a == tokenizer.tokenize(src["text"]) and b == tokenizer.tokenize(src["text_pair"])
        assert row["labels"] == src["label"]
    j = tmp_path / "absa.jsonl"
    _aspect_jsonl(j)
    dd = load_task(f"jsonl:{j}", aspect_column="category", label_column="polarity")
    enc = encode(dd["train"], tokenizer, 32)
    for row, src in zip(enc, dd["train"]):
        a, b = _segments(tokenizer, row)
        assert a == tokenizer.tokenize(src["aspect"]) and b == tokenizer.tokenize(src["text"])  # aspect first
    # only the text is truncated; single-text encoding ignores the second column when told to
    short = encode(dd["train"], tokenizer, 8)
    a, b = _segments(tokenizer, short[0])
    assert a == tokenizer.tokenize(dd["train"][0]["aspect"]) and len(short[0]["input_ids"]) == 8
    single = encode(dd["train"], tokenizer, 32, aspect_column=None)
    assert set(single[0]["token_type_ids"]) == {0}


@pytest.mark.parametrize("kind", ["pair", "aspect"])
def test_finetune_scratch_tiny_on_two_inputs(kind, tmp_path, tokenizer):
    from tmlib.core.models import load_classifier
    from tmlib.core.training import TrainConfig
    from tmlib.tasks.classify import Classification, ClassifierCollator, encode
    from tmlib.tasks.data import label_names

    if kind == "pair":
        p = tmp_path / "pairs.csv"
        _pair_csv(p)
        dd = load_task(f"csv:{p}", text_column="s1", pair_column="s2")
    else:
        p = tmp_path / "absa.jsonl"
        _aspect_jsonl(p)
        dd = load_task(f"jsonl:{p}", aspect_column="category", label_column="polarity")
    model = load_classifier("scratch:tiny", label_names(dd), seed=0)
    seen = []
    # the embeddings see every batch, whichever forward runs (the model's own, or kernels="fast"'s [CLS]-only one)
    model.bert.embeddings.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw.get("token_type_ids")), with_kwargs=True
    )
    cfg = TrainConfig(lr=1e-3, batch_size=8, max_steps=4, max_length=32, warmup_ratio=0.0, progress=False, seed=0)
    res = fit(model, dd, cfg, Classification(tokenizer, test_predictions=True))
    assert res.fit.steps == 4 and np.isfinite(res.fit.history[-1]["train_loss"])
    # the test accuracy is the share of right answers, recomputed with the model's own forward on the two-input batch
    n_batches = len(seen)
    test = ClassifierCollator(tokenizer)(list(encode(dd["test"], tokenizer, 32)))
    labels = test.pop("labels").numpy()
    model.eval()
    with torch.no_grad():
        pred = model(**test).logits.argmax(-1).numpy()
    del seen[n_batches:]
    assert res.test["predictions"].tolist() == pred.tolist()
    assert res.test["accuracy"] == pytest.approx((pred == labels).mean())
    # every training and evaluation batch carried both segments
    assert seen and all(t is not None and int(t.max()) == 1 for t in seen)
    batch = ClassifierCollator(tokenizer)([encode(dd["train"], tokenizer, 32)[i] for i in range(4)])
    assert batch["token_type_ids"].shape == batch["input_ids"].shape and int(batch["token_type_ids"].max()) == 1


def test_taskspec_carries_the_columns(tmp_path):
    from tmlib.core.training import TrainConfig
    from tmlib.tasks.data import TaskRecipe
    from tmlib.tasks.finetune import classifier_stage

    j = tmp_path / "absa.jsonl"
    _aspect_jsonl(j)
    plain = TaskRecipe(f"jsonl:{j}")
    spec = TaskRecipe(f"jsonl:{j}", aspect_column="category")
    assert "aspect_column" not in plain.key() and spec.key()["aspect_column"] == "category"
    with pytest.raises(DataError, match="no column 'label'"):
        spec.load()  # the label column of this file is "polarity": TaskRecipe reads "label"
    k = tmp_path / "absa2.jsonl"
    rows = _aspect_jsonl(k)
    k.write_text("\n".join(json.dumps({**r, "label": r["polarity"]}) for r in rows) + "\n", encoding="utf-8")
    assert TaskRecipe(f"jsonl:{k}", aspect_column="category").load()["train"].column_names[:2] == ["text", "aspect"]
    cfg = TrainConfig(progress=False)
    a = classifier_stage("c", "scratch:tiny", plain, cfg)
    b = classifier_stage("c", "scratch:tiny", spec, cfg)
    assert a.config["task"] != b.config["task"] and b.config["task"]["aspect_column"] == "category"


# --------------------------------------------------------------------------- buffer and merging


def test_buffer_on_aspect_input_labels_only_the_text(tokenizer):
    """Every scored input is [CLS] aspect [SEP] <text or buffer> [SEP] with segments 0 / 1; the labels
    cover the text's WordPieces only."""
    from tmlib.core.models import load_classifier
    from tmlib.selective.buffer import BufferConfig, buffer_importance, buffer_importance_reference

    model = load_classifier("scratch:tiny", ["negative", "positive"], seed=0)
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)
    model.eval()
    texts = [
        "the pasta was great but the service was slow",
        "the pasta was great but the service was slow",
        "loved the wine",
    ]
    aspects = ["pasta", "service staff", "wine"]
    labels = [1, 0, 1]
    inputs = []
    orig_forward = model.forward

    def forward(*args, **kw):
        inputs.append((kw["input_ids"].clone(), kw["token_type_ids"].clone(), kw["attention_mask"].clone()))
        return orig_forward(*args, **kw)

    model.forward = forward
    cfg = BufferConfig(only_correct=False, stopwords="none", progress=False)
    fast = buffer_importance(model, tokenizer, texts, labels, cfg, aspects=aspects)
    ref = buffer_importance_reference(model, tokenizer, texts, labels, cfg, aspects=aspects)
    for ts, text, asp in zip(fast, texts, aspects):
        assert ts.tokens == tokenizer.tokenize(text) and len(ts.important) == len(ts.tokens)
        assert ts.meta["aspect"] == asp
    assert [r.important.tolist() for r in fast] == [r.important.tolist() for r in ref]
    asp_ids = {tuple(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in aspects}
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for ids, tt, att in inputs:
        for row, seg, m in zip(ids.tolist(), tt.tolist(), att.tolist()):
            n = sum(m)
            row, seg = row[:n], seg[:n]
            k = row.index(sep)
            assert row[0] == cls and tuple(row[1:k]) in asp_ids and row[-1] == sep
            assert seg == [0] * (k + 1) + [1] * (n - k - 1)


def _ts(text, tokens, important, aspect, label=1, pred=1, scores=None):
    return TokenScores(
        text=text,
        tokens=tokens,
        scores=np.asarray(scores if scores is not None else important, float),
        important=important,
        label=label,
        pred=pred,
        method="buffer",
        meta={"aspect": aspect},
    )


def test_merge_of_a_texts_aspect_labels_is_the_union(tokenizer):
    from tmlib.selective.buffer import merge_aspects
    from tmlib.selective.tagger import tagger_examples

    toks = ["the", "pasta", "was", "great", "but", "service", "slow"]
    scores = [
        _ts("t1", toks, [0, 1, 0, 1, 0, 0, 0], "pasta", scores=[0, 0.5, 0, 0.9, 0, 0, -0.2]),
        _ts("t2", ["so", "good"], [0, 1], "food"),
        _ts("t1", toks, [0, 0, 0, 0, 0, 1, 1], "service", label=0, pred=0, scores=[0, 0.1, 0, 0.2, 0, 0.7, 0.8]),
        _ts("t1", toks[:5], [1, 0, 0, 0, 1], "price", label=0, pred=1),  # misclassified, truncated text
        _ts("t3", ["meh"], [0], "food", label=0, pred=1),
    ]
    merged = merge_aspects(scores)
    assert [m.text for m in merged] == ["t1", "t2", "t3"]  # first appearance
    m = merged[0]
    assert m.tokens == toks and m.important.tolist() == [1, 1, 0, 1, 1, 1, 1]  # union, prefix for the truncated one
    assert np.allclose(m.scores, [1, 0.5, 0, 0.9, 1, 0.7, 0.8])
    assert m.meta["aspects"] == ["pasta", "service", "price"] and m.meta["correct"] is True and m.label is None
    assert merged[2].meta["correct"] is False and merged[1].important.tolist() == [0, 1]
    # the tagger learns one example per text with the merged labels (automatic for aspect scores)
    ex = tagger_examples(scores, tokenizer)
    assert len(ex) == 3
    assert ex[0]["labels"] == [-100, 1, 1, 0, 1, 1, 1, 1, -100]
    assert len(tagger_examples(scores, tokenizer, include_incorrect=False)) == 2  # t3: no aspect right
    # without the meta (e.g. read back from a cache) merging is asked for explicitly
    bare = [
        TokenScores(text=s.text, tokens=s.tokens, scores=s.scores, important=s.important, label=s.label, pred=s.pred)
        for s in scores
    ]
    assert len(tagger_examples(bare, tokenizer)) == 5
    assert [e["labels"] for e in tagger_examples(bare, tokenizer, merge_aspects=True)] == [e["labels"] for e in ex]
    # single-text scores are not merged by default, even when a text repeats
    plain = [
        TokenScores(text="x", tokens=["a"], scores=[0.0], important=[1]),
        TokenScores(text="x", tokens=["a"], scores=[0.0], important=[0]),
    ]
    assert len(tagger_examples(plain, tokenizer)) == 2


def test_label_corpus_reads_each_aspect_text_once(tokenizer):
    from datasets import Dataset

    from tmlib.core.models import load_token_classifier
    from tmlib.selective.tagger import label_corpus

    tagger = load_token_classifier("scratch:tiny", num_labels=2, seed=0)
    ds = Dataset.from_dict(
        {"text": ["good food", "good food", "slow service"], "aspect": ["food", "price", "service"], "label": [1, 0, 0]}
    )
    out = label_corpus(tagger, tokenizer, ds, progress=False)
    assert out["text"] == ["good food", "slow service"]
    assert out["token_ids"][0] == tokenizer("good food", add_special_tokens=False)["input_ids"]
    assert len(label_corpus(tagger, tokenizer, ds.remove_columns("aspect"), progress=False)) == 3
