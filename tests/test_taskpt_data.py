"""TaskPT data as the official code builds it: document-contiguous rows (tmlib.selective.mlm.pack_documents) and
masks drawn
once (tmlib.selective.mlm.draw_static_masks, tmlib.selective.collators.StaticMLMCollator)."""

import numpy as np
import pytest
import torch

from tmlib.selective.collators import RandomCountMaskingCollator, SelectiveMaskingCollator, StaticMLMCollator
from tmlib.selective.mlm import draw_static_masks, pack_documents


def _corpus(n_docs=12, sents=5, length=9):
    ids, docs, imp, lab = [], [], [], []
    for d in range(n_docs):
        for s in range(sents):
            ids.append([1000 + 100 * d + s] * length)
            docs.append(f"doc{d}")
            imp.append([float(k) for k in range(length)])
            lab.append([1 if k % 3 == 0 else 0 for k in range(length)])
    return ids, docs, imp, lab


def test_rows_hold_consecutive_sentences_of_one_document(tokenizer):
    ids, docs, imp, lab = _corpus()
    rows = pack_documents(
        ids,
        docs,
        tokenizer,
        max_length=32,
        short_seq_prob=0.0,
        seed=1,
        token_fields={"importance": imp, "important": lab},
    )
    for r in range(len(rows)):
        row, sid = rows[r]["input_ids"], rows[r]["sent_ids"]
        assert row[0] == tokenizer.cls_token_id and row[-1] == tokenizer.sep_token_id and len(row) <= 32
        d = int(rows[r]["doc"][3:])
        body = [t for t in row[1:-1]]
        assert all(1000 + 100 * d <= t < 1000 + 100 * (d + 1) for t in body)  # one document per row
        sent_of = [t - 1000 - 100 * d for t in body]
        assert sent_of == sorted(sent_of)  # in document order
        assert len(rows[r]["importance"]) == len(row) == len(sid)
    # every document contributes all its tokens unless a chunk was truncated (target 30 <= 3 sentences of 9 + 3)
    assert sum(len(r) - 2 for r in rows["input_ids"]) <= 12 * 5 * 9
    # documents are shuffled, not sentences: the row order differs between seeds, the rows' contents do not
    other = pack_documents(ids, docs, tokenizer, max_length=32, short_seq_prob=0.0, seed=2)
    assert rows["doc"] != other["doc"] and len(other) == len(rows)


def test_short_sequences_and_truncation_to_the_row_length(tokenizer):
    ids, docs, _, _ = _corpus(n_docs=200, sents=4, length=20)
    long = pack_documents(ids, docs, tokenizer, max_length=64, short_seq_prob=0.0, seed=0)
    short = pack_documents(ids, docs, tokenizer, max_length=64, short_seq_prob=0.5, seed=0)
    assert max(map(len, long["input_ids"])) == 64 and max(map(len, short["input_ids"])) <= 64
    assert len(short) > len(long)  # shorter targets cut documents into more rows
    with pytest.raises(ValueError, match="document keys"):
        pack_documents(ids, docs[:-1], tokenizer)


def test_masks_are_drawn_once_and_capped(tokenizer):
    ids, docs, imp, lab = _corpus(n_docs=6, sents=6, length=12)
    rows = pack_documents(
        ids,
        docs,
        tokenizer,
        max_length=80,
        short_seq_prob=0.0,
        seed=0,
        token_fields={"importance": imp, "important": lab},
    )
    sel = draw_static_masks(rows, SelectiveMaskingCollator(tokenizer, seed=3), max_predictions=4, seed=0)
    again = draw_static_masks(rows, SelectiveMaskingCollator(tokenizer, seed=3), max_predictions=4, seed=0)
    assert sel["input_ids"] == again["input_ids"] and sel["labels"] == again["labels"]  # seeded: reproducible
    n_masked = [sum(x != -100 for x in lab_row) for lab_row in sel["labels"]]
    assert max(n_masked) == 4 and min(n_masked) >= 1  # capped at max_predictions
    for r in range(len(sel)):  # unmasked positions hold the original token; labels are the original token
        orig, got, labels = rows[r]["input_ids"], sel[r]["input_ids"], sel[r]["labels"]
        assert all(g == o for g, o, lb in zip(got, orig, labels) if lb == -100)
        assert all(lb == o for o, lb in zip(orig, labels) if lb != -100)
    uncapped = draw_static_masks(rows, RandomCountMaskingCollator(tokenizer, seed=3), max_predictions=0, seed=0)
    assert max(sum(x != -100 for x in r) for r in uncapped["labels"]) > 4
    # the training collator pads and never redraws: two passes over the same rows are identical
    coll = StaticMLMCollator(tokenizer)
    a, b = coll([sel[0], sel[1]]), coll([sel[0], sel[1]])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert a["labels"][0, len(sel[0]["input_ids"]) :].eq(-100).all()  # padding is never a prediction
    assert np.array_equal(a["labels"][1, : len(sel[1]["labels"])].numpy(), np.asarray(sel[1]["labels"]))


def test_sentence_masks_are_drawn_before_packing_and_trimming(tokenizer):
    """Official sc_mask_gen.py: per whole sentence, the top-ranked important tokens up to max(1, 15% of the
    sentence); [UNK] is a candidate; trimming a row drops the masks of the tokens it cuts."""
    from tmlib.selective.collators import sentence_masks

    unk = tokenizer.unk_token_id
    ids = [[unk, 2000, 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009, 2010, 2011, 2012], [3000, 3001, 3002]]
    scores = [[9.0] + [float(k) for k in range(13)], [0.0, 5.0, 1.0]]
    important = [[1] + [k % 2 for k in range(13)], [0, 1, 1]]
    drawn = sentence_masks(scores, important, "selective")
    assert drawn[0] == [1] + [0] * 11 + [1, 0]  # cap int(0.15 * 14) = 2: [UNK] (score 9), then the best important
    assert drawn[1] == [0, 1, 0]  # cap max(1, int(0.45)) = 1: the higher-scored important token
    rand = sentence_masks(scores, important, "random", seed=1)
    assert [sum(r) for r in rand] == [2, 1]  # the same count, anywhere in the sentence
    with pytest.raises(ValueError, match="selective"):
        sentence_masks(scores, important, "random15")
    rows = pack_documents(
        ids, ["d", "d"], tokenizer, max_length=12, short_seq_prob=0.0, seed=0, token_fields={"drawn": drawn}
    )
    out = draw_static_masks(rows, SelectiveMaskingCollator(tokenizer, seed=3), max_predictions=0, seed=0)
    for r in range(len(rows)):
        labels, row = out[r]["labels"], rows[r]
        assert [int(x != -100) for x in labels] == row["drawn"]  # exactly the drawn positions, nothing redrawn
    assert sum(sum(r["drawn"]) for r in rows) < 3  # the 17-token chunk is trimmed to 10: cut masks are gone
