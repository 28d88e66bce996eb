"""cls_logits: the last layer for [CLS] only gives the model's own logits (eager and SDPA, fp32 and bf16)."""

import pytest
import torch

from tmlib.core.models import load_classifier, load_token_classifier
from tmlib.tasks.cls_forward import cls_logits, supports


def _batch(seed=0, b=5, n=11, vocab=1000, pad_rows=True, segments=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, n), generator=g)
    att = torch.ones(b, n, dtype=torch.long)
    if pad_rows:
        for r, keep in enumerate(range(n, n - b, -1)):  # rows of different length: padding masked out
            att[r, keep:] = 0
            ids[r, keep:] = 0
    seg = torch.zeros(b, n, dtype=torch.long)
    if segments:
        seg[:, n // 2 :] = 1
    return {"input_ids": ids, "attention_mask": att, "token_type_ids": seg}


def _model(attn: str):
    model = load_classifier("scratch:tiny", ["a", "b", "c"], seed=0).eval()
    model.config._attn_implementation = attn
    with torch.no_grad():  # a random head: make its logits differ between inputs
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


# ------------------------------------------------------------------ training through the [CLS]-only forward


def _grads(module, batch, labels):
    module.zero_grad(set_to_none=True)
    out = module(**batch, labels=labels)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_cls_only_classifier_same_loss_and_gradients(attn):
    """Training through ClsOnlyClassifier: the model's own loss and the same gradient on every parameter (the
    thrown-away positions of the last layer get zero gradient in the full forward, so skipping them is exact)."""
    from tmlib.tasks.cls_forward import ClsOnlyClassifier

    model = _model(attn)  # eval mode: no dropout, so both forwards are deterministic
    batch, labels = _batch(seed=3), torch.tensor([0, 2, 1, 1, 0])
    full, g_full = _grads(model, batch, labels)
    fast, g_fast = _grads(ClsOnlyClassifier(model), batch, labels)
    torch.testing.assert_close(fast.loss, full.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.logits, full.logits, rtol=1e-5, atol=1e-5)
    g_fast = {n.removeprefix("model."): g for n, g in g_fast.items()}
    assert set(g_fast) == set(g_full)
    for n in g_full:
        torch.testing.assert_close(g_fast[n], g_full[n], rtol=1e-4, atol=1e-6, msg=n)
    assert sum(float(g.abs().sum()) for g in g_full.values()) > 0


def test_cls_only_classifier_reads_a_lora_model_through_peft():
    """LoRA (peft) wraps the classifier: the adapters and the trained head copy are used, as by peft's forward."""
    from tmlib.masking.methods import prepare_method
    from tmlib.tasks.cls_forward import ClsOnlyClassifier, supports

    model = _model("sdpa")
    prep = prepare_method("lora", model, seed=0)
    peft_model = prep.model.eval()
    with torch.no_grad():  # adapters that change the output (lora_B starts at 0)
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    assert supports(peft_model) and ClsOnlyClassifier.wraps(peft_model)
    batch, labels = _batch(seed=4), torch.tensor([1, 0, 2, 2, 1])
    with torch.no_grad():
        full = peft_model(**batch, labels=labels)
        fast = ClsOnlyClassifier(peft_model)(**batch, labels=labels)
    torch.testing.assert_close(fast.logits, full.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.loss, full.loss, rtol=1e-5, atol=1e-6)


def test_cls_only_classifier_refuses_what_it_cannot_compute():
    from tmlib.tasks.cls_forward import ClsOnlyClassifier

    regression = load_classifier("scratch:tiny", ["score"], seed=0)  # one output: a regression head
    assert not ClsOnlyClassifier.wraps(regression)
    with pytest.raises(TypeError, match="kernels='hf'"):
        ClsOnlyClassifier(load_token_classifier("scratch:tiny", num_labels=2))
    with pytest.raises(TypeError, match="integer class labels"):
        ClsOnlyClassifier(_model("sdpa"))(**_batch(), labels=torch.zeros(5))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("bf16", [False, True])
def test_train_mode_draws_the_same_dropout_masks_as_the_model(attn, bf16):
    """In train mode the [CLS]-only forward draws the last layer's dropout masks for the full tensors: the
    same logits as the model's own forward from the same seed (float rounding only) and the same random
    state afterwards, so a training run follows the model's own trajectory."""
    model = _model(attn).train()
    assert model.config.hidden_dropout_prob > 0 and model.config.attention_probs_dropout_prob > 0
    batch = _batch(seed=5)
    out = {}
    for name, fn in (("full", lambda: model(**batch).logits), ("fast", lambda: cls_logits(model, **batch))):
        torch.manual_seed(7)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out[name] = fn().float()
        out[name + "_next"] = torch.rand(4)
    tol = 2e-2 if bf16 else 1e-5
    torch.testing.assert_close(out["fast"], out["full"], rtol=tol, atol=tol)
    assert torch.equal(out["fast_next"], out["full_next"]), "the random state must advance as in the model's forward"
    torch.manual_seed(8)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        other = cls_logits(model, **batch).float()
    assert (other - out["fast"]).abs().max() > 10 * tol, "the test needs dropout that changes the logits"


def test_train_mode_query_with_dropout_inside_draws_for_every_row():
    """A query projection with its own dropout (LoRA with lora_dropout) is run on every row in train mode,
    so its random draws match the model's too."""
    from peft import LoraConfig, TaskType, get_peft_model

    model = _model("eager")
    peft_model = get_peft_model(
        model,
        LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, lora_dropout=0.3, target_modules=["query", "value"]),
    ).train()
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    batch = _batch(seed=6)
    out = {}
    for name, fn in (("full", lambda: peft_model(**batch).logits), ("fast", lambda: cls_logits(peft_model, **batch))):
        torch.manual_seed(9)
        out[name] = fn()
        out[name + "_next"] = torch.rand(4)
    torch.testing.assert_close(out["fast"], out["full"], rtol=1e-5, atol=1e-5)
    assert torch.equal(out["fast_next"], out["full_next"])
