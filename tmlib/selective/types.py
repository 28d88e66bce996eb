"""The one result type every token-importance method returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TokenScores:
    """Per-WordPiece importance for one text (special tokens excluded).

    ``scores``: float per token, higher = more important (each method documents its scale).
    ``important``: 0/1 per token where the method produces hard labels (buffer method, tagger), else None.
    ``label`` / ``pred``: gold and predicted class of the scorer, where known.
    """

    text: str
    tokens: list[str]
    scores: np.ndarray
    important: np.ndarray | None = None
    label: int | None = None
    pred: int | None = None
    method: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if len(self.scores) != len(self.tokens):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.scores)} scores")
        if self.important is not None:
            self.important = np.asarray(self.important, dtype=np.int8)
            if len(self.important) != len(self.tokens):
                raise ValueError(f"{len(self.tokens)} tokens but {len(self.important)} labels")

    @property
    def correct(self) -> bool | None:
        return None if self.label is None or self.pred is None else self.label == self.pred
