"""Masked-LM training for GenePT (general text) and TaskPT (in-domain text, selective masking).

* :class:`MaskedOnlyMLM` wraps a ``BertForMaskedLM`` and applies the MLM head (transform + vocabulary
  projection) ONLY at the masked positions (``labels != -100``) instead of at every position. The
  loss is the same as Hugging Face's full computation (tested to ~1e-6); the step is several times
  faster because the ``positions x vocab`` projection, its softmax and its backward shrink ~7x.
* :func:`pack_corpus` tokenises a sentence corpus once and packs consecutive sentences into rows of
  at most ``max_length`` tokens (``[CLS] s1 s2 ... [SEP]``), recording each token's sentence index
  (``sent_ids``) so per-sentence masking caps survive packing; per-token fields (``importance``,
  ``important`` from the tagger) are packed alongside.
* :class:`MaskedLM` is the objective :func:`tmlib.core.training.fit` trains an MLM for, with a collator (HF random
  15% by default, or :class:`~tmlib.selective.collators.SelectiveMaskingCollator` /
  :class:`~tmlib.selective.collators.RandomCountMaskingCollator`); it can hand intermediate states to a callback
  at chosen steps (under-trained GenePT checkpoints, the accuracy-vs-TaskPT-steps curve).

Runs unchanged under ``accelerate launch`` (``fit`` is accelerate-based).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tmlib.core.precision import autocast
from tmlib.core.training import FitResult, Setup


@dataclass
class MLMOutput:
    loss: torch.Tensor
    n_masked: int = 0


class MaskedOnlyMLM(nn.Module):
    """``model(**batch).loss`` of a BERT-style MLM, with the head evaluated at masked positions only.

    ``masked_only=False`` calls the wrapped model unchanged (HF's full computation), for comparison.
    """

    def __init__(self, mlm_model: nn.Module, masked_only: bool = True):
        super().__init__()
        self.mlm = mlm_model
        base_prefix = getattr(mlm_model, "base_model_prefix", "bert")
        self._has_parts = hasattr(mlm_model, base_prefix) and hasattr(mlm_model, "cls")
        if masked_only and not self._has_parts:
            raise ValueError(
                f"{type(mlm_model).__name__} has no BERT-style encoder + `.cls` head; "
                f"use masked_only=False for other architectures"
            )
        self.masked_only = masked_only

    @property
    def config(self):
        return self.mlm.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **_):
        if labels is None:
            raise ValueError("MLM training needs `labels` (-100 at unmasked positions); use an MLM collator")
        if not self.masked_only:
            out = self.mlm(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels
            )
            return MLMOutput(loss=out.loss, n_masked=int((labels != -100).sum()))
        base = getattr(self.mlm, self.mlm.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        sel = labels != -100
        n = int(sel.sum())
        if n == 0:  # a batch with nothing masked (selective masking without fallback): zero loss, graph kept
            return MLMOutput(loss=hidden.sum() * 0.0, n_masked=0)
        logits = self.mlm.cls(hidden[sel])
        return MLMOutput(loss=F.cross_entropy(logits.float(), labels[sel]), n_masked=n)


# ------------------------------------------------------------------------------------------- data


def pack_corpus(
    texts: Sequence[str] | None,
    tokenizer,
    max_length: int = 128,
    *,
    token_ids: Sequence[Sequence[int]] | None = None,
    token_fields: dict[str, Sequence[Sequence]] | None = None,
    pack: bool = True,
):
    """Tokenise sentences once and pack consecutive ones into rows of at most ``max_length`` tokens.

    Either ``texts`` or pre-tokenised ``token_ids`` (content ids, no specials). ``token_fields`` maps a
    name to per-sentence per-token values aligned with those ids (e.g. ``importance``, ``important``);
    they are packed alongside (0 at special tokens). A sentence longer than ``max_length - 2`` is
    truncated. ``pack=False`` keeps one sentence per row. Returns a ``datasets.Dataset`` with
    ``input_ids``, ``sent_ids`` (-1 at specials) and the fields.
    """
    from datasets import Dataset

    if max_length < 8:
        raise ValueError(f"max_length must be >= 8 for MLM rows, got {max_length}")
    if token_ids is None:
        if texts is None:
            raise ValueError("pass texts or token_ids")
        token_ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    fields = dict(token_fields or {})
    _check_token_fields(fields, token_ids)
    room = max_length - 2
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows: dict[str, list] = {"input_ids": [], "sent_ids": [], **{k: [] for k in fields}}
    cur: dict[str, list] = {}
    _flush_row(rows, cur, fields, cls_id, sep_id)
    for i, ids in enumerate(token_ids):
        ids = list(ids[:room])
        if not ids:
            continue
        if not pack or len(cur["input_ids"]) + len(ids) > room:
            _flush_row(rows, cur, fields, cls_id, sep_id)
        _add_sentence(cur, ids, fields, i, room)
    _flush_row(rows, cur, fields, cls_id, sep_id)
    if not rows["input_ids"]:
        raise ValueError("the corpus produced no tokens (all texts empty?)")
    return Dataset.from_dict(rows)


def _check_token_fields(fields: dict[str, Sequence[Sequence]], token_ids: Sequence[Sequence[int]]) -> None:
    """Raise ValueError unless every token field has one row per sentence, so fields stay aligned with ids."""
    for name, vals in fields.items():
        if len(vals) != len(token_ids):
            raise ValueError(f"token field {name!r} has {len(vals)} rows for {len(token_ids)} sentences")


def _flush_row(rows: dict[str, list], cur: dict[str, list], fields: dict, cls_id: int, sep_id: int) -> None:
    """Append the row being packed in ``cur`` (if it has tokens) to ``rows`` with its specials, then empty ``cur``."""
    if cur and cur["input_ids"]:
        rows["input_ids"].append([cls_id] + cur["input_ids"] + [sep_id])
        rows["sent_ids"].append([-1] + cur["sent_ids"] + [-1])
        for k in fields:
            rows[k].append([0] + cur[k] + [0])
    cur.clear()
    cur.update({"input_ids": [], "sent_ids": [], **{k: [] for k in fields}})


def _add_sentence(cur: dict[str, list], ids: list[int], fields: dict, i: int, room: int) -> None:
    """Append sentence ``i`` (ids and truncated field values) to the row in ``cur`` as its next sentence."""
    k_sent = (cur["sent_ids"][-1] + 1) if cur["sent_ids"] else 0
    cur["input_ids"] += ids
    cur["sent_ids"] += [k_sent] * len(ids)
    for k, vals in fields.items():
        v = list(vals[i][:room])
        if len(v) != len(ids):
            raise ValueError(f"token field {k!r} row {i}: {len(v)} values for {len(ids)} tokens")
        cur[k] += v


def pack_documents(
    token_ids: Sequence[Sequence[int]],
    docs: Sequence,
    tokenizer,
    max_length: int = 256,
    *,
    short_seq_prob: float = 0.1,
    seed: int = 12345,
    token_fields: dict[str, Sequence[Sequence]] | None = None,
):
    """Rows as the official TaskPT data is built (thunlp/SelectiveMasking ``data/create_data.py``,
    ``create_instances_from_document``): documents (``docs``: one document key per sentence, sentences of a
    document in order) are shuffled; per document a target length of ``max_length - 2`` tokens, or, with
    probability ``short_seq_prob``, a random one in ``[2, max_length - 2]``; consecutive sentences are
    accumulated until the target is reached or the document ends, and the chunk, if longer than
    ``max_length - 2``, is truncated one token at a time from the front or the back at random. Every row is
    ``[CLS] chunk [SEP]`` (one segment, no next-sentence prediction). Returns the columns of
    :func:`pack_corpus` (``input_ids``, ``sent_ids``, the token fields) plus ``doc``."""
    import random

    from datasets import Dataset

    if max_length < 8:
        raise ValueError(f"max_length must be >= 8 for MLM rows, got {max_length}")
    if len(docs) != len(token_ids):
        raise ValueError(f"{len(docs)} document keys for {len(token_ids)} sentences")
    fields = dict(token_fields or {})
    _check_token_fields(fields, token_ids)
    documents = _documents_with_tokens(docs, token_ids)
    rng = random.Random(seed)
    rng.shuffle(documents)
    room = max_length - 2
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows: dict[str, list] = {"input_ids": [], "sent_ids": [], "doc": [], **{k: [] for k in fields}}
    for sentences in documents:
        target = room if rng.random() >= short_seq_prob else rng.randint(2, room)
        for chunk in _document_chunks(sentences, token_ids, target):
            ids, sids, vals = _chunk_tokens(chunk, token_ids, fields)
            _truncate_at_random(ids, sids, vals, room, rng)
            rows["input_ids"].append([cls_id] + ids + [sep_id])
            rows["sent_ids"].append([-1] + sids + [-1])
            rows["doc"].append(docs[chunk[0]])
            for k in fields:
                rows[k].append([0] + vals[k] + [0])
    if not rows["input_ids"]:
        raise ValueError("the corpus produced no tokens (all texts empty?)")
    return Dataset.from_dict(rows)


def _documents_with_tokens(docs: Sequence, token_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """Group sentence indices by document key (first-seen order), dropping documents without any token."""
    order: dict = {}
    for i, d in enumerate(docs):
        order.setdefault(d, []).append(i)
    return [idx for idx in order.values() if any(len(token_ids[i]) for i in idx)]


def _document_chunks(sentences: list[int], token_ids: Sequence[Sequence[int]], target: int):
    """Yield runs of a document's non-empty sentences, each closed at ``target`` tokens or the document's end."""
    chunk: list[int] = []
    length = 0
    for j, i in enumerate(sentences):
        if len(token_ids[i]):
            chunk.append(i)
            length += len(token_ids[i])
        if (j == len(sentences) - 1 or length >= target) and chunk:
            yield chunk
            chunk, length = [], 0


def _chunk_tokens(
    chunk: list[int], token_ids: Sequence[Sequence[int]], fields: dict[str, Sequence[Sequence]]
) -> tuple[list[int], list[int], dict[str, list]]:
    """Concatenate a chunk's ids, per-token sentence indices and field values, checking fields match the ids."""
    ids, sids = [], []
    vals: dict[str, list] = {k: [] for k in fields}
    for k_sent, c in enumerate(chunk):
        ids += list(token_ids[c])
        sids += [k_sent] * len(token_ids[c])
        for k in fields:
            if len(fields[k][c]) != len(token_ids[c]):
                raise ValueError(
                    f"token field {k!r} row {c}: {len(fields[k][c])} values for {len(token_ids[c])} tokens"
                )
            vals[k] += list(fields[k][c])
    return ids, sids, vals


def _truncate_at_random(ids: list[int], sids: list[int], vals: dict[str, list], room: int, rng) -> None:
    """Cut tokens from the front or back at random until ``room`` remain, as the official truncate_seq_pair does."""
    while len(ids) > room:  # official truncate_seq_pair: front or back, at random
        cut = 0 if rng.random() < 0.5 else len(ids) - 1
        for seq in (ids, sids, *vals.values()):
            del seq[cut]


def draw_static_masks(packed, collator, max_predictions: int = 40, seed: int = 12345):
    """Draw every row's MLM masks ONCE, as the official TaskPT data is written to disk (``dupe_factor`` 1): each
    row goes through ``collator`` (selective, same-count random or plain 15%, with its own seeded RNG), and a row
    with more than ``max_predictions`` masked positions keeps a random subset of them (the others get their
    original token back). Rows with a ``drawn`` field (0/1 per token,
    :func:`tmlib.selective.collators.sentence_masks`) keep
    those positions and only get their 80/10/10 from ``collator``. Returns the rows with ``input_ids`` (masked)
    and ``labels`` (-100 where not masked), for :class:`tmlib.selective.collators.StaticMLMCollator`; every pass over
    them
    sees the same masks."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    keep = [c for c in packed.column_names if c in ("input_ids", "sent_ids", "importance", "important")]
    drawn = "drawn" in packed.column_names  # positions drawn per sentence before packing (collators.sentence_masks)
    if drawn and collator.generator is None:
        collator.create_rng()  # the seeded 80/10/10 generator
    out: dict[str, list] = {"input_ids": [], "labels": []}
    for i in range(len(packed)):
        if drawn:
            row = packed[i]
            masked = torch.tensor(row["drawn"], dtype=torch.bool)[None]
            ids, labels = (t[0] for t in collator.apply_masks(torch.tensor(row["input_ids"])[None], masked))
        else:
            batch = collator([{k: packed[i][k] for k in keep}])
            ids, labels = batch["input_ids"][0].clone(), batch["labels"][0].clone()
        pos = (labels != -100).nonzero().flatten().numpy()
        if max_predictions and len(pos) > max_predictions:
            drop = np.sort(rng.permutation(pos)[max_predictions:])
            ids[drop] = labels[drop]
            labels[drop] = -100
        out["input_ids"].append(ids.tolist())
        out["labels"].append(labels.tolist())
    return Dataset.from_dict(out)


def corpus_tokens(ds) -> int:
    """Number of tokens (incl. specials) in a packed corpus."""
    return int(sum(len(x) for x in ds["input_ids"]))


# ---------------------------------------------------------------------------------------- training


@dataclass
class MaskedLM:
    """The MLM objective (GenePT, TaskPT) for :func:`~tmlib.core.training.fit`: ``data`` is a packed corpus and
    the model a ``*ForMaskedLM``, trained in place; the result is the :class:`~tmlib.core.training.FitResult`
    (its ``history`` has the mean training loss per ``cfg.eval_every`` window; nothing is selected on dev)::

        fit(model, packed, cfg, MaskedLM(tokenizer, save_at=[100, 200], on_save=save))

    ``collator``: default :class:`~tmlib.selective.collators.PlainMLMCollator` (HF random 15%); rows with
    ``labels`` (masks drawn once, :func:`draw_static_masks`) go through
    :class:`~tmlib.selective.collators.StaticMLMCollator`. ``masked_only``: the LM head runs on the masked
    positions only (:class:`MaskedOnlyMLM`). ``on_save(step, model)`` is called at every step in ``save_at``
    (the model mid-training: save it, do not keep a reference)."""

    tokenizer: object
    collator: object = None
    masked_only: bool = True
    save_at: Sequence[int] = ()
    on_save: Callable[[int, nn.Module], None] | None = None

    def setup(self, model, packed, cfg) -> Setup:
        from tmlib.selective.collators import PlainMLMCollator, StaticMLMCollator

        collator = self.collator
        if collator is None:
            static = "labels" in packed.column_names
            collator = (
                StaticMLMCollator(self.tokenizer)
                if static
                else PlainMLMCollator(self.tokenizer, mlm_probability=0.15, seed=cfg.seed)
            )
        keep = {"input_ids", "attention_mask", "token_type_ids", "sent_ids", "importance", "important", "labels"}
        drop = [c for c in packed.column_names if c not in keep]
        data = packed.remove_columns(drop) if drop else packed
        save_at = sorted(set(int(s) for s in self.save_at))
        hooks = []
        if save_at and self.on_save is not None:
            on_save = self.on_save

            def hook(step, m, logs):
                if step in save_at:
                    on_save(step, m)

            hooks.append(hook)
        return Setup(
            MaskedOnlyMLM(model, masked_only=self.masked_only), _ListData(data), collator, hooks=hooks, select_metric=""
        )

    def result(self, model, setup: Setup, run: FitResult) -> FitResult:
        return run


class _ListData(torch.utils.data.Dataset):
    """Rows of a ``datasets.Dataset`` as plain python dicts, read once (fast indexing in the loader)."""

    def __init__(self, ds):
        cols = {c: ds[c] for c in ds.column_names}
        self.rows = [{c: cols[c][i] for c in cols} for i in range(len(ds))]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def mlm_flops(n_params_encoder: int, tokens: int, masked: int, hidden: int, vocab: int) -> float:
    """Rough training FLOPs (forward + backward = 3x forward): 6 * params * tokens for the encoder,
    plus the head's vocabulary projection at the masked positions."""
    return 6.0 * n_params_encoder * tokens + 6.0 * hidden * vocab * masked


@torch.no_grad()
def mlm_eval_loss(
    model: nn.Module, packed, tokenizer, batch_size: int = 32, seed: int = 0, max_rows: int = 256
) -> float:
    """Mean random-15% MLM loss on (at most ``max_rows`` of) a packed corpus, fixed masks by ``seed``."""
    from tmlib.selective.collators import PlainMLMCollator

    col = PlainMLMCollator(tokenizer, mlm_probability=0.15, seed=seed)
    data = _ListData(packed.select(range(min(max_rows, len(packed)))))
    wrapped = MaskedOnlyMLM(model).eval()
    total, n = 0.0, 0
    for k in range(0, len(data), batch_size):
        batch = col([data[i] for i in range(k, min(k + batch_size, len(data)))])
        out = wrapped(**batch)
        total += out.loss.item() * out.n_masked
        n += out.n_masked
    return total / max(1, n)


# ------------------------------------------------------------------------------------------- probe


def probe_masks(
    input_ids: Sequence[Sequence[int]], special_ids, mask_prob: float = 0.15, seed: int = 0
) -> list[np.ndarray]:
    """The positions :func:`mlm_probe` masks in each row: ``max(1, round(mask_prob * n))`` of the ``n``
    non-special tokens, uniformly without replacement, from one ``numpy`` generator seeded by ``seed``
    and drawn row by row (so a row's masks do not depend on the batch size or on other rows' lengths
    beyond their order). Rows without a maskable token get none."""
    rng = np.random.default_rng(seed)
    special = set(int(s) for s in special_ids)
    out = []
    for ids in input_ids:
        cand = np.array([i for i, t in enumerate(ids) if int(t) not in special], dtype=np.int64)
        if len(cand) == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        k = min(len(cand), max(1, int(round(mask_prob * len(cand)))))
        out.append(np.sort(rng.choice(cand, size=k, replace=False)))
    return out


@torch.inference_mode()
def mlm_probe(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    max_length: int = 64,
    mask_prob: float = 0.15,
    seed: int = 0,
    batch_size: int = 64,
    mixed_precision: str = "no",
) -> dict:
    """Held-out masked-LM quality of ``model`` (a ``*ForMaskedLM``) on ``texts``: mean cross-entropy and
    top-1 accuracy at the masked positions.

    Deterministic: one text per row (truncated to ``max_length`` with ``[CLS]``/``[SEP]``), masks from
    :func:`probe_masks` (seeded; special tokens never masked), every masked position replaced by
    ``[MASK]`` (no 80/10/10: the probe asks "can the head fill a blank"). Runs in inference mode with
    the model in eval mode (its train/eval mode is restored). A BERT-style model has its head applied at
    the masked positions only (same numbers as the full logits, tested); others use ``.logits``.
    ``mixed_precision="bf16"`` runs the forward under bf16 autocast (the loss is computed in fp32).
    Returns ``{"loss", "top1", "n_masked", "n_texts"}``; chance top-1 is ~1/vocab.
    """
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("mlm_probe needs at least one non-empty text")
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no [MASK] token")
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    masks = probe_masks(enc, tokenizer.all_special_ids, mask_prob, seed)
    device = next(model.parameters()).device
    base_prefix = getattr(model, "base_model_prefix", "bert")
    parts = hasattr(model, base_prefix) and hasattr(model, "cls")
    order = np.argsort([len(x) for x in enc], kind="stable")  # little padding; results do not depend on it
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    loss_sum, correct, n_masked = 0.0, 0, 0
    try:
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            width = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            labels = torch.full((len(idx), width), -100, dtype=torch.long)
            for r, i in enumerate(idx):
                row = torch.tensor(enc[i], dtype=torch.long)
                ids[r, : len(row)] = row
                att[r, : len(row)] = 1
                pos = torch.from_numpy(masks[i])
                labels[r, pos] = row[pos]
                ids[r, pos] = tokenizer.mask_token_id
            sel = labels != -100
            if not bool(sel.any()):
                continue
            ids, att, labels, sel = ids.to(device), att.to(device), labels.to(device), sel.to(device)
            with autocast(mixed_precision, device):
                if parts:
                    hidden = getattr(model, base_prefix)(input_ids=ids, attention_mask=att)[0]
                    logits = model.cls(hidden[sel])
                else:
                    logits = model(input_ids=ids, attention_mask=att).logits[sel]
            logits = logits.float()
            target = labels[sel]
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += int((logits.argmax(-1) == target).sum())
            n_masked += int(target.numel())
    finally:
        model.train(was_training)
    if n_masked == 0:
        raise ValueError("no maskable token in the probe texts")
    return {"loss": loss_sum / n_masked, "top1": correct / n_masked, "n_masked": n_masked, "n_texts": len(texts)}
