"""Sequence classification on top of :func:`tmlib.core.training.fit`: encoding (single texts, sentence pairs,
aspect + text), padded length-sorted evaluation batches, evaluation with per-example predictions, and
:class:`Classification`, the objective :func:`tmlib.core.training.fit` trains a classifier for (best state on dev,
then the test split when the data has one)::

    res = fit(model, data, cfg, Classification(tokenizer))    # a ClassifierResult
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tmlib.core.heartbeat import Heartbeat
from tmlib.core.precision import autocast, check_kernels, get_accelerator, kernels_context
from tmlib.core.training import FitResult, Setup, TrainConfig

AUTO = "auto"


def input_columns(
    column_names, pair_column: str | None = AUTO, aspect_column: str | None = AUTO
) -> tuple[str | None, str | None]:
    """``(pair_column, aspect_column)`` actually used for a dataset with ``column_names``: ``"auto"``
    takes the task's second input as loading named it (:func:`tmlib.tasks.data.second_column`), None turns one off."""
    from tmlib.tasks.data import ASPECT_COLUMN, PAIR_COLUMN, second_column

    second = second_column(column_names)
    if aspect_column == AUTO:
        aspect_column = ASPECT_COLUMN if second == ASPECT_COLUMN else None
    if pair_column == AUTO:
        pair_column = PAIR_COLUMN if second == PAIR_COLUMN else None
    if pair_column and aspect_column:
        raise ValueError(
            f"a task has one second input: got pair_column={pair_column!r} and aspect_column={aspect_column!r}"
        )
    for col in (pair_column, aspect_column):
        if col and col not in column_names:
            raise ValueError(f"no column {col!r} to encode (columns: {list(column_names)})")
    return pair_column, aspect_column


def encode(
    ds,
    tokenizer,
    max_length: int,
    text_column: str = "text",
    pair_column: str | None = AUTO,
    aspect_column: str | None = AUTO,
):
    """Tokenize a ``datasets.Dataset`` (truncating to ``max_length``) into model inputs + ``labels``.

    Single text: ``[CLS] text [SEP]``. With a second input (``"auto"``: the ``text_pair`` / ``aspect``
    column where the dataset has one; None: ignore it) the tokenizer's pair encoding, segment ids 0 then 1:
    a sentence pair is ``[CLS] text [SEP] text_pair [SEP]`` (the longer side truncated first, as BERT's
    GLUE code); an aspect task is ``[CLS] aspect [SEP] text [SEP]`` with only the text truncated (the
    official selective-masking code's ``ASC`` / ``ABSAProcessor``: ``text_a`` = aspect, ``text_b`` = text).
    """
    pair_column, aspect_column = input_columns(ds.column_names, pair_column, aspect_column)

    def fn(batch):
        if aspect_column:
            enc = tokenizer(batch[aspect_column], batch[text_column], truncation="only_second", max_length=max_length)
        elif pair_column:
            enc = tokenizer(batch[text_column], batch[pair_column], truncation=True, max_length=max_length)
        else:
            enc = tokenizer(batch[text_column], truncation=True, max_length=max_length)
        if "label" in batch:
            enc["labels"] = batch["label"]
        return enc

    keep = [c for c in ds.column_names]
    return ds.map(
        fn,
        batched=True,
        remove_columns=keep,
        desc="tokenize",
        new_fingerprint=_encode_fingerprint(
            ds, tokenizer, max_length, text_column, pair_column if not aspect_column else f"aspect:{aspect_column}"
        ),
    )


def _encode_fingerprint(ds, tokenizer, max_length, text_column, pair_column) -> str:
    """A cheap fingerprint for :func:`encode`'s map. Without it ``datasets`` dill-hashes the closure,
    tokenizer included: ~0.1-2 s per call, which dominated short runs."""
    from datasets.fingerprint import Hasher

    return Hasher.hash(
        [
            getattr(ds, "_fingerprint", None),
            type(tokenizer).__name__,
            getattr(tokenizer, "name_or_path", ""),
            len(tokenizer),
            getattr(tokenizer, "truncation_side", None),
            max_length,
            text_column,
            pair_column,
        ]
    )


class ClassifierCollator:
    """Pads a list of encoded examples into a batch."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, examples: list[dict]) -> dict:
        return self.tokenizer.pad(examples, return_tensors="pt")


class EvalBatches:
    """Tokenized, padded, length-sorted batches built once and reused for every evaluation. ``collate``: what
    pads a list of examples (default :class:`ClassifierCollator`; token tasks pad their label lists too)."""

    def __init__(self, encoded, tokenizer, batch_size: int = 64, collate=None):
        order = np.argsort([len(x) for x in encoded["input_ids"]], kind="stable")
        collate = collate or ClassifierCollator(tokenizer)
        rows = [encoded[int(i)] for i in order]
        self.batches = [collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
        self.n = len(rows)
        self.order = order  # batch row k is example order[k] of ``encoded``

    def __len__(self) -> int:
        return self.n


@torch.no_grad()
def evaluate_classifier(
    model,
    batches: EvalBatches,
    device: torch.device | str | None = None,
    mixed_precision: str = "no",
    kernels: str = TrainConfig.kernels,
    predictions: bool = False,
) -> dict:
    """Mean cross-entropy and accuracy over cached batches; ``mixed_precision="bf16"`` runs the forward
    passes under bf16 autocast ("fp16": CUDA only); ``kernels="fast"`` computes a single-label BERT
    classifier's last layer for ``[CLS]`` only (:class:`~tmlib.tasks.cls_forward.ClsOnlyClassifier`; the same
    numbers up to float rounding), ``"hf"`` calls the model itself. ``predictions``: also return the
    predicted class of every example, in the order of the encoded dataset (``"predictions"``)."""
    from tmlib.tasks.cls_forward import ClsOnlyClassifier

    model = ClsOnlyClassifier.for_kernels(model, check_kernels(kernels))
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ctx = autocast(mixed_precision, device)
    loss_sum, correct, preds = 0.0, 0, []
    beat = Heartbeat(f"evaluating {len(batches)} examples", len(batches.batches), unit="batch")
    for i, batch in enumerate(batches.batches):
        beat(i)
        batch = {k: v.to(device) for k, v in batch.items()}
        with ctx:
            out = model(**batch)
        n = batch["labels"].numel()
        loss_sum += out.loss.float().item() * n
        pred = out.logits.argmax(-1)
        correct += (pred == batch["labels"]).sum().item()
        if predictions:
            preds.append(pred.cpu())
    model.train(was_training)
    metrics = {"loss": loss_sum / len(batches), "accuracy": correct / len(batches)}
    if predictions:
        flat = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)
        metrics["predictions"] = np.empty_like(flat)
        metrics["predictions"][batches.order] = flat
    return metrics


@dataclass
class ClassifierResult:
    dev: dict
    test: dict | None
    fit: FitResult


@dataclass
class Classification:
    """The objective of a sequence classifier (for :func:`~tmlib.core.training.fit`): ``data`` is a DatasetDict
    train/dev/test with text+label, and a ``text_pair`` or ``aspect`` column for two-input tasks (:func:`encode`
    builds the pair inputs).

    The best state is selected by dev accuracy; the result has the dev metrics of that state and the test metrics
    (``test`` is None when ``data`` has no test split: the caller evaluates elsewhere; ``test_predictions``: with
    each test example's predicted class, ``test_mixed_precision``: the test pass's arithmetic). Under
    ``cfg.kernels="fast"`` a single-label BERT classifier trains and evaluates through
    :class:`~tmlib.tasks.cls_forward.ClsOnlyClassifier` (the same parameters)."""

    tokenizer: object
    test_predictions: bool = False
    test_mixed_precision: str = "no"

    def setup(self, model, data, cfg: TrainConfig) -> Setup:
        from tmlib.tasks.cls_forward import ClsOnlyClassifier

        check_labels(model, data)
        tok = self.tokenizer
        enc = {s: encode(data[s], tok, cfg.max_length) for s in ("train", "dev", "test") if s in data}
        dev = EvalBatches(enc["dev"], tok)
        net = ClsOnlyClassifier.for_kernels(model, cfg.kernels)
        return Setup(
            net,
            enc["train"],
            ClassifierCollator(tok),
            evaluate=lambda m: _dev_metrics(m, dev, cfg.kernels),
            lengths=[len(x) for x in enc["train"]["input_ids"]],
            context={"test": enc.get("test"), "cfg": cfg},
        )

    def result(self, model, setup: Setup, run: FitResult) -> ClassifierResult:
        # fit ends with the state it evaluated in its best row (the last eval when nothing is selected):
        # its dev metrics are that row's, no second pass over dev
        best = {"loss": run.best["dev_loss"], "accuracy": run.best["accuracy"]}
        test, cfg = setup.context["test"], setup.context["cfg"]
        if test is None:
            return ClassifierResult(dev=best, test=None, fit=run)
        # the test split with the attention the dev evaluations had inside fit
        with kernels_context(setup.network, cfg.kernels, get_accelerator(cfg.mixed_precision).device):
            test_metrics = evaluate_classifier(
                setup.network,
                EvalBatches(test, self.tokenizer),
                kernels=cfg.kernels,
                predictions=self.test_predictions,
                mixed_precision=self.test_mixed_precision,
            )
        return ClassifierResult(dev=best, test=test_metrics, fit=run)


def _dev_metrics(model, dev: EvalBatches, kernels: str) -> dict:
    m = evaluate_classifier(model, dev, kernels=kernels)
    return {"accuracy": m["accuracy"], "dev_loss": m["loss"]}


def check_labels(model, data) -> None:
    """The model head must have exactly as many outputs as the task has classes."""
    from tmlib.tasks.data import label_names

    names = label_names(data)
    n_head = getattr(model.config, "num_labels", None)
    if n_head is not None and n_head != len(names):
        raise ValueError(
            f"the model head has {n_head} outputs but the task has {len(names)} classes {names}; "
            f"load the model with tmlib.core.models.load_classifier(name, label_names)"
        )
