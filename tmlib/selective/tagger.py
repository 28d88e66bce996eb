"""Importance tagger (Gu et al. 2020): a 2-label token classifier that learns buffer-method labels on
the small labelled set and then labels a large unlabelled in-domain corpus for selective masking.

    tagger = load_token_classifier(name, num_labels=2)
    res = fit(tagger, train_scores, TrainConfig(...), ImportanceTagging(tokenizer, dev_scores, class_weight=3.0))
    labelled = label_corpus(tagger, tokenizer, load_corpus("pang_lee"))   # cache it with RunStore
    predict_importance(tagger, tokenizer, ["a text"])                      # -> list[TokenScores]

Training uses :func:`tmlib.core.training.fit` with a class-weighted cross-entropy (weight ``class_weight`` on
"important", which is the rare class) and keeps the epoch with the best dev F1 of the important class.
Predicted scores are P(important); labels are ``P > threshold`` with stop words forced to 0, like the
buffer labels they imitate. The threshold is tuned on dev (best F1) and saved in the model config
(``importance_threshold``): with 5-15% important tokens, a briefly trained tagger's argmax predicts
almost none, and selective masking would then mask nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from tmlib.core.training import FitResult, Setup, TrainConfig
from tmlib.selective.stopwords import resolve_stopwords, stopword_mask
from tmlib.selective.types import TokenScores


@dataclass
class TaggerOutput:
    loss: torch.Tensor
    logits: torch.Tensor


class WeightedTagger(nn.Module):
    """A token classifier whose loss weights the "important" class by ``class_weight``."""

    def __init__(self, model: nn.Module, class_weight: float = 3.0):
        super().__init__()
        if class_weight <= 0:
            raise ValueError(f"class_weight must be > 0, got {class_weight}")
        self.model = model
        self.register_buffer("weight", torch.tensor([1.0, float(class_weight)]), persistent=False)

    def forward(self, input_ids, attention_mask=None, labels=None, **kw):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), weight=self.weight, ignore_index=-100
            )
        return TaggerOutput(loss=loss, logits=logits)


def _token_ids(tokenizer, ts: TokenScores) -> list[int]:
    return tokenizer.convert_tokens_to_ids(ts.tokens)


def _merge(scores: Sequence[TokenScores], merge_aspects: bool | None) -> list[TokenScores]:
    from tmlib.selective.buffer import has_aspects
    from tmlib.selective.buffer import merge_aspects as merge

    scores = list(scores)
    if merge_aspects is None:
        merge_aspects = has_aspects(scores)
    return merge(scores) if merge_aspects else scores


def _correct(ts: TokenScores) -> bool | None:
    """Whether the scorer got the text right (merged aspect rows: any of its aspects)."""
    return ts.correct if ts.correct is not None else ts.meta.get("correct")


def tagger_examples(
    scores: Sequence[TokenScores],
    tokenizer,
    max_length: int = 128,
    include_incorrect: bool = True,
    merge_aspects: bool | None = None,
) -> list[dict]:
    """Buffer results -> token-classification examples (``[CLS] ids [SEP]``, labels -100 at specials).

    ``include_incorrect``: keep sentences the scorer misclassified, with their all-zero labels
    (REFERENCE: they get all-zero labels); False drops them.
    ``merge_aspects``: one example per distinct text with the labels of its aspects merged (union,
    :func:`tmlib.selective.buffer.merge_aspects`), as the official code: the tagger sees the text
    alone, as it will see the unlabelled corpus. None (default): merge when the scores carry aspects
    (``meta["aspect"]``, set by the buffer method); pass True for aspect scores that lost their meta.
    """
    out = []
    for ts in _merge(scores, merge_aspects):
        if ts.important is None:
            raise ValueError(
                f"TokenScores from method {ts.method!r} have no hard labels; the tagger learns buffer labels"
            )
        if not include_incorrect and _correct(ts) is False:
            continue
        ids = _token_ids(tokenizer, ts)[: max_length - 2]
        lab = ts.important.astype(int).tolist()[: max_length - 2]
        if not ids:
            continue
        out.append(
            {"input_ids": [tokenizer.cls_token_id] + ids + [tokenizer.sep_token_id], "labels": [-100] + lab + [-100]}
        )
    if not out:
        raise ValueError("no tagger examples: every sentence was empty or dropped")
    return out


class TaggerCollator:
    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            att[i, :n] = 1
            if "labels" in r:
                lab[i, :n] = torch.tensor(r["labels"])
        return {"input_ids": ids, "attention_mask": att, "labels": lab}


THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.025), 3)  # candidate P(important) decision thresholds


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / max(1, tp + fp)
    r = tp / max(1, tp + fn)
    return p, r, 2 * p * r / max(1e-12, p + r)


@torch.no_grad()
def tagger_metrics(model: nn.Module, batches: list[dict]) -> dict:
    """Token-level precision / recall / F1 of the "important" class and accuracy over labelled tokens.

    ``f1``/``precision``/``recall``/``accuracy`` are at the decision threshold on P(important) that
    maximises dev F1 (``threshold``; the important class is rare, 5-15% of tokens, and a briefly trained
    tagger's argmax rarely predicts it); ``f1_argmax`` is the plain argmax (threshold 0.5) F1.
    """
    probs, golds = [], []
    for b in batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        sel = b["labels"] != -100
        probs.append(torch.softmax(logits.float(), -1)[..., 1][sel])
        golds.append(b["labels"][sel] == 1)
    prob, gold = torch.cat(probs), torch.cat(golds)
    pred = prob[None, :] > torch.as_tensor(THRESHOLDS, dtype=prob.dtype)[:, None]  # thresholds x tokens
    tp = (pred & gold).sum(1)
    fp = (pred & ~gold).sum(1)
    fn = (~pred & gold).sum(1)
    f1 = [_prf(int(a), int(b), int(c))[2] for a, b, c in zip(tp, fp, fn)]
    best = int(np.argmax(f1))  # ties: the lowest threshold (higher recall)
    p, r, f = _prf(int(tp[best]), int(fp[best]), int(fn[best]))
    half = prob > 0.5
    return {
        "f1": f,
        "precision": p,
        "recall": r,
        "threshold": float(THRESHOLDS[best]),
        "accuracy": float((pred[best] == gold).float().mean()) if len(gold) else 0.0,
        "f1_argmax": _prf(int((half & gold).sum()), int((half & ~gold).sum()), int((~half & gold).sum()))[2],
    }


@dataclass
class TaggerResult:
    dev: dict
    fit: FitResult
    n_train: int
    positive_rate: float


@dataclass
class ImportanceTagging:
    """The tagger's objective for :func:`~tmlib.core.training.fit`: the model is a ``*ForTokenClassification``
    with 2 labels, ``data`` the training buffer scores (:class:`~tmlib.selective.types.TokenScores`), ``dev_scores``
    the dev ones. Important tokens weigh ``class_weight`` in the loss; the state with the best dev F1 (important
    class) is kept, whatever ``cfg.select_metric`` says, and the dev-tuned threshold is saved in the model's config
    (``importance_threshold``). Aspect scores are merged per text first (``merge_aspects``, see
    :func:`tagger_examples`)::

        res = fit(tagger, train_scores, cfg, ImportanceTagging(tokenizer, dev_scores), desc="tagger")
    """

    tokenizer: object
    dev_scores: Sequence[TokenScores]
    class_weight: float = 3.0
    include_incorrect: bool = True
    merge_aspects: bool | None = None

    def setup(self, model: nn.Module, train_scores, cfg: TrainConfig) -> Setup:
        n_labels = getattr(model.config, "num_labels", 2)
        if n_labels != 2:
            raise ValueError(
                f"the tagger needs a 2-label token classifier, got num_labels={n_labels}; "
                f"load it with tmlib.core.models.load_token_classifier(name, num_labels=2)"
            )
        tok, inc, merge = self.tokenizer, self.include_incorrect, self.merge_aspects
        train = tagger_examples(train_scores, tok, cfg.max_length, inc, merge)
        dev = tagger_examples(self.dev_scores, tok, cfg.max_length, inc, merge)
        collate = TaggerCollator(tok)
        dev_batches = [collate(dev[i : i + 64]) for i in range(0, len(dev), 64)]
        return Setup(
            WeightedTagger(model, self.class_weight),
            train,
            collate,
            evaluate=lambda m: tagger_metrics(m.model, dev_batches),
            lengths=[len(r["input_ids"]) for r in train],
            select_metric="f1",
            context={"dev": dev_batches},
        )

    def result(self, model: nn.Module, setup: Setup, run: FitResult) -> TaggerResult:
        labs = np.concatenate([np.asarray(r["labels"][1:-1]) for r in setup.train])
        dev_metrics = tagger_metrics(model.eval(), setup.context["dev"])
        model.config.importance_threshold = dev_metrics["threshold"]  # saved with the model; used when it labels
        return TaggerResult(dev=dev_metrics, fit=run, n_train=len(setup.train), positive_rate=float(labs.mean()))


# ------------------------------------------------------------------------------------------ inference


@torch.no_grad()
def _predict_ids(
    tagger: nn.Module, tokenizer, ids: list[list[int]], batch_size: int, desc: str, progress: bool, processes=None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """P(important) and the raw class-1 logit per content token for each id list (no specials), length-sorted
    batches.

    ``processes`` (accelerate's ``PartialState`` of a multi-process launch, :func:`tmlib.core.precision.processes`):
    process ``r`` of ``N`` runs batches ``r, r + N, ...`` of the same length-sorted batching and every process
    gets every result (``gather_object``), so the output is the one-process output, sharded."""
    was = tagger.training
    tagger.eval()
    dev = next(tagger.parameters()).device
    collate = TaggerCollator(tokenizer)
    order = np.argsort([len(x) for x in ids], kind="stable")
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    rank, world = (processes.process_index, processes.num_processes) if processes is not None else (0, 1)
    mine: dict[int, list[np.ndarray]] = {}
    for b in tqdm(range(rank, len(batches), world), desc=desc, disable=not progress or rank > 0, leave=False):
        idx = batches[b]
        batch = collate(
            [{"input_ids": [tokenizer.cls_token_id] + list(ids[i]) + [tokenizer.sep_token_id]} for i in idx]
        )
        logits = tagger(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev)).logits
        prob = torch.softmax(logits.float(), -1)[..., 1].cpu().numpy()
        logit = logits.float()[..., 1].cpu().numpy()
        mine[b] = [
            (prob[row, 1 : 1 + len(ids[i])].astype(np.float32), logit[row, 1 : 1 + len(ids[i])].astype(np.float32))
            for row, i in enumerate(idx)
        ]
    if world > 1:
        from accelerate.utils import gather_object

        for part in gather_object([mine]):
            mine.update(part)
    out: list = [None] * len(ids)
    for b, idx in enumerate(batches):
        for i, p in zip(idx, mine[b]):
            out[i] = p
    tagger.train(was)
    return [p for p, _ in out], [lg for _, lg in out]


def token_labels(
    tokenizer,
    ids: list[int],
    prob: np.ndarray,
    threshold: float,
    stopwords: str = "spacy",
    punctuation: bool | None = None,
) -> np.ndarray:
    """0/1 per token: P(important) above ``threshold``, stop words (list ``stopwords``, as
    :class:`~tmlib.selective.buffer.BufferConfig`: "spacy" official | "spacy_words" | "tmlib" | "none") forced to 0."""
    lab = (prob > threshold).astype(np.int8)
    if lab.any():
        lab[stopword_mask(tokenizer.convert_ids_to_tokens(list(ids)), punctuation, stopwords)] = 0
    return lab


def tagger_threshold(tagger: nn.Module, threshold: float | None = None) -> float:
    """``threshold`` if given, else the dev-tuned one :class:`ImportanceTagging` saved in the model config, else 0.5."""
    if threshold is not None:
        return float(threshold)
    return float(getattr(getattr(tagger, "config", None), "importance_threshold", None) or 0.5)


def label_corpus(
    tagger: nn.Module,
    tokenizer,
    dataset,
    batch_size: int = 128,
    max_length: int = 128,
    threshold: float | None = None,
    stopwords: str = "none",
    progress: bool = True,
    processes=None,
):
    """Run the tagger over a corpus (``datasets.Dataset`` with ``text``, or a list of strings).

    Returns a ``Dataset`` with ``text``, ``token_ids`` (WordPiece ids, no specials, truncated to
    ``max_length - 2``), ``importance`` (P(important) per token), ``importance_logit`` (the raw class-1 logit,
    the official ranking score) and ``important`` (0/1: P above :func:`tagger_threshold`), aligned per token and
    ready for :func:`tmlib.selective.mlm.pack_corpus` (``token_ids=``, ``token_fields=``). ``stopwords``: a stop list
    forced
    to 0 in ``important`` (the names of ``BufferConfig.stopwords``); default "none", as the official
    ``ModelGen``, which filters stop words in the buffer labels only.

    The tagger reads the text alone (official ``ModelGen``): a dataset with an ``aspect`` column (one
    row per text and aspect) is labelled once per distinct text, in order of first appearance.

    ``processes``: under ``accelerate launch`` / ``torchrun``, every process calls this with the same arguments and
    :func:`tmlib.core.precision.processes`; each runs a share of the batches and all return the whole labelled corpus.
    """
    from datasets import Dataset

    from tmlib.tasks.data import ASPECT_COLUMN, second_column

    texts = list(dataset["text"] if hasattr(dataset, "column_names") else dataset)
    if hasattr(dataset, "column_names") and second_column(dataset) == ASPECT_COLUMN:
        texts = list(dict.fromkeys(texts))
    if not texts:
        raise ValueError("the corpus is empty")
    ids = [row[: max_length - 2] for row in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    probs, logits = _predict_ids(tagger, tokenizer, ids, batch_size, "label corpus", progress, processes)
    threshold = tagger_threshold(tagger, threshold)
    stopwords = resolve_stopwords(stopwords)
    labels = [token_labels(tokenizer, i, p, threshold, stopwords) for i, p in zip(ids, probs)]
    return Dataset.from_dict(
        {
            "text": texts,
            "token_ids": ids,
            "importance": [p.tolist() for p in probs],
            "importance_logit": [lg.tolist() for lg in logits],
            "important": [lab.tolist() for lab in labels],
        }
    )


def predict_importance(
    tagger: nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    threshold: float | None = None,
    stopwords: str = "spacy",
    progress: bool = False,
) -> list[TokenScores]:
    """The tagger's per-WordPiece P(important) (``scores``) and 0/1 labels (``important``; stop list
    ``stopwords`` forced to 0, as in :func:`label_corpus`) per text."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single string; wrap it: [text]")
    texts = list(texts)
    ids = [row[: max_length - 2] for row in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    probs, _ = _predict_ids(tagger, tokenizer, ids, batch_size, "tagger", progress)
    threshold = tagger_threshold(tagger, threshold)
    stopwords = resolve_stopwords(stopwords)
    return [
        TokenScores(
            text=t,
            tokens=tokenizer.convert_ids_to_tokens(list(i)),
            scores=p,
            important=token_labels(tokenizer, i, p, threshold, stopwords),
            method="tagger",
            meta={"threshold": threshold, "stopwords": stopwords},
        )
        for t, i, p in zip(texts, ids, probs)
    ]
