import pytest
import torch

from tmlib import models
from tmlib.masking.config import MaskConfig
from tmlib.masking.model import mask_parameters
from tmlib.methods import METHODS, get_method, prepare_method
from tmlib.training import TrainConfig, train_classifier


def _model():
    return models.load_classifier("scratch:tiny", ["negative", "positive"], seed=0)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown adaptation method 'lora'; valid methods: finetune, bitfit, mask"):
        get_method("lora")


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


@pytest.mark.parametrize("name, lr", [("finetune", 3e-3), ("bitfit", 1e-2), ("mask", 5e-2)])
def test_methods_train_with_train_classifier(name, lr, tiny_task, tokenizer):
    prep = prepare_method(name, _model(), seed=0, mask_config=MaskConfig(skip_first_blocks=1))
    frozen = {n: p.clone() for n, p in prep.model.named_parameters() if not p.requires_grad}
    cfg = prep.train_config(TrainConfig(batch_size=8, epochs=2, max_length=16, progress=False, warmup_ratio=0.0), lr=lr)
    res = train_classifier(prep.model, tiny_task, tokenizer, cfg, params=prep.params, optimizer_cls=prep.optimizer_cls)
    assert res.fit.steps == 6 and 0.0 <= res.test["accuracy"] <= 1.0
    for n, p in prep.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{name} changed frozen {n}"
