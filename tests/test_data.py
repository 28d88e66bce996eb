"""Loaders on the real fetched assets: counts and label balance, plus user files and bad input."""

import collections

import pytest

from tmlib.tasks import data
from tmlib.tasks.data import DataError, load_corpus, load_task

EXPECTED = {  # total examples, class counts over all splits (after dropping neutral and duplicate texts)
    "mr": (4000, {0: 2000, 1: 2000}),
    "mr_cased": (10566, {1: 5241, 0: 5325}),
    "amazon": (3600, {1: 2120, 0: 1480}),
    "pang_lee_docs": (1500, {0: 750, 1: 750}),
    "bbc": (2126, {0: 503, 1: 369, 2: 403, 3: 504, 4: 347}),  # 2,225 articles, 99 duplicates
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_builtin_task_counts_and_balance(name):
    dd = load_task(name)
    total, classes = EXPECTED[name]
    assert sum(len(dd[s]) for s in data.SPLITS) == total
    counts = collections.Counter(lab for s in data.SPLITS for lab in dd[s]["label"])
    assert dict(counts) == classes
    # stratified 80/10/10
    assert abs(len(dd["dev"]) - total / 10) <= len(classes)
    train = collections.Counter(dd["train"]["label"])
    for c, n in classes.items():
        assert abs(train[c] / len(dd["train"]) - n / total) < 0.01
    # no overlap between splits
    ids = [set(t.lower() for t in dd[s]["text"]) for s in data.SPLITS]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_splits_are_seeded():
    a, b, c = load_task("mr", seed=0), load_task("mr", seed=0), load_task("mr", seed=1)
    assert a["dev"]["text"] == b["dev"]["text"]
    assert a["dev"]["text"] != c["dev"]["text"]


def test_label_names_and_casing():
    assert data.label_names(load_task("mr")) == ["negative", "positive"]
    assert data.label_names(load_task("bbc"))[3] == "sports"
    assert any(ch.isupper() for ch in load_task("mr_cased")["train"][0]["text"])


def test_max_examples_keeps_balance():
    dd = load_task("mr", max_examples=40)
    assert len(dd["train"]) == 40
    assert collections.Counter(dd["train"]["label"]) == {0: 20, 1: 20}


@pytest.mark.parametrize(
    "name, n, words, distinct, first",
    [
        ("pang_lee", 48190, 1_117_345, 47659, "films adapted from comic books have had plenty of success"),
        ("bbc", 43770, 860_196, 40071, "Ad sales boost Time Warner profit"),
    ],
)
def test_corpora(name, n, words, distinct, first):
    """The exact sentence and word counts of the pinned assets' corpora, in document order (a changed splitter or
    a dropped document moves them)."""
    ds = load_corpus(name)
    texts = ds["text"]
    assert (len(ds), sum(len(t.split()) for t in texts), len(set(texts))) == (n, words, distinct)
    assert texts[0].startswith(first) and all(t.strip() for t in texts)


def test_corpus_subsample():
    """max_sentences: a seeded sample of rows of the full corpus (not its first rows)."""
    full = load_corpus("bbc")["text"]
    a, b = load_corpus("bbc", max_sentences=100)["text"], load_corpus("bbc", max_sentences=100)["text"]
    c = load_corpus("bbc", max_sentences=100, seed=1)["text"]
    assert len(a) == 100 and a == b and a != c
    assert set(a) <= set(full) and a != full[:100]


def test_split_sentences():
    text = 'He said "Stop." Then he left. It was 3 p.m. ok\n\nNew para here now.'
    for splitter in ("spacy", "regex"):
        s = data.split_sentences(text, splitter=splitter)
        # "p.m." followed by a lower-case word is no sentence end; a blank line is a paragraph break
        assert s == ['He said "Stop."', "Then he left.", "It was 3 p.m. ok", "New para here now."], splitter
    # "p.m." before an upper-case word: the regex splitter cuts there, spaCy's sentencizer keeps it whole
    assert data.split_sentences("It was 3 p.m. Then we left.", min_words=1, splitter="regex") == [
        "It was 3 p.m.",
        "Then we left.",
    ]
    assert data.split_sentences("It was 3 p.m. Then we left.", min_words=1) == ["It was 3 p.m. Then we left."]
    assert data.split_sentences(text) == data.split_sentences(text, splitter="spacy")
    with pytest.raises(ValueError, match="splitter must be one of"):
        data.split_sentences(text, splitter="nltk")


def test_split_sentences_spacy_sentencizer():
    """The official splitter: spaCy's rule-based sentencizer knows "Dr." is no sentence end."""
    assert data.split_sentences("Dr. Smith came. He left.", min_words=1) == ["Dr. Smith came.", "He left."]
    assert data.split_sentences("Dr. Smith came. He left.", min_words=3) == ["Dr. Smith came."]
    # it splits where the regex splitter does not (lower-case start), as the official code would
    assert data.split_sentences("great film. loved it all.", min_words=1) == ["great film.", "loved it all."]
    assert data.split_sentences("great film. loved it all.", min_words=1, splitter="regex") == [
        "great film. loved it all."
    ]
    assert data._sentencizer() is data._sentencizer()  # built once per process


# ------------------------------------------------------------------ user files and bad input


def test_csv_and_jsonl(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("review,stars\n" + "".join(f"text {i},{'good' if i % 2 else 'bad'}\n" for i in range(40)))
    dd = load_task(f"csv:{csv}", text_column="review", label_column="stars")
    assert data.label_names(dd) == ["bad", "good"] and sum(len(d) for d in dd.values()) == 40
    js = tmp_path / "r.jsonl"
    js.write_text("".join(f'{{"text": "t {i}", "label": {i % 3}}}\n' for i in range(30)))
    assert data.label_names(load_task(f"jsonl:{js}")) == ["0", "1", "2"]


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("text,label\n", "has no rows"),
        ("body,label\nx,1\ny,0\n", "has no column 'text'"),
        ("text,lab\nx,1\ny,0\n", "has no column 'label'"),
        ("text,label\nx,1\ny,1\nz,1\n", "single class"),
        ("text,label\nx,1\n ,0\nz,0\n", r"1 row\(s\) with empty 'text', e\.g\. rows \[2\]"),  # data rows from 1
        ("text,label\nx,1\ny,\nz,\n", r"2 row\(s\) without a 'label' value, e\.g\. rows \[2, 3\]"),
    ],
)
def test_bad_user_files(tmp_path, content, fragment):
    f = tmp_path / "d.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=fragment):
        load_task(f"csv:{f}")


def test_non_utf8_file(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(b"text,label\ncaf\xe9,1\nok,0\n")
    with pytest.raises(DataError, match=r"not valid utf-8-sig: byte 0xe9 .*line 2"):
        load_task(f"csv:{f}")


def test_bad_jsonl_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_task(f"jsonl:{f}")


UNICODE_FIELDS = [
    "next\u0085line inside a field",
    "paragraph\u2029and line\u2028separators",
    "a quoted\nnewline",
    'a "quote", a comma',
    "NA",
    "vertical\x0btab and form\x0cfeed",
    "caf\u00e9 \u2603 \U0001f600",
]


def test_csv_fields_with_unicode_line_breaks(tmp_path):
    """U+0085, U+2028/9, \\v, \\f (all str.splitlines breaks) and a quoted newline stay inside their field."""
    import csv as _csv

    f = tmp_path / "u.csv"
    with open(f, "w", encoding="utf-8-sig", newline="") as fh:  # with a BOM, as Excel writes it
        w = _csv.writer(fh)
        w.writerow(["id", "review", "stars"])
        w.writerows([k, t, "pos" if j % 2 else "neg"] for k in range(4) for j, t in enumerate(UNICODE_FIELDS))
    dd = load_task(f"csv:{f}", text_column="review", label_column="stars")
    assert sorted(t for split in dd.values() for t in split["text"]) == sorted(UNICODE_FIELDS * 4)
    assert data.label_names(dd) == ["neg", "pos"]
    gold = {t: j % 2 for j, t in enumerate(UNICODE_FIELDS)}
    assert all(gold[t] == y for split in dd.values() for t, y in zip(split["text"], split["label"]))
    texts = data.load_text_file(f, text_column="review", label_column=None, split=False)["text"]
    assert texts == UNICODE_FIELDS * 4  # file order, "NA" kept as text


def test_jsonl_and_txt_with_unicode_line_breaks(tmp_path):
    import json as _json

    js = tmp_path / "u.jsonl"
    js.write_text(
        "".join(
            _json.dumps({"text": t, "label": i % 2}, ensure_ascii=False) + "\n"
            for i, t in enumerate(UNICODE_FIELDS * 4)
        ),
        encoding="utf-8",
    )
    dd = load_task(f"jsonl:{js}")
    assert sorted(t for split in dd.values() for t in split["text"]) == sorted(UNICODE_FIELDS * 4)
    txt = tmp_path / "u.txt"  # one text per line: only \n, \r\n, \r end a line
    txt.write_text("first\u2028still first\nsecond\u0085still second\r\n\nthird\n", encoding="utf-8", newline="")
    assert sorted(load_corpus(f"txt:{txt}")["text"]) == ["first\u2028still first", "second\u0085still second", "third"]
    corpus = load_corpus(f"jsonl:{js}")
    assert len(corpus) == len(UNICODE_FIELDS) * 4 and "a quoted\nnewline" in corpus["text"]


def test_large_csv_streams_in_batches(tmp_path):
    """More rows than one streamed batch (tmlib.tasks.data._BATCH_ROWS): every row arrives once, in order."""
    n = data._BATCH_ROWS * 2 + 123
    f = tmp_path / "big[1] *.csv"  # glob characters in the name are literal
    f.write_text("text,label\n" + "".join(f'"row {i}\u2028x",{i % 3}\n' for i in range(n)), encoding="utf-8")
    ds = data.load_text_file(f, label_column=None, split=False)
    assert len(ds) == n and ds[0]["text"] == "row 0\u2028x" and ds[n - 1]["text"] == f"row {n - 1}\u2028x"
    dd = load_task(f"csv:{f}")
    assert sum(len(s) for s in dd.values()) == n and data.label_names(dd) == ["0", "1", "2"]


def test_json_array_and_more_bad_files(tmp_path):
    arr = tmp_path / "a.json"
    arr.write_text("[" + ", ".join(f'{{"text": "t {i}", "label": "{"ab"[i % 2]}"}}' for i in range(20)) + "]")
    assert data.label_names(load_task(f"jsonl:{arr}")) == ["a", "b"]
    unclosed = tmp_path / "q.csv"
    unclosed.write_text('text,label\nx,1\n"never closed,0\ny,1\n')
    with pytest.raises(DataError, match="could not be read as CSV: ParserError: .*EOF inside string"):
        load_task(f"csv:{unclosed}")
    notobj = tmp_path / "n.jsonl"
    notobj.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2 is not a JSON object"):
        load_task(f"jsonl:{notobj}")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="has no rows"):
        load_task(f"jsonl:{empty}")
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(b'{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 0}\n')
    with pytest.raises(DataError, match=r"not valid utf-8-sig: byte 0xe9 at offset 40 \(line 2\)"):
        load_task(f"jsonl:{bad}")
    split_utf8 = tmp_path / "s.csv"  # a multi-byte character across the decoder's 1 MiB chunk boundary is fine
    split_utf8.write_bytes(b"text,label\n" + b"a" * ((1 << 20) - 12) + "\u00e9,1\nb,0\n".encode())
    assert len(data.load_text_file(split_utf8, split=False, label_column=None)) == 2


def test_unknown_and_missing():
    with pytest.raises(DataError, match="unknown dataset 'sst3'; builtin tasks: mr"):
        load_task("sst3")
    with pytest.raises(DataError, match="does not exist"):
        load_task("csv:/nonexistent/file.csv")
    with pytest.raises(DataError, match="unknown corpus"):
        load_corpus("wiki")


def test_hub_dataset_fails_fast_offline(monkeypatch):
    """HF_HUB_OFFLINE=1: the error comes without a connection attempt (one could hang for its whole timeout)."""
    import socket

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tmlib.core import hub

    tried = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: tried.append(a) or socket.socket())
    hub.hub_reachable.cache_clear()
    with pytest.raises(DataError, match="unreachable .*builtin task instead: mr"):
        load_task("hub:rotten_tomatoes")
    hub.hub_reachable.cache_clear()
    assert tried == []


def test_empty_split_rejected():
    with pytest.raises(DataError, match="empty"):
        data.stratified_split([], [], ["a", "b"])


def test_hub_corpus_streams_a_local_stand_in(tmp_path, monkeypatch):
    """The hub corpus path, run for real against a dataset folder standing in for the hub (same
    load_dataset(..., streaming=True) call); offline it fails with a clear message. As the official code: every
    row without a cap, every sentence however short, ``@title+text`` joined with ". " (AmazonProcessor)."""
    import json

    import tmlib.core.hub
    from tmlib.tasks.data import DataError, load_corpus

    d = tmp_path / "reviews"
    d.mkdir()
    rows = [
        {"title": f"Great {i}", "text": f"Review {i} was fine. The food was great and cheap. Would go again soon."}
        for i in range(20)
    ]
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    monkeypatch.setattr(tmlib.core.hub, "hub_reachable", lambda *a, **k: True)
    assert len(load_corpus(f"hub:{d}")) == 60  # no cap: every row, every sentence
    titled = load_corpus(f"hub:{d}@title+text")["text"]
    assert len(titled) == 80 and titled[:2] == ["Great 0.", "Review 0 was fine."]  # a one-word sentence stays
    monkeypatch.setattr(tmlib.core.hub, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(DataError, match="unreachable"):
        load_corpus(f"hub:{d}", max_sentences=10)
    monkeypatch.setattr(tmlib.core.hub, "hub_reachable", lambda *a, **k: True)
    ds = load_corpus(f"hub:{d}", max_sentences=10)
    assert len(ds) == 10 and all(
        t
        in {
            r
            for x in rows
            for r in (
                "Review " + x["text"].split()[1] + " was fine.",
                "The food was great and cheap.",
                "Would go again soon.",
            )
        }
        for t in ds["text"]
    )
    with pytest.raises(DataError, match="no 'body' column"):
        load_corpus(f"hub:{d}@body", max_sentences=10)
    # as documents (TaskPT's official packing): each review's sentences stay together, in order
    docs = load_corpus(f"hub:{d}", max_sentences=10, documents=True)
    assert len(docs) == 10 and len(set(docs["doc"])) == 4
    first = [t for t, k in zip(docs["text"], docs["doc"]) if k == docs["doc"][0]]
    assert first[1:3] == ["The food was great and cheap.", "Would go again soon."]


def test_corpus_as_documents_keeps_reviews_whole():
    from tmlib.tasks.data import load_corpus

    flat, docs = load_corpus("pang_lee"), load_corpus("pang_lee", documents=True)
    assert flat["text"] == docs["text"] and len(set(docs["doc"])) == 1500
    capped = load_corpus("pang_lee", max_sentences=500, seed=0, documents=True)
    assert len(capped) == 500
    runs = [k for i, k in enumerate(capped["doc"]) if i == 0 or capped["doc"][i - 1] != k]
    assert len(runs) == len(set(runs))  # each document's sentences are contiguous


def test_task_recipe_held_out_pool_is_everything_train_and_dev_leave_out():
    from tmlib.tasks.data import DataError, TaskRecipe, load_task

    split = TaskRecipe("bbc", max_train=60, max_dev=40, max_test=40).load()
    held = TaskRecipe("bbc", max_train=60, max_dev=40, test_pool="heldout").load()
    full = load_task("bbc")
    # the same train and dev rows; the pool is every other example, the capped test split among them
    assert held["train"]["text"] == split["train"]["text"] and held["dev"]["text"] == split["dev"]["text"]
    assert len(held["test"]) == sum(map(len, full.values())) - 60 - 40
    used = set(held["train"]["text"]) | set(held["dev"]["text"])
    assert not used & set(held["test"]["text"]) and set(split["test"]["text"]) <= set(held["test"]["text"])
    assert len(TaskRecipe("bbc", max_train=60, max_dev=40, max_test=100, test_pool="heldout").load()["test"]) == 100
    assert "test_pool" not in split and TaskRecipe(test_pool="heldout").key()["test_pool"] == "heldout"
    with pytest.raises(DataError, match="test_pool must be one of split, heldout"):
        TaskRecipe(test_pool="all")
