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
