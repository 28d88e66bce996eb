"""MLM: masked-positions-only head == HF's full loss; packing; training lowers the loss; save hooks."""
import numpy as np
import pytest
import torch

from tmlib.collators import PlainMLMCollator, SelectiveMaskingCollator
from tmlib.mlm import MaskedOnlyMLM, _ListData, mlm_eval_loss, pack_corpus, train_mlm
from tmlib.models import load_mlm
from tmlib.training import TrainConfig

TEXTS = ["the film is a great , moving story .", "a boring mess that never ends .",
         "actors do their best with a thin script .", "i loved every minute of it .",
         "the plot makes no sense at all .", "wonderful photography and a fine score ."] * 4


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
    assert all(len(r) <= 12 for r in rows) and rows[0][0] == tokenizer.cls_token_id and rows[0][-1] == tokenizer.sep_token_id
    assert ds["sent_ids"][0] == [-1, 0, 0, 0, 1, 1, 1, 1, -1]  # sentences 0 and 1 packed together
    assert [len(r) for r in rows] == [9, 12, 4, 12]            # the 40-token sentence is truncated to 10
    assert all(len(a) == len(b) for a, b in zip(ds["important"], rows)) and ds["important"][0][0] == 0
    assert len(pack_corpus(None, tokenizer, 12, token_ids=ids, pack=False)) == 5
    with pytest.raises(ValueError, match="3 rows for 5 sentences"):
        pack_corpus(None, tokenizer, 12, token_ids=ids, token_fields={"important": imp[:3]})


def test_train_mlm_lowers_loss_and_saves(tokenizer, tmp_path):
    model = load_mlm("scratch:tiny", seed=0)
    packed = pack_corpus(TEXTS, tokenizer, max_length=32, pack=False)
    before = mlm_eval_loss(model, packed, tokenizer)
    saved = []
    cfg = TrainConfig(lr=3e-3, batch_size=8, max_steps=30, warmup_ratio=0.0, progress=False, seed=0)
    res = train_mlm(model, packed, tokenizer, cfg, save_at=[10, 30], on_save=lambda s, m: saved.append((s, type(m).__name__)))
    after = mlm_eval_loss(model, packed, tokenizer)
    assert res.steps == 30 and after < before - 1.0
    assert saved == [(10, "BertForMaskedLM"), (30, "BertForMaskedLM")]


def test_train_mlm_with_selective_collator(tokenizer):
    model = load_mlm("scratch:tiny", seed=0)
    ids = tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    imp = [[int(i % 3 == 0) for i in range(len(x))] for x in ids]
    packed = pack_corpus(None, tokenizer, 32, token_ids=ids, token_fields={"important": imp, "importance": imp})
    cfg = TrainConfig(lr=1e-3, batch_size=4, max_steps=4, progress=False)
    res = train_mlm(model, packed, tokenizer, cfg, collator=SelectiveMaskingCollator(tokenizer, seed=0))
    assert res.steps == 4 and np.isfinite(res.history[-1]["train_loss"])


@pytest.mark.parametrize("collator", ["plain", "selective"])
def test_interrupted_mlm_resumes_to_the_same_weights(tokenizer, tmp_path, collator):
    """Kill MLM training mid-epoch; the restart resumes from the checkpoint (model, optimizer, schedule,
    data order and the collator's mask RNG) and ends bit-identical to an uninterrupted run."""
    ids = tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    imp = [[int(i % 3 == 0) for i in range(len(x))] for x in ids]
    packed = pack_corpus(None, tokenizer, 32, token_ids=ids, token_fields={"important": imp, "importance": imp})
    cfg = TrainConfig(lr=1e-3, batch_size=4, max_steps=9, eval_every=2, warmup_ratio=0.0, progress=False, seed=0)

    def make():
        return (PlainMLMCollator(tokenizer, mlm_probability=0.3, seed=0) if collator == "plain"
                else SelectiveMaskingCollator(tokenizer, seed=0))

    ref = load_mlm("scratch:tiny", seed=0)
    train_mlm(ref, packed, tokenizer, cfg, collator=make())

    class Stop(Exception):
        pass

    def interrupt(step, m):
        raise Stop

    with pytest.raises(Stop):
        train_mlm(load_mlm("scratch:tiny", seed=0), packed, tokenizer, cfg, collator=make(), save_at=[7],
                  on_save=interrupt, checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file()  # the last checkpoint (step 6)
    seen = []
    resumed = load_mlm("scratch:tiny", seed=0)
    train_mlm(resumed, packed, tokenizer, cfg, collator=make(), save_at=range(1, 10), on_save=lambda s, m: seen.append(s),
              checkpoint_dir=tmp_path)
    assert seen == [7, 8, 9]
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=k)
    assert not (tmp_path / "checkpoint.pt").exists()
