"""Stop words: function words whose important tokens are never masked (buffer labels force them to 0).

Three lists, chosen by name (``BufferConfig.stopwords``, the tagger's ``stopwords=``):

* ``"spacy"`` (default, the official rule of Gu et al.): spaCy's English stop list (326 words, incl.
  "not", "no", "never"), looked up PER WORDPIECE exactly as the official ``create_mask`` does
  (``nlp.vocab[piece].is_stop``, i.e. ``piece.lower() in spacy.lang.en.stop_words.STOP_WORDS``;
  lowercasing makes cased tokenizers behave like the uncased one). Consequences of the per-piece
  lookup, kept on purpose because they are the official labels: a ``##`` continuation piece is never
  a stop word (no spaCy stop word starts with ``##``), so ``["the", "##re"]`` ("there") zeroes only
  ``the``; a non-stop word whose first piece is a stop word (``["be", "##ast"]``) loses that piece.
  Punctuation is not a spaCy stop word, so punctuation stays labelled.
* ``"spacy_words"``: the same spaCy list matched on whole words: the ``##`` pieces are joined to the
  word they continue and every piece of the word gets the word's status (``["the", "##re"]`` both 1,
  ``["be", "##ast"]`` both 0).
* ``"tmlib"``: tmlib's earlier list (below, ~150 function words plus the clitic pieces WordPiece
  splits off: ``'s``, ``n't`` -> ``n``, ``t``), whole-word matching, negations ("not", "no",
  "never") deliberately left OUT because for sentiment they can be exactly the tokens that matter,
  and pure punctuation counted as a stop word by default.
* ``"none"``: no token is forced to 0.

``punctuation=None`` means "the list's own convention" (``"tmlib"``: punctuation is a stop word;
the spaCy lists: it is not); ``True`` / ``False`` override it for any list.

    >>> stopword_mask(["the", "film", "is", "not", "un", "##watch", "##able", "."]).astype(int).tolist()
    [1, 0, 1, 1, 0, 0, 0, 0]
    >>> stopword_mask(["the", "film", "is", "not", "un", "##watch", "##able", "."],
    ...               stopwords="tmlib").astype(int).tolist()
    [1, 0, 1, 0, 0, 0, 0, 1]
"""

from __future__ import annotations

import string
import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

STOPWORDS: frozenset[str] = frozenset(
    """
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
""".split()
)

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
    """Whether a whole word (lowercased here) is in tmlib's list ``STOPWORDS``, or pure punctuation when
    ``punctuation`` (the ``"tmlib"`` list of :func:`stopword_mask`)."""
    w = word.lower()
    if w in STOPWORDS:
        return True
    return punctuation and bool(w) and all(ch in PUNCTUATION for ch in w)


STOPWORD_LISTS = ("spacy", "spacy_words", "tmlib", "none")


@lru_cache(maxsize=1)
def spacy_stopwords() -> frozenset[str]:
    """spaCy's English stop list (``spacy.lang.en.stop_words.STOP_WORDS``; no model download)."""
    try:
        from spacy.lang.en.stop_words import STOP_WORDS
    except ImportError as exc:  # pragma: no cover - spacy is a dependency
        raise ImportError(
            "stopwords='spacy' needs spaCy (pip install 'spacy>=3.7'); or pass stopwords='tmlib' / 'none'"
        ) from exc
    return frozenset(STOP_WORDS)


def resolve_stopwords(stopwords) -> str:
    """Validate a stop-list name. The old bools still work: ``False`` -> ``"none"``, ``True`` ->
    ``"tmlib"`` (the list ``True`` meant before; a ``FutureWarning`` says to pass a name)."""
    if stopwords is True:
        warnings.warn(
            "stopwords=True is the old switch and selects tmlib's own list ('tmlib'); pass "
            "stopwords='spacy' for the official spaCy list or 'tmlib' to keep the old labels",
            FutureWarning,
            stacklevel=3,
        )
        return "tmlib"
    if stopwords is False or stopwords is None:
        return "none"
    if stopwords not in STOPWORD_LISTS:
        raise ValueError(f"stopwords must be one of {STOPWORD_LISTS} (got {stopwords!r})")
    return stopwords


def _is_punct(w: str) -> bool:
    return bool(w) and all(ch in PUNCTUATION for ch in w)


def stopword_mask(tokens: Sequence[str], punctuation: bool | None = None, stopwords: str = "spacy") -> np.ndarray:
    """Boolean per WordPiece token: True where the token is a stop word under list ``stopwords``
    (``"spacy"`` per piece as the official code, ``"spacy_words"`` / ``"tmlib"`` per whole word:
    ``##`` pieces inherit the word's status; ``"none"``: all False). ``punctuation``: also count pure
    punctuation (``None``: True for ``"tmlib"``, False otherwise)."""
    stopwords = resolve_stopwords(stopwords)
    if punctuation is None:
        punctuation = stopwords == "tmlib"
    out = np.zeros(len(tokens), dtype=bool)
    if stopwords == "spacy":
        stop = spacy_stopwords()
        for i, tok in enumerate(tokens):
            out[i] = tok.lower() in stop or (punctuation and _is_punct(tok))
        return out
    if stopwords == "none" and not punctuation:
        return out
    stop = {"spacy_words": spacy_stopwords(), "tmlib": STOPWORDS, "none": frozenset()}[stopwords]
    for start, end in word_spans(tokens):
        word = (tokens[start] + "".join(t[2:] for t in tokens[start + 1 : end])).lower()
        if word in stop or (punctuation and _is_punct(word)):
            out[start:end] = True
    return out
