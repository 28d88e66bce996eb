"""The buffer method of Gu et al. 2020 (REFERENCE.md section 1): which tokens decide a sentence's class.

For a sentence ``t_1 .. t_n`` (WordPieces) with gold class ``y`` and a fine-tuned classifier (the
*scorer*):

1. ``orig = P(y | [CLS] t_1 .. t_n [SEP])``. If the scorer misclassifies the sentence (and
   ``only_correct``), every label is 0 and nothing else is computed.
2. The buffer starts as ``[t_1]``. For ``i = 2 .. n``: ``p_i = P(y | [CLS] buffer + t_i [SEP])``.
   If ``orig - p_i < delta`` token ``i`` is IMPORTANT and is NOT appended; otherwise it is appended to
   the buffer. (One-sided: a candidate that overshoots ``orig`` is important too.)
3. Tokens of stop words (``tmlib.importance.stopwords``) are forced to 0 afterwards; the buffer walk
   itself is unchanged by them.

For aspect tasks every input is ``[CLS] aspect [SEP] <text or buffer> [SEP]`` (segment ids 0 / 1).

Two implementations with identical results:

* :func:`buffer_importance_reference`: straight from the text above, one forward pass of batch 1 per
  token (plus one per sentence for ``orig``).
* :func:`buffer_importance`: sentences sorted by length and processed ``sentence_batch`` at a time; at
  step ``i`` the candidates ``buffer_s + t_i`` of EVERY still-active sentence ``s`` of the batch go
  through one forward pass per group of similar candidate length (buffers shrink where tokens are
  important, so one padded pass would compute mostly padding). Each sentence's walk is sequential, so a
  batch of ``B`` sentences costs ``max n`` steps of up to ``B`` rows instead of ``sum n`` passes of one row.

``TokenScores.scores`` carries the continuous margin ``p_i - orig`` (higher = the buffer plus this
token already reaches the full sentence's confidence; important iff ``> -delta``). The first token
(the buffer seed) is never tested: label 0, score ``p_1 - orig`` where ``p_1 = P(y | [CLS] t_1 [SEP])``
for information. Misclassified sentences get scores 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .stopwords import stopword_mask
from .types import TokenScores


@dataclass
class BufferConfig:
    delta: float = 0.01          # important iff P(gold|full) - P(gold|buffer+token) < delta (official: 0.01)
    max_length: int = 128        # WordPiece budget per input incl. specials (and the aspect); longer texts are truncated
    sentence_batch: int = 64     # sentences walked together (batched version): rows per forward pass <= this
    only_correct: bool = True    # sentences the scorer misclassifies get all-zero labels
    stopwords: bool = True       # force stop-word tokens to 0
    punctuation: bool = True     # count pure-punctuation tokens as stop words
    progress: bool = True        # tqdm bar over sentence batches

    def __post_init__(self):
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4 (got {self.max_length})")
        if self.sentence_batch < 1:
            raise ValueError(f"sentence_batch must be >= 1 (got {self.sentence_batch})")


# ---------------------------------------------------------------------------------------------- helpers

def _check_inputs(texts, labels, aspects):
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single string; wrap it: [text]")
    texts = list(texts)
    if labels is None:
        raise ValueError("the buffer method needs the gold labels (one int per text); "
                         "use tmlib.importance.attribution.buffer to fall back to the model's predictions")
    labels = [int(x) for x in labels]
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels; pass one label per text")
    if aspects is not None:
        aspects = list(aspects)
        if len(aspects) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(aspects)} aspects; pass one aspect per text (or None)")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not a string")
    return texts, labels, aspects


@dataclass
class _Prepared:
    ids: list[list[int]]        # content WordPiece ids per text (no specials), truncated
    prefix: list[list[int]]     # [CLS] (+ aspect + [SEP]) per text
    tokens: list[list[str]]
    stop: list[np.ndarray]


def _prepare(tokenizer, texts, aspects, cfg: BufferConfig) -> _Prepared:
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ValueError("the buffer method needs a BERT-style tokenizer with [CLS] and [SEP] tokens")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    asp = tokenizer(aspects, add_special_tokens=False)["input_ids"] if aspects is not None else None
    out = _Prepared([], [], [], [])
    for i, row in enumerate(ids):
        prefix = [cls_id] + (list(asp[i]) + [sep_id] if asp is not None else [])
        room = cfg.max_length - len(prefix) - 1
        if room < 1:
            raise ValueError(f"aspect {i} is {len(asp[i])} tokens: nothing of the text fits in max_length={cfg.max_length}; "
                             f"raise max_length or shorten the aspect")
        row = list(row[:room])
        toks = tokenizer.convert_ids_to_tokens(row)
        stop = stopword_mask(toks, cfg.punctuation) if cfg.stopwords else np.zeros(len(toks), dtype=bool)
        out.ids.append(row)
        out.prefix.append(prefix)
        out.tokens.append(toks)
        out.stop.append(stop)
    return out


def _inputs(rows: list[tuple[list[int], list[int]]], sep_id: int, pad_id: int, device) -> dict:
    """Pad ``(prefix, body)`` pairs into ``[prefix] body [SEP]`` inputs; segment 1 for the body when the
    prefix holds an aspect (``[CLS] aspect [SEP]``)."""
    lens = [len(p) + len(b) + 1 for p, b in rows]
    width = max(lens)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (p, b) in enumerate(rows):
        seq = p + b + [sep_id]
        ids[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        att[r, :len(seq)] = 1
        if len(p) > 1:
            seg[r, len(p):len(seq)] = 1
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "token_type_ids": seg.to(device)}


@torch.inference_mode()
def _probs(model, batch: dict, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """P(label | input) and the argmax class, per row."""
    logits = model(**batch).logits.float()
    p = torch.softmax(logits, -1)
    idx = torch.as_tensor(list(labels), device=p.device)
    return p[torch.arange(len(idx), device=p.device), idx].cpu().numpy(), logits.argmax(-1).cpu().numpy()


def _finish(prep: _Prepared, i: int, text: str, label: int, pred: int, orig: float, important: np.ndarray,
            scores: np.ndarray, cfg: BufferConfig, aspect: str | None, method: str) -> TokenScores:
    important = important.copy()
    important[prep.stop[i]] = 0
    meta = {"orig": float(orig), "delta": cfg.delta}
    if aspect is not None:
        meta["aspect"] = aspect
    return TokenScores(text=text, tokens=prep.tokens[i], scores=scores, important=important, label=label,
                       pred=int(pred), method=method, meta=meta)


def _length_groups(lengths: Sequence[int], slack: float = 2.0) -> list[np.ndarray]:
    """Row indices cut into groups of similar length: sorted, a new group whenever a row is more than
    ``slack`` times the group's shortest.

    Candidate buffers of one step differ a lot in length (a sentence with many important tokens keeps a
    short buffer), and padded positions cost as much as real ones: one pass over all rows computed 2.6x
    the positions of the reference (MiniLM, 64 MR sentences). Measured there: slack 1.25 cuts that to
    1.14x but its many small passes run at half the GEMM rate (3.9 s); slack 2 gives 1.42x in fewer,
    fuller passes (3.1 s, vs 4.5 s for one pass per step)."""
    order = np.argsort(lengths, kind="stable")
    groups, start = [], 0
    for k in range(1, len(order) + 1):
        if k == len(order) or lengths[order[k]] > slack * lengths[order[start]]:
            groups.append(order[start:k])
            start = k
    return groups


def _device(model):
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------- reference

def buffer_importance_reference(model, tokenizer, texts: Sequence[str], labels: Sequence[int],
                                cfg: BufferConfig | None = None, aspects: Sequence[str] | None = None) -> list[TokenScores]:
    """The buffer method exactly as written: one forward pass (batch of 1) per token per sentence."""
    cfg = cfg or BufferConfig()
    texts, labels, aspects = _check_inputs(texts, labels, aspects)
    prep = _prepare(tokenizer, texts, aspects, cfg)
    sep, pad = tokenizer.sep_token_id, tokenizer.pad_token_id
    dev = _device(model)
    was_training = model.training
    model.eval()
    out = []
    for i in tqdm(range(len(texts)), desc="buffer (reference)", disable=not cfg.progress, leave=False):
        toks, prefix, y = prep.ids[i], prep.prefix[i], labels[i]
        n = len(toks)
        important, scores = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.float32)
        p_full, pred = _probs(model, _inputs([(prefix, toks)], sep, pad, dev), [y])
        orig, pred = float(p_full[0]), int(pred[0])
        if n > 0 and (pred == y or not cfg.only_correct):
            p1, _ = _probs(model, _inputs([(prefix, toks[:1])], sep, pad, dev), [y])
            scores[0] = p1[0] - orig
            buf = [toks[0]]
            for j in range(1, n):
                p, _ = _probs(model, _inputs([(prefix, buf + [toks[j]])], sep, pad, dev), [y])
                scores[j] = p[0] - orig
                if orig - p[0] < cfg.delta:
                    important[j] = 1
                else:
                    buf.append(toks[j])
        out.append(_finish(prep, i, texts[i], y, pred, orig, important, scores, cfg,
                           aspects[i] if aspects is not None else None, "buffer_reference"))
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------ batched

def buffer_importance(model, tokenizer, texts: Sequence[str], labels: Sequence[int], cfg: BufferConfig | None = None,
                      aspects: Sequence[str] | None = None) -> list[TokenScores]:
    """The buffer method, batched: at every step one forward pass holds the candidate buffers of all
    active sentences of a length-sorted batch of ``cfg.sentence_batch`` sentences.

    Returns one :class:`TokenScores` per text (input order), identical labels to
    :func:`buffer_importance_reference`.
    """
    cfg = cfg or BufferConfig()
    texts, labels, aspects = _check_inputs(texts, labels, aspects)
    prep = _prepare(tokenizer, texts, aspects, cfg)
    sep, pad = tokenizer.sep_token_id, tokenizer.pad_token_id
    dev = _device(model)
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) + len(p) for x, p in zip(prep.ids, prep.prefix)], kind="stable")
    results: list[TokenScores | None] = [None] * len(texts)
    batches = [order[k:k + cfg.sentence_batch] for k in range(0, len(order), cfg.sentence_batch)]
    for chunk in tqdm(batches, desc="buffer importance", disable=not cfg.progress, leave=False):
        chunk = [int(c) for c in chunk]
        ys = [labels[c] for c in chunk]
        p_full, preds = _probs(model, _inputs([(prep.prefix[c], prep.ids[c]) for c in chunk], sep, pad, dev), ys)
        n = {c: len(prep.ids[c]) for c in chunk}
        important = {c: np.zeros(n[c], dtype=np.int8) for c in chunk}
        scores = {c: np.zeros(n[c], dtype=np.float32) for c in chunk}
        orig = {c: float(p) for c, p in zip(chunk, p_full)}
        active = [c for c, y, pr in zip(chunk, ys, preds) if n[c] > 0 and (int(pr) == y or not cfg.only_correct)]
        buf = {c: [prep.ids[c][0]] for c in active}
        if active:  # the seed token's own probability (information only, never labelled)
            p1, _ = _probs(model, _inputs([(prep.prefix[c], buf[c]) for c in active], sep, pad, dev),
                           [labels[c] for c in active])
            for c, p in zip(active, p1):
                scores[c][0] = p - orig[c]
        step = 1
        while True:
            active = [c for c in active if n[c] > step]
            if not active:
                break
            rows = [(prep.prefix[c], buf[c] + [prep.ids[c][step]]) for c in active]
            p = np.empty(len(rows), dtype=np.float32)
            for part in _length_groups([len(a) + len(b) for a, b in rows]):
                p[part], _ = _probs(model, _inputs([rows[r] for r in part], sep, pad, dev), [labels[active[r]] for r in part])
            for c, pc in zip(active, p):
                scores[c][step] = pc - orig[c]
                if orig[c] - pc < cfg.delta:
                    important[c][step] = 1
                else:
                    buf[c].append(prep.ids[c][step])
            step += 1
        for c, pr in zip(chunk, preds):
            results[c] = _finish(prep, c, texts[c], labels[c], int(pr), orig[c], important[c], scores[c], cfg,
                                 aspects[c] if aspects is not None else None, "buffer")
    model.train(was_training)
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ long texts

def expand_sentences(texts: Sequence[str], labels: Sequence[int], splitter: Callable[[str], list[str]] | None = None,
                     aspects: Sequence[str] | None = None):
    """Split long texts into sentences for the buffer method (REFERENCE step 2); each sentence
    inherits its text's label (and aspect). Returns ``(sentences, labels, aspects_or_None, source_index)``.

    ``splitter`` defaults to :func:`tmlib.data.split_sentences` (rule based, cased English); for the
    lowercased, one-sentence-per-line Pang&Lee reviews pass ``lambda t: t.split("\\n")``.
    """
    if splitter is None:
        from ..data import split_sentences as splitter
    sents, labs, asps, src = [], [], [] if aspects is not None else None, []
    for i, (t, y) in enumerate(zip(texts, labels)):
        for s in splitter(t):
            if s.strip():
                sents.append(s)
                labs.append(int(y))
                src.append(i)
                if asps is not None:
                    asps.append(aspects[i])
    return sents, labs, asps, src
