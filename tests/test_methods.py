import numpy as np
import pytest
import torch

from tmlib import plots
from tmlib.core import models
from tmlib.core.training import TrainConfig, fit
from tmlib.masking.config import MaskConfig
from tmlib.masking.methods import METHODS, get_method, prepare_method
from tmlib.masking.model import mask_parameters
from tmlib.tasks.classify import Classification


def _model():
    return models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(
        ValueError, match="unknown adaptation method 'adapter'; valid methods: finetune, bitfit, mask, lora"
    ):
        get_method("adapter")


def test_what_each_method_trains():
    ft = prepare_method("finetune", _model())
    assert ft.n_trainable == sum(p.numel() for p in ft.model.parameters())
    bf = prepare_method("bitfit", _model())
    names = {n for n, p in bf.model.named_parameters() if p.requires_grad}
    assert names and all(n.endswith("bias") or n.startswith("classifier.") for n in names)
    assert "classifier.weight" in names
    mk = prepare_method("mask", _model(), seed=0, mask_config=MaskConfig(skip_first_blocks=0))
    assert [id(p) for p in mk.params] == [id(p) for p in mask_parameters(mk.model)]
    assert mk.optimizer_cls is torch.optim.Adam and mk.weight_decay == 0.0 and mk.lr == METHODS["mask"].lr
    cfg = mk.train_config(TrainConfig(lr=2e-5, weight_decay=0.01), lr=0.02)
    assert cfg.lr == 0.02 and cfg.weight_decay == 0.0


@pytest.mark.parametrize("name, lr", [("finetune", 3e-3), ("bitfit", 1e-2), ("mask", 5e-2), ("lora", 1e-2)])
def test_methods_train_with_the_classification_objective(name, lr, tiny_task, tokenizer):
    prep = prepare_method(name, _model(), seed=0, mask_config=MaskConfig(skip_first_blocks=1))
    frozen = {n: p.clone() for n, p in prep.model.named_parameters() if not p.requires_grad}
    cfg = prep.train_config(TrainConfig(batch_size=8, epochs=2, max_length=16, progress=False, warmup_ratio=0.0), lr=lr)
    res = fit(
        prep.model,
        tiny_task,
        cfg,
        Classification(tokenizer, test_predictions=True),
        params=prep.params,
        optimizer_cls=prep.optimizer_cls,
    )
    assert res.fit.steps == 6
    # the reported test accuracy is the share of right answers of the trained model, recomputed here with a plain
    # forward of the model itself (no length sorting, no [CLS]-only kernels)
    test = tiny_task["test"]
    batch = tokenizer(list(test["text"]), padding=True, truncation=True, max_length=16, return_tensors="pt")
    prep.model.eval()
    with torch.no_grad():
        pred = prep.model(**batch).logits.argmax(-1).numpy()
    labels = np.asarray(list(test["label"]))
    assert res.test["predictions"].tolist() == pred.tolist()
    assert res.test["accuracy"] == pytest.approx((pred == labels).mean())
    for n, p in prep.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{name} changed frozen {n}"


def test_schedules_owned_by_the_spec():
    mk = prepare_method("mask", _model(), seed=0, mask_config=MaskConfig(skip_first_blocks=0))
    cfg = mk.train_config(TrainConfig())
    assert (cfg.schedule, cfg.warmup_ratio, cfg.grad_clip) == ("constant", 0.0, 0.0)  # maskbert's official recipe
    lin = prepare_method(
        "mask", _model(), seed=0, mask_config=MaskConfig(skip_first_blocks=0), schedule="linear"
    ).train_config(TrainConfig(warmup_ratio=0.0))
    assert (lin.schedule, lin.warmup_ratio, lin.grad_clip) == ("linear", 0.1, 1.0)
    assert get_method("finetune").default_schedule == "linear" and get_method("mask").default_schedule == "official"
    with pytest.raises(ValueError, match="no schedule 'official'"):
        prepare_method("finetune", _model(), schedule="official")
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="cosine")


def test_constant_schedule_keeps_lr(tiny_task, tokenizer):
    prep = prepare_method("mask", _model(), seed=0, mask_config=MaskConfig(skip_first_blocks=1))
    lrs = []
    cfg = prep.train_config(TrainConfig(batch_size=8, epochs=1, max_length=16, progress=False), lr=0.05)
    fit(
        prep.model,
        tiny_task,
        cfg,
        Classification(tokenizer),
        params=prep.params,
        optimizer_cls=prep.optimizer_cls,
        on_step=[lambda step, model, logs: lrs.append(logs["lr"])],
    )
    assert lrs and all(lr == 0.05 for lr in lrs)


def test_every_spec_is_complete_and_serving_formula():
    for name, spec in METHODS.items():
        assert spec.name == name and spec.lr > 0
        assert name in plots.PALETTE and name in plots.LABELS, f"{name}: add its colour and label to tmlib.plots"
        assert spec.default_schedule in spec.schedules
    assert get_method("finetune").serve_bytes(3, 100, 100) == 300  # one full copy per task
    assert get_method("bitfit").serve_bytes(3, 100, 5) == 115  # shared backbone + per-task bytes
    assert get_method("mask").serve_bytes(3, 100, 1, working=40) == 143


def test_lora_exports_a_plain_model_with_merged_weights():
    base = _model()
    keys = set(base.state_dict())
    prep = prepare_method("lora", base, seed=0)
    names = {n for n, p in prep.model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n or ".classifier." in n for n in names)
    assert (
        any("query" in n for n in names) and any("value" in n for n in names) and not any(".key." in n for n in names)
    )
    with torch.no_grad():
        for n, p in prep.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    prep.model.eval()
    x = torch.randint(1000, 2000, (2, 6))
    with torch.no_grad():
        ref = prep.model(input_ids=x).logits
    out = prep.export(backbone="scratch:tiny", fp32_bytes=10**9)
    assert set(out.model.state_dict()) == keys  # a plain HF model, the backbone's keys
    with torch.no_grad():
        assert torch.allclose(out.model(input_ids=x).logits, ref, atol=1e-5)
    assert out.task_bytes == sum(v.numel() * 4 for v in out.state.values()) < 10**9
