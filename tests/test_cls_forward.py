"""cls_logits: the last layer for [CLS] only gives the model's own logits (eager and SDPA, fp32 and bf16)."""
import pytest
import torch

from tmlib.importance.cls_forward import cls_logits, supports
from tmlib.models import load_classifier, load_token_classifier


def _batch(seed=0, b=5, n=11, vocab=1000, pad_rows=True, segments=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, n), generator=g)
    att = torch.ones(b, n, dtype=torch.long)
    if pad_rows:
        for r, keep in enumerate(range(n, n - b, -1)):   # rows of different length: padding masked out
            att[r, keep:] = 0
            ids[r, keep:] = 0
    seg = torch.zeros(b, n, dtype=torch.long)
    if segments:
        seg[:, n // 2:] = 1
    return {"input_ids": ids, "attention_mask": att, "token_type_ids": seg}


def _model(attn: str):
    model = load_classifier("scratch:tiny", ["a", "b", "c"], seed=0).eval()
    model.config._attn_implementation = attn
    with torch.no_grad():                       # a random head: make its logits differ between inputs
        model.classifier.weight.mul_(30.0)
    return model


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("pad_rows", [True, False])
def test_same_logits_as_the_model_fp32(attn, pad_rows):
    model = _model(attn)
    batch = _batch(pad_rows=pad_rows)
    with torch.no_grad():
        full = model(**batch).logits
        fast = cls_logits(model, **batch)
    assert fast.shape == full.shape
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    assert full.std() > 0.1, "the test needs logits that differ between rows"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_same_logits_under_bf16_autocast(attn):
    model = _model(attn)
    batch = _batch(seed=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(**batch).logits.float()
        fast = cls_logits(model, **batch).float()
    torch.testing.assert_close(fast, full, rtol=2e-2, atol=2e-2)


def test_padding_never_leaks_into_cls():
    """The [CLS] row must ignore what sits in padded positions, as the model's own forward does."""
    model = _model("sdpa")
    batch = _batch(seed=2)
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][batch["attention_mask"] == 0] = 7
    with torch.no_grad():
        torch.testing.assert_close(cls_logits(model, **batch), cls_logits(model, **other))


def test_unsupported_models_are_refused_with_the_fix():
    tagger = load_token_classifier("scratch:tiny", num_labels=2)
    assert not supports(tagger)
    with pytest.raises(TypeError, match="call the model itself"):
        cls_logits(tagger, **_batch())
