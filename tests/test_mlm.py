"""MLM: masked-positions-only head == HF's full loss; packing; training lowers the loss; save hooks."""

import numpy as np
import pytest
import torch

from tmlib.core.models import load_mlm
from tmlib.core.training import TrainConfig, fit
from tmlib.selective.collators import PlainMLMCollator, SelectiveMaskingCollator
from tmlib.selective.mlm import MaskedLM, MaskedOnlyMLM, _ListData, mlm_eval_loss, pack_corpus

TEXTS = [
    "the film is a great , moving story .",
    "a boring mess that never ends .",
    "actors do their best with a thin script .",
    "i loved every minute of it .",
    "the plot makes no sense at all .",
    "wonderful photography and a fine score .",
] * 4


def test_masked_only_loss_equals_full(tokenizer):
    torch.manual_seed(0)
    model = load_mlm("scratch:tiny", seed=0).eval()
    packed = pack_corpus(TEXTS, tokenizer, max_length=32)
    batch = PlainMLMCollator(tokenizer, mlm_probability=0.3, seed=0)(_ListData(packed).rows)
    assert (batch["labels"] != -100).sum() > 5
    fast = MaskedOnlyMLM(model, masked_only=True)(**batch)
    full = MaskedOnlyMLM(model, masked_only=False)(**batch)
    assert abs(fast.loss.item() - full.loss.item()) < 2e-6
    assert fast.n_masked == full.n_masked
    # gradients agree too
    g = []
    for masked_only in (True, False):
        model.zero_grad()
        MaskedOnlyMLM(model, masked_only=masked_only)(**batch).loss.backward()
        g.append(model.bert.embeddings.word_embeddings.weight.grad.clone())
    torch.testing.assert_close(g[0], g[1], atol=1e-6, rtol=1e-4)
    # a batch with nothing masked gives a zero loss that still backpropagates
    nothing = dict(batch, labels=torch.full_like(batch["labels"], -100))
    out = MaskedOnlyMLM(model)(**nothing)
    assert out.loss.item() == 0.0 and out.n_masked == 0
    out.loss.backward()


def test_pack_corpus(tokenizer):
    ids = [[1000 + i] * n for i, n in enumerate([3, 4, 10, 2, 40])]
    imp = [[1] * len(x) for x in ids]
    ds = pack_corpus(None, tokenizer, max_length=12, token_ids=ids, token_fields={"important": imp})
    rows = ds["input_ids"]
    assert (
        all(len(r) <= 12 for r in rows)
        and rows[0][0] == tokenizer.cls_token_id
        and rows[0][-1] == tokenizer.sep_token_id
    )
    assert ds["sent_ids"][0] == [-1, 0, 0, 0, 1, 1, 1, 1, -1]  # sentences 0 and 1 packed together
    assert [len(r) for r in rows] == [9, 12, 4, 12]  # the 40-token sentence is truncated to 10
    assert all(len(a) == len(b) for a, b in zip(ds["important"], rows)) and ds["important"][0][0] == 0
    assert len(pack_corpus(None, tokenizer, 12, token_ids=ids, pack=False)) == 5
    with pytest.raises(ValueError, match="3 rows for 5 sentences"):
        pack_corpus(None, tokenizer, 12, token_ids=ids, token_fields={"important": imp[:3]})


def test_masked_lm_lowers_loss_and_saves(tokenizer, tmp_path):
    model = load_mlm("scratch:tiny", seed=0)
    packed = pack_corpus(TEXTS, tokenizer, max_length=32, pack=False)
    before = mlm_eval_loss(model, packed, tokenizer)
    saved = []
    cfg = TrainConfig(lr=3e-3, batch_size=8, max_steps=30, warmup_ratio=0.0, progress=False, seed=0)
    res = fit(
        model,
        packed,
        cfg,
        MaskedLM(tokenizer, save_at=[10, 30], on_save=lambda s, m: saved.append((s, type(m).__name__))),
    )
    after = mlm_eval_loss(model, packed, tokenizer)
    assert res.steps == 30 and after < before - 1.0
    assert saved == [(10, "BertForMaskedLM"), (30, "BertForMaskedLM")]


def _record_collated(monkeypatch) -> list:
    """Record (examples, batch) of every SelectiveMaskingCollator call (and its RandomCount subclass)."""
    calls = []
    torch_call = SelectiveMaskingCollator.torch_call

    def recording(self, examples):
        batch = torch_call(self, examples)
        calls.append((examples, batch))
        return batch

    monkeypatch.setattr(SelectiveMaskingCollator, "torch_call", recording)
    return calls


def _masked_per_sentence(examples, batch) -> list[tuple[int, int, int, list[int]]]:
    """Per packed sentence: (maskable tokens n, important tokens, masked tokens, important label of each
    masked token). Labels != -100 mark the masked positions; rows are right-padded, so positions align."""
    out = []
    for ex, labels in zip(examples, batch["labels"]):
        n_row = len(ex["input_ids"])
        masked = (labels[:n_row] != -100).numpy()
        assert not (labels[n_row:] != -100).any()  # no mask on padding
        sid, imp = np.asarray(ex["sent_ids"]), np.asarray(ex["important"])
        assert not masked[sid < 0].any()  # never a special token
        for s in np.unique(sid[sid >= 0]):
            in_s = sid == s
            out.append((int(in_s.sum()), int(imp[in_s].sum()), int(masked[in_s].sum()), imp[in_s & masked].tolist()))
    return out


def test_masked_lm_with_selective_collator(tokenizer, monkeypatch):
    """TaskPT with selective masking masks, in every batch it trains on, only tokens the tagger labelled
    important: per sentence the min(#important, max(1, int(0.15 n))) of them. The random-count control
    masks the same number per sentence, at positions that are not drawn from the labels."""
    from tmlib.selective.collators import RandomCountMaskingCollator

    ids = tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    imp = [[int(i % 3 == 0) for i in range(len(x))] for x in ids]
    packed = pack_corpus(None, tokenizer, 32, token_ids=ids, token_fields={"important": imp, "importance": imp})
    cfg = TrainConfig(lr=1e-3, batch_size=4, max_steps=4, progress=False)
    calls = _record_collated(monkeypatch)
    sentences = {}
    for name, cls in (("selective", SelectiveMaskingCollator), ("random", RandomCountMaskingCollator)):
        calls.clear()
        res = fit(load_mlm("scratch:tiny", seed=0), packed, cfg, MaskedLM(tokenizer, collator=cls(tokenizer, seed=0)))
        assert res.steps == 4 and np.isfinite(res.history[-1]["train_loss"])
        assert len(calls) == 4  # one collated batch per training step
        sentences[name] = [s for ex, b in calls for s in _masked_per_sentence(ex, b)]
    sel, rnd = sentences["selective"], sentences["random"]
    assert len(sel) >= 8 and sum(m for _, _, m, _ in sel) >= 8
    for n, n_imp, n_masked, labels_of_masked in sel:
        assert n_masked == min(n_imp, max(1, int(0.15 * n)))
        assert labels_of_masked == [1] * n_masked  # every masked token is labelled important
    # the control: the same count per sentence (same data order, seed 0), positions not from the labels
    assert [(n, n_imp, m) for n, n_imp, m, _ in rnd] == [(n, n_imp, m) for n, n_imp, m, _ in sel]
    assert 0 in [label for *_, masked in rnd for label in masked]


@pytest.mark.parametrize("collator", ["plain", "selective"])
def test_interrupted_mlm_resumes_to_the_same_weights(tokenizer, tmp_path, collator):
    """Kill MLM training mid-epoch; the restart resumes from the checkpoint (model, optimizer, schedule,
    data order and the collator's mask RNG) and ends bit-identical to an uninterrupted run."""
    ids = tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    imp = [[int(i % 3 == 0) for i in range(len(x))] for x in ids]
    packed = pack_corpus(None, tokenizer, 32, token_ids=ids, token_fields={"important": imp, "importance": imp})
    cfg = TrainConfig(lr=1e-3, batch_size=4, max_steps=9, eval_every=2, warmup_ratio=0.0, progress=False, seed=0)

    def make():
        return (
            PlainMLMCollator(tokenizer, mlm_probability=0.3, seed=0)
            if collator == "plain"
            else SelectiveMaskingCollator(tokenizer, seed=0)
        )

    ref = load_mlm("scratch:tiny", seed=0)
    fit(ref, packed, cfg, MaskedLM(tokenizer, collator=make()))

    class Stop(Exception):
        pass

    def interrupt(step, m):
        raise Stop

    with pytest.raises(Stop):
        fit(
            load_mlm("scratch:tiny", seed=0),
            packed,
            cfg,
            MaskedLM(tokenizer, collator=make(), save_at=[7], on_save=interrupt),
            checkpoint_dir=tmp_path,
        )
    assert (tmp_path / "checkpoint.pt").is_file()  # the last checkpoint (step 6)
    seen = []
    resumed = load_mlm("scratch:tiny", seed=0)
    fit(
        resumed,
        packed,
        cfg,
        MaskedLM(tokenizer, collator=make(), save_at=range(1, 10), on_save=lambda s, m: seen.append(s)),
        checkpoint_dir=tmp_path,
    )
    assert seen == [7, 8, 9]
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=k)
    assert not (tmp_path / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------- probe


def _reference_probe(model, tokenizer, texts, max_length, mask_prob, seed):
    """Plain loop: one text at a time, full HF logits, masks from the public picker."""
    from tmlib.selective.mlm import probe_masks

    enc = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    masks = probe_masks(enc, tokenizer.all_special_ids, mask_prob, seed)
    model.eval()
    losses, hits = [], 0
    with torch.no_grad():
        for ids, pos in zip(enc, masks):
            x = torch.tensor([ids])
            x[0, pos] = tokenizer.mask_token_id
            logits = model(input_ids=x).logits[0]
            for p in pos:
                losses.append(torch.nn.functional.cross_entropy(logits[p][None], torch.tensor([ids[p]])).item())
                hits += int(logits[p].argmax().item() == ids[p])
    return {"loss": float(np.mean(losses)), "top1": hits / len(losses), "n_masked": len(losses)}


def test_probe_masks_skip_specials_and_are_seeded(tokenizer):
    from tmlib.selective.mlm import probe_masks

    enc = tokenizer(TEXTS[:6], truncation=True, max_length=12)["input_ids"]
    masks = probe_masks(enc, tokenizer.all_special_ids, 0.3, seed=1)
    for ids, pos in zip(enc, masks):
        n = len(ids) - 2
        assert len(pos) == max(1, round(0.3 * n)) and len(set(pos.tolist())) == len(pos)
        assert all(ids[p] not in tokenizer.all_special_ids for p in pos)  # [CLS]/[SEP] never masked
    assert all(np.array_equal(a, b) for a, b in zip(masks, probe_masks(enc, tokenizer.all_special_ids, 0.3, seed=1)))
    assert not all(
        np.array_equal(a, b) for a, b in zip(masks, probe_masks(enc, tokenizer.all_special_ids, 0.3, seed=2))
    )


def test_mlm_probe_equals_a_plain_reference_loop(tokenizer):
    from tmlib.selective.mlm import mlm_probe

    model = load_mlm("scratch:tiny", seed=0)
    # make the tiny model non-trivial (an untrained one predicts nothing right and would hide errors)
    fit(
        model,
        pack_corpus(TEXTS, tokenizer, 32, pack=False),
        TrainConfig(lr=3e-3, batch_size=8, max_steps=40, warmup_ratio=0.0, progress=False, seed=0),
        MaskedLM(tokenizer),
    )
    model.train()  # the probe must switch to eval (dropout off) and restore train mode
    texts = TEXTS[:6] + ["a much longer sentence that will be cut by the maximum length of the probe rows ."]
    got = mlm_probe(model, tokenizer, texts, max_length=12, mask_prob=0.3, seed=3, batch_size=3)
    assert model.training
    ref = _reference_probe(model, tokenizer, texts, 12, 0.3, 3)
    assert got["n_masked"] == ref["n_masked"] and got["n_texts"] == len(texts)
    assert abs(got["loss"] - ref["loss"]) < 1e-4
    assert got["top1"] == ref["top1"] and got["top1"] > 0  # some hits: argmax errors would show
    # deterministic, and independent of the batch size
    assert mlm_probe(model, tokenizer, texts, max_length=12, mask_prob=0.3, seed=3, batch_size=3) == got
    other = mlm_probe(model, tokenizer, texts, max_length=12, mask_prob=0.3, seed=3, batch_size=64)
    assert abs(other["loss"] - got["loss"]) < 1e-4 and other["top1"] == got["top1"]
    # bf16 autocast gives nearly the same numbers
    bf = mlm_probe(model, tokenizer, texts, max_length=12, mask_prob=0.3, seed=3, mixed_precision="bf16")
    assert abs(bf["loss"] - got["loss"]) < 0.1 * got["loss"]
    with pytest.raises(ValueError, match="CUDA"):
        (
            mlm_probe(model, tokenizer, texts, mixed_precision="fp16")
            if not torch.cuda.is_available()
            else (_ for _ in ()).throw(ValueError("CUDA"))
        )


def test_mlm_probe_chance_for_untrained_and_perfect_for_an_oracle(tokenizer):
    from tmlib.selective.mlm import mlm_probe

    untrained = mlm_probe(load_mlm("scratch:tiny", seed=0), tokenizer, TEXTS, max_length=32)
    assert untrained["top1"] < 0.02 and abs(untrained["loss"] - np.log(len(tokenizer))) < 0.5

    # BERT path: a head that always says "movie" is right on text made of "movie" only, wrong elsewhere
    movie = tokenizer.convert_tokens_to_ids("movie")
    model = load_mlm("scratch:tiny", seed=0)
    dec = model.cls.predictions.decoder
    with torch.no_grad():
        model.cls.predictions.decoder = torch.nn.Linear(dec.in_features, dec.out_features)
        model.cls.predictions.decoder.weight.zero_()
        model.cls.predictions.decoder.bias.fill_(-20.0)
        model.cls.predictions.decoder.bias[movie] = 20.0
    perfect = mlm_probe(model, tokenizer, ["movie " * k for k in range(1, 30)], max_length=32)
    assert perfect["top1"] == 1.0 and perfect["loss"] < 1e-3
    assert mlm_probe(model, tokenizer, TEXTS, max_length=32)["top1"] == 0.0  # no "movie" in TEXTS

    # non-BERT path (``.logits``): an oracle that predicts each row's own (unmasked) word
    class RowWordOracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None, **_):
            special = torch.tensor(tokenizer.all_special_ids)
            ok = ~torch.isin(input_ids, special) & (attention_mask.bool() if attention_mask is not None else True)
            word = torch.where(ok, input_ids, torch.zeros_like(input_ids)).max(-1).values  # the row's word
            logits = torch.full((*input_ids.shape, len(tokenizer)), -30.0)
            logits[torch.arange(len(word)), :, word] = 30.0
            return type("Out", (), {"logits": logits})()

    words = ["film", "story", "actor", "great", "plot"]
    texts = [" ".join([w] * k) for w in words for k in (3, 8, 20)]
    oracle = mlm_probe(RowWordOracle(), tokenizer, texts, max_length=16, batch_size=4)
    assert oracle["top1"] == 1.0 and oracle["n_masked"] == sum(
        max(1, round(0.15 * min(k, 14))) for _ in words for k in (3, 8, 20)
    )
