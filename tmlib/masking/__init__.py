"""Masking as an alternative to fine-tuning (Zhao et al., EMNLP 2020): learned binary weight masks over a frozen
pretrained model, the methods they are compared with, and the loss landscape between the solutions.

peft-tuner layout: ``config`` (MaskConfig), ``layer`` (MaskedLinear + straight-through estimator),
``model`` (wrap an HF model, reports, effective weights), ``packing`` (1-bit export/import),
``multitask`` (serve many tasks from one backbone). Beside them: ``methods`` (the registry: finetune, bitfit,
mask, lora through peft), ``solutions`` (a trained solution per method and seed, of a sequence or a token task,
the lr grid, the test evaluation) and ``landscape`` (paths, the Bezier curve and the plane between two solutions).
"""

from tmlib.masking.config import MODULE_TYPES, MaskConfig, MaskConfigError
from tmlib.masking.layer import BinarizeSTE, MaskedLinear
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
from tmlib.masking.packing import MaskFileError, PackedMask, export_mask, load_mask, pack_model, read_mask

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
