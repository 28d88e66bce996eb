"""Selective / random-count masking collators and the pure position pickers (hypothesis properties)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tmlib.selective.collators import (
    RandomCountMaskingCollator,
    SelectiveMaskingCollator,
    mask_cap,
    random_positions,
    selective_positions,
)


def test_selective_positions_ranks_and_caps():
    scores = np.array([0.9, 0.2, 0.95, 0.7, 0.6, 0.99, 0.1, 0.8, 0.3, 0.4, 0.5, 0.9, 0.2, 0.1], dtype=float)
    important = scores > 0.65
    pos = selective_positions(scores, important, 14)  # cap = max(1, int(2.1)) = 2
    assert pos.tolist() == [2, 5]
    # cap 4, tie 0.9 -> earlier first
    assert selective_positions(scores, important, 14, mask_ratio=0.3).tolist() == [0, 2, 5, 11]
    assert selective_positions(scores, np.zeros(14), 14).tolist() == []
    fb = selective_positions(scores, np.zeros(14), 14, fallback="random", rng=np.random.default_rng(0))
    assert len(fb) == 2 and len(set(fb.tolist())) == 2
    assert selective_positions([0.9, 0.1], None, ["a", "b"]).tolist() == [0]  # important from scores > 0.5
    assert mask_cap(0) == 0 and mask_cap(3) == 1 and mask_cap(20) == 3
    with pytest.raises(ValueError, match="fallback"):
        selective_positions(scores, important, 14, fallback="uniform")
    with pytest.raises(ValueError, match="one score per token"):
        selective_positions(scores, important, 10)


@given(st.integers(0, 40), st.integers(0, 50), st.integers(0, 2**31))
def test_random_positions(n, count, seed):
    pos = random_positions(n, count, np.random.default_rng(seed))
    assert len(pos) == min(n, count) and len(set(pos.tolist())) == len(pos)
    assert all(0 <= p < n for p in pos) and pos.tolist() == sorted(pos.tolist())


def _examples(tokenizer, rows, packed=False):
    """rows: list of (list of sentences of (n_tokens, important list, scores list))."""
    out = []
    for sents in rows:
        ids, imp, sc, sid = [tokenizer.cls_token_id], [0], [0.0], [-1]
        for k, (n, i_, s_) in enumerate(sents):
            ids += list(range(2000, 2000 + n))
            imp += i_
            sc += s_
            sid += [k] * n
        ids.append(tokenizer.sep_token_id)
        imp.append(0)
        sc.append(0.0)
        sid.append(-1)
        ex = {"input_ids": ids, "importance": sc, "important": imp}
        if packed:
            ex["sent_ids"] = sid
        out.append(ex)
    return out


sentence = st.integers(1, 30).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.floats(0, 1), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(sentence, min_size=1, max_size=3), min_size=1, max_size=4),
    fallback=st.sampled_from([None, "random"]),
    seed=st.integers(0, 1000),
)
def test_collators_properties(tokenizer, rows, fallback, seed):
    examples = _examples(tokenizer, rows, packed=True)
    sel = SelectiveMaskingCollator(tokenizer, fallback=fallback, seed=seed)(examples)
    rnd = RandomCountMaskingCollator(tokenizer, fallback=fallback, seed=seed + 1)(examples)
    for batch in (sel, rnd):
        ids, labels = batch["input_ids"], batch["labels"]
        masked = labels != -100
        special = torch.isin(
            labels.new_tensor(
                [e["input_ids"] + [tokenizer.pad_token_id] * (ids.shape[1] - len(e["input_ids"])) for e in examples]
            ),
            torch.tensor(tokenizer.all_special_ids),
        )
        assert not (masked & special).any(), "never mask special tokens or padding"
        assert not masked[batch["attention_mask"] == 0].any()
    for r, sents in enumerate(rows):
        start = 1
        for n, imp, _ in sents:
            seg = slice(start, start + n)
            n_sel, n_rnd = int((sel["labels"][r, seg] != -100).sum()), int((rnd["labels"][r, seg] != -100).sum())
            expect = min(mask_cap(n), sum(imp)) if sum(imp) or fallback is None else mask_cap(n)
            assert n_sel == expect, "masked count equals the cap (or the number of important tokens)"
            assert n_rnd == n_sel, "the random control masks the same count per sentence"
            if fallback is None:
                chosen = (sel["labels"][r, seg] != -100).numpy()
                assert all(imp[i] for i in np.flatnonzero(chosen)), "selective masks only important tokens"
            start += n


def test_collator_8010_10_and_determinism(tokenizer):
    n = 200
    ex = [
        {
            "input_ids": [tokenizer.cls_token_id] + [2000 + i for i in range(n)] + [tokenizer.sep_token_id],
            "importance": [0.0] + [1.0] * n + [0.0],
            "important": [0] + [1] * n + [0],
        }
        for _ in range(64)
    ]
    col = SelectiveMaskingCollator(tokenizer, mlm_probability=0.5, seed=3)
    b = col(ex)
    masked = b["labels"] != -100
    assert int(masked.sum()) == 64 * 100
    frac_mask = (b["input_ids"][masked] == tokenizer.mask_token_id).float().mean().item()
    frac_kept = (b["input_ids"][masked] == b["labels"][masked]).float().mean().item()
    assert 0.77 < frac_mask < 0.83 and 0.07 < frac_kept < 0.13
    b2 = SelectiveMaskingCollator(tokenizer, mlm_probability=0.5, seed=3)(ex)
    assert torch.equal(b["input_ids"], b2["input_ids"]) and torch.equal(b["labels"], b2["labels"])
    r1 = RandomCountMaskingCollator(tokenizer, seed=5)(ex)
    r2 = RandomCountMaskingCollator(tokenizer, seed=5)(ex)
    assert torch.equal(r1["labels"], r2["labels"])
    assert not torch.equal(r1["labels"] != -100, RandomCountMaskingCollator(tokenizer, seed=6)(ex)["labels"] != -100)


def test_collator_errors(tokenizer):
    with pytest.raises(KeyError, match="label_corpus"):
        SelectiveMaskingCollator(tokenizer)([{"input_ids": [101, 2000, 102]}])
    with pytest.raises(ValueError, match="aligned per token"):
        SelectiveMaskingCollator(tokenizer)(
            [{"input_ids": [101, 2000, 102], "importance": [0, 1], "important": [0, 1, 0]}]
        )
    with pytest.raises(ValueError, match="fallback"):
        SelectiveMaskingCollator(tokenizer, fallback="always")


def test_sentence_masks_per_whole_sentence():
    from tmlib.selective.collators import sentence_masks

    scores = [[0.9, 0.1, 0.8, 0.7, 0.2, 0.95, 0.3, 0.6, 0.4, 0.5], [0.2, 0.9, 0.1], [0.5, 0.5]]
    important = [[1, 0, 1, 1, 0, 1, 0, 1, 0, 0], [0, 1, 0], [0, 0]]
    assert sentence_masks(scores, important, "selective") == [
        [0, 0, 0, 0, 0, 1, 0, 0, 0, 0],  # cap max(1, int(1.5)) = 1: the best important token
        [0, 1, 0],
        [0, 0],  # no important token: no mask (official)
    ]
    assert sentence_masks(scores, important, "selective", mask_ratio=0.3)[0] == [1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    fb = sentence_masks(scores, important, "selective", fallback="random", seed=4)
    assert sum(fb[2]) == 1 and fb[:2] == sentence_masks(scores, important, "selective")[:2]
    rand = sentence_masks(scores, important, "random", mask_ratio=0.3, seed=7)
    assert [sum(r) for r in rand] == [3, 1, 0] and all(set(r) <= {0, 1} for r in rand)
    assert rand == sentence_masks(scores, important, "random", mask_ratio=0.3, seed=7)  # seeded
    many = [[0.5] * 40] * 6
    draws = {str(sentence_masks(many, [[1] * 40] * 6, "random", seed=s)) for s in (1, 2)}
    assert len(draws) == 2 and sentence_masks(many, [[1] * 40] * 6, "random") == sentence_masks(
        many, [[1] * 40] * 6, "random", seed=12345
    )
    with pytest.raises(ValueError, match=r"drawn for 'selective' or 'random', got 'plain'"):
        sentence_masks(scores, important, "plain")


def test_static_collator_pads_and_draws_nothing(tokenizer):
    from tmlib.selective.collators import StaticMLMCollator

    col = StaticMLMCollator(tokenizer)
    rows = [{"input_ids": [101, 2000, 2001, 102], "labels": [-100, 2000, -100, -100], "sent_ids": [-1, 0, 0, -1]}]
    rows.append({"input_ids": [101, 2002, 102], "labels": [-100, -100, -100]})
    b = col(rows)
    assert set(b) == {"input_ids", "labels", "attention_mask"}
    assert b["input_ids"].tolist() == [[101, 2000, 2001, 102], [101, 2002, 102, tokenizer.pad_token_id]]
    assert b["labels"].tolist() == [[-100, 2000, -100, -100], [-100, -100, -100, -100]]
    assert col.state_dict() == {} and col.load_state_dict({"torch": None}) is None
    for bad in ([], [{"input_ids": [101, 102]}]):
        with pytest.raises(
            KeyError, match=r"^'StaticMLMCollator needs rows with input_ids and labels \(tmlib.selective.mlm"
        ):
            col(bad)


def test_plain_collator_drops_the_extra_fields(tokenizer):
    from tmlib.selective.collators import PlainMLMCollator

    row = {"input_ids": [101] + list(range(2000, 2040)) + [102], "token_type_ids": [0] * 42}
    rows = [{**row, "importance": [0.5] * 42, "sent_ids": [0] * 42, "attention_mask": [1] * 42}] * 4
    b = PlainMLMCollator(tokenizer, mlm_probability=0.3, seed=0)(rows)
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "labels"} and b["input_ids"].shape == (4, 42)
    assert b["token_type_ids"].eq(0).all() and b["attention_mask"].eq(1).all()
    again = PlainMLMCollator(tokenizer, mlm_probability=0.3, seed=0)(rows)
    assert torch.equal(b["labels"], again["labels"]) and int((b["labels"] != -100).sum()) > 0


@pytest.mark.parametrize("cls", [SelectiveMaskingCollator, RandomCountMaskingCollator])
def test_collator_state_resumes_the_draws(tokenizer, cls):
    """state_dict after a batch, loaded into a fresh collator: the next batches are identical (both generators)."""
    rows = _examples(tokenizer, [[(30, [1] * 30, [float(k) / 30 for k in range(30)])]] * 8, packed=True)
    a = cls(tokenizer, mlm_probability=0.3, fallback="random", seed=1)
    a(rows)
    state = a.state_dict()
    assert isinstance(state["torch"], torch.Tensor) and state["numpy"]["bit_generator"] == "PCG64"
    b = cls(tokenizer, mlm_probability=0.3, fallback="random", seed=99)
    assert b.generator is None
    b.load_state_dict(state)
    for _ in range(2):
        x, y = a(rows), b(rows)
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    fresh = cls(tokenizer, mlm_probability=0.3, seed=None)
    assert fresh.state_dict()["torch"] is None and fresh.state_dict()["numpy"] is not None
    fresh.load_state_dict({"torch": None, "numpy": None})  # nothing saved: nothing changes
    assert fresh.generator is None


def test_selective_collator_refuses_what_it_cannot_mask(tokenizer):
    with pytest.raises(ValueError, match=r"^selective masking is a masked-LM collator; mlm must be True"):
        SelectiveMaskingCollator(tokenizer, mlm=False)
    with pytest.raises(
        TypeError, match="^SelectiveMaskingCollator needs dict examples with input_ids, 'importance' and 'important'"
    ):
        SelectiveMaskingCollator(tokenizer)([[101, 2000, 102]])
    with pytest.raises(TypeError, match="needs dict examples"):
        SelectiveMaskingCollator(tokenizer)([])
    with pytest.raises(NotImplementedError, match="^selective masking needs per-token importance: call the collator"):
        SelectiveMaskingCollator(tokenizer).torch_mask_tokens(torch.tensor([[101, 102]]))


def test_selective_positions_inputs_and_ties():
    scores = [0.9, 0.7, 0.6, 0.6, 0.9, 0.7, 0.7, 0.7, 0.9, 0.7, 0.6, 0.9, 0.6, 0.6, 0.9, 0.7, 0.6, 0.6, 0.7, 0.9]
    # cap 8: the six 0.9s, then the two EARLIEST 0.7s (a quicksort would take others)
    assert selective_positions(scores, [1] * 20, 20, mask_ratio=0.4).tolist() == [0, 1, 4, 5, 8, 11, 14, 19]
    assert selective_positions([0.5, 0.51, 0.2]).tolist() == [1]  # n defaults to len(scores)
    assert selective_positions([0.5, 0.2]).tolist() == []  # a score of 0.5 is not important
    assert len(set(random_positions(10, 3).tolist())) == 3  # a fresh generator when none is given
    column = selective_positions(np.array([[0.9, 0.1, 0.8]]), np.array([[1, 0, 1]]), 3, mask_ratio=0.7)
    assert column.tolist() == [0, 2] and column.dtype == np.int64  # any shape is read flat
    assert mask_cap(1) == 1 and mask_cap(-1) == 0
    with pytest.raises(ValueError, match=r"^2 important labels for a sentence of 3 tokens$"):
        selective_positions([0.9, 0.1, 0.8], [1, 0], 3)
    picks = [
        selective_positions([0.1] * 40, [0] * 40, 40, fallback="random", rng=np.random.default_rng(5)) for _ in "ab"
    ]
    assert picks[0].tolist() == picks[1].tolist() and len(picks[0]) == 6  # the fallback draws from the rng given


def test_sentence_masks_are_ints_and_seeded_with_the_fallback():
    from tmlib.selective.collators import sentence_masks

    scores, important = [[0.1] * 40] * 3, [[0] * 40] * 3
    a = sentence_masks(scores, important, "selective", fallback="random", seed=3)
    assert a == sentence_masks(scores, important, "selective", fallback="random", seed=3)
    assert a != sentence_masks(scores, important, "selective", fallback="random", seed=4)
    assert [sum(r) for r in a] == [6, 6, 6] and all(type(x) is int for r in a for x in r)


def test_collator_fallback_is_seeded_and_inputs_pass_through(tokenizer):
    rows = [
        {
            "input_ids": [101] + list(range(2000, 2030)) + [102],
            "importance": [0.0] * 32,
            "important": [0] * 32,
            "token_type_ids": [0] * 16 + [1] * 16,
            "attention_mask": [1] * 30 + [0, 0],
        }
    ] * 3
    for cls in (SelectiveMaskingCollator, RandomCountMaskingCollator):
        a = cls(tokenizer, fallback="random", seed=2, pad_to_multiple_of=8)(rows)
        b = cls(tokenizer, fallback="random", seed=2, pad_to_multiple_of=8)(rows)
        assert torch.equal(a["labels"], b["labels"]) and int((a["labels"] != -100).sum()) == 3 * 4
        assert a["input_ids"].shape == (3, 32) and a["token_type_ids"][0].tolist() == [0] * 16 + [1] * 16
        assert a["attention_mask"][0].tolist() == [1] * 30 + [0, 0]
        wide = cls(tokenizer, fallback="random", seed=2, pad_to_multiple_of=24)(rows)
        assert wide["input_ids"].shape == (3, 48)
    with pytest.raises(KeyError, match="label the corpus with tmlib.selective.tagger.label_corpus"):
        SelectiveMaskingCollator(tokenizer)([{"input_ids": [101, 2000, 102], "importance": [0, 1, 0]}])


def test_plain_collator_takes_lists_and_keeps_the_attention_mask(tokenizer):
    from tmlib.selective.collators import PlainMLMCollator

    col = PlainMLMCollator(tokenizer, mlm_probability=0.3, seed=0)
    ids = [101] + list(range(2000, 2040)) + [102]
    assert col([ids, ids])["input_ids"].shape == (2, 42)  # token id lists, as Hugging Face's collator takes
    b = col([{"input_ids": ids, "attention_mask": [1] * 40 + [0, 0], "sent_ids": [0] * 42}])
    assert b["attention_mask"][0].tolist() == [1] * 40 + [0, 0]
    state = col.state_dict()
    assert isinstance(state["torch"], torch.Tensor) and state["numpy"] is None  # no numpy generator here
