"""Serve several tasks from ONE frozen backbone in memory by swapping 1-bit masks.

    mt = MultiTaskMaskedModel(load_classifier("minilm", ["a", "b"]), tokenizer, backbone_name="minilm")
    mt.add_task("mr", "runs/.../solutions/mr/mask-s0/mask.safetensors")
    mt.add_task("bbc", "runs/.../solutions/bbc/mask-s0/mask.safetensors")
    mt.predict("bbc", ["Shares rose after ..."])      # -> ["business"]
    mt.memory_bytes()                                 # backbone once + packed bits and a head per task

Each masked layer keeps the pretrained weight ``W`` once; the active task's effective weight
``W * mask`` is written into one working buffer per layer when the task is activated (the mask
is unpacked from its bits). The result is bit-for-bit the forward pass of the separately trained
masked model. Activation costs one unpack + multiply per masked weight; switching per batch is fine,
switching per example is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tmlib.masking.layer import MaskedLinear
from tmlib.masking.model import masked_layers
from tmlib.masking.packing import MaskFileError, PackedMask, backbone_fingerprint, check_compatible, read_mask


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


class MultiTaskMaskedModel(nn.Module):
    """One plain HF sequence-classification backbone + per-task packed masks and heads."""

    def __init__(self, backbone: nn.Module, tokenizer=None, backbone_name: str = ""):
        super().__init__()
        if masked_layers(backbone):
            raise ValueError(
                "pass a plain backbone (e.g. tmlib.core.models.load_classifier(name, labels)), not a masked model"
            )
        self.model = backbone.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.backbone_name = backbone_name
        self.tasks: dict[str, PackedMask] = {}
        self.heads = nn.ModuleDict()
        self._orig: dict[str, torch.Tensor] = {}
        self._work: dict[str, torch.Tensor] = {}
        self._fingerprint: str | None = None
        self._head_name: str | None = None
        self.active: str | None = None

    # ------------------------------------------------------------------------------------------- tasks
    def add_task(self, name: str, mask: PackedMask | str | Path) -> MultiTaskMaskedModel:
        packed = mask if isinstance(mask, PackedMask) else read_mask(mask)
        where = f"mask of task {name!r}"
        if name in self.tasks:
            raise ValueError(f"task {name!r} is already loaded; tasks: {list(self.tasks)}")
        check_compatible(self.model, packed, where)
        head = packed.head_module
        names = sorted(set(packed.bits) - {head})
        if self._fingerprint is None:
            fp = backbone_fingerprint(self.model, names)
            if fp != packed.meta["fingerprint"]:
                raise MaskFileError(
                    f"{where} was learned on other backbone weights ({packed.meta['backbone']!r}) "
                    f"than this backbone ({self.backbone_name!r})"
                )
            self._fingerprint, self._head_name = fp, head
            for n in names:
                lin = self.model.get_submodule(n)
                self._orig[n] = lin.weight.detach()
                self._work[n] = torch.empty_like(self._orig[n])
                lin.weight = nn.Parameter(self._work[n], requires_grad=False)
        else:
            if (
                packed.meta["fingerprint"] != self._fingerprint
                or names != sorted(self._orig)
                or head != self._head_name
            ):
                raise MaskFileError(
                    f"{where} masks other layers or another backbone than the tasks loaded so far "
                    f"({list(self.tasks)}); every task must share the backbone "
                    f"{self.backbone_name!r} and mask the same layers"
                )
        w = packed.head["weight"]
        lin = nn.Linear(w.shape[1], w.shape[0], bias="bias" in packed.head)
        with torch.no_grad():
            lin.weight.copy_(w * packed.mask(head).to(w.dtype) if head in packed.bits else w)
            if "bias" in packed.head:
                lin.bias.copy_(packed.head["bias"])
        self.heads[name] = lin.requires_grad_(False).eval()
        self.tasks[name] = packed
        if self.active is None:
            self.activate(name)
        return self

    @torch.no_grad()
    def activate(self, task: str) -> None:
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}; loaded tasks: {list(self.tasks) or 'none (call add_task first)'}")
        if task == self.active:
            return
        packed = self.tasks[task]
        for n, w in self._orig.items():
            torch.mul(w, packed.mask(n).to(w.dtype), out=self._work[n])
        self.model.set_submodule(self._head_name, self.heads[task])
        id2label = packed.id2label or {i: str(i) for i in range(self.heads[task].out_features)}
        self.model.config.id2label = id2label
        self.model.config.label2id = {v: k for k, v in id2label.items()}
        if hasattr(self.model, "num_labels"):
            self.model.num_labels = len(id2label)
        self.active = task

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, task: str, **batch):
        self.activate(task)
        with torch.no_grad():
            return self.model(**batch)

    @torch.no_grad()
    def logits(self, task: str, texts: Sequence[str], batch_size: int = 64, max_length: int = 128) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("no tokenizer: pass tokenizer= to MultiTaskMaskedModel, or call forward(task, **batch)")
        texts = list(texts)
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            out.append(self.forward(task, **enc).logits)
        return torch.cat(out) if out else torch.empty(0, self.heads[task].out_features)

    def predict(self, task: str, texts: Sequence[str], batch_size: int = 64, max_length: int = 128) -> list[str]:
        """Predicted label names for ``texts`` under ``task``."""
        ids = self.logits(task, texts, batch_size, max_length).argmax(-1).tolist()
        names = self.tasks[task].id2label
        return [names.get(i, str(i)) for i in ids]

    # ------------------------------------------------------------------------------------------ memory
    def memory_bytes(self) -> dict:
        """Bytes held: the shared backbone once (pretrained weights, embeddings, ...), the working buffers of
        the active task's effective weights, and per task its packed bits + head."""
        head_ids = {id(p) for p in self.heads.parameters()}
        work_ptrs = {t.untyped_storage().data_ptr() for t in self._work.values()}
        backbone = [
            t
            for t in list(self.model.parameters()) + list(self.model.buffers())
            if id(t) not in head_ids and t.untyped_storage().data_ptr() not in work_ptrs
        ]
        backbone += list(self._orig.values())
        per_task = {name: p.nbytes() for name, p in self.tasks.items()}
        out = {"backbone": _tensor_bytes(backbone), "working": _tensor_bytes(self._work.values()), "tasks": per_task}
        out["total"] = out["backbone"] + out["working"] + sum(per_task.values())
        return out


def fp32_model_bytes(model: nn.Module) -> int:
    """Bytes of a full fp32 copy of a (plain or masked) model's weights, as a fine-tuned copy would hold."""
    total = 0
    for n, p in model.named_parameters():
        if n.endswith(".scores") and isinstance(model.get_submodule(n.rsplit(".", 1)[0]), MaskedLinear):
            continue
        total += p.numel() * 4
    return total + sum(b.numel() * b.element_size() for b in model.buffers())


def projected_memory(n_tasks: int, backbone: int, working: int, per_task: float) -> int:
    return int(backbone + working + n_tasks * per_task)


__all__ = ["MultiTaskMaskedModel", "fp32_model_bytes", "projected_memory"]
