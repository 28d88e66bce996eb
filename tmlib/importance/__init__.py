"""Token importance: which tokens of a text matter for a classifier's decision.

Every method returns :class:`~tmlib.importance.types.TokenScores` (one per text, WordPiece level).

    buffer       the buffer method of Gu et al. 2020 (batched, plus a plain reference implementation)
    tagger       a token classifier that learns buffer labels and labels a large corpus
    attribution  leave-one-out occlusion, gradient x input, integrated gradients (captum)
    stopwords    the stop-word list whose tokens are never important
"""

from .types import TokenScores

__all__ = ["TokenScores"]
