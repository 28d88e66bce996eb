"""Stop-word lists for WordPieces: spaCy's (official, per piece), spaCy's on whole words, tmlib's old one."""

import numpy as np
import pytest

from tmlib.selective.stopwords import STOPWORDS, resolve_stopwords, spacy_stopwords, stopword_mask


def test_spacy_list_has_negations():
    stop = spacy_stopwords()
    assert {"not", "no", "never", "the", "n't", "'s"} <= stop
    assert not {"not", "no", "never"} & STOPWORDS  # tmlib's old list keeps negations out
    assert stopword_mask(["not", "no", "never", "good"]).tolist() == [True, True, True, False]
    assert stopword_mask(["not", "no", "never"], stopwords="tmlib").tolist() == [False, False, False]


def test_spacy_per_piece_matches_spacy_lexemes(tokenizer):
    """ "spacy" is exactly the official lookup ``nlp.vocab[piece].is_stop`` over the whole WordPiece vocabulary."""
    import spacy

    vocab = spacy.blank("en").vocab
    pieces = list(tokenizer.get_vocab())
    expected = np.array([vocab[p].is_stop for p in pieces])
    assert expected.sum() > 250
    np.testing.assert_array_equal(stopword_mask(pieces, stopwords="spacy"), expected)


def test_pieces_case_and_punctuation():
    toks = ["The", "the", "##re", "be", "##ast", "is", "not", "un", "##watch", "##able", "."]
    # official per-piece lookup: "##" pieces never stop words, a stop-word first piece is zeroed, case ignored
    assert stopword_mask(toks).astype(int).tolist() == [1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0]
    # whole words: "there" is a stop word (both pieces), "beast" is not (neither piece)
    assert stopword_mask(toks, stopwords="spacy_words").astype(int).tolist() == [1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0]
    assert stopword_mask(toks, punctuation=True).astype(int)[-1] == 1
    assert stopword_mask(toks, stopwords="tmlib").astype(int).tolist() == [1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1]
    assert not stopword_mask(toks, stopwords="none").any()


def test_resolve_stopwords():
    assert resolve_stopwords("spacy") == "spacy" and resolve_stopwords(False) == "none"
    with pytest.warns(FutureWarning):
        assert resolve_stopwords(True) == "tmlib"
    with pytest.raises(ValueError, match="must be one of"):
        resolve_stopwords("english")
