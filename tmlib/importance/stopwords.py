"""Stop words: the function words whose tokens are never important (buffer labels force them to 0).

The list is our own: ~150 common English function words (articles, pronouns, auxiliaries,
prepositions, conjunctions, a few frequent adverbs) plus the clitic pieces WordPiece splits off
(``'s``, ``n't`` -> ``n``, ``t``). Negations that carry sentiment ("not", "no", "never") are kept
OUT of the list on purpose: for a sentiment task they can be exactly the tokens that matter.

WordPiece level: ``##`` continuation pieces belong to the word they continue, so ``["the", "##re"]``
is one word "there" (a stop word: both pieces are stop tokens) and ``["un", "##til"]`` is "until".

    >>> stopword_mask(["the", "film", "is", "un", "##watch", "##able", "."])
    array([ True, False,  True, False, False, False,  True])
"""
from __future__ import annotations

import string
from typing import Sequence

import numpy as np

STOPWORDS: frozenset[str] = frozenset("""
a an the this that these those there here
i me my mine myself we us our ours ourselves you your yours yourself yourselves
he him his himself she her hers herself it its itself they them their theirs themselves
who whom whose which what whatever whoever
am is are was were be been being have has had having do does did doing
will would shall should can could may might must ought
of at by for with about against between into through during before after above below
to from up down in out on off over under again further onto upon within without toward towards
and but or nor so yet if then else than because as until while although though unless whereas
when where why how all any both each few more most other some such only own same
too very just also even still s t d ll m o re ve y
i'm it's don't can't won't
one ones once ever every either neither per via
what's let let's
""".split())

# single characters WordPiece produces for punctuation and symbols
PUNCTUATION: frozenset[str] = frozenset(string.punctuation) | frozenset({"``", "''", "--", "...", "-lrb-", "-rrb-"})


def word_spans(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """``(start, end)`` index spans of the words formed by WordPiece tokens (``##`` continues a word)."""
    spans: list[tuple[int, int]] = []
    for i, tok in enumerate(tokens):
        if tok.startswith("##") and spans:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def is_stopword(word: str, punctuation: bool = True) -> bool:
    """Whether a whole word (lowercased here) is a stop word, or pure punctuation when ``punctuation``."""
    w = word.lower()
    if w in STOPWORDS:
        return True
    return punctuation and bool(w) and all(ch in PUNCTUATION for ch in w)


def stopword_mask(tokens: Sequence[str], punctuation: bool = True) -> np.ndarray:
    """Boolean per WordPiece token: True where the token belongs to a stop word (or punctuation).

    ``##`` continuation pieces inherit the status of the whole word they are part of.
    """
    out = np.zeros(len(tokens), dtype=bool)
    for start, end in word_spans(tokens):
        word = tokens[start] + "".join(t[2:] for t in tokens[start + 1:end])
        if is_stopword(word, punctuation):
            out[start:end] = True
    return out
