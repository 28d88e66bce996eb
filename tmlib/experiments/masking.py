"""Notebook 03: learned binary weight masks vs fine-tuning vs BitFit (vs LoRA), and multi-task serving
(Zhao et al., 2020).

For every task x method x seed a classifier is adapted from the same backbone on the same data with
the same budget (epochs, batch size, max length), the best epoch is picked on dev, and dev/test
accuracy is reported. Then: per-layer sparsity of the learned masks, per-task storage (1-bit mask
vs an fp32 copy), and the memory needed to serve N tasks at once (one backbone + N masks vs N copies),
measured on a :class:`~tmlib.masking.multitask.MultiTaskMaskedModel` that is checked to reproduce
the separately trained models exactly.

Shape: :func:`plan` turns the config into recipes (:class:`~tmlib.masking.solutions.SolutionRecipe` per task x
method x seed, a :class:`~tmlib.masking.solutions.GridRecipe` per gridded method); :class:`Experiment` runs them
as stages in the one run store of ``out_dir``; the ``*_table``, :func:`summarize`, :func:`paired_gaps`
and :func:`curve_flatness` functions are pure. Everything method-specific lives in the method's
:class:`~tmlib.masking.methods.MethodSpec`; the folder layout of the solutions (which notebook 04 reads) is
described in :mod:`tmlib.masking.solutions`.

LEARNING RATES, in this order: a per-task value ``lr[method][task]`` is used as given (the default holds the lrs
the grid chose for MR and BBC, so ``make run`` replays that choice instead of retraining the grid; the ``grid``
parameter set reruns it). Otherwise a method named in ``lr_grid`` gets its lr from that grid, chosen on dev
accuracy of the first seed (one stage per grid point, then a selection stage); every seed then trains at the
chosen lr, and on the first seed the winning grid run is the solution. Otherwise the method trains at a plain
``lr[method]`` number, or its spec's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tmlib.core.config import ConfigError
from tmlib.core.runs import RunStore
from tmlib.masking.config import MaskConfig
from tmlib.masking.solutions import (
    SELECTION_COLUMNS,
    Evaluation,
    GridRecipe,
    Inputs,
    Selection,
    SolutionRecipe,
    Trained,
    chosen_stage,
    evaluation_stage,
    selection_stage,
)
from tmlib.tasks.data import TaskRecipe, check_test_pool


@dataclass
class MaskingConfig:
    """Notebook 03's experiment. Flat parameter names (notebook, YAML) map onto these fields through
    :func:`tmlib.core.config.from_flat`: ``mask_tau`` is ``mask.tau``, ``mask_skip_first_blocks`` is
    ``mask.skip_first_blocks``. Defaults are the ``default`` parameter set (``make run``)."""

    out_dir: str = "runs/dev/03_masking_vs_finetuning"  # where figures, CSV and JSON are written
    model: str = "minilm"  # backbone: minilm | scratch:<size> | checkpoint dir | hub name
    tasks: list[str] = field(default_factory=lambda: ["mr", "bbc"])  # tmlib.tasks.data.load_task names
    text_column: str = "text"  # your file's (or hub dataset's) text column
    label_column: str = "label"  # your file's label column
    encoding: str = "utf-8"  # your file's text encoding (e.g. latin-1)
    pair_column: str | None = None  # your file's second text (sentence pairs), if any
    aspect_column: str | None = None  # your file's aspect (aspect-level sentiment), if any
    max_lengths: list[int] = field(default_factory=lambda: [64, 64])  # max tokens, one per task
    max_train: list[int] = field(default_factory=lambda: [200, 120])  # train-set cap per task (0 = all), class-balanced
    max_dev: int = 200  # dev examples (epoch and lr selection), class-balanced (0 = all)
    # "heldout": test on every example train and dev leave out | "split": the test split
    test_pool: str = "heldout"
    max_test: int = 0  # cap on the test examples (0 = all of test_pool), class-balanced
    # test evaluation: "auto" | "bf16" autocast | "fp32"; benchmarks/bench_eval_precision.py checks that bf16 moves
    # no paired gap (docs/performance.md)
    eval_mixed_precision: str = "auto"
    # tmlib.masking.methods names: the paper's comparison; BitFit and LoRA (exploratory baselines): the `grid` set
    methods: list[str] = field(default_factory=lambda: ["finetune", "mask"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # training seeds (paired gaps over them)
    epochs: float = 4.0  # the same budget for every method
    batch_size: int = 16  # training batch size
    eval_every: int = 0  # steps between dev evaluations (dev curve, best state); 0 = once per epoch
    lr: dict[str, float | dict[str, float]] = field(
        default_factory=lambda: {
            "finetune": {"mr": 2e-4, "bbc": 4e-4},
            "bitfit": {"mr": 1e-2, "bbc": 3e-3},
            "mask": {"mr": 3e-3, "bbc": 1e-2},
            "lora": {"mr": 9e-3, "bbc": 9e-3},
        }
    )
    # ^ per method: {task: lr} used as given for those tasks (default: the lrs lr_grid chose on dev for MR and BBC,
    # ^ papermill_params/03_masking_vs_finetuning/grid.yaml reruns the grid), or one lr for every task without a
    # ^ grid; a method or task not named uses lr_grid, else the spec's default (tmlib.masking.methods)
    lr_grid: dict[str, list[float]] = field(
        default_factory=lambda: {
            "finetune": [5e-5, 1e-4, 2e-4],
            "bitfit": [1e-3, 3e-3, 1e-2],
            "mask": [1e-3, 3e-3, 1e-2],
            "lora": [3e-4, 1e-3, 3e-3],
        }
    )
    # ^ per method: lrs tried on seeds[0], the best dev accuracy wins and every seed trains at it; {} = no grid
    # a winner at the grid's edge adds the next lr beyond it (same ratio), up to N times
    lr_grid_extend: int = 2
    schedule: dict[str, str] = field(default_factory=dict)  # named schedule per method; not named: the spec's default
    mask: MaskConfig = field(default_factory=MaskConfig)  # the mask method's options (tmlib.masking.MaskConfig)
    mixed_precision: str = "auto"  # "auto": bf16 where native (CPU with avx512_bf16, GPUs), else fp32 | "bf16" |
    # ^ "fp32" | "fp16" (CUDA): tmlib.core.precision.MIXED_PRECISIONS; paired check of bf16 against fp32 in the README
    # ^ (papermill_params/03_masking_vs_finetuning/fp32.yaml)
    kernels: str = "fast"  # "fast" | "hf": how training computes the forward (tmlib.core.precision.KERNELS);
    # ^ paired check against "hf" in the README (papermill_params/03_masking_vs_finetuning/hf_kernels.yaml)
    threads: int = 0  # torch threads (0: torch's default); recorded in every manifest
    flip_every: int = 5  # steps between mask-flip records
    memory_max_tasks: int = 10  # memory curve for 1..N tasks served at once
    data_seed: int = 0  # split / subsample seed (notebook 04 assumes 0)
    progress: bool = True  # tqdm bars

    def __post_init__(self):
        from tmlib.masking.methods import METHODS, check_method_settings

        n = len(self.tasks)
        if n == 0:
            raise ConfigError("tasks is empty; e.g. tasks: [mr, bbc]")
        if len(self.max_lengths) != n or len(self.max_train) != n:
            raise ConfigError(
                f"max_lengths ({len(self.max_lengths)}) and max_train ({len(self.max_train)}) need one "
                f"value per task ({n}: {self.tasks})"
            )
        self.lr = _per_task_lrs(self.lr)
        bad = [m for m in [*self.methods, *self.lr_grid, *self.lr] if m not in METHODS]
        if bad:
            raise ConfigError(f"unknown method(s) {bad}; valid methods: {', '.join(METHODS)}")
        if not self.seeds:
            raise ConfigError("seeds is empty; e.g. seeds: [0, 1]")
        flat, self.mask = check_method_settings(
            {m: v for m, v in self.lr.items() if not isinstance(v, dict)}, self.schedule, self.mask
        )
        self.lr.update(flat)
        self.lr_grid = _checked_grids(self.lr_grid)
        from tmlib.core.precision import check_kernels, resolve_fields

        try:
            resolve_fields(self, "mixed_precision", "eval_mixed_precision")
            check_kernels(self.kernels)
            check_test_pool(self.test_pool)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"threads must be an integer >= 0 (0: torch's default), got {self.threads!r}")
        if isinstance(self.lr_grid_extend, bool) or not isinstance(self.lr_grid_extend, int) or self.lr_grid_extend < 0:
            raise ConfigError(
                f"lr_grid_extend must be an integer >= 0 (0: never extend the grid), got {self.lr_grid_extend!r}"
            )
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0 (0 = once per epoch), got {self.eval_every}")
        for name in ("max_dev", "max_test"):
            _check_count(name, getattr(self, name))
        if any(m < 8 for m in self.max_lengths) or self.epochs <= 0 or self.batch_size < 1:
            raise ConfigError("max_lengths must be >= 8, epochs > 0, batch_size >= 1")


def _check_count(name: str, value) -> None:
    """A cap: a whole number >= 0 (0: no cap)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0 (0: no cap), got {value!r}")


def _checked_grids(lr_grid: dict) -> dict[str, list[float]]:
    """Each method's lr grid: a non-empty list of different numbers > 0, as floats."""
    grids = {}
    for m, vs in lr_grid.items():
        if isinstance(vs, int | float) or not list(vs):
            raise ConfigError(f"lr_grid[{m!r}] must be a non-empty list of learning rates, got {vs!r}")
        for v in vs:
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ConfigError(f"lr_grid[{m!r}] values must be numbers > 0, got {v!r} (YAML: write 1.0e-3)")
        if len(set(map(float, vs))) != len(vs):
            raise ConfigError(f"lr_grid[{m!r}] has repeated values: {list(vs)}")
        grids[m] = [float(v) for v in vs]
    return grids


def _per_task_lrs(lr) -> dict:
    """``lr`` with every ``{task: lr}`` value checked and made floats (plain numbers are checked by
    :func:`tmlib.masking.methods.check_method_settings`)."""
    if not isinstance(lr, dict):
        raise ConfigError(f"lr must be a mapping method -> lr or method -> {{task: lr}}, got {lr!r}")
    out = dict(lr)
    for m, v in lr.items():
        if isinstance(v, dict):
            for task, x in v.items():
                if isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0:
                    raise ConfigError(f"lr[{m!r}][{task!r}] must be a number > 0, got {x!r} (YAML: write 1.0e-3)")
            out[m] = {str(t): float(x) for t, x in v.items()}
    return out


def fixed_lr(cfg: MaskingConfig, task: str, method: str) -> float | None:
    """The lr ``cfg`` fixes for (task, method) without a grid: ``lr[method][task]``, else a plain ``lr[method]``
    when the method has no grid, else None (the grid chooses, or the spec's default applies)."""
    v = cfg.lr.get(method)
    if isinstance(v, dict):
        return v.get(task)
    return None if method in cfg.lr_grid else v


# ------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class MaskingPlan:
    """Notebook 03's runs as recipes: per task its data, per (task, method) the lr grid if any, and every
    solution in (task, method, seed) order (a gridded method's recipes carry the lr of the grid's choice only
    once it is made: :meth:`Experiment.stage`)."""

    data: dict[str, TaskRecipe]
    grids: dict[tuple[str, str], GridRecipe]
    solutions: tuple[SolutionRecipe, ...]
    backbone: str

    def solution(self, task: str, method: str, seed: int) -> SolutionRecipe:
        for r in self.solutions:
            if (r.task, r.method, r.seed) == (task, method, seed):
                return r
        raise KeyError(f"no solution {task}/{method}-s{seed} in this plan")


def plan(cfg: MaskingConfig) -> MaskingPlan:
    """Config -> recipes; the only code that reads the experiment config for per-run settings."""
    data, grids, solutions = {}, {}, []
    for task, max_length, max_train in zip(cfg.tasks, cfg.max_lengths, cfg.max_train):
        data[task] = TaskRecipe(
            task,
            seed=cfg.data_seed,
            max_train=max_train,
            max_dev=cfg.max_dev,
            max_test=cfg.max_test,
            test_pool=cfg.test_pool,
            text_column=cfg.text_column,
            label_column=cfg.label_column,
            encoding=cfg.encoding,
            pair_column=cfg.pair_column,
            aspect_column=cfg.aspect_column,
        )
        for method in cfg.methods:
            base = SolutionRecipe(
                data[task],
                cfg.model,
                method,
                seed=cfg.seeds[0],
                max_length=max_length,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=fixed_lr(cfg, task, method),
                schedule=cfg.schedule.get(method),
                options=cfg.mask,
                eval_every=cfg.eval_every,
                mixed_precision=cfg.mixed_precision,
                kernels=cfg.kernels,
                flip_every=cfg.flip_every,
                progress=cfg.progress,
            )
            if method in cfg.lr_grid and base.lr is None:
                grids[task, method] = GridRecipe(base, tuple(cfg.lr_grid[method]), cfg.lr_grid_extend)
            solutions += [replace(base, seed=seed) for seed in cfg.seeds]
    return MaskingPlan(data, grids, tuple(solutions), cfg.model)


# ------------------------------------------------------------------------------------- the experiment

RESULT_COLUMNS = [
    "task",
    "method",
    "seed",
    "lr",
    "dev_accuracy",
    "test_accuracy",
    "dev_loss",
    "test_loss",
    "test_n",
    "best_epoch",
    "steps",
    "train_seconds",
    "n_trainable",
    "task_bytes",
    "fp32_copy_bytes",
]
CURVE_COLUMNS = ["task", "method", "seed", "lr", "step", "epoch", "dev_accuracy", "dev_loss", "train_loss"]
MASK = "mask"  # the method whose learned masks are analysed (sparsity, multi-task serving)
SERVE_CHECK_EXAMPLES = 512  # test examples per task on which the multi-task model is checked against each solution


@dataclass
class MaskingResults:
    """What :meth:`Experiment.run` returns (and writes as CSV): one row per run, the lr grids, every dev
    evaluation of every run, the mask flips during training (None without the mask method), and every
    solution's test predictions ``(task, method, seed) -> classes`` (for the paired gaps' sampling term)."""

    results: pd.DataFrame
    lr_selection: pd.DataFrame
    dev_curves: pd.DataFrame
    flips: pd.DataFrame | None
    predictions: dict = field(default_factory=dict)


class Experiment:
    """Notebook 03 on one run folder: its plan, the one :class:`~tmlib.core.runs.RunStore` of ``cfg.out_dir``, and
    each task's data and tokenizer, loaded once."""

    def __init__(self, cfg: MaskingConfig):
        self.cfg = cfg
        self.plan = plan(cfg)
        self.store = RunStore(cfg.out_dir, progress=cfg.progress)
        self._inputs: dict[str, Inputs] = {}
        self._tokenizer = None

    def inputs(self, task: str) -> Inputs:
        if task not in self._inputs:
            if self._tokenizer is None:
                from tmlib.core.models import load_tokenizer

                self._tokenizer = load_tokenizer(self.plan.backbone)
            self._inputs[task] = Inputs(self.plan.data[task], self.plan.backbone, tokenizer=self._tokenizer)
        return self._inputs[task]

    def grid(self, task: str, method: str) -> GridRecipe | None:
        return self.plan.grids.get((task, method))

    def selection(self, task: str, method: str) -> Selection | None:
        grid = self.grid(task, method)
        return None if grid is None else self.store.get(selection_stage(grid, self.inputs(task)))

    def solution_stage(self, recipe: SolutionRecipe):
        return chosen_stage(recipe, self.grid(recipe.task, recipe.method), self.store, self.inputs(recipe.task))

    def solution(self, recipe: SolutionRecipe) -> Trained:
        """The trained (or cached) solution of ``recipe``, at the lr its grid chose when it has one."""
        return self.store.get(self.solution_stage(recipe))

    def evaluation(self, recipe: SolutionRecipe) -> Evaluation:
        """``recipe``'s solution evaluated on the task's test data (the held-out pool by default)."""
        stage = evaluation_stage(
            recipe, self.solution_stage(recipe), self.inputs(recipe.task), mixed_precision=self.cfg.eval_mixed_precision
        )
        return self.store.get(stage)

    def tested(self, recipe: SolutionRecipe) -> tuple[Trained, Evaluation, dict]:
        """``recipe``'s solution, its test evaluation and its row of :func:`results_table`."""
        t, ev = self.solution(recipe), self.evaluation(recipe)
        return t, ev, {**t.metrics, "test_accuracy": ev.accuracy, "test_loss": ev.loss, "test_n": ev.n}

    def run(self) -> MaskingResults:
        """Choose each gridded method's lr on dev, then train (or reuse) every solution; writes
        ``results.csv``, ``lr_selection.csv``, ``dev_curves.csv`` and ``flips.csv``."""
        from tmlib.core.runtime import set_threads

        set_threads(self.cfg.threads)
        grids = [self.selection(task, method).table for task, method in self.plan.grids]
        trained, metrics, predictions = [], [], {}
        for recipe in tqdm(self.plan.solutions, desc="runs", disable=not self.cfg.progress):
            t, ev, row = self.tested(recipe)
            trained.append((recipe, t))
            metrics.append(row)
            predictions[recipe.task, recipe.method, recipe.seed] = ev.predictions
        out = MaskingResults(
            results_table(metrics),
            pd.concat(grids, ignore_index=True) if grids else pd.DataFrame(columns=SELECTION_COLUMNS),
            curves_table(metrics),
            flips_table((r, t.flips) for r, t in trained),
            predictions,
        )
        self.store.write_csv("results.csv", out.results)
        self.store.write_csv("lr_selection.csv", out.lr_selection)
        self.store.write_csv("dev_curves.csv", out.dev_curves)
        if out.flips is not None:
            self.store.write_csv("flips.csv", out.flips)
        return out

    def masks(self) -> dict[tuple[str, int], object]:
        """(task, seed) -> the learned mask (:class:`~tmlib.masking.packing.PackedMask`) of every mask solution."""
        return {(r.task, r.seed): self.solution(r).packed for r in self.plan.solutions if r.method == MASK}

    def serve_tasks(self, seed: int | None = None):
        """Load every task's mask (seed ``seeds[0]``) onto ONE backbone; check that each task's test logits are
        bit-identical to its separately trained model. Returns ``(MultiTaskMaskedModel, check rows)``."""
        import torch

        from tmlib.core.models import load_classifier
        from tmlib.masking.multitask import MultiTaskMaskedModel

        seed = self.cfg.seeds[0] if seed is None else seed
        recipes = [self.plan.solution(task, MASK, seed) for task in self.plan.data]
        tok = self.inputs(recipes[0].task).tokenizer
        mt = MultiTaskMaskedModel(
            load_classifier(self.plan.backbone, ["a", "b"], seed=seed), tok, backbone_name=self.plan.backbone
        )
        sols = {r.task: (r, self.solution(r)) for r in recipes}
        for task, (_, t) in sols.items():
            mt.add_task(task, t.packed)
        rows = []
        for task, (r, t) in sols.items():
            test = self.inputs(task).data["test"]
            texts = list(test.select(range(min(SERVE_CHECK_EXAMPLES, len(test))))["text"])
            got = mt.logits(task, texts, max_length=r.max_length)
            with torch.no_grad():
                ref = torch.cat(
                    [
                        t.model(
                            **tok(
                                texts[j : j + 64],
                                padding=True,
                                truncation=True,
                                max_length=r.max_length,
                                return_tensors="pt",
                            )
                        ).logits
                        for j in range(0, len(texts), 64)
                    ]
                )
            rows.append(
                {
                    "task": task,
                    "seed": seed,
                    "examples": len(texts),
                    "identical": bool(torch.equal(got, ref)),
                    "max_abs_diff": float((got - ref).abs().max()) if got.shape == ref.shape else float("nan"),
                }
            )
        return mt, rows

    def memory(self, results: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """:func:`memory_table` for this experiment's methods; with the mask method the multi-task model is
        measured for the real tasks and checked to be identical to the separate models (``check``; empty
        without the mask method)."""
        measured, check = {}, {}
        if MASK in self.cfg.methods:
            mt, check_rows = self.serve_tasks()
            mem = mt.memory_bytes()
            measured = {
                "backbone": mem["backbone"],
                "working": mem["working"],
                "tasks": mem["tasks"],
                "total": mem["total"],
            }
            check = {"tasks": check_rows, "measured": mem, "all_identical": all(r["identical"] for r in check_rows)}
        return memory_table(results, self.cfg.methods, self.cfg.memory_max_tasks, measured), check

    def write(
        self,
        summary: pd.DataFrame | None = None,
        sparsity: pd.DataFrame | None = None,
        storage: pd.DataFrame | None = None,
        memory: pd.DataFrame | None = None,
        multitask: dict | None = None,
        gaps: pd.DataFrame | None = None,
        flatness: pd.DataFrame | None = None,
    ) -> list[Path]:
        """Write the tables given into ``out_dir``: summary.csv, gaps.csv, flatness.csv, sparsity.csv,
        storage.csv, memory.csv, multitask.json. Returns the paths written."""
        written = []
        for name, table, digits in (
            ("summary.csv", summary, 4),
            ("gaps.csv", gaps, 4),
            ("flatness.csv", flatness, 3),
            ("sparsity.csv", sparsity, 4),
            ("storage.csv", storage, None),
            ("memory.csv", memory, None),
        ):
            if table is not None:
                written.append(self.store.write_csv(name, table.round(digits) if digits is not None else table))
        if multitask:
            written.append(self.store.write_json("multitask.json", multitask))
        return written


# ------------------------------------------------------------------------------------------- tables


Config = MaskingConfig


def results_table(metrics) -> pd.DataFrame:
    """One row per run from each solution's metrics."""
    return pd.DataFrame([{k: m.get(k) for k in RESULT_COLUMNS} for m in metrics], columns=RESULT_COLUMNS)


def curves_table(metrics) -> pd.DataFrame:
    """Dev accuracy at every evaluation of every run."""
    rows = [
        {
            "task": m["task"],
            "method": m["method"],
            "seed": m["seed"],
            "lr": m.get("lr"),
            "step": h.get("step"),
            "epoch": h.get("epoch"),
            "dev_accuracy": h.get("accuracy"),
            "dev_loss": h.get("dev_loss"),
            "train_loss": h.get("train_loss"),
        }
        for m in metrics
        for h in m.get("history", [])
    ]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def flips_table(pairs) -> pd.DataFrame | None:
    """Mask sparsity and flips during training of every run that records them; None when none does."""
    frames = [f.assign(task=r.task, method=r.method, seed=r.seed) for r, f in pairs if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


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
            per_seed.append(
                (
                    last["dev_accuracy"],
                    last["dev_accuracy"] - mid["dev_accuracy"],
                    r["dev_accuracy"].max(),
                    last["step"],
                )
            )
        a = np.array(per_seed, dtype=float)
        rows.append(
            {
                "task": task,
                "method": method,
                "steps": int(a[:, 3].max()),
                "evals": int(len(d) / len(a)),
                "dev_last": 100 * a[:, 0].mean(),
                "dev_change_second_half_pts": 100 * a[:, 1].mean(),
                "dev_change_std_pts": 100 * a[:, 1].std(ddof=1) if len(a) > 1 else 0.0,
                "dev_best": 100 * a[:, 2].mean(),
            }
        )
    return pd.DataFrame(rows)


def paired_gaps(results: pd.DataFrame, baseline: str = "finetune", predictions: dict | None = None) -> pd.DataFrame:
    """Per task, each method's test-accuracy gap to ``baseline`` in points, paired by seed
    (:func:`tmlib.core.stats.paired_gap_table`: mean, std, wins, paired t, p, 95% CI half-width, the smallest gap
    detected with 80% power; with ``predictions`` (:attr:`MaskingResults.predictions`) also the test-sampling
    term ``sampling_sd``) plus the plain sentence ``sentence`` ("mask − fine-tune = x ± ci points (p = ...,
    n seeds)")."""
    from tmlib.core.stats import gap_sentence, paired_gap_table

    methods = [m for m in dict.fromkeys(results["method"]) if m != baseline]
    gaps = paired_gap_table(
        results,
        by=["task"],
        method_col="method",
        value_col="test_accuracy",
        pairs=[(m, baseline) for m in methods],
        scale=100,
        predictions=predictions,
    )
    gaps["sentence"] = [gap_sentence(r) for _, r in gaps.iterrows()]
    return gaps


def summarize(results: pd.DataFrame, predictions: dict | None = None) -> pd.DataFrame:
    """Mean and std over seeds per task and method (accuracy in %), the lr trained with, the test gap to
    fine-tuning in points, and that gap paired by seed (:func:`paired_gaps`: ``paired_gap_pts``,
    ``paired_gap_ci95_pts``, ``paired_gap_p``, ``wins_vs_finetune`` and the sentence ``vs_finetune``)."""
    g = results.groupby(["task", "method"], sort=False)
    s = g.agg(
        n_seeds=("seed", "count"),
        dev_mean=("dev_accuracy", "mean"),
        dev_std=("dev_accuracy", "std"),
        test_mean=("test_accuracy", "mean"),
        test_std=("test_accuracy", "std"),
        train_seconds=("train_seconds", "mean"),
        n_trainable=("n_trainable", "first"),
        task_bytes=("task_bytes", "first"),
        test_n=("test_n", "first"),
    ).reset_index()
    s.insert(2, "lr", g["lr"].first().values if "lr" in results else np.nan)
    s[["dev_std", "test_std"]] = s[["dev_std", "test_std"]].fillna(0.0)
    ft = s[s["method"] == "finetune"].set_index("task")["test_mean"]
    s["test_gap_to_finetune_pts"] = [
        100 * (r.test_mean - ft[r.task]) if r.task in ft else np.nan for r in s.itertuples()
    ]
    for c in ("dev_mean", "dev_std", "test_mean", "test_std"):
        s[c] = 100 * s[c]  # accuracy in %
    gaps = paired_gaps(results, predictions=predictions) if "finetune" in set(results["method"]) else pd.DataFrame()
    cols = {
        "gap_mean": "paired_gap_pts",
        "ci95": "paired_gap_ci95_pts",
        "p": "paired_gap_p",
        "wins": "wins_vs_finetune",
        "gap_std": "paired_gap_sd_pts",
        "detectable_gap": "detectable_gap_pts",
        "sentence": "vs_finetune",
    }
    if predictions is not None:
        cols["sampling_sd"] = "sampling_sd_pts"
    if gaps.empty:
        for c in cols.values():
            s[c] = np.nan if c != "vs_finetune" else ""
    else:
        s = s.merge(
            gaps.rename(columns={"a": "method"})[["task", "method", *cols]].rename(columns=cols),
            on=["task", "method"],
            how="left",
        )
        s["vs_finetune"] = s["vs_finetune"].fillna("")
    return s


SPARSITY_COLUMNS = ["task", "block", "type", "weights", "kept_pct", "seeds"]


def sparsity_table(masks: dict) -> pd.DataFrame:
    """Per task, block and module type: % of weights kept by the learned masks (mean over seeds); ``masks`` is
    :meth:`Experiment.masks`."""
    frames = [packed.sparsity().assign(task=task, seed=seed) for (task, seed), packed in masks.items()]
    if not frames:
        return pd.DataFrame(columns=SPARSITY_COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    return (
        df.groupby(["task", "block", "type"], sort=False)
        .agg(weights=("weights", "first"), kept_pct=("kept_pct", "mean"), seeds=("seed", "count"))
        .reset_index()
    )


def storage_table(results: pd.DataFrame) -> pd.DataFrame:
    """Task-specific bytes per method vs a full fp32 copy."""
    s = (
        results.groupby(["task", "method"], sort=False)
        .agg(task_bytes=("task_bytes", "first"), fp32_copy_bytes=("fp32_copy_bytes", "first"))
        .reset_index()
    )
    s["fraction_of_fp32"] = s["task_bytes"] / s["fp32_copy_bytes"]
    s["fp32_over_task"] = s["fp32_copy_bytes"] / s["task_bytes"]
    return s


def memory_table(
    results: pd.DataFrame, methods: list[str], max_tasks: int, measured: dict | None = None
) -> pd.DataFrame:
    """Bytes to serve 1..``max_tasks`` tasks at once per method (each method's
    :meth:`~tmlib.masking.methods.MethodSpec.serve_bytes`). ``measured``: the mask method's multi-task model as
    measured (``backbone``, ``working``, ``tasks``, ``total`` bytes), which replaces its projection inputs and
    adds a ``measured`` row."""
    from tmlib.masking.methods import get_method

    fp32 = float(results["fp32_copy_bytes"].iloc[0])
    per_task = results.groupby("method")["task_bytes"].mean().to_dict()
    rows, inputs = [], {}
    if measured:
        inputs[MASK] = {"backbone": measured["backbone"], "working": measured["working"]}
        per_task[MASK] = float(np.mean(list(measured["tasks"].values())))
        rows.append({"method": MASK, "n_tasks": len(measured["tasks"]), "bytes": measured["total"], "kind": "measured"})
    for n in range(1, max_tasks + 1):
        for method in methods:
            m = inputs.get(method, {"backbone": fp32, "working": 0.0})
            b = get_method(method).serve_bytes(n, m["backbone"], per_task[method], m["working"])
            rows.append({"method": method, "n_tasks": n, "bytes": int(b), "kind": "projected"})
    return pd.DataFrame(rows, columns=["method", "n_tasks", "bytes", "kind"])
