"""The buffer method of Gu et al. 2020 (REFERENCE.md section 1): which tokens decide a sentence's class.

For a sentence ``t_1 .. t_n`` (WordPieces) with gold class ``y`` and a fine-tuned classifier (the
*scorer*):

1. ``orig = P(y | [CLS] t_1 .. t_n [SEP])``. If the scorer misclassifies the sentence (and
   ``only_correct``), every label is 0 and nothing else is computed.
2. The buffer starts EMPTY. For ``i = 1 .. n`` (the first token included): append ``t_i``,
   ``p_i = P(y | [CLS] buffer [SEP])``; if ``orig - p_i < delta`` token ``i`` is IMPORTANT and is
   popped from the buffer again, otherwise it stays. (One-sided: a candidate that overshoots ``orig``
   is important too.) This is the official rule (``data/sc_mask_gen.py``, ``SC.forward``).
3. Tokens of stop words are forced to 0 afterwards (officially: an important stop word is never
   masked); the buffer walk itself is unchanged by them.

Where tmlib offers another rule, it is a named :class:`BufferConfig` option; the defaults are the official
behaviour. :func:`compare_rules` measures an option's effect on the labels (the measured effects on MR are in
``docs/measurements.md``).

For aspect tasks every input is ``[CLS] aspect [SEP] <text or buffer> [SEP]`` (segment ids 0 / 1),
one walk per (text, aspect), labels for the text's tokens only; :func:`merge_aspects` then merges the
labels of one text's aspects (union), as the official ``ASC.forward`` does before masking.

Two implementations with identical results:

* :func:`buffer_importance_reference`: straight from the text above, one forward pass of batch 1 per
  token (plus one per sentence for ``orig``).
* :func:`buffer_importance`: sentences sorted by length and processed ``sentence_batch`` at a time; at
  step ``i`` the candidates ``buffer_s + t_i`` of EVERY still-active sentence ``s`` of the batch go
  through one forward pass per group of similar candidate length (buffers shrink where tokens are
  important, so one padded pass would compute mostly padding). Each sentence's walk is sequential, so a
  batch of ``B`` sentences costs ``max n`` steps of up to ``B`` rows instead of ``sum n`` passes of one row.

``TokenScores.scores`` carries the continuous margin ``p_i - orig`` (higher = the buffer plus this
token already reaches the full sentence's confidence; important iff ``> -delta``), the first token
included (``p_1 = P(y | [CLS] t_1 [SEP])``). Under ``first_token="keep"`` the first token is the
buffer seed, never tested: label 0, its score ``p_1 - orig`` for information only. Misclassified
sentences get scores 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from tmlib.selective.stopwords import resolve_stopwords, stopword_mask
from tmlib.selective.types import TokenScores
from tmlib.tasks.cls_forward import cls_logits
from tmlib.tasks.cls_forward import supports as cls_supported

FIRST_TOKEN_RULES = ("official", "keep")


@dataclass
class BufferConfig:
    """Options of the buffer method; the defaults are the official rule (REFERENCE.md section 1).

    ``first_token``
        ``"official"`` (default): the buffer starts empty and token 0 is tested with the one-token
        buffer ``[t_0]`` like any other token, popped again when important.
        ``"keep"``: tmlib's earlier rule: token 0 seeds the buffer, is never tested, label 0.
    ``stopwords``
        which tokens are forced to 0 after the walk (:func:`tmlib.selective.stopwords.stopword_mask`):
        ``"spacy"`` (default, official: spaCy's English list per WordPiece, incl. not / no / never),
        ``"spacy_words"`` (same list on whole words, ``##`` pieces inherit), ``"tmlib"`` (tmlib's
        earlier list: negations kept, punctuation zeroed), ``"none"``. The old bools still work:
        ``False`` -> ``"none"``, ``True`` -> ``"tmlib"`` (with a ``FutureWarning``).
    ``punctuation``
        also force pure-punctuation tokens to 0; ``None`` (default) = the list's convention (True for
        ``"tmlib"``, False for the spaCy lists, as in the official code where "." can be masked).

    :func:`compare_rules` measures each option's effect on the labels; the effects measured on MR are in
    ``docs/measurements.md``.

    ``mixed_precision``
        ``"bf16"`` runs every forward pass under bf16 autocast (probabilities are taken in fp32): faster,
        at the cost of a few labels near the ``delta`` threshold flipping (``benchmarks/bench_importance.py``;
        :func:`compare_rules` with ``mixed_precision="bf16"`` measures it on your data). Default ``"no"``: fp32.

    ``cls_only``
        the batched walk computes the last layer for the ``[CLS]`` position only, the one the classifier
        reads (:mod:`tmlib.tasks.cls_forward`; BERT classifiers, others use their own forward): the
        same logits up to float rounding, fewer matmul FLOPs (``benchmarks/bench_importance.py`` counts
        them). ``False``: the model's own forward. The reference always runs the model's own forward.

    Sentence splitting (official: spaCy's rule-based sentencizer) is :func:`tmlib.tasks.data.split_sentences`'
    ``splitter`` option (``"spacy"`` default, ``"regex"`` tmlib's earlier splitter).
    """

    delta: float = 0.01  # important iff P(gold|full) - P(gold|buffer+token) < delta (official: 0.01)
    max_length: int = 128  # WordPiece budget per input incl. specials (and the aspect); longer texts are
    # truncated
    sentence_batch: int = 64  # sentences walked together (batched version): rows per forward pass <= this
    only_correct: bool = True  # sentences the scorer misclassifies get all-zero labels
    first_token: str = "official"  # "official": token 0 tested and popped like any other
    # | "keep": never tested (old rule)
    stopwords: str = "spacy"  # stop list forced to 0: "spacy" (official) | "spacy_words" | "tmlib" (old) | "none"
    punctuation: bool | None = None  # also zero pure punctuation; None = the list's convention (tmlib: yes, spacy: no)
    progress: bool = True  # tqdm bar over sentence batches
    mixed_precision: str = "no"  # "no" / "fp32" | "auto" | "bf16" (autocast around the forward passes; CPU and CUDA)
    # | "fp16" (CUDA)
    cls_only: bool = True  # batched walk: last layer for [CLS] only (BERT classifiers; same logits, less work)

    def __post_init__(self):
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4 (got {self.max_length})")
        if self.sentence_batch < 1:
            raise ValueError(f"sentence_batch must be >= 1 (got {self.sentence_batch})")
        if self.first_token not in FIRST_TOKEN_RULES:
            raise ValueError(f"first_token must be one of {FIRST_TOKEN_RULES} (got {self.first_token!r})")
        self.stopwords = resolve_stopwords(self.stopwords)
        from tmlib.core.precision import resolve_fields

        resolve_fields(self, "mixed_precision")


# ---------------------------------------------------------------------------------------------- helpers

SENTENCE_SPLITS = ("spacy", "none")


def document_sentences(texts: Sequence[str], labels: Sequence[int]) -> tuple[list[str], list[int], list[int]]:
    """Each text cut into sentences by spaCy's rule-based English ``sentencizer``, as the official buffer stage
    (``data/sc_mask_gen.py``, ``SC.forward``) does before it scores anything: every sentence inherits its
    document's gold label, and the walk then labels the sentences the scorer classifies correctly. Returns
    ``(sentences, labels, document index of each sentence)``; a text with no sentence boundary stays whole."""
    from spacy.lang.en import English

    nlp = English()
    nlp.add_pipe("sentencizer")
    out_t, out_l, out_d = [], [], []
    for i, (doc, y) in enumerate(zip(nlp.pipe(texts, batch_size=256), labels)):
        sents = [s.text.strip() for s in doc.sents if s.text.strip()] or [doc.text]
        out_t += sents
        out_l += [int(y)] * len(sents)
        out_d += [i] * len(sents)
    return out_t, out_l, out_d


def _check_inputs(texts, labels, aspects):
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single string; wrap it: [text]")
    texts = list(texts)
    if labels is None:
        raise ValueError(
            "the buffer method needs the gold labels (one int per text); "
            "use tmlib.importance.attribution.buffer to fall back to the model's predictions"
        )
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
    ids: list[list[int]]  # content WordPiece ids per text (no specials), truncated
    prefix: list[list[int]]  # [CLS] (+ aspect + [SEP]) per text
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
            raise ValueError(
                f"aspect {i} is {len(asp[i])} tokens: nothing of the text fits in "
                f"max_length={cfg.max_length}; raise max_length or shorten the aspect"
            )
        row = list(row[:room])
        toks = tokenizer.convert_ids_to_tokens(row)
        stop = stopword_mask(toks, cfg.punctuation, cfg.stopwords)
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
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        att[r, : len(seq)] = 1
        if len(p) > 1:
            seg[r, len(p) : len(seq)] = 1
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "token_type_ids": seg.to(device)}


@torch.no_grad()  # not inference_mode: it turns autocast's weight cache off (see _autocast)
def _probs(model, batch: dict, labels: Sequence[int], cls_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """P(label | input) and the argmax class, per row; ``cls_only``: the last layer for [CLS] only
    (:func:`tmlib.tasks.cls_forward.cls_logits`)."""
    logits = (cls_logits(model, **batch) if cls_only else model(**batch).logits).float()
    p = torch.softmax(logits, -1)
    idx = torch.as_tensor(list(labels), device=p.device)
    return p[torch.arange(len(idx), device=p.device), idx].cpu().numpy(), logits.argmax(-1).cpu().numpy()


def _finish(
    prep: _Prepared,
    i: int,
    text: str,
    label: int,
    pred: int,
    orig: float,
    important: np.ndarray,
    scores: np.ndarray,
    cfg: BufferConfig,
    aspect: str | None,
    method: str,
) -> TokenScores:
    important = important.copy()
    important[prep.stop[i]] = 0
    meta = {"orig": float(orig), "delta": cfg.delta, "first_token": cfg.first_token, "stopwords": cfg.stopwords}
    if aspect is not None:
        meta["aspect"] = aspect
    return TokenScores(
        text=text,
        tokens=prep.tokens[i],
        scores=scores,
        important=important,
        label=label,
        pred=int(pred),
        method=method,
        meta=meta,
    )


def _length_groups(lengths: Sequence[int], slack: float = 2.0) -> list[np.ndarray]:
    """Row indices cut into groups of similar length: sorted, a new group whenever a row is more than
    ``slack`` times the group's shortest.

    Candidate buffers of one step differ a lot in length (a sentence with many important tokens keeps a
    short buffer), and padded positions cost as much as real ones; a small slack pads less but runs many small
    passes at a lower GEMM rate, a large one the reverse (the trade-off is measured in docs/performance.md)."""
    order = np.argsort(lengths, kind="stable")
    groups, start = [], 0
    for k in range(1, len(order) + 1):
        if k == len(order) or lengths[order[k]] > slack * lengths[order[start]]:
            groups.append(order[start:k])
            start = k
    return groups


def _device(model):
    return next(model.parameters()).device


def _autocast(cfg: BufferConfig, device):
    """The forward passes' precision context: inference mode for ``"no"``, else autocast, entered once around a
    whole walk so the cast weights are cached for all its passes (one cast per walk, not per pass).

    Under ``torch.inference_mode`` autocast's weight cache is off (every pass casts every weight again), so the
    walk runs under ``no_grad`` instead, also when the caller is in inference mode."""
    import contextlib

    from tmlib.core.precision import autocast, check_mixed_precision

    if check_mixed_precision(cfg.mixed_precision, device) == "no":
        return torch.inference_mode()  # fp32: the cheapest context per call
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.no_grad())
    stack.enter_context(autocast(cfg.mixed_precision, device))
    return stack


# ---------------------------------------------------------------------------------------- reference


def buffer_importance_reference(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    cfg: BufferConfig | None = None,
    aspects: Sequence[str] | None = None,
) -> list[TokenScores]:
    """The buffer method exactly as written: one forward pass (batch of 1) per token per sentence."""
    cfg = cfg or BufferConfig()
    texts, labels, aspects = _check_inputs(texts, labels, aspects)
    prep = _prepare(tokenizer, texts, aspects, cfg)
    sep, pad = tokenizer.sep_token_id, tokenizer.pad_token_id
    dev = _device(model)
    was_training = model.training
    model.eval()
    out = []
    with _autocast(cfg, dev):
        for i in tqdm(range(len(texts)), desc="buffer (reference)", disable=not cfg.progress, leave=False):
            toks, prefix, y = prep.ids[i], prep.prefix[i], labels[i]
            n = len(toks)
            important, scores = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.float32)
            p_full, pred = _probs(model, _inputs([(prefix, toks)], sep, pad, dev), [y])
            orig, pred = float(p_full[0]), int(pred[0])
            if n > 0 and (pred == y or not cfg.only_correct):
                buf: list[int] = []
                for j in range(n):
                    buf.append(toks[j])
                    p, _ = _probs(model, _inputs([(prefix, buf)], sep, pad, dev), [y])
                    scores[j] = p[0] - orig
                    if j == 0 and cfg.first_token == "keep":
                        continue  # the old rule: token 0 seeds the buffer untested
                    if orig - p[0] < cfg.delta:
                        important[j] = 1
                        buf.pop()
            out.append(
                _finish(
                    prep,
                    i,
                    texts[i],
                    y,
                    pred,
                    orig,
                    important,
                    scores,
                    cfg,
                    aspects[i] if aspects is not None else None,
                    "buffer_reference",
                )
            )
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------ batched


def buffer_importance(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    cfg: BufferConfig | None = None,
    aspects: Sequence[str] | None = None,
    report: Callable[[str], None] | None = None,
    report_every: float = 30.0,
) -> list[TokenScores]:
    """The buffer method, batched: at every step one forward pass holds the candidate buffers of all
    active sentences of a length-sorted batch of ``cfg.sentence_batch`` sentences.

    Returns one :class:`TokenScores` per text (input order), identical labels to
    :func:`buffer_importance_reference`. ``report(line)``: called every ``report_every`` seconds with how many
    sentences are done (a stage passes its log, so ``progress.log`` shows a long walk moving).
    """
    cfg = cfg or BufferConfig()
    texts, labels, aspects = _check_inputs(texts, labels, aspects)
    prep = _prepare(tokenizer, texts, aspects, cfg)
    sep, pad = tokenizer.sep_token_id, tokenizer.pad_token_id
    dev = _device(model)
    was_training = model.training
    model.eval()
    fast = cfg.cls_only and cls_supported(model)
    order = np.argsort([len(x) + len(p) for x, p in zip(prep.ids, prep.prefix)], kind="stable")
    results: list[TokenScores | None] = [None] * len(texts)
    batches = [order[k : k + cfg.sentence_batch] for k in range(0, len(order), cfg.sentence_batch)]
    import time

    last, done = time.perf_counter(), 0
    with _autocast(cfg, dev):
        for chunk in tqdm(batches, desc="buffer importance", disable=not cfg.progress, leave=False):
            if report is not None and time.perf_counter() - last >= report_every:
                report(f"buffer importance: {done} / {len(texts)} sentences")
                last = time.perf_counter()
            done += len(chunk)
            chunk = [int(c) for c in chunk]
            ys = [labels[c] for c in chunk]
            p_full, preds = _probs(
                model, _inputs([(prep.prefix[c], prep.ids[c]) for c in chunk], sep, pad, dev), ys, fast
            )
            n = {c: len(prep.ids[c]) for c in chunk}
            important = {c: np.zeros(n[c], dtype=np.int8) for c in chunk}
            scores = {c: np.zeros(n[c], dtype=np.float32) for c in chunk}
            orig = {c: float(p) for c, p in zip(chunk, p_full)}
            active = [c for c, y, pr in zip(chunk, ys, preds) if n[c] > 0 and (int(pr) == y or not cfg.only_correct)]
            buf: dict[int, list[int]] = {c: [] for c in active}
            step = 0
            while True:
                active = [c for c in active if n[c] > step]
                if not active:
                    break
                rows = [(prep.prefix[c], buf[c] + [prep.ids[c][step]]) for c in active]
                p = np.empty(len(rows), dtype=np.float32)
                for part in _length_groups([len(a) + len(b) for a, b in rows]):
                    p[part], _ = _probs(
                        model, _inputs([rows[r] for r in part], sep, pad, dev), [labels[active[r]] for r in part], fast
                    )
                for c, pc in zip(active, p):
                    scores[c][step] = pc - orig[c]
                    if orig[c] - pc < cfg.delta and not (step == 0 and cfg.first_token == "keep"):
                        important[c][step] = 1
                    else:
                        buf[c].append(prep.ids[c][step])
                step += 1
            for c, pr in zip(chunk, preds):
                results[c] = _finish(
                    prep,
                    c,
                    texts[c],
                    labels[c],
                    int(pr),
                    orig[c],
                    important[c],
                    scores[c],
                    cfg,
                    aspects[c] if aspects is not None else None,
                    "buffer",
                )
    model.train(was_training)
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------- rule comparison

_MASK_ONLY = {"stopwords", "punctuation"}  # options applied after the walk
# each non-official option alone, against the official rule (notebook 01's rule table, buffer_rules/rules.csv)
RULE_VARIANTS = ({"first_token": "keep"}, {"stopwords": "tmlib"}, {"stopwords": "none"}, {"stopwords": "spacy_words"})
_NO_EFFECT = {"progress", "sentence_batch"}  # options that cannot change a label (cls_only: rounding only)


def _describe(cfg: BufferConfig, keys) -> str:
    return ", ".join(f"{k}={getattr(cfg, k)!r}" for k in sorted(keys)) or "(same)"


def label_difference(a: Sequence[TokenScores], b: Sequence[TokenScores]) -> dict:
    """How two labellings of the same texts differ: sentences whose labels differ, tokens flipped
    (0 -> 1 and 1 -> 0), important tokens and rate under each, and how often token 0 is important."""
    if len(a) != len(b) or any(x.tokens != y.tokens for x, y in zip(a, b)):
        raise ValueError("the two labellings must cover the same texts with the same tokens")
    tok = sum(len(x.tokens) for x in a)
    ia = [np.asarray(x.important, dtype=bool) for x in a]
    ib = [np.asarray(y.important, dtype=bool) for y in b]
    up = sum(int((~x & y).sum()) for x, y in zip(ia, ib))
    down = sum(int((x & ~y).sum()) for x, y in zip(ia, ib))
    n_a, n_b = sum(int(x.sum()) for x in ia), sum(int(y.sum()) for y in ib)
    scored = sum(1 for x in a if x.correct)
    return {
        "sentences": len(a),
        "sentences_scored": scored,
        "tokens": tok,
        "sentences_differ": sum(1 for x, y in zip(ia, ib) if (x != y).any()),
        "tokens_flipped": up + down,
        "flipped_0_to_1": up,
        "flipped_1_to_0": down,
        "important_base": n_a,
        "important_variant": n_b,
        "rate_base": n_a / max(tok, 1),
        "rate_variant": n_b / max(tok, 1),
        "first_important_base": sum(int(x[:1].sum()) for x in ia),
        "first_important_variant": sum(int(y[:1].sum()) for y in ib),
    }


def compare_rules(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    base: BufferConfig | None = None,
    aspects: Sequence[str] | None = None,
    **variant,
):
    """Effect of one or more :class:`BufferConfig` options on the buffer labels.

    Labels ``texts`` under ``base`` (default: the official rule) and under ``replace(base, **variant)``
    and returns a one-row ``pandas.DataFrame`` (columns of :func:`label_difference` plus ``base`` /
    ``variant``, the options that differ). Options applied after the walk (``stopwords``,
    ``punctuation``) reuse one walk for both labellings. Example::

        compare_rules(clf, tok, sents, labels, BufferConfig(), first_token="keep")
        compare_rules(clf, tok, sents, labels, BufferConfig(), stopwords="tmlib")

    Several variants against one base: :func:`compare_rule_variants` (each distinct walk computed once).
    """
    return compare_rule_variants(model, tokenizer, texts, labels, base, [variant], aspects)


def compare_rule_variants(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    base: BufferConfig | None = None,
    variants: Sequence[dict] = (),
    aspects: Sequence[str] | None = None,
):
    """:func:`compare_rules` for a list of variants (one row each), walking each distinct rule once: the
    labels of a configuration are its walk (everything but the stop-word options) with its stop-word mask
    applied, so the base and every stop-word variant share one walk (notebook 01's four rule variants:
    2 walks instead of 5)."""
    import pandas as pd

    base = base or BufferConfig()
    known = {f.name for f in fields(BufferConfig)}
    walks: dict[tuple, list[TokenScores]] = {}

    def labelled(cfg: BufferConfig) -> list[TokenScores]:
        raw_cfg = replace(cfg, stopwords="none", punctuation=False)
        key = tuple(
            (f.name, getattr(raw_cfg, f.name)) for f in fields(BufferConfig) if f.name not in _MASK_ONLY | _NO_EFFECT
        )
        if key not in walks:
            walks[key] = buffer_importance(model, tokenizer, texts, labels, raw_cfg, aspects)
        out = []
        for ts in walks[key]:
            imp = ts.important.copy()
            imp[stopword_mask(ts.tokens, cfg.punctuation, cfg.stopwords)] = 0
            out.append(replace(ts, important=imp, meta={**ts.meta, "stopwords": cfg.stopwords}))
        return out

    for variant in variants:  # every variant checked before the first walk
        unknown = set(variant) - known
        if unknown:
            raise TypeError(f"unknown BufferConfig option(s): {sorted(unknown)}")
    base_labels = labelled(base)
    rows = []
    for variant in variants:
        other = replace(base, **variant)
        changed = {k for k in variant if getattr(other, k) != getattr(base, k)}
        rows.append(
            {
                "base": _describe(base, changed),
                "variant": _describe(other, changed),
                **label_difference(base_labels, labelled(other)),
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ long texts


def expand_sentences(
    texts: Sequence[str],
    labels: Sequence[int],
    splitter: Callable[[str], list[str]] | None = None,
    aspects: Sequence[str] | None = None,
):
    """Split long texts into sentences for the buffer method (REFERENCE step 2); each sentence
    inherits its text's label (and aspect). Returns ``(sentences, labels, aspects_or_None, source_index)``.

    ``splitter`` defaults to :func:`tmlib.tasks.data.split_sentences` (rule based, cased English); for the
    lowercased, one-sentence-per-line Pang&Lee reviews pass ``lambda t: t.split("\\n")``.
    """
    if splitter is None:
        from tmlib.tasks.data import split_sentences as splitter
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


# ------------------------------------------------------------------------------------ aspect tasks


def merge_aspects(scores: Sequence[TokenScores]) -> list[TokenScores]:
    """One :class:`TokenScores` per distinct text: the labels of the text's aspects merged (union).

    The official code (``data/sc_mask_gen.py``, ``ASC.forward``) walks the buffer once per (text, aspect)
    on ``[CLS] aspect [SEP] buffer [SEP]`` and adds every important position to ONE set per text; the
    text's tokens are then masked (and the tagger learns them) without the aspect. So a token is
    important when it is important for any of the text's aspects; an aspect the scorer misclassified
    adds nothing (its labels are all 0 under ``only_correct``), and a text none of whose aspects is
    classified correctly keeps all-zero labels. Stop words are already 0 in every input, so in the
    union too.

    Texts are grouped by their exact string, in order of first appearance. ``scores`` of the merged
    row are the per-token maximum over the aspects; ``label`` / ``pred`` are None (one per aspect in
    ``meta["labels"]`` / ``meta["preds"]``), ``meta["correct"]`` says whether any aspect was classified
    correctly. Different aspect lengths may truncate a long text differently: the longest token list
    is kept and each aspect's labels cover its own prefix of it.
    """
    groups: dict[str, list[TokenScores]] = {}
    for ts in scores:
        if ts.important is None:
            raise ValueError(f"TokenScores from method {ts.method!r} have no hard labels to merge")
        groups.setdefault(ts.text, []).append(ts)
    out = []
    for text, members in groups.items():
        longest = max(members, key=lambda t: len(t.tokens))
        n = len(longest.tokens)
        important = np.zeros(n, dtype=np.int8)
        best = np.full(n, -np.inf, dtype=np.float32)
        for ts in members:
            k = len(ts.tokens)
            if list(ts.tokens) != list(longest.tokens[:k]):
                raise ValueError(
                    f"the aspects of one text were tokenized differently ({text[:60]!r}); merge labels of "
                    f"one tokenizer's output"
                )
            important[:k] |= np.asarray(ts.important, dtype=np.int8)
            best[:k] = np.maximum(best[:k], np.asarray(ts.scores, dtype=np.float32))
        best[~np.isfinite(best)] = 0.0
        correct = [ts.correct for ts in members]
        meta = {
            "aspects": [ts.meta.get("aspect") for ts in members],
            "labels": [ts.label for ts in members],
            "preds": [ts.pred for ts in members],
            "correct": any(c is True for c in correct),
            "merged": len(members),
        }
        for k in ("delta", "first_token", "stopwords"):
            if k in longest.meta:
                meta[k] = longest.meta[k]
        out.append(
            TokenScores(
                text=text,
                tokens=list(longest.tokens),
                scores=best,
                important=important,
                method=f"{longest.method or 'buffer'}+aspects",
                meta=meta,
            )
        )
    return out


def has_aspects(scores: Sequence[TokenScores]) -> bool:
    """Whether ``scores`` came from aspect inputs (any carries ``meta["aspect"]``)."""
    return any("aspect" in (ts.meta or {}) for ts in scores)
