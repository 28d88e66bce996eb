"""Token classification (a head per token) on top of :func:`tmlib.core.training.fit`, beside
:mod:`tmlib.tasks.classify`:
word -> sub-token label alignment, padded evaluation batches, token accuracy and entity F1, and
:class:`TokenClassification`, the objective :func:`tmlib.core.training.fit` trains a token classifier for (best
state on dev).

Alignment is the standard Hugging Face recipe: the sentence is tokenised as pre-split words
(``is_split_into_words``); each word's tag goes on its first sub-token, every other sub-token and the special
tokens get -100 (ignored by the loss and the metrics). A word cut off by ``max_length`` is neither trained nor
scored.

Metrics: ``accuracy`` is the share of scored words whose tag is right; ``f1`` (tag sets in IOB/IOBES form, i.e.
named entities) is seqeval's entity-level micro F1: an entity counts when its type and its whole span are right.
:func:`task_metric` names the one a task is selected and reported on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tmlib.core.precision import autocast
from tmlib.core.training import FitResult, Setup, TrainConfig
from tmlib.tasks.classify import EvalBatches

IGNORE = -100
ENTITY_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Per sub-token labels: the word's label on its first sub-token, :data:`IGNORE` on the others and on
    special tokens (``word_ids`` is a fast tokenizer's ``encoding.word_ids()``)."""
    out, prev = [], None
    for w in word_ids:
        out.append(IGNORE if w is None or w == prev else int(word_labels[w]))
        prev = w
    return out


def encode_tokens(ds, tokenizer, max_length: int):
    """Tokenise a ``tokens`` / ``tags`` dataset as pre-split words (truncated to ``max_length``) into
    ``input_ids``, ``attention_mask`` and aligned ``labels`` (:func:`align_labels`). Needs a fast tokenizer."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"token tasks need a fast tokenizer (word_ids()), got {type(tokenizer).__name__}")

    def fn(batch):
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        enc["labels"] = [align_labels(enc.word_ids(i), tags) for i, tags in enumerate(batch["tags"])]
        return enc

    return ds.map(
        fn,
        batched=True,
        remove_columns=ds.column_names,
        desc="tokenize words",
        new_fingerprint=_fingerprint(ds, tokenizer, max_length),
    )


def _fingerprint(ds, tokenizer, max_length) -> str:
    """A cheap fingerprint for :func:`encode_tokens`' map (as :func:`tmlib.tasks.classify._encode_fingerprint`)."""
    from datasets.fingerprint import Hasher

    return Hasher.hash(
        [
            "tokens",
            getattr(ds, "_fingerprint", None),
            type(tokenizer).__name__,
            getattr(tokenizer, "name_or_path", ""),
            len(tokenizer),
            max_length,
        ]
    )


class TokenCollator:
    """Pads encoded sentences into a batch, labels padded with :data:`IGNORE`
    (transformers' ``DataCollatorForTokenClassification``)."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        self.collate = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE, return_tensors="pt")

    def __call__(self, examples: list[dict]) -> dict:
        return self.collate(
            [
                {k: v for k, v in e.items() if k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
                for e in examples
            ]
        )


def token_batches(encoded, tokenizer, batch_size: int = 64) -> EvalBatches:
    """Length-sorted padded evaluation batches of encoded sentences (built once, reused)."""
    return EvalBatches(encoded, tokenizer, batch_size=batch_size, collate=TokenCollator(tokenizer))


# ----------------------------------------------------------------------------------------------- metrics


def is_entity_tagging(names: Sequence[str]) -> bool:
    """Whether a tag set is entity spans in IOB / IOBES form (every tag ``O`` or ``B-``/``I-``/... + type)."""
    tags = [n for n in names if n != "O"]
    return bool(tags) and all(n.startswith(ENTITY_PREFIXES) for n in tags)


def task_metric(names: Sequence[str]) -> str:
    """The metric a token task is reported and selected on: ``f1`` (entity F1) for entity tags, else
    ``accuracy`` (token accuracy)."""
    return "f1" if is_entity_tagging(names) else "accuracy"


def token_accuracy(gold: Sequence[Sequence], pred: Sequence[Sequence]) -> float:
    """Share of tags that match, over every token of every sentence (NaN without tokens)."""
    pairs = [(g, p) for gs, ps in zip(gold, pred, strict=True) for g, p in zip(gs, ps, strict=True)]
    return float(np.mean([g == p for g, p in pairs])) if pairs else float("nan")


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """seqeval's entity-level micro F1 of tag-name sequences (an entity must match in type and span)."""
    from seqeval.metrics import f1_score

    return float(f1_score([list(g) for g in gold], [list(p) for p in pred], zero_division=0))


@torch.no_grad()
def evaluate_tagger(
    model,
    batches: EvalBatches,
    names: Sequence[str],
    device=None,
    mixed_precision: str = "no",
    predictions: bool = False,
) -> dict:
    """Mean cross-entropy over scored tokens, token ``accuracy``, entity ``f1`` (entity tag sets only),
    ``n_tokens`` and ``n_sentences``; ``predictions``: also each sentence's predicted tag indices (scored words
    only), in the order of the encoded dataset."""
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loss_sum, n_tokens, gold, pred = 0.0, 0, [], []
    for batch in batches.batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(mixed_precision, device):
            out = model(**batch)
        labels = batch["labels"]
        keep = labels != IGNORE
        n = int(keep.sum())
        loss_sum += out.loss.float().item() * n
        n_tokens += n
        guess = out.logits.argmax(-1)
        for row_keep, row_gold, row_pred in zip(keep.cpu(), labels.cpu(), guess.cpu()):
            gold.append(row_gold[row_keep].tolist())
            pred.append(row_pred[row_keep].tolist())
    model.train(was_training)
    order = np.asarray(batches.order)
    gold = [gold[k] for k in np.argsort(order, kind="stable")]  # back to the dataset's order
    pred = [pred[k] for k in np.argsort(order, kind="stable")]
    metrics = {
        "loss": loss_sum / max(1, n_tokens),
        "accuracy": token_accuracy(gold, pred),
        "n_tokens": n_tokens,
        "n_sentences": len(gold),
    }
    if is_entity_tagging(names):
        metrics["f1"] = entity_f1([[names[t] for t in g] for g in gold], [[names[t] for t in p] for p in pred])
    if predictions:
        metrics["predictions"] = pred
    return metrics


# ----------------------------------------------------------------------------------------------- training


@dataclass
class TokenClassifierResult:
    dev: dict  # the selected state's dev metrics (loss, accuracy, f1 for entity tags)
    metric: str  # the metric the epoch was selected on (task_metric)
    fit: FitResult


def check_token_labels(model, names: Sequence[str]) -> None:
    """The token classifier's head must have one output per tag."""
    n_head = getattr(model.config, "num_labels", None)
    if n_head is not None and n_head != len(names):
        raise ValueError(
            f"the model head has {n_head} outputs but the task has {len(names)} tags; load the model "
            f"with tmlib.core.models.load_token_classifier(name, label_names=tags)"
        )


@dataclass
class TokenClassification:
    """The objective of a token classifier (``*ForTokenClassification``, or a peft / masked wrapper of one) for
    :func:`~tmlib.core.training.fit`: ``data`` is a DatasetDict train/dev of ``tokens`` / ``tags``
    (:mod:`tmlib.tasks.token_data`); the state with the best dev :func:`task_metric` is kept::

        res = fit(model, data, cfg, TokenClassification(tokenizer))    # a TokenClassifierResult
    """

    tokenizer: object

    def setup(self, model, data, cfg: TrainConfig) -> Setup:
        from tmlib.tasks.data import label_names

        names = label_names(data)
        check_token_labels(model, names)
        train = encode_tokens(data["train"], self.tokenizer, cfg.max_length)
        dev = token_batches(encode_tokens(data["dev"], self.tokenizer, cfg.max_length), self.tokenizer)

        def evaluate(m):
            r = evaluate_tagger(m, dev, names)
            return {k: r[k] for k in ("accuracy", "f1") if k in r} | {"dev_loss": r["loss"]}

        return Setup(
            model,
            train,
            TokenCollator(self.tokenizer),
            evaluate=evaluate,
            lengths=[len(x) for x in train["input_ids"]],
            select_metric=task_metric(names),
        )

    def result(self, model, setup: Setup, run: FitResult) -> TokenClassifierResult:
        best = {"loss": run.best["dev_loss"], **{k: run.best[k] for k in ("accuracy", "f1") if k in run.best}}
        return TokenClassifierResult(dev=best, metric=setup.select_metric, fit=run)
