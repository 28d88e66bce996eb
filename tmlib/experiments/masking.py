"""Notebook 03: learned binary weight masks vs fine-tuning vs BitFit (vs LoRA), and multi-task serving (Zhao et al., 2020).

For every task x method x seed a classifier is adapted from the same backbone on the same data with
the same budget (epochs, batch size, max length), the best epoch is picked on dev, and dev/test
accuracy is reported. Then: per-layer sparsity of the learned masks, per-task storage (1-bit mask
vs an fp32 copy), and the memory needed to serve N tasks at once (one backbone + N masks vs N copies),
measured on a :class:`~tmlib.masking.multitask.MultiTaskMaskedModel` that is checked to reproduce
the separately trained models exactly.

Everything method-specific (default lr, trainable parameters, optimizer, named schedules, export
and per-task bytes, memory for N tasks served, plot colour) lives in the method's
:class:`~tmlib.methods.MethodSpec`; this module only loops over ``cfg.methods``. The mask method's
options are the nested :class:`~tmlib.masking.config.MaskConfig` ``cfg.mask`` (flat names
``mask_tau``, ``mask_skip_first_blocks``, ... via :func:`tmlib.config.from_flat`).

Every solution is a :class:`~tmlib.runs.Stage` (:func:`solution_stage`); :func:`summarize`,
:func:`sparsity_table`, :func:`storage_table` and :func:`memory_table` return tables and write
nothing; :func:`write_outputs` writes them.

SOLUTIONS CONTRACT (notebook 04, the loss landscape, reuses these models; keep the names)
-----------------------------------------------------------------------------------------
Every trained model is a RunStore artifact (atomic, with ``manifest.json``) at

    <out_dir>/solutions/<task>/<method>-s<seed>/
        model/             plain HF ``save_pretrained`` folder (+ tokenizer), loadable with
                           AutoModelForSequenceClassification, same keys as the unadapted model;
                           for ``mask`` the effective weights W * mask (no MaskedLinear), for
                           ``lora`` the merged weights W + B A * alpha / r (no adapter modules)
        metrics.json       task, method, seed, dev/test accuracy and loss, steps, seconds, storage bytes
        mask.safetensors   (method ``mask`` only) the bit-packed mask + head, see tmlib.masking.packing
        flips.csv          (method ``mask`` only) mask sparsity and flips during training
        adapter/           (method ``lora`` only) adapter_model.safetensors (LoRA A/B + head) and
                           adapter_config.json (peft's LoraConfig)

``<task>`` is the task name with characters outside ``[A-Za-z0-9_.-]`` replaced by ``_``
(``mr`` -> ``mr``, ``hub:SetFit/sst2`` -> ``hub_SetFit_sst2``). Data splits come from
``tmlib.data.load_task(task, seed=data_seed)`` (default 0), capped class-balanced by
:func:`task_data`. The manifest's ``config`` is :func:`solution_key` (``model`` is the backbone; with
a learning-rate grid it is ``{"config": solution_key, "deps": {"selection": ...}}``, the selection's key
hash included). Use :func:`load_solution` to read one (``None`` when absent or invalid),
:func:`solution_key_of` for its key, and :func:`train_solution` to train-or-reuse one.

LEARNING RATES: a method named in ``lr_grid`` gets its lr from that grid, chosen on dev accuracy of
the first seed (:func:`selection_stage`, artifact ``solutions/<task>/lr-grid/<method>/``: the grid
table ``lr_selection.csv``, ``selection.json`` and the winning run, which becomes
``<method>-s<seeds[0]>`` without retraining); every seed then trains at the chosen lr. A method
without a grid trains at ``lr[method]`` (or its spec's default).
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
from ..masking.config import MaskConfig
from ..runs import RunStore, Stage


@dataclass
class MaskingConfig:
    """Notebook 03's experiment. Flat parameter names (notebook, YAML) map onto these fields through
    :func:`tmlib.config.from_flat`: ``mask_tau`` is ``mask.tau``, ``mask_skip_first_blocks`` is
    ``mask.skip_first_blocks``. Defaults are the ``default`` parameter set (``make run``)."""

    out_dir: str = "runs/dev/03_masking_vs_finetuning"   # where figures, CSV and JSON are written
    model: str = "minilm"                 # backbone: minilm | scratch:<size> | checkpoint dir | hub name
    tasks: list[str] = field(default_factory=lambda: ["mr", "bbc"])  # tmlib.data.load_task names
    max_lengths: list[int] = field(default_factory=lambda: [64, 64])  # max tokens, one per task
    max_train: list[int] = field(default_factory=lambda: [200, 120])  # train-set cap per task (0 = all), class-balanced
    max_eval: int = 200                   # cap on dev and test examples (0 = all), class-balanced
    methods: list[str] = field(default_factory=lambda: ["finetune", "bitfit", "mask", "lora"])  # tmlib.methods names
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # training seeds (paired gaps over them)
    epochs: float = 4.0                   # the same budget for every method
    batch_size: int = 16                  # training batch size
    eval_every: int = 0                   # steps between dev evaluations (dev curve, best state); 0 = once per epoch
    lr: dict[str, float] = field(default_factory=lambda: {"finetune": 1e-4, "bitfit": 3e-3, "mask": 3e-3})
    # ^ learning rate per method without a grid; a method not named uses its spec's default (tmlib.methods)
    lr_grid: dict[str, list[float]] = field(default_factory=lambda: {
        "finetune": [5e-5, 1e-4, 2e-4], "bitfit": [1e-3, 3e-3, 1e-2], "mask": [1e-3, 3e-3, 1e-2],
        "lora": [3e-4, 1e-3, 3e-3]})
    # ^ per method: lrs tried on seeds[0], the best dev accuracy wins and every seed trains at it; {} = no grid
    lr_grid_extend: int = 2               # a winner at the grid's edge adds the next lr beyond it (same ratio), up to N times
    schedule: dict[str, str] = field(default_factory=dict)  # named schedule per method; not named: the spec's default
    mask: MaskConfig = field(default_factory=MaskConfig)  # the mask method's options (tmlib.masking.MaskConfig)
    mixed_precision: str = "bf16"         # "bf16" autocast (CPU with avx512_bf16, GPUs) | "no" (fp32) | "fp16" (CUDA);
    # ^ bf16 is the default: paired check against fp32 in the README (papermill_params/03_masking_vs_finetuning/fp32.yaml)
    kernels: str = "fast"                 # "fast" | "hf": how training computes the forward (tmlib.training.KERNELS);
    # ^ paired check against "hf" in the README (papermill_params/03_masking_vs_finetuning/hf_kernels.yaml)
    threads: int = 0                      # torch threads (0: torch's default); recorded in every manifest
    flip_every: int = 5                   # steps between mask-flip records
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
        bad = [m for m in [*self.methods, *self.lr, *self.schedule, *self.lr_grid] if m not in METHODS]
        if bad:
            raise ConfigError(f"unknown method(s) {bad}; valid methods: {', '.join(METHODS)}")
        if not self.seeds:
            raise ConfigError("seeds is empty; e.g. seeds: [0, 1]")
        for m, v in self.lr.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"lr[{m!r}] must be a number > 0, got {v!r} (YAML: write 1.0e-3, not 1e-3)")
        self.lr = {m: float(v) for m, v in self.lr.items()}
        grids = {}
        for m, vs in self.lr_grid.items():
            if isinstance(vs, (int, float)) or not list(vs):
                raise ConfigError(f"lr_grid[{m!r}] must be a non-empty list of learning rates, got {vs!r}")
            for v in vs:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                    raise ConfigError(f"lr_grid[{m!r}] values must be numbers > 0, got {v!r} (YAML: write 1.0e-3)")
            if len(set(map(float, vs))) != len(vs):
                raise ConfigError(f"lr_grid[{m!r}] has repeated values: {list(vs)}")
            grids[m] = [float(v) for v in vs]
        self.lr_grid = grids
        from ..training import check_kernels, check_mixed_precision

        try:
            check_mixed_precision(self.mixed_precision)
            check_kernels(self.kernels)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"threads must be an integer >= 0 (0: torch's default), got {self.threads!r}")
        if isinstance(self.lr_grid_extend, bool) or not isinstance(self.lr_grid_extend, int) or self.lr_grid_extend < 0:
            raise ConfigError(f"lr_grid_extend must be an integer >= 0 (0: never extend the grid), got {self.lr_grid_extend!r}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0 (0 = once per epoch), got {self.eval_every}")
        for m, name in self.schedule.items():
            try:
                METHODS[m].schedule(name)
            except ValueError as exc:
                raise ConfigError(f"schedule: {exc}") from None
        if any(m < 8 for m in self.max_lengths) or self.epochs <= 0 or self.batch_size < 1:
            raise ConfigError("max_lengths must be >= 8, epochs > 0, batch_size >= 1")
        self.mask = _as_mask_config(self.mask)

    def method_lr(self, method: str) -> float:
        """The learning rate ``method`` trains with when it has no grid: ``lr[method]`` or its spec's default
        (with a grid, :func:`chosen_lr`)."""
        from ..methods import get_method

        return self.lr.get(method, get_method(method).lr)

    def method_schedule(self, method: str):
        """The :class:`~tmlib.methods.Schedule` ``method`` trains with: ``schedule[method]`` or its spec's default."""
        from ..methods import get_method

        return get_method(method).schedule(self.schedule.get(method))

    def method_options(self, method: str):
        """The method's options (the nested config its spec names, e.g. ``mask``), or None."""
        from ..methods import get_method

        spec = get_method(method)
        return getattr(self, spec.options) if spec.options else None


def _as_mask_config(value):
    from ..masking.config import MaskConfig, MaskConfigError

    try:
        return value if isinstance(value, MaskConfig) else MaskConfig(**dict(value))
    except (MaskConfigError, TypeError) as exc:
        raise ConfigError(f"mask: {exc}") from None


# ----------------------------------------------------------------------------------------------- data

def task_dirname(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task)


def task_data(cfg: MaskingConfig, task: str):
    """The task's DatasetDict (``load_task(task, seed=data_seed)``), the train split capped at ``max_train``
    and dev/test at ``max_eval``, class-balanced (:func:`tmlib.data.cap_splits`)."""
    from ..data import cap_splits, load_task

    i = cfg.tasks.index(task)
    return cap_splits(load_task(task, seed=cfg.data_seed),
                      {"train": cfg.max_train[i], "dev": cfg.max_eval, "test": cfg.max_eval}, seed=cfg.data_seed)


# ------------------------------------------------------------------------------------------ solutions

def solution_path(run_dir: str | Path, task: str, method: str, seed: int) -> Path:
    return Path(run_dir) / "solutions" / task_dirname(task) / f"{method}-s{seed}"


def solution_key(cfg: MaskingConfig, task: str, method: str, seed: int, lr: float | None = None) -> dict:
    """What an artifact depends on (its manifest config): changing any of these retrains it. ``lr``: the
    learning rate (None: :meth:`MaskingConfig.method_lr`)."""
    from ..methods import get_method

    i = cfg.tasks.index(task)
    key = {"task": task, "model": cfg.model, "method": method, "seed": seed, "max_length": cfg.max_lengths[i],
           "max_train": cfg.max_train[i], "max_eval": cfg.max_eval, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
           "lr": cfg.method_lr(method) if lr is None else float(lr),
           "schedule": cfg.method_schedule(method).to_dict(), "data_seed": cfg.data_seed}
    if cfg.eval_every:
        key["eval_every"] = cfg.eval_every   # only when set: keys (and caches) of earlier runs stay valid
    if cfg.mixed_precision != "no":
        key["mixed_precision"] = cfg.mixed_precision   # only when set: fp32 keys of earlier runs stay valid
    if cfg.kernels != "hf":
        key["kernels"] = cfg.kernels   # only when set: keys of the runs made before the option stay valid
    spec = get_method(method)
    if spec.options:
        key[spec.options] = cfg.method_options(method).to_dict()
    return key


@dataclass
class _Trained:
    model: object          # plain HF model (effective weights)
    metrics: dict
    packed: object = None  # the method's per-task state (PackedMask for "mask")
    flips: pd.DataFrame | None = None
    save: object = None    # writes the per-task files (Exported.save), when just built


def _train(cfg: MaskingConfig, task: str, method: str, seed: int, data, tokenizer, lr: float | None = None) -> _Trained:
    from ..data import label_names
    from ..masking.multitask import fp32_model_bytes
    from ..methods import prepare_method
    from ..models import load_classifier
    from ..training import TrainConfig, train_classifier

    i = cfg.tasks.index(task)
    model = load_classifier(cfg.model, label_names(data), seed=seed)
    fp32_bytes = fp32_model_bytes(model)
    lr = cfg.method_lr(method) if lr is None else float(lr)
    prep = prepare_method(method, model, seed=seed, mask_config=cfg.method_options(method),
                          lr=lr, schedule=cfg.schedule.get(method))
    base = TrainConfig(batch_size=cfg.batch_size, epochs=cfg.epochs, max_length=cfg.max_lengths[i], seed=seed,
                       eval_every=cfg.eval_every, progress=cfg.progress, mixed_precision=cfg.mixed_precision,
                       kernels=cfg.kernels)
    hooks = prep.spec.step_hooks(cfg.flip_every)
    res = train_classifier(prep.model, data, tokenizer, prep.train_config(base), params=prep.params,
                           optimizer_cls=prep.optimizer_cls, on_step=hooks, desc=f"{task} {method} s{seed}")
    out = prep.export(backbone=cfg.model, fp32_bytes=fp32_bytes)
    metrics = {"task": task, "method": method, "seed": seed, "lr": lr, "dev_accuracy": res.dev["accuracy"],
               "test_accuracy": res.test["accuracy"], "dev_loss": res.dev["loss"], "test_loss": res.test["loss"],
               "best_epoch": res.fit.best.get("epoch"), "steps": res.fit.steps, "train_seconds": round(res.fit.seconds, 2),
               "n_trainable": prep.n_trainable, "task_bytes": out.task_bytes, "fp32_copy_bytes": fp32_bytes,
               "history": res.fit.history}
    flips = next((h.frame() for h in hooks if hasattr(h, "frame")), None)
    return _Trained(out.model.eval(), metrics, out.state, flips, out.save)


def _save(obj: _Trained, d: Path, tokenizer) -> None:
    from ..runs import atomic_write_json

    obj.model.save_pretrained(d / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(d / "model")
    files = obj.save(d) if obj.save is not None else []
    if files:
        obj.metrics["file_bytes"] = sum(f.stat().st_size for f in files)
    if obj.flips is not None:
        obj.flips.to_csv(d / "flips.csv", index=False)
    atomic_write_json(d / "metrics.json", obj.metrics)


def _load(d: Path, method: str) -> _Trained:
    from transformers import AutoModelForSequenceClassification

    from ..methods import get_method

    metrics = json.loads((d / "metrics.json").read_text())
    flips = pd.read_csv(d / "flips.csv") if (d / "flips.csv").is_file() else None
    return _Trained(AutoModelForSequenceClassification.from_pretrained(d / "model").eval(), metrics,
                    get_method(method).load_state(d), flips)


def train_solution(cfg: MaskingConfig, task: str, method: str, seed: int, store: RunStore | None = None,
                   data=None, tokenizer=None):
    """Train (or reuse a valid cached) solution; returns ``(plain HF model, metrics dict)``."""
    t = _solution(cfg, task, method, seed, store, data, tokenizer)
    return t.model, t.metrics


def solution_stage(cfg: MaskingConfig, task: str, method: str, seed: int, data=None, tokenizer=None,
                   lr: float | None = None, selection: Stage | None = None) -> Stage:
    """The :class:`~tmlib.runs.Stage` of one solution (name ``<task>/<method>-s<seed>`` in ``<out_dir>/solutions``).
    ``data`` / ``tokenizer`` may be passed to avoid reloading; they must be what :func:`task_data` gives.
    ``lr``: the learning rate (None: :meth:`MaskingConfig.method_lr`). ``selection``: the method's
    :func:`selection_stage` (its key enters this one's; on the selection seed the winning grid run is
    copied instead of retrained)."""
    def build(ctx, selection=None):
        from ..models import load_tokenizer

        if selection is not None and seed == selection.seed and selection.chosen_dir.is_dir():
            return ("copy", selection.chosen_dir)
        tok = tokenizer or load_tokenizer(cfg.model)
        return _train(cfg, task, method, seed, data if data is not None else task_data(cfg, task), tok, lr), tok

    def save(obj, d):
        if obj[0] == "copy":
            _copy_run(obj[1], d)
        else:
            _save(obj[0], d, obj[1])

    return Stage(f"{task_dirname(task)}/{method}-s{seed}", solution_key(cfg, task, method, seed, lr), build=build,
                 save=save, load=lambda d: _load(d, method), seed=seed,
                 deps={"selection": selection} if selection is not None else {})


def _copy_run(src: Path, dst: Path) -> None:
    """Copy a saved run's files (not its manifest), hard-linking where the file system allows."""
    import os
    import shutil

    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("manifest.json"))


# ------------------------------------------------------------------------------------ lr selection

SELECTION_COLUMNS = ["task", "method", "seed", "lr", "dev_accuracy", "dev_loss", "best_epoch", "steps", "chosen",
                     "edge_extension"]


@dataclass
class Selection:
    """A method's learning rate chosen on dev: the grid table, the lr, the seed it was chosen on, and the
    folder of the winning run (copied as that seed's solution)."""

    lr: float
    seed: int
    table: pd.DataFrame
    chosen_dir: Path
    histories: dict = field(default_factory=dict)   # lr -> the run's dev history (list of eval rows)


def selection_key(cfg: MaskingConfig, task: str, method: str) -> dict:
    key = solution_key(cfg, task, method, cfg.seeds[0])
    key.pop("lr")
    key = {**key, "lr_grid": list(cfg.lr_grid[method]), "criterion": "max dev accuracy (ties: lower dev loss, then lower lr)"}
    if cfg.lr_grid_extend:
        key["lr_grid_extend"] = cfg.lr_grid_extend   # only when set: keys of grids run before the rule stay valid
    return key


def next_edge_lr(tried: list[float], best_lr: float) -> float | None:
    """The lr to add when ``best_lr`` is the lowest or highest of the lrs ``tried``: one step beyond that edge
    with the ratio of the two outermost lrs on that side (rounded to 2 significant digits); None when the
    best is inside the range, fewer than two lrs were tried, or the step rounds onto a tried lr."""
    lrs = sorted(set(tried))
    if len(lrs) < 2 or lrs[0] < best_lr < lrs[-1]:
        return None
    lr = float(f"{lrs[-1] ** 2 / lrs[-2]:.2g}") if best_lr == lrs[-1] else float(f"{lrs[0] ** 2 / lrs[1]:.2g}")
    return None if lr in lrs else lr


def selection_stage(cfg: MaskingConfig, task: str, method: str, data=None, tokenizer=None) -> Stage:
    """The stage choosing ``method``'s lr on ``task``: one run per value of ``lr_grid[method]`` on seed
    ``seeds[0]`` (each saved under the stage's work folder as it finishes, so an interrupted grid resumes),
    the best dev accuracy wins (ties: lower dev loss, then the lower lr). While the winner is the lowest or
    highest lr tried, the next lr beyond that edge is tried too (:func:`next_edge_lr`), at most
    ``lr_grid_extend`` times (``edge_extension`` in the table). Artifact
    ``solutions/<task>/lr-grid/<method>/``: ``lr_selection.csv``, ``selection.json``, ``runs/lr<i>.json``
    (each run's metrics and dev history) and ``chosen/`` (the winning run's files)."""
    grid, seed = cfg.lr_grid[method], cfg.seeds[0]

    def build(ctx):
        from ..models import load_tokenizer
        from ..runs import atomic_write_json

        tok = tokenizer or load_tokenizer(cfg.model)
        d = data
        runs = []

        def run(i, lr):
            nonlocal d
            sub = ctx.work_dir / f"lr{i}"
            done = sub / "done.json"
            if done.is_file() and json.loads(done.read_text()).get("lr") == lr:
                ctx.log(f"lr {lr:g}: reused from an interrupted grid")
            else:
                import shutil

                shutil.rmtree(sub, ignore_errors=True)
                d = d if d is not None else task_data(cfg, task)
                t = _train(cfg, task, method, seed, d, tok, lr)
                _save(t, sub, tok)
                atomic_write_json(done, {"lr": lr})
            runs.append((lr, sub, json.loads((sub / "metrics.json").read_text())))

        def best():
            return max(range(len(runs)), key=lambda j: (runs[j][2]["dev_accuracy"], -runs[j][2]["dev_loss"], -runs[j][0]))

        for i, lr in enumerate(grid):
            run(i, lr)
        for _ in range(cfg.lr_grid_extend):
            lr = next_edge_lr([r[0] for r in runs], runs[best()][0])
            if lr is None:
                break
            ctx.log(f"best lr {runs[best()][0]:g} at the grid's edge: trying {lr:g}")
            run(len(runs), lr)
        return runs, best()

    def save(obj, d):
        import shutil

        runs, best = obj
        rows = []
        (d / "runs").mkdir(parents=True)
        for j, (lr, sub, m) in enumerate(runs):
            rows.append({"task": task, "method": method, "seed": seed, "lr": lr, "dev_accuracy": m["dev_accuracy"],
                         "dev_loss": m["dev_loss"], "best_epoch": m.get("best_epoch"), "steps": m.get("steps"),
                         "chosen": j == best, "edge_extension": j >= len(grid)})
            (d / "runs" / f"lr{j}.json").write_text(json.dumps(m, indent=2, default=str))
        pd.DataFrame(rows, columns=SELECTION_COLUMNS).to_csv(d / "lr_selection.csv", index=False)
        (d / "selection.json").write_text(json.dumps({"task": task, "method": method, "seed": seed, "lr": runs[best][0],
                                                      "lr_grid": grid, "tried": [r[0] for r in runs],
                                                      "criterion": selection_key(cfg, task, method)["criterion"]},
                                                     indent=2))
        shutil.move(str(runs[best][1]), str(d / "chosen"))
        (d / "chosen" / "done.json").unlink(missing_ok=True)

    def load(d):
        info = json.loads((d / "selection.json").read_text())
        table = pd.read_csv(d / "lr_selection.csv")
        hist = {}
        for j, lr in enumerate(info.get("tried", info["lr_grid"])):
            f = d / "runs" / f"lr{j}.json"
            if f.is_file():
                hist[lr] = json.loads(f.read_text()).get("history", [])
        return Selection(float(info["lr"]), int(info["seed"]), table, d / "chosen", hist)

    return Stage(f"{task_dirname(task)}/lr-grid/{method}", selection_key(cfg, task, method), build=build, save=save,
                 load=load, seed=seed)


def solutions_store(cfg: MaskingConfig) -> RunStore:
    """The trained models (``<out_dir>/solutions``); with ``progress`` one line per run built or loaded goes
    to ``<out_dir>/progress.log`` (what ``tmlib suite`` prints while the notebook runs)."""
    return RunStore(Path(cfg.out_dir) / "solutions", progress=cfg.progress, log_file=Path(cfg.out_dir) / "progress.log")


def select_lr(cfg: MaskingConfig, task: str, method: str, store: RunStore | None = None, data=None,
              tokenizer=None) -> Selection | None:
    """``method``'s :class:`Selection` on ``task`` (run or reused), or None when it has no ``lr_grid``."""
    if method not in cfg.lr_grid:
        return None
    store = store or solutions_store(cfg)
    return store.get(selection_stage(cfg, task, method, data, tokenizer))


def chosen_lr(cfg: MaskingConfig, task: str, method: str, store: RunStore | None = None) -> float:
    """The lr ``method`` trains with on ``task``: chosen on dev from ``lr_grid`` (runs the grid if needed),
    else :meth:`MaskingConfig.method_lr`."""
    sel = select_lr(cfg, task, method, store)
    return cfg.method_lr(method) if sel is None else sel.lr


def train_solution(cfg: MaskingConfig, task: str, method: str, seed: int, store: RunStore | None = None,
                   data=None, tokenizer=None):
    """Train (or reuse a valid cached) solution; returns ``(plain HF model, metrics dict)``."""
    t = _solution(cfg, task, method, seed, store, data, tokenizer)
    return t.model, t.metrics


def _solution(cfg, task, method, seed, store=None, data=None, tokenizer=None) -> _Trained:
    store = store or solutions_store(cfg)
    if method in cfg.lr_grid:
        sel = select_lr(cfg, task, method, store, data, tokenizer)
        stage = solution_stage(cfg, task, method, seed, data, tokenizer, lr=sel.lr,
                               selection=selection_stage(cfg, task, method, data, tokenizer))
    else:
        stage = solution_stage(cfg, task, method, seed, data, tokenizer)
    return store.get(stage)


def load_solution(run_dir: str | Path, task: str, method: str, seed: int):
    """Notebook 03's saved model for (task, method, seed) as a plain HF classifier, or ``None`` when it is
    absent, partial or corrupt (manifest missing or a file hash mismatch)."""
    from transformers import AutoModelForSequenceClassification

    store = RunStore(Path(run_dir) / "solutions")
    name = f"{task_dirname(task)}/{method}-s{seed}"
    if not store.valid(name):
        return None
    try:
        return AutoModelForSequenceClassification.from_pretrained(store.root / name / "model").eval()
    except (OSError, ValueError):
        return None


def solution_key_of(run_dir: str | Path, task: str, method: str, seed: int) -> dict:
    """The key (manifest config) a saved solution was trained with ({} when absent or unreadable)."""
    from ..runs import ArtifactError

    try:
        key = RunStore(Path(run_dir) / "solutions").manifest(f"{task_dirname(task)}/{method}-s{seed}").get("config", {})
    except ArtifactError:
        return {}
    return key.get("config", key) if isinstance(key, dict) and "deps" in key else key


# ------------------------------------------------------------------------------------------- the runs

RESULT_COLUMNS = ["task", "method", "seed", "lr", "dev_accuracy", "test_accuracy", "dev_loss", "test_loss", "best_epoch",
                  "steps", "train_seconds", "n_trainable", "task_bytes", "fp32_copy_bytes"]
MASK = "mask"   # the method whose learned masks are analysed (sparsity, multi-task serving)


CURVE_COLUMNS = ["task", "method", "seed", "lr", "step", "epoch", "dev_accuracy", "dev_loss", "train_loss"]


def run_all(cfg: MaskingConfig) -> pd.DataFrame:
    """Choose each gridded method's lr on dev (seed ``seeds[0]``), then train (or reuse) every task x
    method x seed; writes ``results.csv`` (one row per run), ``lr_selection.csv`` (every grid run and the
    choice), ``dev_curves.csv`` (dev accuracy at every evaluation of every run) and ``flips.csv`` (mask
    sparsity and flips during training)."""
    from ..models import load_tokenizer
    from ..runtime import set_threads

    set_threads(cfg.threads)
    out = RunStore(cfg.out_dir)
    store = solutions_store(cfg)
    tok = load_tokenizer(cfg.model)
    rows, flips, curves, grids = [], [], [], []
    data = {}
    for task in cfg.tasks:
        for method in [m for m in cfg.methods if m in cfg.lr_grid]:
            data.setdefault(task, task_data(cfg, task))
            grids.append(select_lr(cfg, task, method, store, data[task], tok).table)
    jobs = [(t, m, s) for t in cfg.tasks for m in cfg.methods for s in cfg.seeds]
    for task, method, seed in tqdm(jobs, desc="runs", disable=not cfg.progress):
        if task not in data:
            data[task] = task_data(cfg, task)
        t = _solution(cfg, task, method, seed, store, data[task], tok)
        rows.append({k: t.metrics.get(k) for k in RESULT_COLUMNS})
        for h in t.metrics.get("history", []):
            curves.append({"task": task, "method": method, "seed": seed, "lr": t.metrics.get("lr"), "step": h.get("step"),
                           "epoch": h.get("epoch"), "dev_accuracy": h.get("accuracy"), "dev_loss": h.get("dev_loss"),
                           "train_loss": h.get("train_loss")})
        if t.flips is not None:
            flips.append(t.flips.assign(task=task, method=method, seed=seed))
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    out.write_csv("results.csv", results)
    out.write_csv("lr_selection.csv", pd.concat(grids, ignore_index=True) if grids else
                  pd.DataFrame(columns=SELECTION_COLUMNS))
    out.write_csv("dev_curves.csv", pd.DataFrame(curves, columns=CURVE_COLUMNS))
    if flips:
        out.write_csv("flips.csv", pd.concat(flips, ignore_index=True))
    return results


def lr_selection(cfg: MaskingConfig) -> pd.DataFrame:
    """The grid runs and the choice per task and method (``lr_selection.csv``, written by :func:`run_all`)."""
    return pd.read_csv(Path(cfg.out_dir) / "lr_selection.csv")


def dev_curves(cfg: MaskingConfig) -> pd.DataFrame:
    """Dev accuracy at every evaluation of every run (``dev_curves.csv``, written by :func:`run_all`)."""
    return pd.read_csv(Path(cfg.out_dir) / "dev_curves.csv")


def curve_flatness(curves: pd.DataFrame) -> pd.DataFrame:
    """Has each method's dev curve flattened? Per task and method (mean over seeds, accuracy in %): dev
    accuracy at the last evaluation, its change over the second half of training (last evaluation minus
    the last one at or before half the steps; std over seeds beside it) and the best dev accuracy. A
    change within its seed std of 0: flat."""
    rows = []
    for (task, method), d in curves.groupby(["task", "method"], sort=False):
        per_seed = []
        for _, r in d.groupby("seed"):
            r = r.sort_values("step")
            last = r.iloc[-1]
            half = r[r["step"] <= last["step"] / 2]
            mid = half.iloc[-1] if len(half) else r.iloc[0]
            per_seed.append((last["dev_accuracy"], last["dev_accuracy"] - mid["dev_accuracy"], r["dev_accuracy"].max(),
                             last["step"]))
        a = np.array(per_seed, dtype=float)
        rows.append({"task": task, "method": method, "steps": int(a[:, 3].max()), "evals": int(len(d) / len(a)),
                     "dev_last": 100 * a[:, 0].mean(), "dev_change_second_half_pts": 100 * a[:, 1].mean(),
                     "dev_change_std_pts": 100 * a[:, 1].std(ddof=1) if len(a) > 1 else 0.0,
                     "dev_best": 100 * a[:, 2].mean()})
    return pd.DataFrame(rows)


def paired_gaps(results: pd.DataFrame, baseline: str = "finetune") -> pd.DataFrame:
    """Per task, each method's test-accuracy gap to ``baseline`` in points, paired by seed
    (:func:`tmlib.stats.paired_gap_table`: mean, std, wins, paired t, p, 95% CI half-width) plus the
    plain sentence ``sentence`` ("mask − fine-tune = x ± ci points (p = ..., n seeds)")."""
    from ..stats import gap_sentence, paired_gap_table

    methods = [m for m in dict.fromkeys(results["method"]) if m != baseline]
    gaps = paired_gap_table(results, by=["task"], method_col="method", value_col="test_accuracy",
                            pairs=[(m, baseline) for m in methods], scale=100)
    gaps["sentence"] = [gap_sentence(r) for _, r in gaps.iterrows()]
    return gaps


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per task and method (accuracy in %), the lr trained with, the test gap to
    fine-tuning in points, and that gap paired by seed (:func:`paired_gaps`: ``paired_gap_pts``,
    ``paired_gap_ci95_pts``, ``paired_gap_p``, ``wins_vs_finetune`` and the sentence ``vs_finetune``).
    Writes nothing (:func:`write_outputs` does)."""
    g = results.groupby(["task", "method"], sort=False)
    s = g.agg(n_seeds=("seed", "count"), dev_mean=("dev_accuracy", "mean"), dev_std=("dev_accuracy", "std"),
              test_mean=("test_accuracy", "mean"), test_std=("test_accuracy", "std"),
              train_seconds=("train_seconds", "mean"), n_trainable=("n_trainable", "first"),
              task_bytes=("task_bytes", "first")).reset_index()
    s.insert(2, "lr", g["lr"].first().values if "lr" in results else np.nan)
    s[["dev_std", "test_std"]] = s[["dev_std", "test_std"]].fillna(0.0)
    ft = s[s["method"] == "finetune"].set_index("task")["test_mean"]
    s["test_gap_to_finetune_pts"] = [100 * (r.test_mean - ft[r.task]) if r.task in ft else np.nan for r in s.itertuples()]
    for c in ("dev_mean", "dev_std", "test_mean", "test_std"):
        s[c] = 100 * s[c]  # accuracy in %
    gaps = paired_gaps(results) if "finetune" in set(results["method"]) else pd.DataFrame()
    cols = {"gap_mean": "paired_gap_pts", "ci95": "paired_gap_ci95_pts", "p": "paired_gap_p", "wins": "wins_vs_finetune",
            "sentence": "vs_finetune"}
    if gaps.empty:
        for c in cols.values():
            s[c] = np.nan if c != "vs_finetune" else ""
    else:
        s = s.merge(gaps.rename(columns={"a": "method"})[["task", "method", *cols]].rename(columns=cols),
                    on=["task", "method"], how="left")
        s["vs_finetune"] = s["vs_finetune"].fillna("")
    return s


def sparsity_table(cfg: MaskingConfig) -> pd.DataFrame:
    """Per task, block and module type: % of weights kept by the learned masks (mean over seeds)."""
    frames = []
    if MASK in cfg.methods:
        for task in cfg.tasks:
            for seed in cfg.seeds:
                t = _solution(cfg, task, MASK, seed)
                frames.append(t.packed.sparsity().assign(task=task, seed=seed))
    cols = ["task", "block", "type", "weights", "kept_pct", "seeds"]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    return (df.groupby(["task", "block", "type"], sort=False)
            .agg(weights=("weights", "first"), kept_pct=("kept_pct", "mean"), seeds=("seed", "count")).reset_index())


def storage_table(results: pd.DataFrame) -> pd.DataFrame:
    """Task-specific bytes per method vs a full fp32 copy."""
    s = results.groupby(["task", "method"], sort=False).agg(task_bytes=("task_bytes", "first"),
                                                            fp32_copy_bytes=("fp32_copy_bytes", "first")).reset_index()
    s["fraction_of_fp32"] = s["task_bytes"] / s["fp32_copy_bytes"]
    s["fp32_over_task"] = s["fp32_copy_bytes"] / s["task_bytes"]
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
    sols = {task: _solution(cfg, task, MASK, seed, tokenizer=tok) for task in cfg.tasks}
    for task, t in sols.items():
        mt.add_task(task, t.packed)
    rows = []
    for task, t in sols.items():
        i = cfg.tasks.index(task)
        texts = list(task_data(cfg, task)["test"]["text"])
        got = mt.logits(task, texts, max_length=cfg.max_lengths[i])
        with torch.no_grad():
            ref = torch.cat([t.model(**tok(texts[j:j + 64], padding=True, truncation=True, max_length=cfg.max_lengths[i],
                                           return_tensors="pt")).logits for j in range(0, len(texts), 64)])
        rows.append({"task": task, "seed": seed, "examples": len(texts), "identical": bool(torch.equal(got, ref)),
                     "max_abs_diff": float((got - ref).abs().max()) if got.shape == ref.shape else float("nan")})
    return mt, rows


def memory_table(cfg: MaskingConfig, results: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Bytes to serve 1..``memory_max_tasks`` tasks at once per method (each method's
    :meth:`~tmlib.methods.MethodSpec.serve_bytes`). With the mask method, the multi-task model is
    measured for the real tasks and checked to be identical to the separate models. Returns
    ``(table, check)``; ``check`` is empty without the mask method."""
    from ..methods import get_method

    fp32 = float(results["fp32_copy_bytes"].iloc[0])
    per_task = results.groupby("method")["task_bytes"].mean().to_dict()
    rows, check = [], {}
    measured = {}
    if MASK in cfg.methods:
        mt, check_rows = serve_tasks(cfg)
        mem = mt.memory_bytes()
        measured[MASK] = {"backbone": mem["backbone"], "working": mem["working"]}
        per_task[MASK] = float(np.mean(list(mem["tasks"].values())))
        check = {"tasks": check_rows, "measured": mem, "all_identical": all(r["identical"] for r in check_rows)}
        rows.append({"method": MASK, "n_tasks": len(cfg.tasks), "bytes": mem["total"], "kind": "measured"})
    for n in range(1, cfg.memory_max_tasks + 1):
        for method in cfg.methods:
            m = measured.get(method, {"backbone": fp32, "working": 0.0})
            b = get_method(method).serve_bytes(n, m["backbone"], per_task[method], m["working"])
            rows.append({"method": method, "n_tasks": n, "bytes": int(b), "kind": "projected"})
    return pd.DataFrame(rows, columns=["method", "n_tasks", "bytes", "kind"]), check


def write_outputs(cfg: MaskingConfig, summary: pd.DataFrame | None = None, sparsity: pd.DataFrame | None = None,
                  storage: pd.DataFrame | None = None, memory: pd.DataFrame | None = None,
                  multitask: dict | None = None, gaps: pd.DataFrame | None = None,
                  flatness: pd.DataFrame | None = None) -> list[Path]:
    """Write the tables given into ``out_dir``: summary.csv, gaps.csv, flatness.csv, sparsity.csv,
    storage.csv, memory.csv, multitask.json. Returns the paths written."""
    store = RunStore(cfg.out_dir)
    written = []
    for name, table, digits in (("summary.csv", summary, 4), ("gaps.csv", gaps, 4), ("flatness.csv", flatness, 3),
                                ("sparsity.csv", sparsity, 4),
                                ("storage.csv", storage, None), ("memory.csv", memory, None)):
        if table is not None:
            written.append(store.write_csv(name, table.round(digits) if digits is not None else table))
    if multitask:
        written.append(store.write_json("multitask.json", multitask))
    return written
