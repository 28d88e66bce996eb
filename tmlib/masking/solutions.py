"""A trained solution as a value: a typed recipe, its stage, its folder, and the lr grid.

A :class:`SolutionRecipe` says everything one adapted classifier depends on (task data, backbone,
method and its options, learning rate and schedule, training budget and arithmetic, seed); its
:meth:`~SolutionRecipe.key` is the artifact's key and the only place that decides which fields enter it.
The kind of task is its data recipe's ``kind``: a sequence task (:class:`~tmlib.tasks.data.TaskRecipe`, a head per
input, :class:`~tmlib.tasks.classify.Classification`) or a token task
(:class:`~tmlib.tasks.token_data.TokenTaskRecipe`, a head per token,
:class:`~tmlib.tasks.token_classify.TokenClassification`); the same stages train and test both.
:func:`solution_stage` turns a recipe into a :class:`~tmlib.core.runs.Stage`, :func:`evaluation_stage` tests it;
:func:`selection_stage` chooses a learning rate on dev from a :class:`GridRecipe`, one cached stage per grid
point.

Notebooks 03 and 04 both build recipes (from their own configs) and neither imports the other.

FOLDER LAYOUT (notebook 04 reads notebook 03's solutions through it; keep the names). Every trained
model is a RunStore artifact (atomic, with ``manifest.json``) at

    <run_dir>/solutions/<task>/<method>-s<seed>/
        model/             plain HF ``save_pretrained`` folder (+ tokenizer), loadable with
                           AutoModelForSequenceClassification, same keys as the unadapted model;
                           for ``mask`` the effective weights W * mask, for ``lora`` the merged weights
        metrics.json       task, method, seed, lr, dev/test accuracy and loss, steps, seconds, storage bytes
        mask.safetensors   (``mask`` only) the bit-packed mask + head (tmlib.masking.packing)
        flips.csv          (``mask`` only) mask sparsity and flips during training
        adapter/           (``lora`` only) peft's adapter files
    <run_dir>/solutions/<task>/lr-grid/<method>/lr=<lr>/     one grid run (same files), seed = the grid's seed
    <run_dir>/solutions/<task>/lr-grid/<method>/selection/   lr_selection.csv, selection.json

``<task>`` is :func:`task_dirname` of the task name. On the grid's seed the solution at the chosen lr is
the winning grid run, hard-linked, not retrained. A token task's solutions sit under ``token_solutions/`` and
its evaluations under ``token_evaluations/`` (the model folder loads with AutoModelForTokenClassification;
the evaluation keeps each sentence's predicted tags: ``predictions.npy`` concatenated, ``lengths.npy``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from tmlib.core.runs import ArtifactError, RunStore, Stage
from tmlib.tasks.data import TaskRecipe
from tmlib.tasks.token_data import TokenTaskRecipe

SOLUTIONS = "solutions"  # the folder under a run directory that holds every trained solution
FOLDERS = {"sequence": (SOLUTIONS, "evaluations"), "token": ("token_solutions", "token_evaluations")}
"""Per kind of task: the folders of its solutions and of their test evaluations."""


def task_dirname(task: str) -> str:
    """The task's folder name: characters outside ``[A-Za-z0-9_.-]`` become ``_`` (``hub:SetFit/sst2`` ->
    ``hub_SetFit_sst2``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task)


# ------------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class SolutionRecipe:
    """One adapted classifier of a sequence or a token task (``data``). ``lr`` None: the method's default
    (:class:`~tmlib.masking.methods.MethodSpec`); ``schedule`` None: the method's default named schedule;
    ``options``: the method's options object (a :class:`~tmlib.masking.config.MaskConfig` for ``mask``), ignored by
    methods without options."""

    data: TaskRecipe | TokenTaskRecipe
    backbone: str
    method: str
    seed: int
    max_length: int
    epochs: float
    batch_size: int
    lr: float | None = None
    schedule: str | None = None
    options: object = None
    eval_every: int = 0
    mixed_precision: str = "no"
    kernels: str = "hf"
    flip_every: int = 5  # not in the key: a record interval, not the model
    progress: bool = field(default=True, compare=False)  # not in the key
    tag: str = ""  # names a variant in the folder (``mask-init0.2-s0``); the options that make it are in the key

    def __post_init__(self):
        from tmlib.core.precision import resolve_fields

        resolve_fields(self, "mixed_precision")

    @property
    def kind(self) -> str:
        """``"sequence"`` or ``"token"``: the data recipe's kind of task."""
        return self.data.kind

    @property
    def task(self) -> str:
        return self.data.name

    @property
    def spec(self):
        from tmlib.masking.methods import get_method

        return get_method(self.method)

    @property
    def learning_rate(self) -> float:
        return self.spec.lr if self.lr is None else float(self.lr)

    @property
    def method_options(self):
        return self.options if self.spec.options else None

    @property
    def name(self) -> str:
        """The stage name, relative to the run folder."""
        variant = f"{self.method}-{self.tag}" if self.tag else self.method
        return f"{FOLDERS[self.kind][0]}/{task_dirname(self.task)}/{variant}-s{self.seed}"

    def with_lr(self, lr: float) -> SolutionRecipe:
        return replace(self, lr=float(lr))

    def key(self) -> dict:
        """What the artifact depends on. Options left at the value every earlier run had (no ``eval_every``,
        fp32, the model's own forward) stay out of the key, so those artifacts keep their keys. The test data
        is not in the key: a solution trains on the train split and picks its epoch on dev; its test evaluation
        is a stage of its own (:func:`evaluation_stage`)."""
        if self.kind == "token":
            return self._token_key()
        d = self.data
        key = {
            "task": self.task,
            "model": self.backbone,
            "method": self.method,
            "seed": self.seed,
            "max_length": self.max_length,
            "max_train": d.cap("train"),
            "max_dev": d.cap("dev"),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.learning_rate,
            "schedule": self.spec.schedule(self.schedule).to_dict(),
            "data_seed": d.seed,
        }
        if self.eval_every:
            key["eval_every"] = self.eval_every
        if self.mixed_precision != "no":
            key["mixed_precision"] = self.mixed_precision
        if self.kernels != "hf":
            key["kernels"] = self.kernels
        if self.spec.options:
            key[self.spec.options] = self.method_options.to_dict()
        return key

    def _token_key(self) -> dict:
        """A token solution's key: the training data (not the test pool: that is the evaluation's), the model, the
        method and its options, the budget, lr, schedule, arithmetic and seed."""
        data = {k: v for k, v in self.data.key().items() if k not in ("max_test", "test_pool")}
        key = {
            "data": data,
            "model": self.backbone,
            "method": self.method,
            "seed": self.seed,
            "max_length": self.max_length,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.learning_rate,
            "schedule": self.spec.schedule(self.schedule).to_dict(),
            "mixed_precision": self.mixed_precision,
            "kernels": self.kernels,
        }
        if self.eval_every:
            key["eval_every"] = self.eval_every
        if self.spec.options:
            key[self.spec.options] = self.method_options.to_dict()
        return key


@dataclass(frozen=True)
class GridRecipe:
    """Choose ``base.method``'s lr on dev: one run per lr in ``lrs`` on ``base.seed``; the best dev metric wins
    (accuracy; a token task's own metric, token accuracy or entity F1; ties: lower dev loss, then lower lr); while
    the winner is at the edge of what was tried, the next lr beyond that edge is tried too (:func:`next_edge_lr`),
    at most ``extend`` times."""

    base: SolutionRecipe
    lrs: tuple[float, ...]
    extend: int = 0

    CRITERION = "max dev accuracy (ties: lower dev loss, then lower lr)"

    @property
    def criterion(self) -> str:
        if self.base.kind == "token":
            return "max dev metric (token accuracy, or entity F1 for entity tags; ties: lower dev loss, then lower lr)"
        return self.CRITERION

    @property
    def folder(self) -> str:
        variant = f"{self.base.method}-{self.base.tag}" if self.base.tag else self.base.method
        return f"{FOLDERS[self.base.kind][0]}/{task_dirname(self.base.task)}/lr-grid/{variant}"

    def point(self, lr: float) -> SolutionRecipe:
        return self.base.with_lr(lr)

    def key(self) -> dict:
        key = {k: v for k, v in self.base.key().items() if k != "lr"}
        key.update(lr_grid=list(self.lrs), criterion=self.CRITERION)
        if self.extend:
            key["lr_grid_extend"] = self.extend
        return key


# --------------------------------------------------------------------------------------- training


@dataclass
class Trained:
    """A solution as loaded: the plain HF model (effective weights), its metrics, the method's per-task state
    (a PackedMask for ``mask``) and the mask-flip record."""

    model: object
    metrics: dict
    packed: object = None
    flips: pd.DataFrame | None = None
    save: object = None  # writes the method's per-task files (Exported.save), when just trained


def train(recipe: SolutionRecipe, inputs: Inputs) -> Trained:
    """Adapt the backbone to the task as ``recipe`` says: a sequence classifier
    (:class:`tmlib.tasks.classify.Classification`) or a token classifier
    (:class:`tmlib.tasks.token_classify.TokenClassification`), on the train split, its state chosen on dev."""
    from datasets import DatasetDict

    from tmlib.core.models import load_classifier, load_token_classifier
    from tmlib.core.training import TrainConfig, fit
    from tmlib.masking.methods import prepare_method
    from tmlib.masking.multitask import fp32_model_bytes
    from tmlib.tasks.classify import Classification
    from tmlib.tasks.token_classify import TokenClassification

    r, token = recipe, recipe.kind == "token"
    data = DatasetDict(train=inputs.data["train"], dev=inputs.data["dev"])  # the test data is evaluation_stage's
    if token:
        model = load_token_classifier(r.backbone, label_names=inputs.label_names, seed=r.seed)
    else:
        model = load_classifier(r.backbone, inputs.label_names, seed=r.seed)
    fp32_bytes = fp32_model_bytes(model)
    prep = prepare_method(
        r.method, model, seed=r.seed, mask_config=r.method_options, lr=r.learning_rate, schedule=r.schedule
    )
    base = TrainConfig(
        batch_size=r.batch_size,
        epochs=r.epochs,
        max_length=r.max_length,
        seed=r.seed,
        eval_every=r.eval_every,
        progress=r.progress,
        mixed_precision=r.mixed_precision,
        kernels=r.kernels,
    )
    hooks = prep.spec.step_hooks(r.flip_every)
    res = fit(
        prep.model,
        data,
        prep.train_config(base),
        TokenClassification(inputs.tokenizer) if token else Classification(inputs.tokenizer),
        params=prep.params,
        optimizer_cls=prep.optimizer_cls,
        on_step=hooks,
        desc=f"{r.task} {r.method} s{r.seed}",
    )
    out = prep.export(backbone=r.backbone, fp32_bytes=fp32_bytes)
    metrics = {
        "task": r.task,
        "method": r.method,
        "seed": r.seed,
        "lr": r.learning_rate,
        **({"metric": res.metric} if token else {}),  # the dev metric a token task selects by
        **{f"dev_{k}": v for k, v in res.dev.items()},
        "best_epoch": res.fit.best.get("epoch"),
        "steps": res.fit.steps,
        "train_seconds": round(res.fit.seconds, 2),
        "n_trainable": prep.n_trainable,
        "task_bytes": out.task_bytes,
        "fp32_copy_bytes": fp32_bytes,
        "history": res.fit.history,
    }
    flips = next((h.frame() for h in hooks if hasattr(h, "frame")), None)
    return Trained(out.model.eval(), metrics, out.state, flips, out.save)


def save(obj: Trained, d: Path, tokenizer) -> None:
    """Write a just-trained solution into folder ``d`` (the layout in this module's docstring)."""
    from tmlib.core.runs import atomic_write_json

    obj.model.save_pretrained(d / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(d / "model")
    files = obj.save(d) if obj.save is not None else []
    if files:
        obj.metrics["file_bytes"] = sum(f.stat().st_size for f in files)
    if obj.flips is not None:
        obj.flips.to_csv(d / "flips.csv", index=False)
    atomic_write_json(d / "metrics.json", obj.metrics)


def load(d: Path, method: str, kind: str = "sequence") -> Trained:
    """Read a saved solution folder (of a ``kind`` of task: a sequence or a token classifier)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from tmlib.masking.methods import get_method

    metrics = json.loads((d / "metrics.json").read_text())
    flips = pd.read_csv(d / "flips.csv") if (d / "flips.csv").is_file() else None
    auto = AutoModelForTokenClassification if kind == "token" else AutoModelForSequenceClassification
    return Trained(
        auto.from_pretrained(d / "model").eval(),
        metrics,
        get_method(method).load_state(d),
        flips,
    )


def _copy_run(src: Path, dst: Path) -> None:
    """Copy a saved run's files (not its manifest), hard-linking where the file system allows."""

    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(
        src, dst, copy_function=link_or_copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns("manifest.json")
    )


class Inputs:
    """The task data (a sequence or a token task) and tokenizer a recipe trains on, loaded on first use and shared
    by every stage that is handed the same object (a notebook loads each task once)."""

    def __init__(self, data_recipe: TaskRecipe | TokenTaskRecipe, backbone: str, data=None, tokenizer=None):
        self.recipe, self.backbone = data_recipe, backbone
        self._data, self._tokenizer = data, tokenizer
        self._batches: dict = {}

    def test_batches(self, max_length: int, batch_size: int = 64):
        """The test split tokenised once, padded in length-sorted batches (:class:`tmlib.tasks.classify.EvalBatches`;
        a token task: :func:`tmlib.tasks.token_classify.token_batches`), shared by every solution evaluated on it."""
        from tmlib.tasks.classify import EvalBatches, encode
        from tmlib.tasks.token_classify import encode_tokens, token_batches

        if (max_length, batch_size) not in self._batches:
            if self.recipe.kind == "token":
                enc = encode_tokens(self.data["test"], self.tokenizer, max_length)
                batches = token_batches(enc, self.tokenizer, batch_size=batch_size)
            else:
                enc = encode(self.data["test"], self.tokenizer, max_length)
                batches = EvalBatches(enc, self.tokenizer, batch_size=batch_size)
            self._batches[max_length, batch_size] = batches
        return self._batches[max_length, batch_size]

    @property
    def label_names(self) -> list[str]:
        """The task's classes: its labels, or a token task's tags."""
        from tmlib.tasks.data import label_names

        return label_names(self.data)

    @property
    def data(self):
        if self._data is None:
            self._data = self.recipe.load()
        return self._data

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from tmlib.core.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.backbone)
        return self._tokenizer


def solution_stage(recipe: SolutionRecipe, inputs: Inputs | None = None, selection: Stage | None = None) -> Stage:
    """The stage of one solution. ``selection``: the :func:`selection_stage` that chose ``recipe.lr``; its key
    enters this one's, and on the grid's seed the winning grid run is hard-linked instead of retrained."""
    inputs = inputs or Inputs(recipe.data, recipe.backbone)

    def build(ctx, selection=None):
        if selection is not None and selection.seed == recipe.seed:
            return ("copy", selection.chosen_dir)
        return train(recipe, inputs), inputs.tokenizer

    def save_(obj, d):
        if obj[0] == "copy":
            _copy_run(obj[1], d)
        else:
            save(obj[0], d, obj[1])

    return Stage(
        recipe.name,
        recipe.key(),
        build=build,
        save=save_,
        load=lambda d: load(d, recipe.method, recipe.kind),
        seed=recipe.seed,
        deps={"selection": selection} if selection is not None else {},
    )


@dataclass
class Evaluation:
    """A solution's test evaluation: accuracy, loss, the number of examples and each example's predicted class
    (in the order of the test data)."""

    accuracy: float
    loss: float
    n: int
    predictions: object  # numpy array of class indices


def evaluation_stage(
    recipe: SolutionRecipe,
    solution: Stage,
    inputs: Inputs | None = None,
    batch_size: int = 64,
    mixed_precision: str = "no",
) -> Stage:
    """The test evaluation of ``solution`` (the stage of ``recipe``) on ``recipe.data``'s test data (its whole
    held-out pool under ``test_pool="heldout"``), with the forward ``recipe.kernels`` names, in fp32 (or under
    ``mixed_precision`` autocast: ``benchmarks/bench_eval_precision.py`` measures what bf16 changes). Its own
    stage: changing the test data re-evaluates and never retrains. Artifact ``evaluations/<task>/<method>-s<seed>``:
    ``metrics.json`` and ``predictions.npy``."""
    import numpy as np

    inputs = inputs or Inputs(recipe.data, recipe.backbone)
    if recipe.kind == "token":
        return _token_evaluation_stage(recipe, solution, inputs)
    d = recipe.data
    key = {"test": {**d.key(), "max_test": d.cap("test")}, "max_length": recipe.max_length, "kernels": recipe.kernels}
    if mixed_precision != "no":
        key["mixed_precision"] = mixed_precision  # fp32 evaluations keep their keys

    def build(ctx, solution):
        from tmlib.core.precision import kernels_context
        from tmlib.tasks.classify import evaluate_classifier

        model = solution.model
        with kernels_context(model, recipe.kernels, next(model.parameters()).device):  # as dev was evaluated
            m = evaluate_classifier(
                model,
                inputs.test_batches(recipe.max_length, batch_size),
                kernels=recipe.kernels,
                predictions=True,
                mixed_precision=mixed_precision,
            )
        return Evaluation(m["accuracy"], m["loss"], len(m["predictions"]), m["predictions"])

    def save_(ev, folder):
        np.save(folder / "predictions.npy", ev.predictions.astype(np.int16))
        (folder / "metrics.json").write_text(
            json.dumps({"test_accuracy": ev.accuracy, "test_loss": ev.loss, "test_n": ev.n}, indent=2)
        )

    def load_(folder):
        m = json.loads((folder / "metrics.json").read_text())
        return Evaluation(m["test_accuracy"], m["test_loss"], m["test_n"], np.load(folder / "predictions.npy"))

    name = f"{FOLDERS[recipe.kind][1]}/" + recipe.name.split("/", 1)[1]
    return Stage(name, key, build=build, save=save_, load=load_, seed=recipe.seed, deps={"solution": solution})


@dataclass
class TokenEvaluation:
    """A token solution's test evaluation: its metrics (loss, accuracy, f1 for entity tags, n_tokens,
    n_sentences) and each sentence's predicted tag indices (scored words), in the order of the test data."""

    metrics: dict
    predictions: list

    def value(self, metric: str) -> float:
        return float(self.metrics[metric])


def _token_evaluation_stage(recipe: SolutionRecipe, solution: Stage, inputs: Inputs) -> Stage:
    """:func:`evaluation_stage` of a token task: the held-out sentences under the recipe's forward (``kernels``)
    and arithmetic (``mixed_precision``); each sentence's predicted tags are kept."""
    import numpy as np

    key = {
        "test": recipe.data.key(),
        "max_length": recipe.max_length,
        "kernels": recipe.kernels,
        "mixed_precision": recipe.mixed_precision,
    }

    def build(ctx, solution):
        from tmlib.core.precision import kernels_context
        from tmlib.tasks.token_classify import evaluate_tagger

        model = solution.model
        with kernels_context(model, recipe.kernels, next(model.parameters()).device):
            m = evaluate_tagger(
                model,
                inputs.test_batches(recipe.max_length),
                inputs.label_names,
                mixed_precision=recipe.mixed_precision,
                predictions=True,
            )
        preds = m.pop("predictions")
        return TokenEvaluation({"metric": solution.metrics["metric"], **m}, preds)

    def save(ev: TokenEvaluation, d: Path) -> None:
        flat = [t for p in ev.predictions for t in p]
        np.save(d / "predictions.npy", np.asarray(flat, dtype=np.int16))
        np.save(d / "lengths.npy", np.asarray([len(p) for p in ev.predictions], dtype=np.int32))
        (d / "metrics.json").write_text(json.dumps(ev.metrics, indent=2))

    def load(d: Path) -> TokenEvaluation:
        flat, lengths = np.load(d / "predictions.npy"), np.load(d / "lengths.npy")
        preds = [p.tolist() for p in np.split(flat, np.cumsum(lengths)[:-1])] if len(lengths) else []
        return TokenEvaluation(json.loads((d / "metrics.json").read_text()), preds)

    name = f"{FOLDERS[recipe.kind][1]}/" + recipe.name.split("/", 1)[1]
    return Stage(name, key, build=build, save=save, load=load, seed=recipe.seed, deps={"solution": solution})


# ------------------------------------------------------------------------------------- lr selection

SELECTION_COLUMNS = [
    "task",
    "method",
    "seed",
    "lr",
    "dev_accuracy",
    "dev_loss",
    "best_epoch",
    "steps",
    "chosen",
    "edge_extension",
]


@dataclass
class Selection:
    """A method's learning rate chosen on dev: the grid table, the lr, the seed it was chosen on, the folder of
    the winning run, and each tried lr's dev history."""

    lr: float
    seed: int
    table: pd.DataFrame
    chosen_dir: Path
    histories: dict = field(default_factory=dict)


def next_edge_lr(tried: list[float], best_lr: float) -> float | None:
    """The lr to add when ``best_lr`` is the lowest or highest of the lrs ``tried``: one step beyond that edge
    with the ratio of the two outermost lrs on that side (rounded to 2 significant digits); None when the
    best is inside the range, fewer than two lrs were tried, or the step rounds onto a tried lr."""
    lrs = sorted(set(tried))
    if len(lrs) < 2 or lrs[0] < best_lr < lrs[-1]:
        return None
    lr = float(f"{lrs[-1] ** 2 / lrs[-2]:.2g}") if best_lr == lrs[-1] else float(f"{lrs[0] ** 2 / lrs[1]:.2g}")
    return None if lr in lrs else lr


def grid_point_stage(grid: GridRecipe, lr: float, inputs: Inputs | None = None) -> Stage:
    """One grid run: the solution at ``lr`` on the grid's seed, stored under the grid's folder; its value is
    ``(metrics, folder)`` (the model stays on disk)."""
    recipe = grid.point(lr)
    stage = solution_stage(recipe, inputs)

    def load_(d):
        return json.loads((d / "metrics.json").read_text()), d

    return replace(stage, name=f"{grid.folder}/lr={lr:g}", load=load_)


def _dev_value(metrics: dict) -> float:
    """A run's dev value of the metric it selects by (``metric``: a token task's; else accuracy)."""
    return metrics[f"dev_{metrics.get('metric', 'accuracy')}"]


def _best(runs: list[tuple[float, dict]]) -> int:
    return max(range(len(runs)), key=lambda j: (_dev_value(runs[j][1]), -runs[j][1]["dev_loss"], -runs[j][0]))


def selection_stage(grid: GridRecipe, inputs: Inputs | None = None) -> Stage:
    """The stage choosing the lr of ``grid`` (:class:`GridRecipe`). The grid's own lrs are dependencies (one
    cached stage each, so an interrupted grid resumes); an edge extension is asked of the store while
    building, as another grid-point stage. Artifact ``<grid folder>/selection``: ``lr_selection.csv``,
    ``selection.json``, ``runs/lr<i>.json`` (each run's metrics and dev history)."""
    inputs = inputs or Inputs(grid.base.data, grid.base.backbone)
    points = {f"lr{i}": grid_point_stage(grid, lr, inputs) for i, lr in enumerate(grid.lrs)}

    def build(ctx, **deps):
        runs = [(lr, *deps[f"lr{i}"]) for i, lr in enumerate(grid.lrs)]
        for _ in range(grid.extend):
            best_lr = runs[_best([(r[0], r[1]) for r in runs])][0]
            lr = next_edge_lr([r[0] for r in runs], best_lr)
            if lr is None:
                break
            ctx.log(f"best lr {best_lr:g} at the grid's edge: trying {lr:g}")
            runs.append((lr, *ctx.store.get(grid_point_stage(grid, lr, inputs))))
        return runs, _best([(r[0], r[1]) for r in runs])

    def save_(obj, d):
        runs, best = obj
        b, rows = grid.base, []
        token = b.kind == "token"  # its table adds the metric it selects by and its dev value
        (d / "runs").mkdir(parents=True)
        for j, (lr, m, _) in enumerate(runs):
            rows.append(
                {
                    "task": b.task,
                    "method": b.method,
                    "seed": b.seed,
                    "lr": lr,
                    "dev_accuracy": m["dev_accuracy"],
                    "dev_loss": m["dev_loss"],
                    "best_epoch": m.get("best_epoch"),
                    "steps": m.get("steps"),
                    "chosen": j == best,
                    "edge_extension": j >= len(grid.lrs),
                    **({"metric": m["metric"], "dev_value": _dev_value(m)} if token else {}),
                }
            )
            (d / "runs" / f"lr{j}.json").write_text(json.dumps(m, indent=2, default=str))
        columns = SELECTION_COLUMNS + (["metric", "dev_value"] if token else [])
        pd.DataFrame(rows, columns=columns).to_csv(d / "lr_selection.csv", index=False)
        (d / "selection.json").write_text(
            json.dumps(
                {
                    "task": b.task,
                    "method": b.method,
                    "seed": b.seed,
                    "lr": runs[best][0],
                    "lr_grid": list(grid.lrs),
                    "tried": [r[0] for r in runs],
                    "chosen": runs[best][2].name,
                    "criterion": grid.criterion,
                },
                indent=2,
            )
        )

    def load_(d):
        info = json.loads((d / "selection.json").read_text())
        hist = {}
        for j, lr in enumerate(info["tried"]):
            f = d / "runs" / f"lr{j}.json"
            if f.is_file():
                hist[lr] = json.loads(f.read_text()).get("history", [])
        # the selection folder sits beside the grid runs: <grid folder>/selection, <grid folder>/lr=<lr>
        return Selection(
            float(info["lr"]), int(info["seed"]), pd.read_csv(d / "lr_selection.csv"), d.parent / info["chosen"], hist
        )

    return Stage(
        f"{grid.folder}/selection", grid.key(), build=build, save=save_, load=load_, seed=grid.base.seed, deps=points
    )


def chosen_stage(
    recipe: SolutionRecipe, grid: GridRecipe | None, store: RunStore, inputs: Inputs | None = None
) -> Stage:
    """The stage of ``recipe``'s solution: at its own lr without a grid, else at the lr ``grid`` chose (the
    selection runs first, through ``store``)."""
    if grid is None:
        return solution_stage(recipe, inputs)
    sel_stage = selection_stage(grid, inputs)
    sel = store.get(sel_stage)
    return solution_stage(recipe.with_lr(sel.lr), inputs, selection=sel_stage)


# ---------------------------------------------------------------------------------- reading solutions


def solution_path(run_dir: str | Path, task: str, method: str, seed: int) -> Path:
    return Path(run_dir) / SOLUTIONS / task_dirname(task) / f"{method}-s{seed}"


def load_solution(run_dir: str | Path, task: str, method: str, seed: int):
    """A saved solution as a plain HF classifier, or ``None`` when it is absent, partial or corrupt (manifest
    missing or a file hash mismatch)."""
    from transformers import AutoModelForSequenceClassification

    store = RunStore(Path(run_dir) / SOLUTIONS)
    name = f"{task_dirname(task)}/{method}-s{seed}"
    if not store.valid(name):
        return None
    try:
        return AutoModelForSequenceClassification.from_pretrained(store.root / name / "model").eval()
    except (OSError, ValueError):
        return None


def solution_key_of(run_dir: str | Path, task: str, method: str, seed: int) -> dict:
    """The key a saved solution was trained with ({} when absent or unreadable)."""
    try:
        key = RunStore(Path(run_dir) / SOLUTIONS).manifest(f"{task_dirname(task)}/{method}-s{seed}").get("config", {})
    except ArtifactError:
        return {}
    return key.get("config", key) if isinstance(key, dict) and "deps" in key else key
