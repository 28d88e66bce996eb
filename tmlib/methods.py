"""Adaptation methods: how a pretrained classifier is adapted to a task, as a small registry.

    prep = prepare_method("mask", model, seed=0, mask_config=MaskConfig())
    train_classifier(prep.model, data, tok, prep.train_config(base_cfg), params=prep.params,
                     optimizer_cls=prep.optimizer_cls)

==========  ===========================================  =====================  =====
name        trains                                       optimizer              lr
==========  ===========================================  =====================  =====
finetune    every parameter                              AdamW, wd 0.01         2e-5
bitfit      biases + classifier head (Ben Zaken et al.)   AdamW, wd 0            1e-3
mask        mask scores only (Zhao et al. 2020)          Adam, no weight decay  1e-3
==========  ===========================================  =====================  =====
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from .masking.config import MaskConfig
from .masking.model import _head_name, apply_masks, trainable_parameters


@dataclass
class PreparedMethod:
    name: str
    model: nn.Module
    params: list[nn.Parameter]
    optimizer_cls: type
    lr: float
    weight_decay: float

    def train_config(self, base, lr: float | None = None):
        """``base`` (a :class:`tmlib.training.TrainConfig`) with this method's lr and weight decay."""
        return replace(base, lr=self.lr if lr is None else lr, weight_decay=self.weight_decay)

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.params)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    lr: float
    weight_decay: float
    optimizer_cls: type
    prepare: Callable[[nn.Module, int | None, MaskConfig | None], list[nn.Parameter]]


def _finetune(model, seed, mask_config):
    for p in model.parameters():
        p.requires_grad_(True)
    return list(model.parameters())


def _bitfit(model, seed, mask_config):
    head = _head_name(model)
    head_params = set() if head is None else {id(p) for p in model.get_submodule(head).parameters()}
    params = []
    for n, p in model.named_parameters():
        keep = n.endswith(".bias") or id(p) in head_params
        p.requires_grad_(keep)
        if keep:
            params.append(p)
    return params


def _mask(model, seed, mask_config):
    apply_masks(model, mask_config or MaskConfig(), seed=seed)
    return trainable_parameters(model)


METHODS: dict[str, MethodSpec] = {
    "finetune": MethodSpec("finetune", "all parameters (full fine-tuning)", 2e-5, 0.01, torch.optim.AdamW, _finetune),
    "bitfit": MethodSpec("bitfit", "bias terms and the classifier head only", 1e-3, 0.0, torch.optim.AdamW, _bitfit),
    "mask": MethodSpec("mask", "binary masks over frozen weights (scores only)", 1e-3, 0.0, torch.optim.Adam, _mask),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown adaptation method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


def prepare_method(name: str, model: nn.Module, seed: int | None = None, mask_config: MaskConfig | None = None,
                   lr: float | None = None) -> PreparedMethod:
    """Set ``requires_grad`` (and wrap layers for ``mask``) in place; return what to train and how."""
    spec = get_method(name)
    params = spec.prepare(model, seed, mask_config)
    if not params:
        raise ValueError(f"method {name!r} found nothing to train in {type(model).__name__}")
    return PreparedMethod(name, model, params, spec.optimizer_cls, spec.lr if lr is None else lr, spec.weight_decay)
