"""Export a task's mask bit-packed (1 bit per masked weight) and load it back onto a backbone.

File format (safetensors): for every masked layer ``mask.<module name>`` is a ``uint8`` tensor from
``numpy.packbits`` of the flattened binary mask (row-major); the task's classifier head (random-frozen
or trained, it is task specific either way) is stored in fp32 as ``head.<param name>``. String
metadata: ``format`` (``tmlib-mask/1``), ``model_type``, ``architecture``, ``backbone`` (the name
the backbone was loaded by), ``tau``, ``mask_config`` (JSON), ``modules`` (JSON list of name,
shape, block, type), ``head`` (module name), ``id2label`` (JSON) and ``fingerprint`` (a hash of
the frozen weights the mask was learned on). Loading checks architecture, module names, shapes
and the fingerprint, and names the mismatch when one fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tmlib.core.runs import atomic_save
from tmlib.masking.config import MaskConfig
from tmlib.masking.layer import MaskedLinear
from tmlib.masking.model import _head_name, _module_info, apply_masks, masked_layers

FORMAT = "tmlib-mask/1"


class MaskFileError(ValueError):
    """A mask file is unreadable or does not fit the model it is loaded onto."""


def pack_bits(mask: torch.Tensor) -> np.ndarray:
    return np.packbits(mask.detach().cpu().bool().numpy().ravel())


def unpack_bits(packed: np.ndarray, shape) -> torch.Tensor:
    n = int(np.prod(shape))
    return torch.from_numpy(np.unpackbits(packed, count=n).astype(bool).reshape(tuple(shape)))


def backbone_fingerprint(model: nn.Module, names) -> str:
    """SHA-256 over a strided sample of the frozen weights of the named layers (fast, order fixed). The function is
    the exported loader's (``export_snippets/apply_mask.py``), so a mask checked here is checked the same way
    without tmlib."""
    from tmlib.export_snippets.apply_mask import fingerprint

    return fingerprint(model, names)


@dataclass
class PackedMask:
    """A task's mask as held in memory / on disk: packed bits + head tensors + metadata."""

    bits: dict[str, np.ndarray]  # module name -> packed uint8
    shapes: dict[str, tuple[int, ...]]
    head: dict[str, torch.Tensor]  # head param name (e.g. "weight") -> fp32 tensor
    meta: dict = field(default_factory=dict)

    @property
    def head_module(self) -> str:
        return self.meta["head"]

    @property
    def config(self) -> MaskConfig:
        return MaskConfig.from_dict(json.loads(self.meta["mask_config"]))

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in json.loads(self.meta.get("id2label", "{}")).items()}

    def nbytes(self) -> int:
        """Task-specific bytes held in memory: packed bits + fp32 head."""
        return sum(b.nbytes for b in self.bits.values()) + sum(t.numel() * t.element_size() for t in self.head.values())

    def mask(self, name: str) -> torch.Tensor:
        return unpack_bits(self.bits[name], self.shapes[name])

    def sparsity(self):
        """Same columns as :func:`tmlib.masking.model.sparsity_report`, computed from the packed bits."""
        import pandas as pd

        mods = {m["name"]: m for m in json.loads(self.meta["modules"])}
        rows = []
        for name, packed in self.bits.items():
            n = int(np.prod(self.shapes[name]))
            kept = int(np.unpackbits(packed, count=n).sum())
            rows.append(
                {
                    "module": name,
                    "block": mods[name]["block"],
                    "type": mods[name]["type"],
                    "weights": n,
                    "kept": kept,
                    "kept_pct": 100.0 * kept / n,
                }
            )
        return pd.DataFrame(rows, columns=["module", "block", "type", "weights", "kept", "kept_pct"])


def pack_model(model: nn.Module, backbone: str) -> PackedMask:
    """Pack the masks (and the task head) of a model prepared with :func:`apply_masks`."""
    layers = masked_layers(model)
    if not layers:
        raise MaskFileError(
            "the model has no masked layers; call tmlib.masking.apply_masks(model, cfg) and train it first"
        )
    cfg = getattr(model, "mask_config", None) or MaskConfig()
    info = _module_info(model)
    head = _head_name(model)
    if head is None:
        raise MaskFileError(f"{type(model).__name__} has no classifier head to store with the mask")
    head_mod = model.get_submodule(head)
    head_tensors = {"weight": head_mod.weight.detach().float().cpu().clone()}
    if head_mod.bias is not None:
        head_tensors["bias"] = head_mod.bias.detach().float().cpu().clone()
    backbone_layers = [n for n in layers if n != head]
    modules = [
        {
            "name": n,
            "shape": list(layer.weight.shape),
            "block": info[n].block if n in info else -1,
            "type": info[n].type if n in info else n,
        }
        for n, layer in layers.items()
    ]
    config = getattr(model, "config", None)
    meta = {
        "format": FORMAT,
        "model_type": str(getattr(config, "model_type", type(model).__name__)),
        "architecture": type(model).__name__,
        "backbone": backbone,
        "tau": repr(float(cfg.tau)),
        "mask_config": json.dumps(cfg.to_dict()),
        "modules": json.dumps(modules),
        "head": head,
        "id2label": json.dumps({str(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}),
        "fingerprint": backbone_fingerprint(model, backbone_layers),
    }
    return PackedMask(
        bits={n: pack_bits(layer.mask()) for n, layer in layers.items()},
        shapes={n: tuple(layer.weight.shape) for n, layer in layers.items()},
        head=head_tensors,
        meta=meta,
    )


def save_packed(packed: PackedMask, path: str | Path) -> Path:
    from safetensors.numpy import save_file

    tensors = {f"mask.{n}": b for n, b in packed.bits.items()}
    tensors.update({f"head.{k}": v.numpy() for k, v in packed.head.items()})
    meta = dict(packed.meta, shapes=json.dumps({n: list(s) for n, s in packed.shapes.items()}))
    return atomic_save(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def export_mask(model: nn.Module, path: str | Path, backbone: str) -> Path:
    """Write the model's masks bit-packed (+ its head) to ``path`` (safetensors, atomic)."""
    return save_packed(pack_model(model, backbone), path)


def read_mask(path: str | Path) -> PackedMask:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MaskFileError(f"mask file {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safetensors handle
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
        raise MaskFileError(f"{path} is not a readable safetensors mask file ({type(exc).__name__}: {exc})") from exc
    if meta.get("format") != FORMAT:
        raise MaskFileError(f"{path} is not a tmlib mask file (format {meta.get('format')!r}, expected {FORMAT!r})")
    shapes = {n: tuple(s) for n, s in json.loads(meta.pop("shapes")).items()}
    bits = {k[5:]: v for k, v in arrays.items() if k.startswith("mask.")}
    head = {k[5:]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("head.")}
    for n, b in bits.items():
        if b.dtype != np.uint8 or b.size != (int(np.prod(shapes[n])) + 7) // 8:
            raise MaskFileError(
                f"{path}: packed mask of {n} has {b.size} bytes, expected {(int(np.prod(shapes[n])) + 7) // 8}"
            )
    return PackedMask(bits=bits, shapes=shapes, head=head, meta=meta)


def check_compatible(model: nn.Module, packed: PackedMask, where: str = "mask") -> None:
    """Raise :class:`MaskFileError` naming the problem if ``packed`` cannot be applied to ``model``."""
    meta = packed.meta
    model_type = str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))
    if meta["model_type"] != model_type:
        raise MaskFileError(
            f"{where} was made for architecture {meta['model_type']!r} ({meta['architecture']}, "
            f"backbone {meta['backbone']!r}) but the model is {model_type!r} "
            f"({type(model).__name__}); load it onto the backbone {meta['backbone']!r}"
        )
    mods = dict(model.named_modules())
    for n, shape in packed.shapes.items():
        if n not in mods or not hasattr(mods[n], "weight"):
            raise MaskFileError(
                f"{where} masks module {n!r}, which the model does not have; it was made for backbone "
                f"{meta['backbone']!r}"
            )
        have = tuple(mods[n].weight.shape)
        if n != packed.head_module and have != tuple(shape):
            raise MaskFileError(
                f"{where}: module {n} has shape {have} in the model but {tuple(shape)} in the mask; "
                f"it was made for backbone {meta['backbone']!r}"
            )


def apply_packed(
    model: nn.Module, packed: PackedMask, check_fingerprint: bool = True, where: str = "mask"
) -> nn.Module:
    """Load ``packed`` onto ``model`` (a plain backbone, or one already masked with the same layers), in place.

    The classifier head is replaced by the stored one (so a backbone with any head size works).
    """
    check_compatible(model, packed, where)
    if not masked_layers(model):
        apply_masks(model, packed.config)
    layers = masked_layers(model)
    missing = sorted(set(packed.bits) - set(layers))
    extra = sorted(set(layers) - set(packed.bits))
    if missing or extra:
        raise MaskFileError(
            f"{where} and model mask different layers (only in file: {missing[:3]}, only in model: "
            f"{extra[:3]}); apply the mask to a plain backbone instead"
        )
    head = packed.head_module
    if check_fingerprint:
        fp = backbone_fingerprint(model, [n for n in layers if n != head])
        if fp != packed.meta["fingerprint"]:
            raise MaskFileError(
                f"{where} was learned on other backbone weights ({packed.meta['backbone']!r}): "
                "the frozen weights of this model differ; "
                f"load the backbone {packed.meta['backbone']!r}"
            )
    _set_head(model, packed)
    for n, layer in masked_layers(model).items():
        layer.set_mask(packed.mask(n))
    return model


def _set_head(model: nn.Module, packed: PackedMask) -> None:
    name = packed.head_module
    w = packed.head["weight"]
    old = model.get_submodule(name)
    dev, dtype = old.weight.device, old.weight.dtype
    if isinstance(old, MaskedLinear) and tuple(old.weight.shape) == tuple(w.shape):
        with torch.no_grad():  # the stored weights into the masked head in place (its scores are set next)
            old.weight.copy_(w)
            if old.bias is not None and "bias" in packed.head:
                old.bias.copy_(packed.head["bias"])
    elif isinstance(old, MaskedLinear):
        new = MaskedLinear(w.to(dev, dtype), packed.head.get("bias"), tau=old.tau)
        new.requires_grad_(False)
        model.set_submodule(name, new)
    else:
        new = nn.Linear(w.shape[1], w.shape[0], bias="bias" in packed.head, device=dev, dtype=dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if "bias" in packed.head:
                new.bias.copy_(packed.head["bias"])
        new.requires_grad_(old.weight.requires_grad)
        model.set_submodule(name, new)
    id2label = packed.id2label
    if id2label and hasattr(model, "config"):
        model.config.id2label = id2label
        model.config.label2id = {v: k for k, v in id2label.items()}
        if hasattr(model, "num_labels"):
            model.num_labels = len(id2label)


def load_mask(model: nn.Module, path: str | Path, check_fingerprint: bool = True) -> nn.Module:
    """Read a mask file and apply it to ``model`` (see :func:`apply_packed`)."""
    return apply_packed(model, read_mask(path), check_fingerprint, where=f"mask file {path}")
