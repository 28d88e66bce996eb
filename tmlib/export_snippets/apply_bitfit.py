"""Load a tmlib BitFit export with transformers and safetensors only (no tmlib): the backbone, with the trained bias
terms and classifier head of ``bitfit.safetensors`` put in.

    import apply_bitfit
    model, tokenizer = apply_bitfit.load("path/to/export")
    python apply_bitfit.py path/to/export "a sentence" "another one"   # prints one label per sentence
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def load(folder: str | Path, backbone: str | None = None):
    """The backbone with the export's biases and head (eval mode), and the export's tokenizer."""
    folder = Path(folder)
    info = json.loads((folder / "tmlib_export.json").read_text())
    id2label = {int(k): v for k, v in info["id2label"].items()}
    if backbone is None:  # the backbone the export names: a hub id, a local folder, or its own backbone/ folder
        backbone = info["backbone_source"]["path"]
        backbone = str(folder / backbone) if (folder / backbone).is_dir() else backbone
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    missing, unexpected = model.load_state_dict(load_file(str(folder / "bitfit.safetensors")), strict=False)
    if unexpected:
        raise ValueError(f"bitfit.safetensors does not fit this backbone: {unexpected[:3]}")
    return model.eval(), AutoTokenizer.from_pretrained(folder / "tokenizer")


if __name__ == "__main__":
    model, tokenizer = load(sys.argv[1])
    with torch.no_grad():
        logits = model(**tokenizer(sys.argv[2:], padding=True, truncation=True, return_tensors="pt")).logits
    for text, i in zip(sys.argv[2:], logits.argmax(-1).tolist()):
        print(f"{model.config.id2label[i]}\t{text}")
