"""Notebook 04: the loss landscape between a masked and a fine-tuned solution (Zhao et al., 2020).

Three straight paths, each evaluated on dev and test with :func:`tmlib.masking.landscape.linear_path`:

* ``mask<->finetune``       the paper's analysis: theta_mask = W * mask (g = 0) to the fine-tuned model (g = 1)
* ``finetune-sA<->finetune-sB``  two fine-tuning seeds (are fine-tuned solutions connected?)
* ``pretrained<->finetune`` contrast: the pretrained encoder with the fine-tune's initial (random) head
  (``load_classifier(model, labels, seed)``) to the fine-tuned model

plus a trained quadratic Bezier curve from the masked to the fine-tuned solution (mode connectivity,
Garipov et al. 2018; :func:`run_curve`: control point initialised at their midpoint, trained on the train
split to minimise the loss at ``t ~ U(0, 1)``, then evaluated along the curve like the lines), the 2-D
plane through pretrained, masked and fine-tuned (:func:`tmlib.masking.landscape.plane`), and a summary: accuracy
along masked<->fine-tuned (line and curve) and whether it stays within 1 point of the endpoints.

Solutions come from notebook 03 when ``reuse_runs`` points at its out_dir
(``<run_dir>/solutions/<task>/<method>-s<seed>/model/``: plain HF ``save_pretrained`` folders with
the effective weights); whatever is missing is trained here and cached in this notebook's out_dir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from tmlib.core.config import ConfigError
from tmlib.core.runs import RunStore, Stage
from tmlib.masking.config import MaskConfig
from tmlib.masking.solutions import (
    Inputs,
    SolutionRecipe,
    load_solution,
    solution_key_of,
    solution_path,
    solution_stage,
)
from tmlib.tasks.data import TaskRecipe, check_test_pool


@dataclass
class LandscapeConfig:
    """Notebook 04's experiment. Flat parameter names map onto the nested ``mask`` options through
    :func:`tmlib.core.config.from_flat` (``mask_skip_first_blocks`` is ``mask.skip_first_blocks``), as in
    notebook 03's :class:`~tmlib.experiments.masking.MaskingConfig`; ``lr`` and ``schedule`` mean what
    they mean there."""

    out_dir: str = "runs/dev/04_loss_landscape"  # where figures, CSV and JSON are written
    task: str = "mr"  # tmlib.tasks.data task (train/dev/test split seed 0, as notebook 03)
    model: str = "minilm"  # backbone of the solutions (must match notebook 03's)
    reuse_runs: str = ""  # notebook 03's out_dir (relative to the repo root); "" = train here
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # fine-tuning seeds A, B; mask and contrast use seed A
    dev_examples: int = 200  # dev sentences evaluated per point (0 = the whole dev split)
    # "heldout": test on examples the solutions never trained on | "split"
    test_pool: str = "heldout"
    test_examples: int = 600  # test sentences per point from test_pool (0 = all), class-balanced
    gamma_min: float = -0.2  # interpolation grid start (<= 0)
    gamma_max: float = 1.2  # interpolation grid end (>= 1)
    n_gammas: int = 9  # points per path (0 and 1 always included)
    plane_resolution: int = 7  # plane grid points per axis
    plane_margin: float = 0.2  # plane grid margin around the three models (fraction of the span)
    plane_examples: int = 64  # dev sentences evaluated per plane point (0 = whole dev split)
    eval_batch_size: int = 64  # sentences per forward pass when evaluating
    max_length: int = 64  # tokens per sentence (notebook 03 trains MR at 64)
    train_examples: int = 0  # training sentences when training here (0 = all), class-balanced
    batch_size: int = 32  # training batch size (when training here)
    # per method (when training here)
    lr: dict[str, float] = field(default_factory=lambda: {"finetune": 2e-5, "mask": 1e-3})
    schedule: dict[str, str] = field(default_factory=dict)  # named schedule per method; not named: the spec's default
    mask: MaskConfig = field(default_factory=MaskConfig)  # the mask method's options (as notebook 03's)
    epochs: float = 3.0  # training epochs for solutions trained here
    # training of solutions trained here: "auto" | "bf16" autocast | "fp32" | "fp16" (CUDA)
    train_mixed_precision: str = "auto"
    curve_steps: int = 100  # Bezier curve mask<->finetune: training steps (0 = no curve)
    curve_lr: float = 1e-4  # Adam lr of the curve's control point
    curve_examples: int = 0  # training sentences the curve trains on (0 = all), class-balanced
    curve_points: int = 6  # points evaluated along the curve, t evenly on [0, 1]
    # the curve's training: "auto" | "bf16" autocast | "fp32"; evaluated at mixed_precision
    curve_mixed_precision: str = "auto"
    # ^ paired check (5 curve seeds, benchmarks/bench_curve.py, README): the curve's drop, mean accuracy and loss
    # unchanged
    mixed_precision: str = "fp32"  # evaluation along paths/curve/plane: "fp32" | "bf16" autocast;
    # ^ fp32 by default: bf16 moves accuracies by up to 1 point (benchmarks/bench_landscape.py), the size of the
    # effects here
    # "fast": [CLS]-only evaluation, eager + [CLS]-only curve training | "hf" (tmlib.core.precision.KERNELS)
    kernels: str = "fast"
    progress: bool = True  # tqdm progress bars

    def __post_init__(self):
        from tmlib.core.precision import check_kernels, resolve_fields
        from tmlib.masking.methods import check_method_settings

        try:
            resolve_fields(self, "mixed_precision", "curve_mixed_precision", "train_mixed_precision")
            check_kernels(self.kernels)
            check_test_pool(self.test_pool)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.curve_mixed_precision == "fp16":
            raise ConfigError(
                "curve_mixed_precision must be 'auto', 'fp32' or 'bf16' (fp16 would need gradient scaling)"
            )
        if len(self.seeds) != 2 or self.seeds[0] == self.seeds[1]:
            raise ConfigError(f"seeds must be two different fine-tuning seeds [A, B], got {self.seeds}")
        if not (self.gamma_min <= 0.0 and self.gamma_max >= 1.0):
            raise ConfigError(
                f"the grid must cover [0, 1]: need gamma_min <= 0 <= 1 <= gamma_max, got "
                f"[{self.gamma_min}, {self.gamma_max}]"
            )
        if self.n_gammas < 3:
            raise ConfigError(f"n_gammas must be >= 3, got {self.n_gammas}")
        if self.plane_resolution < 2:
            raise ConfigError(f"plane_resolution must be >= 2, got {self.plane_resolution}")
        for name in ("dev_examples", "test_examples", "plane_examples", "train_examples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = all / no cap), got {getattr(self, name)}")
        if self.plane_margin < 0 or self.eval_batch_size < 1 or self.batch_size < 1 or self.epochs <= 0:
            raise ConfigError("plane_margin must be >= 0, eval_batch_size and batch_size >= 1, epochs > 0")
        if self.curve_steps < 0 or self.curve_examples < 0 or self.curve_points < 2 or self.curve_lr <= 0:
            raise ConfigError(
                f"curve_steps and curve_examples must be >= 0, curve_points >= 2 and curve_lr > 0, got "
                f"{self.curve_steps}, {self.curve_examples}, {self.curve_points}, {self.curve_lr}"
            )
        self.lr, self.mask = check_method_settings(self.lr, self.schedule, self.mask)

    @property
    def gammas(self) -> list[float]:
        from tmlib.masking.landscape import gamma_grid

        return gamma_grid(self.gamma_min, self.gamma_max, self.n_gammas)


# ------------------------------------------------------------------------------------------ solutions


@dataclass
class Solutions:
    """The models the paths run between, as state dicts with identical keys, plus where they came from."""

    template: object  # a model of the architecture (never modified)
    states: dict[str, dict]  # name -> state dict: pretrained, mask, finetune-s<A>, finetune-s<B>
    # name -> "notebook 03: <path>" / "trained here: <path>" / "load_classifier(...)"
    sources: dict[str, str]
    # the data the solutions trained on (train and dev caps): the test pool is the rest
    data: TaskRecipe | None = None
    # name -> dev/test accuracy at the endpoints (filled by run_paths)
    metrics: dict[str, dict] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"solution": k, "source": v} for k, v in self.sources.items()])


@dataclass(frozen=True)
class PathRecipe:
    """Loss and accuracy along the straight line from solution ``a`` to ``b``. ``a_state``, ``b_state`` (content
    hashes of the two state dicts) and ``test`` (what the test set depends on) are bound once the solutions are
    loaded (:meth:`Experiment.paths`)."""

    path: str
    a: str
    b: str
    gammas: tuple[float, ...]
    task: str
    max_length: int
    dev_examples: int
    mixed_precision: str
    kernels: str
    progress: bool = True
    a_state: str = ""
    b_state: str = ""
    test: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"cache/path-{self.path.replace('<->', '--')}"

    def key(self) -> dict:
        return {
            "path": self.path,
            "a": self.a_state,
            "b": self.b_state,
            "gammas": list(self.gammas),
            "task": self.task,
            "dev_examples": self.dev_examples,
            "test": self.test,
            "max_length": self.max_length,
            **_compute_key(self),
        }


@dataclass(frozen=True)
class CurveRecipe:
    """The quadratic Bezier curve from ``a`` (the mask) to ``b`` (the fine-tune): its training and its evaluation
    at ``ts`` (states and test bound as in :class:`PathRecipe`)."""

    a: str
    b: str
    task: str
    steps: int
    lr: float
    examples: int
    batch_size: int
    max_length: int
    seed: int
    ts: tuple[float, ...]
    dev_examples: int
    mixed_precision: str
    curve_mixed_precision: str
    kernels: str
    progress: bool = True
    a_state: str = ""
    b_state: str = ""
    test: dict = field(default_factory=dict)

    name = "cache/curve"

    def key(self) -> dict:
        return {
            "a": self.a_state,
            "b": self.b_state,
            "task": self.task,
            "steps": self.steps,
            "lr": self.lr,
            "examples": self.examples,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "seed": self.seed,
            "ts": list(self.ts),
            "dev_examples": self.dev_examples,
            "test": self.test,
            **_compute_key(self),
            **_curve_training_key(self),
        }


@dataclass(frozen=True)
class PlaneRecipe:
    """The plane through pretrained (origin), mask (x) and fine-tuned (y) on ``plane_examples`` dev sentences."""

    models: tuple[str, str, str]
    resolution: int
    margin: float
    plane_examples: int
    task: str
    max_length: int
    mixed_precision: str
    kernels: str
    progress: bool = True
    states: tuple[str, ...] = ()

    name = "cache/plane"

    def key(self) -> dict:
        return {
            "models": list(self.states),
            "resolution": self.resolution,
            "margin": self.margin,
            "plane_examples": self.plane_examples,
            "task": self.task,
            "max_length": self.max_length,
            **_compute_key(self),
        }


@dataclass(frozen=True)
class LandscapePlan:
    """Notebook 04's runs as recipes: the endpoint solutions trained here (notebook 03's are loaded instead when
    found in ``reuse_runs``), the three straight paths, the curve (None without one) and the plane."""

    solutions: dict[tuple[str, int], SolutionRecipe]
    paths: tuple[PathRecipe, ...]
    curve: CurveRecipe | None
    plane: PlaneRecipe


def plan(cfg: LandscapeConfig) -> LandscapePlan:
    """Config -> recipes; the only code that reads the config for per-run settings."""
    import numpy as np

    data = TaskRecipe(cfg.task, seed=0, max_train=cfg.train_examples)
    a, b = cfg.seeds
    solutions = {
        (method, seed): SolutionRecipe(
            data,
            cfg.model,
            method,
            seed,
            max_length=cfg.max_length,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr.get(method),
            schedule=cfg.schedule.get(method),
            options=cfg.mask,
            mixed_precision=cfg.train_mixed_precision,
            kernels=cfg.kernels,
            progress=cfg.progress,
        )
        for method, seed in (("mask", a), ("finetune", a), ("finetune", b))
    }
    common = dict(task=cfg.task, max_length=cfg.max_length, mixed_precision=cfg.mixed_precision, kernels=cfg.kernels,
                  progress=cfg.progress)  # fmt: skip
    paths = tuple(
        PathRecipe(name, pa, pb, tuple(cfg.gammas), dev_examples=cfg.dev_examples, **common)
        for name, pa, pb in path_specs(cfg)
    )
    curve = None
    if cfg.curve_steps:
        ts = tuple(float(t) for t in np.round(np.linspace(0, 1, cfg.curve_points), 6))
        curve = CurveRecipe(
            f"mask-s{a}", f"finetune-s{a}", steps=cfg.curve_steps, lr=cfg.curve_lr, examples=cfg.curve_examples,
            batch_size=cfg.batch_size, seed=a, ts=ts, dev_examples=cfg.dev_examples,
            curve_mixed_precision=cfg.curve_mixed_precision, **common,
        )  # fmt: skip
    plane = PlaneRecipe(("pretrained", f"mask-s{a}", f"finetune-s{a}"), cfg.plane_resolution, cfg.plane_margin,
                        cfg.plane_examples, **common)  # fmt: skip
    return LandscapePlan(solutions, paths, curve, plane)


def _reused(cfg: LandscapeConfig, method: str, seed: int):
    """Notebook 03's solution (validated against its manifest) or None; a backbone mismatch is an error."""
    run_dir = _resolve(cfg.reuse_runs)
    model = load_solution(run_dir, cfg.task, method, seed)
    if model is None:
        return None
    d = solution_path(run_dir, cfg.task, method, seed)
    used = solution_key_of(run_dir, cfg.task, method, seed).get("model")
    if used is not None and used != cfg.model:
        raise ConfigError(
            f"notebook 03's solution {d} was trained from model={used!r} but this notebook has "
            f"model={cfg.model!r}; set model: {used} (the pretrained endpoint must be the same backbone)"
        )
    return model, f"notebook 03: {d / 'model'}"


def _trained_on(cfg: LandscapeConfig, reused: bool) -> TaskRecipe:
    """The data recipe the solutions trained on: notebook 03's (its solution's key: train and dev caps, split
    seed) when reused, else this notebook's :func:`plan`."""
    if not reused:
        return next(iter(plan(cfg).solutions.values())).data
    a = cfg.seeds[0]
    key = solution_key_of(_resolve(cfg.reuse_runs), cfg.task, "finetune", a)
    return TaskRecipe(
        cfg.task,
        seed=int(key.get("data_seed", 0)),
        max_train=int(key.get("max_train", 0)),
        max_dev=int(key.get("max_dev", key.get("max_eval", 0))),
    )


def _resolve(path: str) -> Path:
    """``reuse_runs`` as given when absolute, else relative to the project root (:func:`tmlib.core.config.project_path`:
    the suite runs notebooks in the root, JupyterLab in ``notebooks/``)."""
    from tmlib.core.config import project_path

    return project_path(Path(path).expanduser())


def load_data(cfg: LandscapeConfig):
    """(the task's DatasetDict with split seed 0 as notebook 03, tokenizer); uncapped: the evaluation subsets
    are chosen by :func:`eval_batches`, the training cap by :func:`plan`."""
    from tmlib.core.models import load_tokenizer
    from tmlib.tasks.data import load_task

    return load_task(cfg.task, seed=0), load_tokenizer(cfg.model)


# ------------------------------------------------------------------------------------------ evaluation sets


def eval_batches(cfg: LandscapeConfig, data, tokenizer, trained_on: TaskRecipe | None = None) -> dict:
    """Tokenised, length-sorted batches built once: ``"dev"`` (``dev_examples`` dev sentences) and ``"test"``
    (``test_examples`` from the test pool: under ``test_pool="heldout"`` every example ``trained_on``'s train and
    dev caps leave out, :attr:`Solutions.data`) for the paths, ``"plane"`` (``plane_examples`` dev sentences);
    subsets are class-balanced (:func:`tmlib.tasks.data.cap_splits`)."""
    from dataclasses import replace

    from datasets import DatasetDict

    from tmlib.tasks.classify import EvalBatches, encode
    from tmlib.tasks.data import cap_splits

    def build(ds):
        return EvalBatches(encode(ds, tokenizer, cfg.max_length), tokenizer, batch_size=cfg.eval_batch_size)

    trained_on = trained_on or TaskRecipe(cfg.task, seed=0)
    test = replace(trained_on, test_pool=cfg.test_pool, max_test=cfg.test_examples).load()["test"]
    sets = cap_splits(
        DatasetDict(dev=data["dev"], test=test, plane=data["dev"]),
        {"dev": cfg.dev_examples, "plane": cfg.plane_examples},
        seed=0,
    )
    return {s: build(sets[s]) for s in ("dev", "test", "plane")}


def test_of(cfg: LandscapeConfig, sols: Solutions) -> dict:
    """What the test set depends on (the key of its data recipe), for the cached paths and curve."""
    from dataclasses import replace

    return replace(sols.data or TaskRecipe(cfg.task), test_pool=cfg.test_pool, max_test=cfg.test_examples).key()


# ------------------------------------------------------------------------------------------ experiments


def path_specs(cfg: LandscapeConfig) -> list[tuple[str, str, str]]:
    """(path name, model at gamma 0, model at gamma 1)."""
    a, b = cfg.seeds
    return [
        ("mask<->finetune", f"mask-s{a}", f"finetune-s{a}"),
        (f"finetune-s{a}<->finetune-s{b}", f"finetune-s{a}", f"finetune-s{b}"),
        ("pretrained<->finetune", "pretrained", f"finetune-s{a}"),
    ]


def _fingerprint(state: dict) -> str:
    """A cheap content hash of a state dict (sums of every tensor), to key cached results."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].double()
        h.update(repr((k, tuple(v.shape), float(v.sum()), float(v.abs().sum()), float((v * v).sum()))).encode())
    return h.hexdigest()[:16]


def _evaluate(cfg):
    """The evaluation function of every point (fp32, or under ``mixed_precision`` autocast; ``kernels``): ``cfg``
    is the config or a recipe."""
    from functools import partial

    from tmlib.tasks.classify import evaluate_classifier

    return partial(evaluate_classifier, mixed_precision=cfg.mixed_precision, kernels=cfg.kernels)


def _compute_key(cfg) -> dict:
    """What of the evaluation's arithmetic enters a cache key; each only when set, so that caches made before
    the option (fp32, the model's own forward) stay valid."""
    key = {} if cfg.mixed_precision == "no" else {"mixed_precision": cfg.mixed_precision}
    if cfg.kernels != "hf":
        key["kernels"] = cfg.kernels
    return key


def _curve_training_key(cfg) -> dict:
    """The curve training's arithmetic in its cache key, each only when it differs from how curves were trained
    before the option (fp32, the model's own forward), so those caches stay valid where they still apply."""
    key = {} if cfg.curve_mixed_precision == "no" else {"curve_mixed_precision": cfg.curve_mixed_precision}
    if cfg.kernels != "hf":
        key["curve_kernels"] = cfg.kernels
    return key


def path_stage(recipe: PathRecipe, sols: Solutions, batches: dict) -> Stage:
    """Stage ``cache/path-<name>``: loss and accuracy along the straight line of ``recipe``."""

    def build(ctx):
        from tmlib.masking.landscape import linear_path

        return linear_path(
            sols.template,
            sols.states[recipe.a],
            sols.states[recipe.b],
            {"dev": batches["dev"], "test": batches["test"]},
            list(recipe.gammas),
            evaluate=_evaluate(recipe),
            progress=recipe.progress,
            desc=recipe.path,
        )

    return Stage(recipe.name, recipe.key(), build, _save_path, _load_path)


def _save_path(df: pd.DataFrame, p: Path) -> None:
    df.to_csv(p / "path.csv", index=False)


def _load_path(p: Path) -> pd.DataFrame:
    return pd.read_csv(p / "path.csv")


CURVE_PATH = "mask~finetune (Bezier curve)"  # the curve's name in paths.csv
PATH_COLUMNS = ["path", "model_a", "model_b", "gamma", "split", "loss", "accuracy"]


def curve_train_batches(cfg: LandscapeConfig, data, tokenizer) -> list[dict]:
    """Collated training batches (``batch_size`` each) the curve trains on: the train split capped at
    ``curve_examples`` (class-balanced, seed 0), tokenised at ``max_length``."""
    from tmlib.tasks.classify import EvalBatches, encode
    from tmlib.tasks.data import cap_splits

    train = cap_splits(data, {"train": cfg.curve_examples}, seed=0)["train"]
    return EvalBatches(encode(train, tokenizer, cfg.max_length), tokenizer, batch_size=cfg.batch_size).batches


def curve_stage(recipe: CurveRecipe, sols: Solutions, batches: dict, train_batches) -> Stage:
    """Stage ``cache/curve``: train the Bezier curve of ``recipe`` (:func:`tmlib.masking.landscape.train_bezier`) on
    ``train_batches`` (a list, or a function that builds it), then evaluate it at ``recipe.ts`` on dev and test;
    keeps the control point, the training log and the curve."""

    def build(ctx):
        import torch

        from tmlib.masking.landscape import bezier_path, train_bezier

        device = "cuda" if torch.cuda.is_available() else None
        curve = train_bezier(
            sols.template,
            sols.states[recipe.a],
            sols.states[recipe.b],
            train_batches() if callable(train_batches) else train_batches,
            steps=recipe.steps,
            lr=recipe.lr,
            seed=recipe.seed,
            device=device,
            mixed_precision=recipe.curve_mixed_precision,
            kernels=recipe.kernels,
            progress=recipe.progress,
            desc="Bezier curve",
        )
        along = bezier_path(
            sols.template,
            sols.states[recipe.a],
            curve.theta,
            sols.states[recipe.b],
            {"dev": batches["dev"], "test": batches["test"]},
            list(recipe.ts),
            device=device,
            evaluate=_evaluate(recipe),
            progress=recipe.progress,
        )
        return curve, along

    return Stage(recipe.name, recipe.key(), build, _save_curve, _load_curve, seed=recipe.seed)


def _save_curve(obj, p: Path) -> None:
    from safetensors.torch import save_file

    curve, along = obj
    save_file({k: v.contiguous() for k, v in curve.theta.items()}, str(p / "theta.safetensors"))
    curve.log.to_csv(p / "train_log.csv", index=False)
    along.to_csv(p / "curve.csv", index=False)


def _load_curve(p: Path):
    from safetensors.torch import load_file

    return load_file(str(p / "theta.safetensors")), pd.read_csv(p / "train_log.csv"), pd.read_csv(p / "curve.csv")


def plane_stage(recipe: PlaneRecipe, sols: Solutions, batches: dict) -> Stage:
    """Stage ``cache/plane``: the plane grid's loss and accuracy on the dev subset, and the three models'
    coordinates on it."""

    def build(ctx):
        from tmlib.masking.landscape import plane

        res = plane(
            sols.template,
            *(sols.states[k] for k in recipe.models),
            {"dev": batches["plane"]},
            resolution=recipe.resolution,
            margin=recipe.margin,
            names=("pretrained", "mask", "finetune"),
            evaluate=_evaluate(recipe),
            progress=recipe.progress,
        )
        return res.to_frame(), res.coords

    return Stage(recipe.name, recipe.key(), build, _save_plane, _load_plane)


def _save_plane(obj, p: Path) -> None:
    obj[0].to_csv(p / "plane.csv", index=False)
    (p / "coords.json").write_text(json.dumps({k: list(v) for k, v in obj[1].items()}))


def _load_plane(p: Path):
    coords = {k: tuple(v) for k, v in json.loads((p / "coords.json").read_text()).items()}
    return pd.read_csv(p / "plane.csv", keep_default_na=False), coords


def all_paths(paths: pd.DataFrame, curve: pd.DataFrame | None = None) -> pd.DataFrame:
    """The straight paths and the Bezier curve in one table (``paths.csv``)."""
    return paths if curve is None or curve.empty else pd.concat([paths, curve], ignore_index=True)


def summarize(
    cfg: LandscapeConfig,
    paths: pd.DataFrame,
    plane_frame: pd.DataFrame | None = None,
    coords: dict | None = None,
    sols: Solutions | None = None,
    batches: dict | None = None,
) -> dict:
    """Per path and split: endpoint accuracies, the worst accuracy on [0, 1], the drop below the lower
    endpoint, and whether it stays within 1 point. Writes nothing (:func:`write_outputs` does)."""
    from tmlib.masking.landscape import path_summary

    rows = []
    for name in dict.fromkeys(paths["path"]):
        d = paths[paths.path == name]
        for split in ("dev", "test"):
            s = path_summary(d, split=split)
            rows.append(
                {
                    "path": name,
                    "split": split,
                    "acc_at_0": s["accuracy_at_0"],
                    "acc_at_1": s["accuracy_at_1"],
                    "min_acc_0_1": s["min_accuracy_on_0_1"],
                    "argmin_gamma": s["argmin_gamma"],
                    "max_drop_pts": 100 * s["max_drop"],
                    "within_1pt": s["within_1pt"],
                    "max_loss_0_1": float(d[(d.split == split) & (d.gamma >= 0) & (d.gamma <= 1)].loss.max()),
                }
            )
    table = pd.DataFrame(rows)
    main = table[(table.path == "mask<->finetune") & (table.split == "test")].iloc[0]
    curve = table[(table.path == CURVE_PATH) & (table.split == "test")]
    summary = {
        "task": cfg.task,
        "model": cfg.model,
        "seeds": cfg.seeds,
        "dev_examples": cfg.dev_examples,
        "test_pool": cfg.test_pool,
        "test_n": None if batches is None else len(batches["test"]),
        "gammas": cfg.gammas,
        "finding": (
            f"accuracy along masked<->fine-tuned (test) stays within 1 point of the lower endpoint: "
            f"{bool(main.within_1pt)} (max drop {main.max_drop_pts:.2f} points at gamma={main.argmin_gamma:g}; "
            f"endpoints {100 * main.acc_at_0:.1f} / {100 * main.acc_at_1:.1f})"
        ),
        "mask_finetune_within_1pt_test": bool(main.within_1pt),
        "curve_finding": (
            None
            if curve.empty
            else "along the trained Bezier curve (test) the accuracy falls at most "
            f"{curve.iloc[0].max_drop_pts:.2f} points below the lower endpoint "
            f"(straight line: {main.max_drop_pts:.2f}); highest loss on the "
            f"curve {curve.iloc[0].max_loss_0_1:.3f} vs {main.max_loss_0_1:.3f} on the line"
        ),
        "paths": rows,
        "accuracy_along_mask_finetune": paths[paths.path == "mask<->finetune"][["gamma", "split", "accuracy"]].to_dict(
            orient="records"
        ),
    }
    if coords is not None:
        summary["plane_coords"] = {k: list(v) for k, v in coords.items()}
    if plane_frame is not None:
        grid = plane_frame[plane_frame.point.fillna("") == ""]
        summary["plane_grid_accuracy_range"] = [float(grid.accuracy.min()), float(grid.accuracy.max())]
    if sols is not None:
        summary["sources"] = sols.sources
    return summary


def summary_frame(summary: dict) -> pd.DataFrame:
    """The per-path rows of :func:`summarize` (``summary.csv``)."""
    return pd.DataFrame(summary["paths"])


# ------------------------------------------------------------------------------------------ the experiment


@dataclass
class LandscapeResults:
    """What :meth:`Experiment.run` returns: the endpoint solutions, every path (lines and curve), the plane and
    the summary."""

    solutions: Solutions
    paths: pd.DataFrame
    plane: pd.DataFrame
    coords: dict
    summary: dict


class Experiment:
    """Notebook 04 on one run folder: its plan, the one :class:`~tmlib.core.runs.RunStore` of ``cfg.out_dir``, the
    task's data and tokenizer loaded once (or given: ``data``, ``tokenizer``)."""

    def __init__(self, cfg: LandscapeConfig, data=None, tokenizer=None):
        self.cfg = cfg
        self.plan = plan(cfg)
        self.store = RunStore(cfg.out_dir, progress=cfg.progress)
        self._data, self._tokenizer = data, tokenizer

    def inputs(self):
        """(the task's DatasetDict with split seed 0 as notebook 03, tokenizer); uncapped: the evaluation subsets
        are chosen by :func:`eval_batches`, the training cap by the solution recipes."""
        if self._data is None or self._tokenizer is None:
            from tmlib.core.models import load_tokenizer
            from tmlib.tasks.data import load_task

            self._data, self._tokenizer = load_task(self.cfg.task, seed=0), load_tokenizer(self.cfg.model)
        return self._data, self._tokenizer

    def solution(self, recipe: SolutionRecipe):
        """(plain HF model, source): notebook 03's saved solution if present, else trained here from ``recipe``
        and cached in this notebook's store in notebook 03's layout."""
        from tmlib.tasks.data import cap_splits

        if self.cfg.reuse_runs:
            found = _reused(self.cfg, recipe.method, recipe.seed)
            if found is not None:
                return found
        data, tokenizer = self.inputs()
        train_data = cap_splits(data, {"train": self.cfg.train_examples}, seed=0)  # = recipe.data.load()
        trained = self.store.get(solution_stage(recipe, Inputs(recipe.data, recipe.backbone, train_data, tokenizer)))
        why = "not found in reuse_runs; " if self.cfg.reuse_runs else ""
        return trained.model.eval(), f"trained here ({why}cached): {self.store.folder(recipe.name) / 'model'}"

    def solutions(self) -> Solutions:
        """Load (or train) mask-s<A>, finetune-s<A>, finetune-s<B> and the pretrained+initial-head model."""
        from tmlib.core.models import load_classifier
        from tmlib.tasks.data import label_names

        cfg, a = self.cfg, self.cfg.seeds[0]
        states, sources, template, reused = {}, {}, None, []
        for (method, seed), recipe in self.plan.solutions.items():
            m, src = self.solution(recipe)
            reused.append(src.startswith("notebook 03"))
            template = template if template is not None else m
            states[f"{method}-s{seed}"], sources[f"{method}-s{seed}"] = m.state_dict(), src
        pre = load_classifier(cfg.model, label_names(self.inputs()[0]), seed=a)
        states["pretrained"] = pre.state_dict()
        sources["pretrained"] = (
            f"load_classifier({cfg.model!r}, seed={a}): pretrained encoder + the fine-tune's initial head"
        )
        missing = set(states["pretrained"]) ^ set(states[f"finetune-s{a}"])
        if missing:
            raise ConfigError(
                f"the saved solutions do not have the architecture of model={cfg.model!r} (keys differ: "
                f"{sorted(missing)[:4]}); set model to the backbone notebook 03 used"
            )
        if len(set(reused)) > 1:
            raise ConfigError(
                f"some solutions come from notebook 03 ({cfg.reuse_runs}) and some were trained here: "
                'their training data may differ; rerun notebook 03 or set reuse_runs: ""'
            )
        return Solutions(template=template, states=states, sources=sources, data=_trained_on(cfg, reused[0]))

    def batches(self, sols: Solutions) -> dict:
        """The evaluation sets of every point (:func:`eval_batches`), the test pool what ``sols`` never saw."""
        data, tokenizer = self.inputs()
        return eval_batches(self.cfg, data, tokenizer, sols.data)

    def paths(self, sols: Solutions, batches: dict) -> pd.DataFrame:
        """DataFrame(path, model_a, model_b, gamma, split, loss, accuracy) of every straight path."""
        test = test_of(self.cfg, sols)
        frames = []
        for r in self.plan.paths:
            bound = replace(r, a_state=_fingerprint(sols.states[r.a]), b_state=_fingerprint(sols.states[r.b]),
                            test=test)  # fmt: skip
            frames.append(self.store.get(path_stage(bound, sols, batches)).assign(path=r.path, model_a=r.a,
                                                                                   model_b=r.b))  # fmt: skip
        return pd.concat(frames, ignore_index=True)[PATH_COLUMNS]

    def curve(self, sols: Solutions, batches: dict) -> pd.DataFrame:
        """The Bezier curve from mask-s<A> to finetune-s<A>, evaluated at ``curve_points`` values of t on dev and
        test: rows as :meth:`paths` with ``path`` = :data:`CURVE_PATH` and gamma = t (empty when ``curve_steps``
        is 0); writes ``curve_train.csv`` (the training log)."""
        r = self.plan.curve
        if r is None:
            return pd.DataFrame(columns=PATH_COLUMNS)
        bound = replace(r, a_state=_fingerprint(sols.states[r.a]), b_state=_fingerprint(sols.states[r.b]),
                        test=test_of(self.cfg, sols))  # fmt: skip
        _, log, along = self.store.get(curve_stage(bound, sols, batches, lambda: curve_train_batches(
            self.cfg, *self.inputs())))  # fmt: skip
        self.write(curve_train=log)
        return along.assign(path=CURVE_PATH, model_a=r.a, model_b=r.b)[PATH_COLUMNS]

    def plane(self, sols: Solutions, batches: dict) -> tuple[pd.DataFrame, dict]:
        """(DataFrame(point, alpha, beta, split, loss, accuracy), coords name -> (alpha, beta)); written to
        ``plane.csv`` and ``plane_coords.json``."""
        r = self.plan.plane
        frame, coords = self.store.get(plane_stage(
            replace(r, states=tuple(_fingerprint(sols.states[k]) for k in r.models)), sols, batches))  # fmt: skip
        self.write(plane=frame, plane_coords={k: {"alpha": v[0], "beta": v[1]} for k, v in coords.items()})
        return frame, coords

    def run(self) -> LandscapeResults:
        """The solutions, the paths and the curve (``paths.csv``), the plane and the summary (``summary.json``,
        ``summary.csv``)."""
        sols = self.solutions()
        batches = self.batches(sols)
        paths = all_paths(self.paths(sols, batches), self.curve(sols, batches))
        self.write(paths=paths)
        frame, coords = self.plane(sols, batches)
        summary = summarize(self.cfg, paths, frame, coords, sols, batches)
        self.write(summary=summary)
        return LandscapeResults(sols, paths, frame, coords, summary)

    def write(self, **outputs) -> list[Path]:
        """Each output in the run folder: a table as ``<name>.csv``; a dict as ``<name>.json`` (the summary also as
        ``summary.csv``, its per-path rows)."""
        written = []
        for name, obj in outputs.items():
            if isinstance(obj, pd.DataFrame):
                written.append(self.store.write_csv(f"{name}.csv", obj))
                continue
            written.append(self.store.write_json(f"{name}.json", obj))
            if name == "summary":
                written.append(self.store.write_csv("summary.csv", summary_frame(obj)))
        return written


Config = LandscapeConfig
