"""Adaptation methods: how a pretrained classifier is adapted to a task, one registry entry each. A classifier is
a head per input (``*ForSequenceClassification``) or a head per token (``*ForTokenClassification``): every method
prepares both.

    prep = prepare_method("mask", model, seed=0, mask_config=MaskConfig())
    fit(prep.model, data, prep.train_config(base_cfg), Classification(tok), params=prep.params,
        optimizer_cls=prep.optimizer_cls, on_step=prep.spec.step_hooks(10))
    out = prep.export(backbone="minilm", fp32_bytes=fp32_model_bytes(model))
    out.model        # plain HF classifier with the effective weights (same keys as the backbone's)
    out.task_bytes   # what one more task costs to store

A :class:`MethodSpec` owns everything method-specific: default lr, optimizer and weight decay, which
parameters train, its named schedules (and the default one), what is exported and stored per task,
and the memory to serve N tasks at once (its plot colour and label are in :mod:`tmlib.plots`). Adding a
method is one entry in :data:`METHODS` (plus its prepare/export functions); notebook 03 picks it up.

==========  ===============================================  ===========  ======  =====================
name        trains                                           optimizer    lr      default schedule
==========  ===============================================  ===========  ======  =====================
finetune    every parameter                                  AdamW 0.01   2e-5    linear
bitfit      biases + classifier head (Ben Zaken et al.)      AdamW 0      1e-3    linear
mask        mask scores only (Zhao et al. 2020)              Adam 0       1e-3    official (constant)
lora        LoRA r=8, alpha 16 on query/value + head (peft)  AdamW 0.01   5e-4    linear
==========  ===============================================  ===========  ======  =====================

Schedules: ``linear`` = 10% linear warmup, linear decay to 0, gradient clipping at 1.0 (HF's default
recipe); ``official`` (mask only) = maskbert's ``finetuner.py``: constant lr, no warmup, no decay, no
clipping.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tmlib.masking.config import MODULE_TYPES, MaskConfig
from tmlib.masking.model import _head_name, apply_masks, trainable_parameters


@dataclass(frozen=True)
class Schedule:
    """A named learning-rate schedule: the :class:`~tmlib.core.training.TrainConfig` fields it sets."""

    schedule: str = "linear"  # TrainConfig.schedule: "linear" decay | "constant"
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0  # 0 disables

    def to_dict(self) -> dict:
        return {"schedule": self.schedule, "warmup_ratio": self.warmup_ratio, "grad_clip": self.grad_clip}


LINEAR = Schedule("linear", 0.1, 1.0)
OFFICIAL_MASK = Schedule("constant", 0.0, 0.0)  # maskbert finetuner.py: constant Adam lr, no warmup, no clipping


@dataclass
class Exported:
    """What a trained method leaves per task: a plain HF model with the effective weights (what notebook
    04 interpolates), the bytes one more task costs to store, and the per-task files."""

    model: nn.Module
    task_bytes: int
    state: Any = None  # PackedMask (mask), adapter state dict (lora)
    save: Callable[[Path], list[Path]] = lambda d: []  # writes the per-task files, returns them


@dataclass
class PreparedMethod:
    name: str
    model: nn.Module
    params: list[nn.Parameter]
    optimizer_cls: type
    lr: float
    weight_decay: float
    schedule: Schedule = LINEAR
    spec: MethodSpec | None = None

    def train_config(self, base, lr: float | None = None):
        """``base`` (a :class:`tmlib.core.training.TrainConfig`) with this method's lr, weight decay and schedule
        (its ``schedule``, ``warmup_ratio`` and ``grad_clip``)."""
        return replace(
            base, lr=self.lr if lr is None else lr, weight_decay=self.weight_decay, **self.schedule.to_dict()
        )

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.params)

    def export(self, backbone: str, fp32_bytes: int) -> Exported:
        return self.spec.export(self, backbone, fp32_bytes)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    lr: float  # default learning rate
    weight_decay: float
    optimizer_cls: type
    prepare: Callable[[nn.Module, int | None, Any], tuple[nn.Module, list[nn.Parameter]]]
    export: Callable[[PreparedMethod, str, int], Exported]
    schedules: Mapping[str, Schedule] = field(default_factory=lambda: {"linear": LINEAR})
    default_schedule: str = "linear"
    shares_backbone: bool = True  # serving N tasks: one frozen backbone + N x task_bytes (False: N full copies)
    options: str | None = None  # experiment-config field holding this method's options (mask: MaskConfig)
    step_hooks: Callable[[int], list] = lambda every: []  # fit on_step hooks (record every `every` steps)
    load_state: Callable[[Path], Any] = lambda d: None  # per-task state back from a solution folder

    def schedule(self, name: str | None = None) -> Schedule:
        name = name or self.default_schedule
        if name not in self.schedules:
            raise ValueError(
                f"method {self.name!r} has no schedule {name!r}; choose one of {', '.join(self.schedules)}"
            )
        return self.schedules[name]

    def serve_bytes(self, n_tasks: int, backbone: float, per_task: float, working: float = 0.0) -> int:
        """Bytes held to serve ``n_tasks`` at once: one shared backbone (+ a working buffer) and per task
        its stored bytes, or, when the method cannot share the backbone, one full copy per task."""
        if not self.shares_backbone:
            return int(n_tasks * per_task)
        return int(backbone + working + n_tasks * per_task)


# ------------------------------------------------------------------------------------------ finetune / bitfit


def _finetune(model, seed, options):
    for p in model.parameters():
        p.requires_grad_(True)
    return model, list(model.parameters())


def _bitfit(model, seed, options):
    head = _head_name(model)
    head_params = set() if head is None else {id(p) for p in model.get_submodule(head).parameters()}
    params = []
    for n, p in model.named_parameters():
        keep = n.endswith(".bias") or id(p) in head_params
        p.requires_grad_(keep)
        if keep:
            params.append(p)
    return model, params


def _export_full_copy(prep: PreparedMethod, backbone: str, fp32_bytes: int) -> Exported:
    return Exported(prep.model.eval(), fp32_bytes)


def _export_trained_params(prep: PreparedMethod, backbone: str, fp32_bytes: int) -> Exported:
    return Exported(prep.model.eval(), prep.n_trainable * 4)


# ----------------------------------------------------------------------------------------------------- mask


def _mask(model, seed, options):
    apply_masks(model, options or MaskConfig(), seed=seed)
    return model, trainable_parameters(model)


def _export_mask(prep: PreparedMethod, backbone: str, fp32_bytes: int) -> Exported:
    from tmlib.masking.model import to_plain
    from tmlib.masking.packing import pack_model, save_packed

    packed = pack_model(prep.model, backbone=backbone)

    def save(d: Path) -> list[Path]:
        save_packed(packed, d / "mask.safetensors")
        return [d / "mask.safetensors"]

    return Exported(to_plain(prep.model).eval(), packed.nbytes(), packed, save)


def _mask_hooks(every: int) -> list:
    from tmlib.masking.model import MaskFlipTracker

    return [MaskFlipTracker(every)]


def _load_mask(d: Path):
    from tmlib.masking.packing import read_mask

    return read_mask(d / "mask.safetensors") if (d / "mask.safetensors").is_file() else None


# ----------------------------------------------------------------------------------------------------- lora

LORA_R, LORA_ALPHA, LORA_DROPOUT = 8, 16, 0.0
LORA_TARGETS = ("query", "value")  # MODULE_TYPES: attention query and value linears


def _lora(model, seed, options):
    from peft import LoraConfig, TaskType, get_peft_model

    head = _head_name(model)
    targets = sorted({name.rsplit(".", 1)[-1] for t in LORA_TARGETS for name in MODULE_TYPES[t]})
    # a head per token (token classification) or one per input: peft's wrapper of that task
    task = TaskType.TOKEN_CLS if type(model).__name__.endswith("ForTokenClassification") else TaskType.SEQ_CLS
    cfg = LoraConfig(
        task_type=task,
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules=targets,
        modules_to_save=[head.split(".")[0]] if head else None,
    )
    if seed is not None:
        torch.manual_seed(seed)  # lora_A's random init
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing (FutureWarning)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, cfg)
    return peft_model, [p for p in peft_model.parameters() if p.requires_grad]


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _export_lora(prep: PreparedMethod, backbone: str, fp32_bytes: int) -> Exported:
    import tempfile

    from peft import get_peft_model_state_dict

    state = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(prep.model).items()}
    staged = Path(tempfile.mkdtemp(prefix="tmlib-lora-"))
    prep.model.save_pretrained(str(staged))  # peft's own writer (before merging): PeftModel.from_pretrained loads it

    def save(d: Path) -> list[Path]:
        (d / "adapter").mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            shutil.copy2(staged / name, d / "adapter" / name)
        shutil.rmtree(staged, ignore_errors=True)
        return [d / "adapter" / name for name in ADAPTER_FILES]

    merged = prep.model.merge_and_unload()  # plain HF model: W + B A alpha / r, trained head
    task_bytes = sum(v.numel() * v.element_size() for v in state.values())
    return Exported(merged.eval(), task_bytes, state, save)


# ------------------------------------------------------------------------------------------------- registry

METHODS: dict[str, MethodSpec] = {
    "finetune": MethodSpec(
        "finetune",
        "all parameters (full fine-tuning)",
        2e-5,
        0.01,
        torch.optim.AdamW,
        _finetune,
        _export_full_copy,
        shares_backbone=False,
    ),
    "bitfit": MethodSpec(
        "bitfit",
        "bias terms and the classifier head only",
        1e-3,
        0.0,
        torch.optim.AdamW,
        _bitfit,
        _export_trained_params,
    ),
    "mask": MethodSpec(
        "mask",
        "binary masks over frozen weights (scores only)",
        1e-3,
        0.0,
        torch.optim.Adam,
        _mask,
        _export_mask,
        schedules={"official": OFFICIAL_MASK, "linear": LINEAR},
        default_schedule="official",
        options="mask",
        step_hooks=_mask_hooks,
        load_state=_load_mask,
    ),
    "lora": MethodSpec(
        "lora",
        f"low-rank adapters (r={LORA_R}) on attention query/value + head (peft)",
        5e-4,
        0.01,
        torch.optim.AdamW,
        _lora,
        _export_lora,
    ),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown adaptation method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


def prepare_method(
    name: str,
    model: nn.Module,
    seed: int | None = None,
    mask_config: MaskConfig | None = None,
    lr: float | None = None,
    schedule: str | None = None,
) -> PreparedMethod:
    """Set ``requires_grad`` (wrap layers for ``mask``, adapters for ``lora``) and return what to train and how.
    ``mask_config``: the options of methods that take a :class:`MaskConfig`; ``schedule``: a named schedule
    of the method (``None``: its default). For ``lora`` the returned ``model`` is a peft wrapper."""
    spec = get_method(name)
    sched = spec.schedule(schedule)
    model, params = spec.prepare(model, seed, mask_config if spec.options == "mask" else None)
    if not params:
        raise ValueError(f"method {name!r} found nothing to train in {type(model).__name__}")
    return PreparedMethod(
        name, model, params, spec.optimizer_cls, spec.lr if lr is None else lr, spec.weight_decay, sched, spec
    )


# ---------------------------------------------------------------------- method settings in experiment configs


def check_method_settings(lr: Mapping[str, Any], schedule: Mapping[str, str], mask) -> tuple[dict, MaskConfig]:
    """Validate an experiment's per-method ``lr`` and ``schedule`` maps and its ``mask`` options (a mapping or a
    :class:`MaskConfig`); return ``(lr as floats, MaskConfig)``. Raises :class:`tmlib.core.config.ConfigError`
    naming the bad entry and the valid choices."""
    from tmlib.core.config import ConfigError
    from tmlib.masking.config import MaskConfigError

    bad = [m for m in [*lr, *schedule] if m not in METHODS]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; valid methods: {', '.join(METHODS)}")
    for m, v in lr.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"lr[{m!r}] must be a number > 0, got {v!r} (YAML: write 1.0e-3, not 1e-3)")
    for m, name in schedule.items():
        try:
            METHODS[m].schedule(name)
        except ValueError as exc:
            raise ConfigError(f"schedule: {exc}") from None
    try:
        options = mask if isinstance(mask, MaskConfig) else MaskConfig(**dict(mask))
    except (MaskConfigError, TypeError) as exc:
        raise ConfigError(f"mask: {exc}") from None
    return {m: float(v) for m, v in lr.items()}, options
