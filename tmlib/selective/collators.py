"""MLM collators for TaskPT: selective masking (Gu et al. 2020) and its same-count random control.

Examples are dicts with ``input_ids`` (with special tokens) plus, per token and aligned with
``input_ids``:

* ``importance``  float score (higher = more important; e.g. the tagger's P(important)), and
* ``important``   0/1 predicted label (special tokens: 0),
* ``sent_ids``    optional sentence index per token, for rows that pack several sentences; caps are
                  then applied per sentence (special tokens: -1). Without it a row is one sentence.

Per sentence of ``n`` maskable tokens (special tokens and padding are never maskable):

* :class:`SelectiveMaskingCollator` masks the important tokens ranked by score, at most
  ``max(1, int(mlm_probability * n))`` of them. Like the official code a sentence with no important
  token gets NO mask, unless ``fallback="random"``, which then masks ``cap`` random tokens (an option
  we add; it changes the method, so it is off by default).
* :class:`RandomCountMaskingCollator` (the control) masks exactly as MANY tokens per sentence as the
  selective collator would, at uniformly random positions.
* plain random 15% masking is Hugging Face's :class:`DataCollatorForLanguageModeling` itself.

Masked positions are replaced 80% ``[MASK]`` / 10% random token / 10% kept (``mask_replace_prob``,
``random_replace_prob``), labels are -100 elsewhere. :func:`selective_positions` and
:func:`random_positions` are the pure position pickers the collators use (also used by widgets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, DataCollatorForTokenClassification

FALLBACKS = (None, "random")


def mask_cap(n: int, mask_ratio: float = 0.15) -> int:
    """Tokens to mask in a sentence of ``n`` maskable tokens: ``max(1, int(mask_ratio * n))`` (0 if n == 0)."""
    return 0 if n <= 0 else max(1, int(mask_ratio * n))


def random_positions(candidates_len: int, count: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``min(count, candidates_len)`` distinct positions in ``range(candidates_len)``, uniformly, sorted."""
    rng = rng if rng is not None else np.random.default_rng()
    count = max(0, min(int(count), int(candidates_len)))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(rng.choice(int(candidates_len), size=count, replace=False)).astype(np.int64)


def selective_positions(
    scores,
    important=None,
    n_tokens_or_len=None,
    mask_ratio: float = 0.15,
    fallback: str | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Positions (sorted, into ``range(n)``) the selective collator masks in one sentence.

    ``scores``: per-token importance (higher first); ``important``: 0/1 per token (None: ``scores > 0.5``);
    ``n_tokens_or_len``: the sentence length ``n`` (an int, or the token list; default ``len(scores)``).
    The top-scored important tokens are taken, at most ``mask_cap(n, mask_ratio)``; ties keep the
    earlier token. With no important token: nothing, or ``cap`` random positions if ``fallback="random"``.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be None (official: no mask) or 'random', got {fallback!r}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = (
        len(scores)
        if n_tokens_or_len is None
        else (int(n_tokens_or_len) if np.isscalar(n_tokens_or_len) else len(n_tokens_or_len))
    )
    if n != len(scores):
        raise ValueError(f"{len(scores)} scores for a sentence of {n} tokens; pass one score per token")
    imp = scores > 0.5 if important is None else np.asarray(important).reshape(-1).astype(bool)
    if len(imp) != n:
        raise ValueError(f"{len(imp)} important labels for a sentence of {n} tokens")
    cap = mask_cap(n, mask_ratio)
    cand = np.flatnonzero(imp)
    if len(cand) == 0:
        return random_positions(n, cap, rng) if fallback == "random" else np.zeros(0, dtype=np.int64)
    ranked = cand[np.argsort(-scores[cand], kind="stable")]
    return np.sort(ranked[:cap]).astype(np.int64)


def sentence_masks(
    scores: Sequence[Sequence[float]],
    important: Sequence[Sequence[int]],
    method: str,
    mask_ratio: float = 0.15,
    fallback: str | None = None,
    seed: int = 12345,
) -> list[list[int]]:
    """0/1 per token of each whole sentence: where the official data writer masks it (thunlp/SelectiveMasking
    ``sc_mask_gen.py``, ``ModelGen.forward``), before the sentence is packed into a row and trimmed. ``method``
    "selective": the important tokens ranked by ``scores``, at most ``mask_cap(len(sentence))``; "random": as many
    tokens, uniformly among all of the sentence's positions. Every token is a candidate, [UNK] included (the
    row-level collators skip special tokens)."""
    if method not in ("selective", "random"):
        raise ValueError(f"sentence masks are drawn for 'selective' or 'random', got {method!r}")
    rng = np.random.default_rng(seed)
    out = []
    for sc, imp in zip(scores, important):
        pos = selective_positions(sc, imp, len(sc), mask_ratio, fallback, rng)
        if method == "random":
            pos = random_positions(len(sc), len(pos), rng)
        drawn = np.zeros(len(sc), dtype=np.int8)
        drawn[pos] = 1
        out.append(drawn.tolist())
    return out


def _pad_field(rows: Sequence[Sequence[Any]], width: int, fill, dtype) -> np.ndarray:
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class _ResumableRNG:
    """``state_dict``/``load_state_dict`` of the collator's random generators, saved in training
    checkpoints so a resumed run draws the same masks as an uninterrupted one."""

    def state_dict(self) -> dict:
        gen = getattr(self, "generator", None)
        rng = getattr(self, "_rng", None)
        return {
            "torch": gen.get_state() if isinstance(gen, torch.Generator) else None,
            "numpy": rng.bit_generator.state if rng is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("torch") is not None:
            if getattr(self, "generator", None) is None:
                self.create_rng()
            self.generator.set_state(state["torch"])
        if state.get("numpy") is not None:
            self._rng.bit_generator.state = state["numpy"]


@dataclass
class SelectiveMaskingCollator(_ResumableRNG, DataCollatorForLanguageModeling):
    """Selective masking: per sentence the top-scored predicted-important tokens, capped at
    ``max(1, int(mlm_probability * n))``; ``fallback="random"`` masks ``cap`` random tokens in sentences
    without any important token (default None = no mask, as in the official code). ``seed`` makes the
    masks reproducible (position RNG and the 80/10/10 RNG)."""

    fallback: str | None = None
    score_key: str = "importance"
    label_key: str = "important"

    def __post_init__(self):
        super().__post_init__()
        if not self.mlm:
            raise ValueError("selective masking is a masked-LM collator; mlm must be True")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be None (official: no mask) or 'random', got {self.fallback!r}")
        self._rng = np.random.default_rng(self.seed)

    # ------------------------------------------------------------------ position choice (overridable)
    def _sentence_positions(self, scores: np.ndarray, important: np.ndarray) -> np.ndarray:
        return selective_positions(scores, important, len(scores), self.mlm_probability, self.fallback, self._rng)

    # ------------------------------------------------------------------------------------- batching
    def torch_call(self, examples: list[dict]) -> dict:
        if not examples or not isinstance(examples[0], dict):
            raise TypeError(
                "SelectiveMaskingCollator needs dict examples with input_ids, "
                f"{self.score_key!r} and {self.label_key!r} (see tmlib.selective.tagger.label_corpus)"
            )
        if self.seed is not None and self.generator is None:
            self.create_rng()
        scores, labels, sents = [], [], []
        for i, ex in enumerate(examples):
            if self.score_key not in ex or self.label_key not in ex:
                raise KeyError(
                    f"example {i} has no {self.score_key!r}/{self.label_key!r} field; label the corpus with "
                    f"tmlib.selective.tagger.label_corpus first (keys: {sorted(ex)})"
                )
            n = len(ex["input_ids"])
            if len(ex[self.score_key]) != n or len(ex[self.label_key]) != n:
                raise ValueError(
                    f"example {i}: {n} input_ids but {len(ex[self.score_key])} scores / "
                    f"{len(ex[self.label_key])} labels; they must be aligned per token"
                )
            scores.append(ex[self.score_key])
            labels.append(ex[self.label_key])
            sents.append(ex.get("sent_ids"))
        keep = ("input_ids", "attention_mask", "token_type_ids")
        batch = self.tokenizer.pad(
            [{k: ex[k] for k in keep if k in ex} for ex in examples],
            return_tensors="pt",
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        ids = batch["input_ids"]
        width = ids.shape[1]
        special = np.isin(ids.numpy(), self.tokenizer.all_special_ids)
        score_arr = _pad_field(scores, width, 0.0, np.float64)
        label_arr = _pad_field(labels, width, 0, np.int8)
        masked = np.zeros(ids.shape, dtype=bool)
        for r in range(len(examples)):
            maskable = np.flatnonzero(~special[r])
            if sents[r] is None:
                groups = [maskable]
            else:
                sid = _pad_field([sents[r]], width, -1, np.int64)[0][maskable]
                groups = [maskable[sid == s] for s in np.unique(sid) if s >= 0]
            for pos in groups:
                if len(pos):
                    masked[r, pos[self._sentence_positions(score_arr[r, pos], label_arr[r, pos])]] = True
        batch["input_ids"], batch["labels"] = self.apply_masks(ids, torch.from_numpy(masked))
        return batch

    def apply_masks(self, inputs: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels -100 off ``masked``; on it 80% [MASK] / 10% random token / 10% unchanged (HF's scheme)."""
        inputs = inputs.clone()
        labels = inputs.clone()
        labels[~masked] = -100
        g = self.generator
        replaced = torch.bernoulli(torch.full(labels.shape, self.mask_replace_prob), generator=g).bool() & masked
        inputs[replaced] = self.tokenizer.mask_token_id
        rest = 1.0 - self.mask_replace_prob
        if self.random_replace_prob > 0 and rest > 0:
            rnd = torch.bernoulli(torch.full(labels.shape, self.random_replace_prob / rest), generator=g).bool()
            rnd &= masked & ~replaced
            words = torch.randint(len(self.tokenizer), labels.shape, dtype=torch.long, generator=g)
            inputs[rnd] = words[rnd]
        return inputs, labels

    def torch_mask_tokens(self, inputs, special_tokens_mask=None, offset_mapping=None):  # pragma: no cover
        raise NotImplementedError("selective masking needs per-token importance: call the collator on examples")


@dataclass
class RandomCountMaskingCollator(SelectiveMaskingCollator):
    """The control: per sentence exactly as many masked tokens as :class:`SelectiveMaskingCollator`
    (same ``fallback``) would mask, at uniformly random maskable positions."""

    def _sentence_positions(self, scores: np.ndarray, important: np.ndarray) -> np.ndarray:
        count = len(selective_positions(scores, important, len(scores), self.mlm_probability, self.fallback, self._rng))
        return random_positions(len(scores), count, self._rng)


@dataclass
class PlainMLMCollator(_ResumableRNG, DataCollatorForLanguageModeling):
    """Hugging Face's random masking (``mlm_probability`` of the non-special tokens, 80/10/10), accepting
    the packed rows of :func:`tmlib.selective.mlm.pack_corpus` (extra per-token fields are dropped)."""

    def torch_call(self, examples):
        keep = ("input_ids", "attention_mask", "token_type_ids")
        if examples and isinstance(examples[0], dict):
            examples = [{k: ex[k] for k in keep if k in ex} for ex in examples]
        return super().torch_call(examples)


class StaticMLMCollator(DataCollatorForTokenClassification):
    """Pads rows whose masks were drawn once (:func:`tmlib.selective.mlm.draw_static_masks`): ``input_ids`` with the pad
    token, ``labels`` with -100 (transformers' token-classification padding); draws nothing, so every pass over the
    data sees the same masked positions (the official TaskPT data). ``state_dict`` is empty: a resumed run needs no
    collator state."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer=tokenizer, label_pad_token_id=-100, return_tensors="pt")

    def __call__(self, examples: list[dict]) -> dict:
        if not examples or "labels" not in examples[0]:
            raise KeyError(
                "StaticMLMCollator needs rows with input_ids and labels (tmlib.selective.mlm.draw_static_masks)"
            )
        return super().__call__([{"input_ids": ex["input_ids"], "labels": ex["labels"]} for ex in examples])

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
