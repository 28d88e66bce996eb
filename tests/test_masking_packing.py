import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForSequenceClassification, BertConfig, DistilBertConfig

from tmlib.masking.config import MaskConfig
from tmlib.masking.model import apply_masks, mask_parameters, masked_layers
from tmlib.masking.packing import MaskFileError, export_mask, load_mask, pack_bits, read_mask, unpack_bits


def _bert(num_labels=2, hidden=32, seed=0):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(
        BertConfig(
            vocab_size=100,
            hidden_size=hidden,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
            num_labels=num_labels,
        )
    )


def _trained_like(seed=0, **kw):
    m = apply_masks(_bert(**kw), MaskConfig(skip_first_blocks=1), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in mask_parameters(m):
            s.copy_(torch.rand(s.shape, generator=g) - 0.4)
    return m


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 23), seed=st.integers(0, 2**16), p=st.floats(0.0, 1.0))
def test_pack_unpack_roundtrip(rows, cols, seed, p):
    mask = torch.from_numpy(np.random.default_rng(seed).random((rows, cols)) < p)
    packed = pack_bits(mask)
    assert packed.dtype == np.uint8 and packed.size == (rows * cols + 7) // 8  # 1 bit per weight
    assert torch.equal(unpack_bits(packed, (rows, cols)), mask)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000))
def test_file_roundtrip_reproduces_model(tmp_path_factory, seed):
    path = tmp_path_factory.mktemp("m") / "mask.safetensors"
    m = _trained_like(seed)
    export_mask(m, path, backbone="tiny-bert")
    fresh = load_mask(_bert(num_labels=5), path)  # any head size: the stored head replaces it
    for n, layer in masked_layers(m).items():
        assert torch.equal(masked_layers(fresh)[n].mask(), layer.mask()), n
    x = torch.randint(0, 100, (2, 7))
    m.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=x).logits, m(input_ids=x).logits)
    assert fresh.num_labels == 2


def test_file_is_one_bit_per_weight(tmp_path):
    m = _trained_like()
    path = export_mask(m, tmp_path / "m.safetensors", backbone="tiny-bert")
    pm = read_mask(path)
    n_bits = sum(layer.weight.numel() for layer in masked_layers(m).values())
    assert sum(b.nbytes for b in pm.bits.values()) <= n_bits / 8 + len(pm.bits)
    assert pm.meta["backbone"] == "tiny-bert" and pm.meta["model_type"] == "bert" and pm.meta["tau"] == "0.01"
    rep = pm.sparsity()
    assert rep["weights"].sum() == n_bits and rep["kept"].sum() == sum(
        int(layer.mask().sum()) for layer in masked_layers(m).values()
    )


def test_wrong_architecture_shape_or_weights_give_clear_errors(tmp_path):
    path = export_mask(_trained_like(), tmp_path / "m.safetensors", backbone="tiny-bert")
    torch.manual_seed(0)
    distil = AutoModelForSequenceClassification.from_config(
        DistilBertConfig(vocab_size=100, dim=32, n_layers=3, n_heads=2, hidden_dim=64, max_position_embeddings=32)
    )
    with pytest.raises(MaskFileError, match="made for architecture 'bert'.*'distilbert'"):
        load_mask(distil, path)
    with pytest.raises(MaskFileError, match="shape \\(48, 48\\) in the model but \\(32, 32\\)"):
        load_mask(_bert(hidden=48), path)
    with pytest.raises(MaskFileError, match="other backbone weights"):
        load_mask(_bert(seed=1), path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MaskFileError, match="not a readable safetensors"):
        read_mask(bad)
    with pytest.raises(MaskFileError, match="does not exist"):
        read_mask(tmp_path / "nope.safetensors")


def _with_head(cfg, seed=0, num_labels=2, dtype=torch.float32):
    """A masked tiny BERT with random scores and a head whose bias is not zero (as after training)."""
    m = apply_masks(_bert(num_labels=num_labels, seed=seed).to(dtype), cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in mask_parameters(m):
            s.copy_(torch.rand(s.shape, generator=g).to(s.dtype) - 0.4)
        m.classifier.bias.copy_(torch.arange(num_labels, dtype=dtype) + 0.5)
    m.config.id2label, m.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    return m.eval()


@pytest.mark.parametrize("head", ["masked", "trained"])
@pytest.mark.parametrize("labels", [2, 5])  # the same head size (weights copied in) or another (head replaced)
def test_the_stored_head_replaces_the_backbones(tmp_path, head, labels):
    from tmlib.masking.layer import MaskedLinear

    cfg = MaskConfig(skip_first_blocks=1, head=head, tau=0.05)
    m = _with_head(cfg)
    path = export_mask(m, tmp_path / "m.safetensors", backbone="tiny-bert")
    target = _bert(num_labels=labels)
    if labels == 2:
        apply_masks(target, cfg, seed=9)  # already masked with the same layers: the scores are overwritten
    fresh = load_mask(target, path).eval()
    x = torch.randint(0, 100, (3, 7))
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=x).logits, m(input_ids=x).logits)
    h = fresh.classifier
    assert torch.equal(h.weight, m.classifier.weight) and torch.equal(h.bias, m.classifier.bias)
    assert fresh.num_labels == 2 and fresh.config.id2label == {0: "neg", 1: "pos"}
    assert fresh.config.label2id == {"neg": 0, "pos": 1}
    if head == "masked":
        assert isinstance(h, MaskedLinear) and h.tau == 0.05 and torch.equal(h.mask(), m.classifier.mask())
        assert not any(p.requires_grad for p in h.parameters()) or labels == 2
    else:
        assert type(h) is torch.nn.Linear and h.weight.requires_grad == (labels == 5 or h.weight.requires_grad)


def test_a_head_without_bias_and_a_float64_backbone(tmp_path):
    cfg = MaskConfig(skip_first_blocks=1, head="trained")
    m = _with_head(cfg, dtype=torch.float64)
    m.classifier.bias = None
    packed = read_mask(export_mask(m, tmp_path / "m.safetensors", backbone="tiny-bert"))
    assert set(packed.head) == {"weight"} and packed.head["weight"].dtype == torch.float32  # stored in fp32
    assert packed.nbytes() == sum(b.nbytes for b in packed.bits.values()) + 4 * packed.head["weight"].numel()
    fresh = load_mask(_bert(num_labels=3).double(), tmp_path / "m.safetensors")
    assert fresh.classifier.bias is None and fresh.classifier.weight.dtype == torch.float64
    assert fresh.classifier.weight.shape == (2, 32) and fresh.classifier.weight.requires_grad
    masked = _with_head(MaskConfig(skip_first_blocks=1))
    masked.classifier.bias = None
    export_mask(masked, tmp_path / "h.safetensors", backbone="tiny-bert")
    same = apply_masks(_bert(), MaskConfig(skip_first_blocks=1), seed=3)
    same.classifier.bias = None
    assert load_mask(same, tmp_path / "h.safetensors").classifier.bias is None
    other = load_mask(_bert(num_labels=4), tmp_path / "h.safetensors")
    assert other.classifier.bias is None and not other.classifier.weight.requires_grad


def test_sparsity_table_from_the_bits(tmp_path):
    import pandas as pd

    from tmlib.masking.model import sparsity_report

    m = _trained_like()
    pm = read_mask(export_mask(m, tmp_path / "m.safetensors", backbone="tiny-bert"))
    rep, ref = pm.sparsity(), sparsity_report(m)
    assert list(rep.columns) == ["module", "block", "type", "weights", "kept", "kept_pct"]
    by_name = lambda t: t.sort_values("module").reset_index(drop=True)  # the file keeps its tensors sorted
    pd.testing.assert_frame_equal(by_name(rep), by_name(ref), check_dtype=False)
    row = rep.iloc[0]
    assert row.kept_pct == pytest.approx(100.0 * row.kept / row.weights) and 0 < row.kept < row.weights


def test_packing_and_loading_errors_name_the_fix(tmp_path):
    from tmlib.masking.packing import apply_packed, check_compatible, pack_model

    with pytest.raises(MaskFileError, match=r"^the model has no masked layers; call tmlib.masking.apply_masks"):
        pack_model(_bert(), "tiny-bert")

    class Bare(torch.nn.Module):  # no config, no classifier
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(4, 4)

    bare = Bare()
    bare.dense = __import__("tmlib.masking.layer", fromlist=["MaskedLinear"]).MaskedLinear.from_linear(bare.dense)
    with pytest.raises(MaskFileError, match=r"^Bare has no classifier head to store with the mask$"):
        pack_model(bare, "x")
    packed = pack_model(_trained_like(), "tiny-bert")
    with pytest.raises(MaskFileError, match=r"^mask was made for architecture 'bert' .* the model is 'Bare' \(Bare\)"):
        check_compatible(Bare(), packed)
    packed.meta["model_type"] = "Bare"
    with pytest.raises(MaskFileError, match=r"^mask masks module '.*', which the model does not have; it was made "):
        check_compatible(Bare(), packed)
    packed = pack_model(_trained_like(), "tiny-bert")
    with pytest.raises(MaskFileError, match=r"^mask was learned on other backbone weights \('tiny-bert'\): the frozen"):
        apply_packed(_bert(seed=1), packed)  # the fingerprint is checked by default
    assert apply_packed(_bert(seed=1), packed, check_fingerprint=False) is not None
    fewer = apply_masks(_bert(), MaskConfig(skip_first_blocks=2), seed=0)
    with pytest.raises(
        MaskFileError, match=r"^x and model mask different layers \(only in file: \['bert.encoder.layer"
    ):
        apply_packed(fewer, packed, where="x")
    more = apply_masks(_bert(), MaskConfig(skip_first_blocks=0), seed=0)
    with pytest.raises(MaskFileError, match=r"only in file: \[\], only in model: \['bert.encoder.layer.0"):
        apply_packed(more, packed)


def test_read_and_load_errors_name_the_file_and_the_fix(tmp_path):
    from safetensors.numpy import save_file

    from tmlib.masking.packing import PackedMask, apply_packed, pack_model, save_packed

    path = export_mask(_trained_like(), tmp_path / "m.safetensors", backbone="tiny-bert")
    torch.manual_seed(0)
    distil = AutoModelForSequenceClassification.from_config(
        DistilBertConfig(vocab_size=100, dim=32, n_layers=3, n_heads=2, hidden_dim=64, max_position_embeddings=32)
    )
    with pytest.raises(MaskFileError, match=rf"^mask file {tmp_path}/m.safetensors was made for architecture 'bert'"):
        load_mask(distil, path)
    assert load_mask(_bert(seed=1), path, check_fingerprint=False) is not None  # the caller's choice is passed on
    other = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(2, np.uint8)}, str(other), metadata={"format": "something/2"})
    with pytest.raises(
        MaskFileError, match=r"is not a tmlib mask file \(format 'something/2', expected 'tmlib-mask/1'\)"
    ):
        read_mask(other)
    packed = pack_model(_trained_like(), "tiny-bert")
    name = next(iter(packed.bits))
    packed.bits[name] = packed.bits[name][:-1]
    short = save_packed(packed, tmp_path / "short.safetensors")
    want = (int(np.prod(packed.shapes[name])) + 7) // 8
    with pytest.raises(MaskFileError, match=rf"packed mask of {name} has {want - 1} bytes, expected {want}$"):
        read_mask(short)
    packed = pack_model(_trained_like(), "tiny-bert")
    packed.bits[name] = packed.bits[name].astype(np.int8)
    with pytest.raises(MaskFileError, match=rf"packed mask of {name} has {want} bytes, expected {want}$"):
        read_mask(save_packed(packed, tmp_path / "signed.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MaskFileError, match=r"not a readable safetensors mask file \(\w+Error: "):
        read_mask(bad)
    empty = PackedMask(bits={}, shapes={}, head={}, meta={"modules": "[]"}).sparsity()
    assert empty.empty and list(empty.columns) == ["module", "block", "type", "weights", "kept", "kept_pct"]
    unnamed = pack_model(_trained_like(), "tiny-bert")
    unnamed.meta["id2label"] = "{}"  # no label names stored: the model keeps its own
    target = _bert(num_labels=2)
    apply_packed(target, unnamed)
    assert target.config.id2label == {0: "LABEL_0", 1: "LABEL_1"} and target.num_labels == 2


def test_a_replaced_masked_head_takes_the_backbones_dtype(tmp_path):
    cfg = MaskConfig(skip_first_blocks=1)
    path = export_mask(_with_head(cfg, dtype=torch.float64), tmp_path / "m.safetensors", backbone="tiny-bert")
    fresh = load_mask(_bert(num_labels=3).double(), path)
    assert fresh.classifier.weight.dtype == torch.float64 and fresh.classifier.out_features == 2


def test_file_metadata_of_a_model_without_a_config(tmp_path):
    """A masked module outside a Hugging Face model: the class name stands for the architecture, no label names."""
    import json

    from tmlib.masking.layer import MaskedLinear
    from tmlib.masking.packing import pack_model

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = MaskedLinear.from_linear(torch.nn.Linear(4, 3))

    packed = pack_model(Probe(), "probe-0")
    assert packed.meta["model_type"] == packed.meta["architecture"] == "Probe" and packed.meta["id2label"] == "{}"
    m = _trained_like()
    modules = json.loads(pack_model(m, "tiny-bert").meta["modules"])
    layers = masked_layers(m)
    assert [x["name"] for x in modules] == list(layers)
    assert all(x["shape"] == list(layers[x["name"]].weight.shape) for x in modules)
    assert unpack_bits(pack_bits(torch.tensor([True, False])), (2,)).dtype == torch.bool


def test_different_layers_list_three_of_each(tmp_path):
    from tmlib.masking.packing import apply_packed, pack_model

    packed = pack_model(_trained_like(), "tiny-bert")  # blocks 1 and 2
    with pytest.raises(MaskFileError) as fewer:
        apply_packed(apply_masks(_bert(), MaskConfig(skip_first_blocks=2), seed=0), packed)
    with pytest.raises(MaskFileError) as more:
        apply_packed(apply_masks(_bert(), MaskConfig(skip_first_blocks=0), seed=0), packed)
    only_file = str(fewer.value).split("only in file: ")[1].split("]")[0]
    only_model = str(more.value).split("only in model: ")[1].split("]")[0]
    assert only_file.count("bert.encoder.layer.1.") == 3 and only_model.count("bert.encoder.layer.0.") == 3
