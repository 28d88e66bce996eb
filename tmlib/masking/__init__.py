"""Learned binary weight masks over a frozen pretrained model (Zhao et al., EMNLP 2020).

peft-tuner layout: ``config`` (MaskConfig), ``layer`` (MaskedLinear + straight-through estimator),
``model`` (wrap an HF model, reports, effective weights), ``packing`` (1-bit export/import),
``multitask`` (serve many tasks from one backbone).
"""

from .config import MODULE_TYPES, MaskConfig, MaskConfigError
from .layer import BinarizeSTE, MaskedLinear
from .model import (
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
from .packing import MaskFileError, PackedMask, export_mask, load_mask, pack_model, read_mask

__all__ = [
    "MODULE_TYPES",
    "MaskConfig",
    "MaskConfigError",
    "BinarizeSTE",
    "MaskedLinear",
    "MaskFlipTracker",
    "apply_masks",
    "effective_state_dict",
    "fold_masks",
    "mask_parameters",
    "masked_layers",
    "sparsity_report",
    "to_plain",
    "trainable_parameters",
    "unmask",
    "MaskFileError",
    "PackedMask",
    "export_mask",
    "load_mask",
    "pack_model",
    "read_mask",
]
