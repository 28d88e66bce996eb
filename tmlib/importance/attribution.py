"""Post-hoc token attribution for any fine-tuned Hugging Face sequence classifier.

Every method is batched and returns one :class:`~tmlib.selective.types.TokenScores` per text, at the
WordPiece level with special tokens ([CLS], [SEP], padding) excluded:

    occlusion             leave-one-out: score_i = P(c | text) - P(c | text without token i). All n
                          occluded variants of a text run in one batch (variants of several texts share
                          batches). ``mode="remove"`` deletes the token, ``mode="mask"`` puts [MASK] there.
    grad_x_input          gradient of the class output w.r.t. the word embeddings, times the embeddings,
                          summed over the hidden dimension (one forward + backward per batch).
    integrated_gradients  captum ``LayerIntegratedGradients`` on the word-embedding layer, baseline = the
                          same ids with every non-special token replaced by [PAD] (or [MASK]); ``n_steps``
                          Riemann steps, ``internal_batch_size`` bounds memory. ``meta["delta"]`` is the
                          completeness gap sum(scores) - (f(x) - f(baseline)).
    buffer                the buffer method of Gu et al. 2020 (``tmlib.selective.buffer``), hard labels.

``c`` (the explained class) is the model's prediction on the full text (``target="pred"``, default) or
the gold label (``target="label"``, needs ``labels``). For the gradient methods the explained output is
the class probability (``output="prob"``, comparable with occlusion) or its logit (``output="logit"``).
Positive scores support class ``c``; negative scores speak against it.

:func:`score_tokens` dispatches by name through :data:`METHODS`; :func:`method_agreement` compares
methods by Spearman rank correlation per text, averaged over texts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tmlib.selective.types import TokenScores

__all__ = [
    "occlusion",
    "grad_x_input",
    "integrated_gradients",
    "buffer",
    "METHODS",
    "score_tokens",
    "rank_agreement",
    "method_agreement",
    "predict_proba",
]


# ----------------------------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class _Encoded:
    """Tokenised texts: ids with special tokens, and where the content (non-special) tokens sit."""

    ids: list[np.ndarray]  # per text, int64 ids incl. [CLS]/[SEP]
    content: list[np.ndarray]  # per text, positions of the non-special tokens in ``ids``
    tokens: list[list[str]]  # per text, the content WordPieces
    truncated: list[bool]


def _check_texts(texts: Sequence[str], labels: Sequence[int] | None) -> tuple[list[str], list[int] | None]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single string; wrap it: [text]")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not a string; pass a list of strings")
    if labels is not None:
        labels = [int(x) for x in labels]
        if len(labels) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels; pass one label per text (or labels=None)")
    return texts, labels


def _encode(tokenizer, texts: list[str], max_length: int) -> _Encoded:
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    full = tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]
    ids, content, tokens, truncated = [], [], [], []
    for i, row in enumerate(enc["input_ids"]):
        row = np.asarray(row, dtype=np.int64)
        special = np.asarray(enc["special_tokens_mask"][i], dtype=bool)
        pos = np.flatnonzero(~special)
        ids.append(row)
        content.append(pos)
        tokens.append(tokenizer.convert_ids_to_tokens(row[pos].tolist()))
        truncated.append(len(full[i]) > len(pos))
    return _Encoded(ids, content, tokens, truncated)


def _pad(rows: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


class _eval_mode:
    """Dropout off while scoring; the model's previous mode is restored afterwards."""

    def __init__(self, model):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def _probs(model, rows: list[np.ndarray], pad_id: int, batch_size: int) -> np.ndarray:
    """Softmax class probabilities for id rows (length-sorted batches, original order back)."""
    device = _device(model)
    out = None
    for idx in _batches_by_length([len(r) for r in rows], batch_size):
        ids, mask = _pad([rows[i] for i in idx], pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        p = torch.softmax(logits, -1).cpu().numpy()
        if out is None:
            out = np.empty((len(rows), p.shape[1]), dtype=np.float32)
        out[idx] = p
    return out


def predict_proba(model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of ``model`` for ``texts`` (n_texts x n_classes)."""
    texts, _ = _check_texts(texts, None)
    if not texts:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    enc = _encode(tokenizer, texts, max_length)
    with _eval_mode(model):
        return _probs(model, enc.ids, _pad_id(tokenizer), batch_size)


def _targets(probs: np.ndarray, labels: list[int] | None, target: str) -> np.ndarray:
    if target == "pred":
        return probs.argmax(-1)
    if target == "label":
        if labels is None:
            raise ValueError(
                "target='label' explains the gold class, so labels are required; pass labels=[...] or use target='pred'"
            )
        n = probs.shape[1]
        bad = [y for y in labels if not 0 <= y < n]
        if bad:
            raise ValueError(f"label {bad[0]} is out of range for a model with {n} classes")
        return np.asarray(labels)
    raise ValueError(f"unknown target {target!r}; valid: 'pred' (the model's prediction) or 'label' (the gold class)")


def _result(
    enc: _Encoded, i: int, scores, probs: np.ndarray, targets: np.ndarray, labels, method: str, **meta
) -> TokenScores:
    return TokenScores(
        text=meta.pop("text"),
        tokens=enc.tokens[i],
        scores=scores,
        label=None if labels is None else int(labels[i]),
        pred=int(probs[i].argmax()),
        method=method,
        meta={
            "target": int(targets[i]),
            "p_target": float(probs[i, targets[i]]),
            "truncated": enc.truncated[i],
            **meta,
        },
    )


# --------------------------------------------------------------------------------------------- occlusion


def occlusion(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    target: str = "pred",
    mode: str = "remove",
    max_length: int = 128,
    batch_size: int = 128,
    progress: bool = False,
) -> list[TokenScores]:
    """Leave-one-out occlusion: ``P(c | text) - P(c | text without token i)`` for every WordPiece i.

    ``mode="remove"`` deletes the token (the sequence gets one shorter), ``mode="mask"`` replaces it by
    [MASK]. The n variants of a text are built with one vectorised index operation and scored in the
    same batch (batches hold up to ``batch_size`` rows, spanning texts).
    """
    texts, labels = _check_texts(texts, labels)
    if mode not in ("remove", "mask"):
        raise ValueError(f"unknown occlusion mode {mode!r}; valid: 'remove' (delete the token) or 'mask' ([MASK] it)")
    if mode == "mask" and tokenizer.mask_token_id is None:
        raise ValueError("mode='mask' needs a tokenizer with a [MASK] token; use mode='remove'")
    if not texts:
        return []
    enc = _encode(tokenizer, texts, max_length)
    pad = _pad_id(tokenizer)
    device = _device(model)
    results = []
    with _eval_mode(model):
        full = _probs(model, enc.ids, pad, batch_size)
        targets = _targets(full, labels, target)
        # all variants of all texts, flattened; occluded[k] belongs to text owner[k]
        variants, owner = [], []
        for i, (ids, pos) in enumerate(zip(enc.ids, enc.content)):
            n = len(pos)
            if n == 0:
                continue
            if mode == "remove":
                keep = np.ones((n, len(ids)), dtype=bool)
                keep[np.arange(n), pos] = False
                rows = np.broadcast_to(ids, (n, len(ids)))[keep].reshape(n, len(ids) - 1)
            else:
                rows = np.repeat(ids[None], n, axis=0)
                rows[np.arange(n), pos] = tokenizer.mask_token_id
            variants.extend(rows)
            owner.extend([i] * n)
        owner = np.asarray(owner, dtype=np.int64)
        p_occ = np.empty(len(variants), dtype=np.float32)
        # variants of one text have equal length, so the length-sorted batches rarely need padding
        chunks = _batches_by_length([len(v) for v in variants], batch_size)
        with torch.no_grad():
            for idx in tqdm(chunks, desc="occlusion", disable=not progress, leave=False):
                ids, mask = _pad([variants[k] for k in idx], pad)
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                p = torch.softmax(logits, -1).cpu().numpy()
                p_occ[idx] = p[np.arange(len(idx)), targets[owner[idx]]]
    start = 0
    for i, text in enumerate(texts):
        n = len(enc.content[i])
        scores = full[i, targets[i]] - p_occ[start : start + n]
        start += n
        results.append(_result(enc, i, scores, full, targets, labels, "occlusion", text=text, mode=mode))
    return results


# ------------------------------------------------------------------------------------- gradient methods


def _class_output(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    if output == "prob":
        return torch.softmax(logits.float(), -1).gather(1, target[:, None])[:, 0]
    if output == "logit":
        return logits.float().gather(1, target[:, None])[:, 0]
    raise ValueError(f"unknown output {output!r}; valid: 'prob' (class probability) or 'logit'")


def grad_x_input(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    target: str = "pred",
    output: str = "prob",
    max_length: int = 128,
    batch_size: int = 32,
    progress: bool = False,
) -> list[TokenScores]:
    """Gradient x input on the word embeddings: ``sum_h e_ih * d f_c / d e_ih`` per WordPiece i."""
    texts, labels = _check_texts(texts, labels)
    _class_output(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), output)  # validate early
    if not texts:
        return []
    enc = _encode(tokenizer, texts, max_length)
    pad = _pad_id(tokenizer)
    device = _device(model)
    emb_layer = model.get_input_embeddings()
    full = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    attr: list[np.ndarray | None] = [None] * len(texts)
    with _eval_mode(model):
        for idx in tqdm(
            _batches_by_length([len(r) for r in enc.ids], batch_size),
            desc="grad x input",
            disable=not progress,
            leave=False,
        ):
            ids, mask = _pad([enc.ids[i] for i in idx], pad)
            ids, mask = ids.to(device), mask.to(device)
            emb = emb_layer(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=emb, attention_mask=mask).logits
            probs = torch.softmax(logits.detach().float(), -1).cpu().numpy()
            full[idx] = probs
            tgt = torch.as_tensor(
                _targets(probs, None if labels is None else [labels[i] for i in idx], target), device=device
            )
            (grad,) = torch.autograd.grad(_class_output(logits, tgt, output).sum(), emb)
            gxi = (grad * emb).sum(-1).detach().cpu().numpy()
            for row, i in enumerate(idx):
                attr[i] = gxi[row, enc.content[i]]
    targets = _targets(full, labels, target)
    return [
        _result(enc, i, attr[i], full, targets, labels, "grad_x_input", text=t, output=output)
        for i, t in enumerate(texts)
    ]


def integrated_gradients(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    target: str = "pred",
    output: str = "prob",
    baseline: str = "pad",
    n_steps: int = 32,
    internal_batch_size: int = 256,
    max_length: int = 128,
    batch_size: int = 8,
    progress: bool = False,
) -> list[TokenScores]:
    """Integrated gradients (captum ``LayerIntegratedGradients`` on the word-embedding layer).

    The baseline keeps the special tokens and replaces every other token by [PAD] (``baseline="pad"``)
    or [MASK] (``baseline="mask"``). ``meta["delta"]`` holds captum's completeness gap.
    """
    from captum.attr import LayerIntegratedGradients

    texts, labels = _check_texts(texts, labels)
    _class_output(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), output)
    if baseline == "pad":
        base_id = _pad_id(tokenizer)
    elif baseline == "mask":
        if tokenizer.mask_token_id is None:
            raise ValueError("baseline='mask' needs a tokenizer with a [MASK] token; use baseline='pad'")
        base_id = tokenizer.mask_token_id
    else:
        raise ValueError(f"unknown baseline {baseline!r}; valid: 'pad' ([PAD] ids) or 'mask' ([MASK] ids)")
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2 (got {n_steps}); 20-50 is usual")
    if not texts:
        return []
    enc = _encode(tokenizer, texts, max_length)
    pad = _pad_id(tokenizer)
    device = _device(model)

    def forward(input_ids, attention_mask, tgt):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return _class_output(logits, tgt, output)

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    full = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    attr: list[np.ndarray | None] = [None] * len(texts)
    deltas = np.zeros(len(texts), dtype=np.float32)
    with _eval_mode(model):
        for idx in tqdm(
            _batches_by_length([len(r) for r in enc.ids], batch_size),
            desc="integrated gradients",
            disable=not progress,
            leave=False,
        ):
            ids, mask = _pad([enc.ids[i] for i in idx], pad)
            ids, mask = ids.to(device), mask.to(device)
            base = ids.clone()
            for row, i in enumerate(idx):
                base[row, torch.as_tensor(enc.content[i], device=device)] = base_id
            with torch.no_grad():
                probs = torch.softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1).cpu().numpy()
            full[idx] = probs
            tgt = torch.as_tensor(
                _targets(probs, None if labels is None else [labels[i] for i in idx], target), device=device
            )
            a, delta = lig.attribute(
                ids,
                baselines=base,
                additional_forward_args=(mask, tgt),
                n_steps=n_steps,
                internal_batch_size=max(internal_batch_size, 2 * len(idx)),
                return_convergence_delta=True,
            )
            a = a.sum(-1).detach().cpu().numpy()
            deltas[idx] = delta.detach().cpu().numpy()
            for row, i in enumerate(idx):
                attr[i] = a[row, enc.content[i]]
    targets = _targets(full, labels, target)
    return [
        _result(
            enc,
            i,
            attr[i],
            full,
            targets,
            labels,
            "integrated_gradients",
            text=t,
            output=output,
            baseline=baseline,
            n_steps=n_steps,
            delta=float(deltas[i]),
        )
        for i, t in enumerate(texts)
    ]


# ------------------------------------------------------------------------------------------- buffer method


def buffer(model, tokenizer, texts: Sequence[str], labels: Sequence[int] | None = None, **kw) -> list[TokenScores]:
    """The buffer method (Gu et al. 2020) through ``tmlib.selective.buffer.buffer_importance``.

    Keyword arguments are :class:`~tmlib.selective.buffer.BufferConfig` fields (e.g. ``delta=0.01``)
    or ``cfg=BufferConfig(...)``. Without gold ``labels`` the model's own predictions are used as the
    labels (so every text counts as correctly classified); ``meta["labels_from"]`` records which.
    """
    try:
        from tmlib.selective.buffer import BufferConfig, buffer_importance
    except ImportError as exc:  # the module is written in parallel; say so instead of a bare ImportError
        raise ImportError(
            f"the buffer method needs tmlib.selective.buffer, which could not be imported ({exc}); "
            "use one of the attribution methods "
            f"{', '.join(m for m in METHODS if m != 'buffer')}"
        ) from exc
    texts, labels = _check_texts(texts, labels)
    cfg = kw.pop("cfg", None)
    valid = {f.name for f in dataclasses.fields(BufferConfig)}
    unknown = sorted(set(kw) - valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for method 'buffer'; valid: {', '.join(sorted(valid))}"
        )
    cfg = dataclasses.replace(cfg, **kw) if cfg is not None else BufferConfig(**kw)
    labels_from = "gold"
    if labels is None:
        labels = predict_proba(model, tokenizer, texts, max_length=getattr(cfg, "max_length", 128)).argmax(-1).tolist()
        labels_from = "prediction"
    out = buffer_importance(model, tokenizer, texts, labels, cfg)
    for ts in out:
        ts.method = ts.method or "buffer"
        ts.meta.setdefault("labels_from", labels_from)
        # scores are margins P(buffer + token) - P(full), important iff > -delta: highlight.render_html
        # colours margin + delta so that red means important
        ts.meta.setdefault("display_offset", float(cfg.delta))
        if labels_from == "prediction":
            ts.label = None
    return out


# ------------------------------------------------------------------------------------------------ registry

METHODS: dict[str, Callable[..., list[TokenScores]]] = {
    "occlusion": occlusion,
    "grad_x_input": grad_x_input,
    "integrated_gradients": integrated_gradients,
    "buffer": buffer,
}


def score_tokens(
    method: str, model, tokenizer, texts: Sequence[str], labels: Sequence[int] | None = None, **kw
) -> list[TokenScores]:
    """Score every WordPiece of every text with ``method`` (a name in :data:`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown importance method {method!r}; valid: {', '.join(METHODS)}")
    return METHODS[method](model, tokenizer, texts, labels, **kw)


# ----------------------------------------------------------------------------------------------- agreement


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def rank_agreement(a: Sequence[TokenScores], b: Sequence[TokenScores], min_tokens: int = 3) -> dict:
    """Spearman rank correlation of two methods' scores, per text, averaged.

    Texts are paired by position and must carry the same tokens. Texts shorter than ``min_tokens`` and
    texts where either method's scores are constant (no ranking, e.g. an all-zero buffer row) are
    skipped. Returns ``{"spearman": mean, "std": ..., "n_texts": used, "n_skipped": skipped}``.
    """
    if len(a) != len(b):
        raise ValueError(
            f"the two methods scored different numbers of texts ({len(a)} vs {len(b)}); "
            f"score the same list of texts with both"
        )
    rhos, skipped = [], 0
    for x, y in zip(a, b):
        if x.tokens != y.tokens:
            raise ValueError(
                f"token mismatch for text {x.text[:60]!r}: the methods tokenised it differently "
                f"(same tokenizer and max_length needed)"
            )
        if len(x.tokens) < min_tokens or np.ptp(x.scores) == 0 or np.ptp(y.scores) == 0:
            skipped += 1
            continue
        rx, ry = _ranks(x.scores), _ranks(y.scores)
        rhos.append(float(np.corrcoef(rx, ry)[0, 1]))
    return {
        "spearman": float(np.mean(rhos)) if rhos else math.nan,
        "std": float(np.std(rhos)) if rhos else math.nan,
        "n_texts": len(rhos),
        "n_skipped": skipped,
    }


def method_agreement(results: dict[str, Sequence[TokenScores]], min_tokens: int = 3):
    """Pairwise mean Spearman correlation between methods: a square ``DataFrame`` (methods x methods)."""
    import pandas as pd

    names = list(results)
    mat = pd.DataFrame(np.eye(len(names)), index=names, columns=names, dtype=float)
    for i, m in enumerate(names):
        for n in names[i + 1 :]:
            rho = rank_agreement(results[m], results[n], min_tokens=min_tokens)["spearman"]
            mat.loc[m, n] = mat.loc[n, m] = rho
    return mat
