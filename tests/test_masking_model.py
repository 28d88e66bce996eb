import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, DistilBertConfig, RobertaConfig

from tmlib.masking.config import MaskConfig, MaskConfigError
from tmlib.masking.layer import MaskedLinear
from tmlib.masking.model import (
    MaskFlipTracker,
    apply_masks,
    effective_state_dict,
    fold_masks,
    mask_parameters,
    masked_layers,
    sparsity_report,
    to_plain,
    trainable_parameters,
    unmask,
)


def _bert(layers=4):
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=3,
    )
    return AutoModelForSequenceClassification.from_config(cfg)


def _distilbert():
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=120, dim=32, n_layers=3, n_heads=2, hidden_dim=64, max_position_embeddings=32)
    return AutoModelForSequenceClassification.from_config(cfg)


def _roberta():
    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        pad_token_id=1,
    )
    return AutoModelForSequenceClassification.from_config(cfg)


def _ids(n=3, length=9):
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, 120, (n, length), generator=g)


def test_bert_default_wraps_blocks_after_the_first_two_plus_pooler_and_head():
    m = apply_masks(_bert(), MaskConfig(), seed=0)
    names = set(masked_layers(m))
    for b in (2, 3):
        for rel in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ):
            assert f"bert.encoder.layer.{b}.{rel}" in names
    assert not any(".layer.0." in n or ".layer.1." in n for n in names)
    assert {"bert.pooler.dense", "classifier"} <= names and len(names) == 2 * 6 + 2
    rep = sparsity_report(m)
    assert set(rep["type"]) == {"query", "key", "value", "attn_out", "ffn_in", "ffn_out", "pooler", "head"}
    assert rep["kept_pct"].between(85, 100).all()


def test_distilbert_and_roberta_names():
    d = apply_masks(_distilbert(), MaskConfig(skip_first_blocks=1), seed=0)
    names = set(masked_layers(d))
    assert (
        "distilbert.transformer.layer.1.attention.q_lin" in names and "distilbert.transformer.layer.2.ffn.lin2" in names
    )
    assert "pre_classifier" in names and "classifier" in names
    assert not any(".layer.0." in n for n in names) and len(names) == 2 * 6 + 2
    r = apply_masks(_roberta(), MaskConfig(blocks=(0,), target_modules=("query", "ffn_out")), seed=0)
    assert set(masked_layers(r)) == {
        "roberta.encoder.layer.0.attention.self.query",
        "roberta.encoder.layer.0.output.dense",
        "classifier.dense",
        "classifier.out_proj",
    }


def test_only_scores_train_everything_else_untouched():
    m = _bert()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    apply_masks(m, MaskConfig(), seed=0)
    assert all(p is s for p, s in zip(trainable_parameters(m), mask_parameters(m)))
    opt = torch.optim.Adam(mask_parameters(m), lr=0.1)
    out = m(input_ids=_ids(), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    opt.step()
    after = m.state_dict()
    for k, v in before.items():  # embeddings, LayerNorms, biases, frozen weights: bit-identical
        assert torch.equal(after[k], v), k
    assert all(k.endswith("scores") for k in set(after) - set(before))


def test_trained_head_option():
    m = apply_masks(_bert(), MaskConfig(head="trained"), seed=0)
    assert "classifier" not in masked_layers(m)
    extra = {id(p) for p in trainable_parameters(m)} - {id(s) for s in mask_parameters(m)}
    assert extra == {id(m.classifier.weight), id(m.classifier.bias)}


def test_effective_state_dict_keys_and_plain_model_reproduces_logits_exactly():
    ref_keys = set(_bert().state_dict())
    m = apply_masks(_bert(), MaskConfig(skip_first_blocks=0), seed=3)
    with torch.no_grad():  # make the masks non-trivial
        for s in mask_parameters(m):
            s.uniform_(-0.5, 0.5)
    sd = effective_state_dict(m)
    assert set(sd) == ref_keys
    fresh = _bert()
    fresh.load_state_dict(sd)
    plain = to_plain(m)
    assert not masked_layers(plain) and masked_layers(m)  # to_plain copies
    m.eval(), fresh.eval(), plain.eval()
    x = _ids()
    with torch.no_grad():
        ref = m(input_ids=x).logits
        assert torch.equal(fresh(input_ids=x).logits, ref)
        assert torch.equal(plain(input_ids=x).logits, ref)
        fold_masks(m)
        assert torch.equal(m(input_ids=x).logits, ref)
    w = sd["bert.encoder.layer.0.attention.self.query.weight"]
    assert 0.3 < (w == 0).float().mean() < 0.7
    unmask(m)
    assert not any(isinstance(x, MaskedLinear) for x in m.modules()) and all(p.requires_grad for p in m.parameters())


def test_flip_tracker_counts_flips():
    m = apply_masks(_bert(), MaskConfig(), seed=0)
    from tmlib.masking.model import masked_layers

    def binary():  # every masked layer's forward mask, as the layers apply it
        return {n: (layer.mask() != 0).clone() for n, layer in masked_layers(m).items()}

    tr = MaskFlipTracker(every=1)
    logs = {"loss": 1.0}
    tr(1, m, logs)
    start = binary()
    total = sum(v.numel() for v in start.values())
    assert tr.rows[-1] == {
        "step": 1,
        "kept_pct": pytest.approx(100 * sum(int(v.sum()) for v in start.values()) / total),
        "flips": 0,
        "flip_pct": 0.0,
        "loss": 1.0,
    }
    layer = m.classifier
    with torch.no_grad():
        off = (layer.mask() == 0).nonzero()[:2]  # weights the mask leaves out (init: about 5% of them)
        layer.scores[0, :5] = -1.0  # off
        layer.scores[off[:, 0], off[:, 1]] = 1.0  # off -> on
    now = binary()
    flips = sum(int((now[k] ^ start[k]).sum()) for k in now)
    assert len(off) == 2 and int((now["classifier"] & ~start["classifier"]).sum()) == 2  # bits flip both ways
    tr(2, m, logs)
    assert tr.rows[-1]["flips"] == flips and logs["mask_flips"] == flips
    assert tr.rows[-1]["flip_pct"] == pytest.approx(100 * flips / total)
    assert logs["mask_kept_pct"] == pytest.approx(100 * sum(int(v.sum()) for v in now.values()) / total)
    tr(3, m, logs)  # nothing changed since the last record
    assert tr.rows[-1]["flips"] == 0
    assert tr.frame()[["step", "flips"]].values.tolist() == [[1, 0], [2, flips], [3, 0]]


def test_errors_are_clear():
    with pytest.raises(MaskConfigError, match="leaves none of the model's 2 blocks"):
        apply_masks(_bert(layers=2), MaskConfig())
    with pytest.raises(MaskConfigError, match="blocks \\[7\\] do not exist"):
        apply_masks(_bert(), MaskConfig(blocks=(7,)))
    with pytest.raises(MaskConfigError, match="match no Linear layer"):
        apply_masks(_bert(), MaskConfig(target_modules=("re:nothing_like_this",)))
    m = apply_masks(_bert(), MaskConfig(), seed=0)
    with pytest.raises(ValueError, match="already has masked layers"):
        apply_masks(m, MaskConfig())


def test_same_seed_same_scores():
    a = mask_parameters(apply_masks(_bert(), MaskConfig(), seed=5))
    b = mask_parameters(apply_masks(_bert(), MaskConfig(), seed=5))
    c = mask_parameters(apply_masks(_bert(), MaskConfig(), seed=6))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
