"""Apply a tmlib mask export to its backbone with transformers, torch, safetensors and numpy only (no tmlib).

    import apply_mask
    model, tokenizer = apply_mask.load("path/to/export")       # the backbone the export names
    model, tokenizer = apply_mask.load("path/to/export", backbone="path/or/hub-id")

    python apply_mask.py path/to/export "a sentence" "another one"   # prints one label per sentence

``mask.safetensors`` holds, per masked linear layer, the binary mask bit-packed (``numpy.packbits`` of the
flattened mask, row-major) as ``mask.<module name>``, and the task's classifier head as ``head.weight`` /
``head.bias``; its metadata names the layers' shapes (``shapes``), the head module (``head``) and the labels
(``id2label``). The effective weight of a masked layer is ``W * mask``; biases, embeddings and LayerNorms are the
backbone's. Before applying, the backbone's weights are checked against the fingerprint the mask was learned on.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch


def read(folder: str | Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(Path(folder) / "mask.safetensors"), framework="numpy") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safetensors handle


def fingerprint(model, names) -> str:
    """SHA-256 over a strided sample of the named layers' weights (fast, order fixed): the check the mask file
    carries. tmlib computes it with this same function (``tmlib.masking.packing.backbone_fingerprint``)."""
    h = hashlib.sha256()
    mods = dict(model.named_modules())
    for n in sorted(names):
        w = mods[n].weight.detach().float().cpu().contiguous().view(-1)
        h.update(n.encode())
        h.update(str(tuple(mods[n].weight.shape)).encode())
        h.update(w[:: max(1, w.numel() // 4096)].numpy().tobytes())
    return h.hexdigest()[:24]


def load(folder: str | Path, backbone: str | None = None):
    """The backbone with the export's masks and head applied (eval mode), and the export's tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    meta, arrays = read(folder)
    if backbone is None:  # the backbone the export names: a hub id, a local folder, or its own backbone/ folder
        backbone = json.loads((folder / "tmlib_export.json").read_text())["backbone_source"]["path"]
        backbone = str(folder / backbone) if (folder / backbone).is_dir() else backbone
    id2label = {int(k): v for k, v in json.loads(meta["id2label"]).items()}
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    shapes = {n: tuple(s) for n, s in json.loads(meta["shapes"]).items()}
    head = meta["head"]
    found = fingerprint(model, [n for n in shapes if n != head])
    if found != meta["fingerprint"]:
        raise ValueError(
            f"{backbone} is not the backbone this mask was learned on ({meta['backbone']!r}): its weights "
            f"differ (fingerprint {found} != {meta['fingerprint']})"
        )
    mods = dict(model.named_modules())
    with torch.no_grad():
        mods[head].weight.copy_(torch.from_numpy(arrays["head.weight"]))
        if "head.bias" in arrays:
            mods[head].bias.copy_(torch.from_numpy(arrays["head.bias"]))
        for name, shape in shapes.items():
            bits = np.unpackbits(arrays["mask." + name], count=int(np.prod(shape))).reshape(shape)
            weight = mods[name].weight
            weight.mul_(torch.from_numpy(bits.astype(np.float32)).to(weight.dtype))
    return model.eval(), AutoTokenizer.from_pretrained(folder / "tokenizer")


if __name__ == "__main__":
    model, tokenizer = load(sys.argv[1])
    with torch.no_grad():
        logits = model(**tokenizer(sys.argv[2:], padding=True, truncation=True, return_tensors="pt")).logits
    for text, i in zip(sys.argv[2:], logits.argmax(-1).tolist()):
        print(f"{model.config.id2label[i]}\t{text}")
