"""Notebook 03: learned binary weight masks vs fine-tuning vs BitFit, and multi-task serving (Zhao et al., 2020).

For every task x method x seed a classifier is adapted from the same backbone on the same data with
the same budget (epochs, batch size, max length), the best epoch is picked on dev, and dev/test
accuracy is reported. Then: per-layer sparsity of the learned masks, per-task storage (1-bit mask
vs an fp32 copy), and the memory needed to serve N tasks at once (one backbone + N masks vs N copies),
measured on a :class:`~tmlib.masking.multitask.MultiTaskMaskedModel` that is checked to reproduce
the separately trained models exactly.

SOLUTIONS CONTRACT (notebook 04, the loss landscape, reuses these models; keep the names)
-----------------------------------------------------------------------------------------
Every trained model is a RunStore artifact (atomic, with ``manifest.json``) at

    <out_dir>/solutions/<task>/<method>-s<seed>/
        model/             plain HF ``save_pretrained`` folder (+ tokenizer), loadable with
                           AutoModelForSequenceClassification; for ``mask`` it holds the effective
                           weights W * mask (no MaskedLinear, same keys as the unmasked model)
        metrics.json       task, method, seed, dev/test accuracy and loss, steps, seconds, storage bytes
        mask.safetensors   (method ``mask`` only) the bit-packed mask + head, see tmlib.masking.packing
        flips.csv          (method ``mask`` only) mask sparsity and flips during training

``<task>`` is the task name with characters outside ``[A-Za-z0-9_.-]`` replaced by ``_``
(``mr`` -> ``mr``, ``hub:SetFit/sst2`` -> ``hub_SetFit_sst2``). Data splits come from
``tmlib.data.load_task(task, seed=data_seed)`` (default 0). Use :func:`load_solution` to read one
(``None`` when absent or invalid) and :func:`train_solution` to train-or-reuse one.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import ConfigError
from ..runs import Artifact, RunStore


@dataclass
class MaskingConfig:
    out_dir: str = "runs/dev/03_masking_vs_finetuning"   # where figures, CSV and JSON are written
    model: str = "minilm"                 # backbone: minilm | scratch:<size> | checkpoint dir | hub name
    tasks: list[str] = field(default_factory=lambda: ["mr", "bbc"])  # tmlib.data.load_task names
    max_lengths: list[int] = field(default_factory=lambda: [64, 128])  # max tokens, one per task
    max_train: list[int] = field(default_factory=lambda: [0, 0])      # train-set cap per task (0 = all)
    max_eval: int = 0                     # cap on dev and test examples (0 = all)
    methods: list[str] = field(default_factory=lambda: ["finetune", "bitfit", "mask"])  # tmlib.methods names
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # training seeds (mean and std are reported)
    epochs: float = 3.0                   # the same budget for every method
    batch_size: int = 32                  # training batch size
    lr_finetune: float = 2e-5             # AdamW, all parameters
    lr_bitfit: float = 1e-3               # AdamW, biases + head
    lr_mask: float = 1e-3                 # Adam, mask scores only
    tau: float = 0.01                     # mask threshold
    init_sparsity: float = 0.05           # share of weights masked out at init
    mask_skip_first_blocks: int = 2       # encoder blocks left unmasked at the bottom
    mask_pooler: bool = True              # mask the pooler too
    mask_head: str = "masked"             # "masked" (frozen random head + mask, as the paper) or "trained"
    flip_every: int = 10                  # steps between mask-flip records
    memory_max_tasks: int = 10            # memory curve for 1..N tasks served at once
    data_seed: int = 0                    # split / subsample seed (notebook 04 assumes 0)
    progress: bool = True                 # tqdm bars

    def __post_init__(self):
        from ..methods import METHODS

        n = len(self.tasks)
        if n == 0:
            raise ConfigError("tasks is empty; e.g. tasks: [mr, bbc]")
        if len(self.max_lengths) != n or len(self.max_train) != n:
            raise ConfigError(f"max_lengths ({len(self.max_lengths)}) and max_train ({len(self.max_train)}) need one "
                              f"value per task ({n}: {self.tasks})")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"unknown method(s) {bad}; valid methods: {', '.join(METHODS)}")
        if not self.seeds:
            raise ConfigError("seeds is empty; e.g. seeds: [0, 1]")
        if self.mask_head not in ("masked", "trained"):
            raise ConfigError(f"mask_head must be 'masked' or 'trained', got {self.mask_head!r}")
        if any(m < 8 for m in self.max_lengths) or self.epochs <= 0 or self.batch_size < 1:
            raise ConfigError("max_lengths must be >= 8, epochs > 0, batch_size >= 1")
        self.mask_config()  # validates tau / init_sparsity

    def mask_config(self):
        from ..masking.config import MaskConfig, MaskConfigError

        try:
            return MaskConfig(tau=self.tau, init_sparsity=self.init_sparsity, skip_first_blocks=self.mask_skip_first_blocks,
                              pooler=self.mask_pooler, head=self.mask_head)
        except MaskConfigError as exc:
            raise ConfigError(str(exc)) from None

    def lr(self, method: str) -> float:
        return {"finetune": self.lr_finetune, "bitfit": self.lr_bitfit, "mask": self.lr_mask}[method]


# ----------------------------------------------------------------------------------------------- data

def task_dirname(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task)


def load_data(cfg: MaskingConfig, task: str):
    """The task's DatasetDict, with the train split capped at ``max_train`` and dev/test at ``max_eval``."""
    from ..data import load_task

    i = cfg.tasks.index(task)
    dd = load_task(task, seed=cfg.data_seed)
    caps = {"train": cfg.max_train[i], "dev": cfg.max_eval, "test": cfg.max_eval}
    for split, cap in caps.items():
        if cap and len(dd[split]) > cap:
            dd[split] = dd[split].shuffle(seed=cfg.data_seed).select(range(cap))
    return dd


# ------------------------------------------------------------------------------------------ solutions

def solution_path(run_dir: str | Path, task: str, method: str, seed: int) -> Path:
    return Path(run_dir) / "solutions" / task_dirname(task) / f"{method}-s{seed}"


def solution_key(cfg: MaskingConfig, task: str, method: str, seed: int) -> dict:
    """What an artifact depends on (its manifest config): changing any of these retrains it."""
    i = cfg.tasks.index(task)
    key = {"task": task, "model": cfg.model, "method": method, "seed": seed, "max_length": cfg.max_lengths[i],
           "max_train": cfg.max_train[i], "max_eval": cfg.max_eval, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
           "lr": cfg.lr(method), "data_seed": cfg.data_seed}
    if method == "mask":
        key["mask"] = cfg.mask_config().to_dict()
    return key


@dataclass
class _Trained:
    model: object          # plain HF model (effective weights)
    metrics: dict
    packed: object = None  # PackedMask for method "mask"
    flips: pd.DataFrame | None = None


def _train(cfg: MaskingConfig, task: str, method: str, seed: int, data, tokenizer) -> _Trained:
    from ..data import label_names
    from ..masking.model import MaskFlipTracker, to_plain
    from ..masking.multitask import fp32_model_bytes
    from ..masking.packing import pack_model
    from ..methods import prepare_method
    from ..models import load_classifier
    from ..training import TrainConfig, train_classifier

    i = cfg.tasks.index(task)
    model = load_classifier(cfg.model, label_names(data), seed=seed)
    fp32_bytes = fp32_model_bytes(model)
    prep = prepare_method(method, model, seed=seed, mask_config=cfg.mask_config())
    base = TrainConfig(batch_size=cfg.batch_size, epochs=cfg.epochs, max_length=cfg.max_lengths[i], seed=seed,
                       progress=cfg.progress)
    hooks = [MaskFlipTracker(cfg.flip_every)] if method == "mask" else []
    res = train_classifier(prep.model, data, tokenizer, prep.train_config(base, lr=cfg.lr(method)), params=prep.params,
                           optimizer_cls=prep.optimizer_cls, on_step=hooks, desc=f"{task} {method} s{seed}")
    packed = pack_model(prep.model, backbone=cfg.model) if method == "mask" else None
    if method == "finetune":
        task_bytes = fp32_bytes
    elif method == "bitfit":
        task_bytes = prep.n_trainable * 4
    else:
        task_bytes = packed.nbytes()
    metrics = {"task": task, "method": method, "seed": seed, "dev_accuracy": res.dev["accuracy"],
               "test_accuracy": res.test["accuracy"], "dev_loss": res.dev["loss"], "test_loss": res.test["loss"],
               "best_epoch": res.fit.best.get("epoch"), "steps": res.fit.steps, "train_seconds": round(res.fit.seconds, 2),
               "n_trainable": prep.n_trainable, "task_bytes": task_bytes, "fp32_copy_bytes": fp32_bytes,
               "history": res.fit.history}
    plain = to_plain(prep.model) if method == "mask" else prep.model
    return _Trained(plain.eval(), metrics, packed, hooks[0].frame() if hooks else None)


def _save(obj: _Trained, d: Path, tokenizer) -> None:
    from ..masking.packing import save_packed
    from ..runs import atomic_write_json

    obj.model.save_pretrained(d / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(d / "model")
    if obj.packed is not None:
        save_packed(obj.packed, d / "mask.safetensors")
        obj.metrics["file_bytes"] = (d / "mask.safetensors").stat().st_size
    if obj.flips is not None:
        obj.flips.to_csv(d / "flips.csv", index=False)
    atomic_write_json(d / "metrics.json", obj.metrics)


def _load(d: Path) -> _Trained:
    from transformers import AutoModelForSequenceClassification

    from ..masking.packing import read_mask

    metrics = json.loads((d / "metrics.json").read_text())
    packed = read_mask(d / "mask.safetensors") if (d / "mask.safetensors").is_file() else None
    flips = pd.read_csv(d / "flips.csv") if (d / "flips.csv").is_file() else None
    return _Trained(AutoModelForSequenceClassification.from_pretrained(d / "model").eval(), metrics, packed, flips)


def train_solution(cfg: MaskingConfig, task: str, method: str, seed: int, store: RunStore | None = None,
                   data=None, tokenizer=None):
    """Train (or reuse a valid cached) solution; returns ``(plain HF model, metrics dict)``."""
    t = _solution(cfg, task, method, seed, store, data, tokenizer)
    return t.model, t.metrics


def _solution(cfg, task, method, seed, store=None, data=None, tokenizer=None) -> _Trained:
    from ..models import load_tokenizer

    store = store or RunStore(Path(cfg.out_dir) / "solutions")
    name = f"{task_dirname(task)}/{method}-s{seed}"
    tok = tokenizer or load_tokenizer(cfg.model)
    key = solution_key(cfg, task, method, seed)

    def build():
        return _train(cfg, task, method, seed, data if data is not None else load_data(cfg, task), tok)

    return store.cached(name, key, build=build, save=lambda obj, d: _save(obj, d, tok), load=_load, seed=seed)


def load_solution(run_dir: str | Path, task: str, method: str, seed: int):
    """Notebook 03's saved model for (task, method, seed) as a plain HF classifier, or ``None`` when it is
    absent, partial or corrupt (manifest missing or a file hash mismatch)."""
    from transformers import AutoModelForSequenceClassification

    d = solution_path(run_dir, task, method, seed)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if Artifact(d, manifest.get("config", {})).check() is not None:
        return None
    try:
        return AutoModelForSequenceClassification.from_pretrained(d / "model").eval()
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------- the runs

RESULT_COLUMNS = ["task", "method", "seed", "dev_accuracy", "test_accuracy", "dev_loss", "test_loss", "best_epoch",
                  "steps", "train_seconds", "n_trainable", "task_bytes", "fp32_copy_bytes"]


def run_all(cfg: MaskingConfig) -> pd.DataFrame:
    """Train (or reuse) every task x method x seed; writes ``results.csv`` (one row per run) and
    ``flips.csv`` (mask sparsity and flips during training)."""
    from ..models import load_tokenizer

    out = RunStore(cfg.out_dir)
    store = RunStore(Path(cfg.out_dir) / "solutions")
    tok = load_tokenizer(cfg.model)
    rows, flips = [], []
    jobs = [(t, m, s) for t in cfg.tasks for m in cfg.methods for s in cfg.seeds]
    data = {}
    for task, method, seed in tqdm(jobs, desc="runs", disable=not cfg.progress):
        if task not in data:
            data[task] = load_data(cfg, task)
        t = _solution(cfg, task, method, seed, store, data[task], tok)
        rows.append({k: t.metrics.get(k) for k in RESULT_COLUMNS})
        if t.flips is not None:
            flips.append(t.flips.assign(task=task, seed=seed))
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    out.write_csv("results.csv", results)
    if flips:
        out.write_csv("flips.csv", pd.concat(flips, ignore_index=True))
    return results


def summarize(cfg: MaskingConfig, results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per task and method, with the gap to fine-tuning; writes ``summary.csv``."""
    g = results.groupby(["task", "method"], sort=False)
    s = g.agg(n_seeds=("seed", "count"), dev_mean=("dev_accuracy", "mean"), dev_std=("dev_accuracy", "std"),
              test_mean=("test_accuracy", "mean"), test_std=("test_accuracy", "std"),
              train_seconds=("train_seconds", "mean"), n_trainable=("n_trainable", "first"),
              task_bytes=("task_bytes", "first")).reset_index()
    s[["dev_std", "test_std"]] = s[["dev_std", "test_std"]].fillna(0.0)
    ft = s[s["method"] == "finetune"].set_index("task")["test_mean"]
    s["test_gap_to_finetune_pts"] = [100 * (r.test_mean - ft[r.task]) if r.task in ft else np.nan for r in s.itertuples()]
    for c in ("dev_mean", "dev_std", "test_mean", "test_std"):
        s[c] = 100 * s[c]  # accuracy in %
    RunStore(cfg.out_dir).write_csv("summary.csv", s.round(3))
    return s


def sparsity_table(cfg: MaskingConfig) -> pd.DataFrame:
    """Per task, block and module type: % of weights kept by the learned masks (mean over seeds); ``sparsity.csv``."""
    frames = []
    if "mask" in cfg.methods:
        for task in cfg.tasks:
            for seed in cfg.seeds:
                t = _solution(cfg, task, "mask", seed)
                frames.append(t.packed.sparsity().assign(task=task, seed=seed))
    cols = ["task", "block", "type", "weights", "kept_pct", "seeds"]
    if not frames:
        table = pd.DataFrame(columns=cols)
    else:
        df = pd.concat(frames, ignore_index=True)
        table = (df.groupby(["task", "block", "type"], sort=False)
                 .agg(weights=("weights", "first"), kept_pct=("kept_pct", "mean"), seeds=("seed", "count")).reset_index())
    RunStore(cfg.out_dir).write_csv("sparsity.csv", table.round(4))
    return table


def storage_table(cfg: MaskingConfig, results: pd.DataFrame) -> pd.DataFrame:
    """Task-specific bytes per method vs a full fp32 copy; ``storage.csv``."""
    s = results.groupby(["task", "method"], sort=False).agg(task_bytes=("task_bytes", "first"),
                                                            fp32_copy_bytes=("fp32_copy_bytes", "first")).reset_index()
    s["fraction_of_fp32"] = s["task_bytes"] / s["fp32_copy_bytes"]
    s["fp32_over_task"] = s["fp32_copy_bytes"] / s["task_bytes"]
    RunStore(cfg.out_dir).write_csv("storage.csv", s)
    return s


def serve_tasks(cfg: MaskingConfig, seed: int | None = None):
    """Load every task's mask (seed ``seeds[0]``) onto ONE backbone; check that each task's test logits are
    bit-identical to its separately trained model. Returns ``(MultiTaskMaskedModel, check rows)``."""
    import torch

    from ..masking.multitask import MultiTaskMaskedModel
    from ..models import load_classifier, load_tokenizer

    seed = cfg.seeds[0] if seed is None else seed
    tok = load_tokenizer(cfg.model)
    mt = MultiTaskMaskedModel(load_classifier(cfg.model, ["a", "b"], seed=seed), tok, backbone_name=cfg.model)
    sols = {task: _solution(cfg, task, "mask", seed, tokenizer=tok) for task in cfg.tasks}
    for task, t in sols.items():
        mt.add_task(task, t.packed)
    rows = []
    for task, t in sols.items():
        i = cfg.tasks.index(task)
        texts = list(load_data(cfg, task)["test"]["text"])
        got = mt.logits(task, texts, max_length=cfg.max_lengths[i])
        with torch.no_grad():
            ref = torch.cat([t.model(**tok(texts[j:j + 64], padding=True, truncation=True, max_length=cfg.max_lengths[i],
                                           return_tensors="pt")).logits for j in range(0, len(texts), 64)])
        rows.append({"task": task, "seed": seed, "examples": len(texts), "identical": bool(torch.equal(got, ref)),
                     "max_abs_diff": float((got - ref).abs().max()) if got.shape == ref.shape else float("nan")})
    return mt, rows


def memory_table(cfg: MaskingConfig, results: pd.DataFrame) -> pd.DataFrame:
    """Bytes to serve 1..``memory_max_tasks`` tasks at once per method; the multi-task model is measured for
    the real tasks and checked to be identical to the separate models (``multitask.json``); ``memory.csv``."""
    from ..masking.multitask import projected_memory

    fp32 = float(results["fp32_copy_bytes"].iloc[0])
    per_task = results.groupby("method")["task_bytes"].mean()
    rows, check = [], {}
    backbone, working = fp32, 0.0
    if "mask" in cfg.methods:
        mt, check_rows = serve_tasks(cfg)
        mem = mt.memory_bytes()
        backbone, working = mem["backbone"], mem["working"]
        per_task["mask"] = float(np.mean(list(mem["tasks"].values())))
        check = {"tasks": check_rows, "measured": mem, "all_identical": all(r["identical"] for r in check_rows)}
        rows.append({"method": "mask", "n_tasks": len(cfg.tasks), "bytes": mem["total"], "kind": "measured"})
        RunStore(cfg.out_dir).write_json("multitask.json", check)
    for n in range(1, cfg.memory_max_tasks + 1):
        for method in cfg.methods:
            if method == "finetune":
                b = n * fp32
            elif method == "bitfit":  # shared frozen backbone + per task its biases and head
                b = fp32 + n * per_task["bitfit"]
            else:
                b = projected_memory(n, backbone, working, per_task["mask"])
            rows.append({"method": method, "n_tasks": n, "bytes": int(b), "kind": "projected"})
    table = pd.DataFrame(rows, columns=["method", "n_tasks", "bytes", "kind"])
    RunStore(cfg.out_dir).write_csv("memory.csv", table)
    return table
