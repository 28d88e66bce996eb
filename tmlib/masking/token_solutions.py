"""A trained token classifier as a value: its recipe, its training stage and its test-evaluation stage.

The token-level counterpart of :mod:`tmlib.masking.solutions`: a :class:`TokenSolutionRecipe` says everything one
adapted token classifier depends on (token task data, backbone, method and options, lr and schedule, budget,
arithmetic, seed), :func:`token_solution_stage` trains it (:class:`tmlib.tasks.token_classify.TokenClassification`)
and :func:`token_evaluation_stage` tests it on the task's held-out pool in a stage of its own (changing the test
data re-evaluates and never retrains). Folder layout under a run directory:

    <run_dir>/token_solutions/<task>/<method>-s<seed>/
        model/             plain HF save_pretrained folder (+ tokenizer), loadable with
                           AutoModelForTokenClassification; mask: the effective weights, lora: merged
        metrics.json       task, method, seed, lr, metric, dev metrics, steps, seconds, storage bytes
        mask.safetensors   (mask) the bit-packed mask;  adapter/ (lora) peft's adapter files
    <run_dir>/token_evaluations/<task>/<method>-s<seed>/
        metrics.json       test loss, accuracy, f1 (entity tags), n_tokens, n_sentences
        predictions.npy    predicted tag index of every scored word, sentences concatenated
        lengths.npy        scored words per sentence
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tmlib.core.runs import Stage
from tmlib.masking.solutions import MethodRecipe
from tmlib.tasks.token_data import TokenTaskRecipe

TOKEN_SOLUTIONS = "token_solutions"
TOKEN_EVALUATIONS = "token_evaluations"


def _dirname(task: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", task)


@dataclass(frozen=True)
class TokenSolutionRecipe(MethodRecipe):
    """One adapted token classifier. ``lr`` None: the method's default; ``schedule`` None: the method's default
    named schedule; ``options``: the method's options object (a MaskConfig for ``mask``)."""

    data: TokenTaskRecipe
    backbone: str
    method: str
    seed: int
    max_length: int
    epochs: float
    batch_size: int
    lr: float | None = None
    schedule: str | None = None
    options: object = None
    mixed_precision: str = "no"  # training (and test evaluation) arithmetic: "no" | "bf16" | "fp16"
    kernels: str = "hf"
    progress: bool = field(default=True, compare=False)  # not in the key

    def __post_init__(self):
        from tmlib.core.precision import resolve_fields

        resolve_fields(self, "mixed_precision")

    @property
    def name(self) -> str:
        return f"{TOKEN_SOLUTIONS}/{_dirname(self.task)}/{self.method}-s{self.seed}"

    def key(self) -> dict:
        """What the trained model depends on: the training data (not the test pool: that is the evaluation's),
        the model, the method and its options, the budget, lr, schedule, arithmetic and seed."""
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
        if self.spec.options:
            key[self.spec.options] = self.method_options.to_dict()
        return key


class TokenInputs:
    """A token task's data and the tokenizer, loaded on first use and shared by every stage given the same object;
    the test split encoded once."""

    def __init__(self, data_recipe: TokenTaskRecipe, backbone: str, data=None, tokenizer=None):
        self.recipe, self.backbone = data_recipe, backbone
        self._data, self._tokenizer = data, tokenizer
        self._batches: dict = {}

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

    @property
    def label_names(self) -> list[str]:
        from tmlib.tasks.data import label_names

        return label_names(self.data)

    def test_batches(self, max_length: int):
        from tmlib.tasks.token_classify import encode_tokens, token_batches

        if max_length not in self._batches:
            enc = encode_tokens(self.data["test"], self.tokenizer, max_length)
            self._batches[max_length] = token_batches(enc, self.tokenizer)
        return self._batches[max_length]


@dataclass
class TrainedTagger:
    """A token solution as loaded: the plain HF token classifier (effective weights) and its metrics."""

    model: object
    metrics: dict
    save: object = None  # writes the method's per-task files (Exported.save), when just trained


def train_token_solution(recipe: TokenSolutionRecipe, inputs: TokenInputs) -> TrainedTagger:
    """Adapt the backbone's token classifier to the task as ``recipe`` says."""
    from datasets import DatasetDict

    from tmlib.core.models import load_token_classifier
    from tmlib.core.training import TrainConfig, fit
    from tmlib.masking.methods import prepare_method
    from tmlib.masking.multitask import fp32_model_bytes
    from tmlib.tasks.token_classify import TokenClassification

    r = recipe
    data = DatasetDict(train=inputs.data["train"], dev=inputs.data["dev"])
    model = load_token_classifier(r.backbone, label_names=inputs.label_names, seed=r.seed)
    fp32_bytes = fp32_model_bytes(model)
    prep = prepare_method(
        r.method, model, seed=r.seed, mask_config=r.method_options, lr=r.learning_rate, schedule=r.schedule
    )
    base = TrainConfig(
        batch_size=r.batch_size,
        epochs=r.epochs,
        max_length=r.max_length,
        seed=r.seed,
        progress=r.progress,
        mixed_precision=r.mixed_precision,
        kernels=r.kernels,
    )
    res = fit(
        prep.model,
        data,
        prep.train_config(base),
        TokenClassification(inputs.tokenizer),
        params=prep.params,
        optimizer_cls=prep.optimizer_cls,
        desc=f"{r.task} {r.method} s{r.seed}",
    )
    out = prep.export(backbone=r.backbone, fp32_bytes=fp32_bytes)
    metrics = {
        "task": r.task,
        "method": r.method,
        "seed": r.seed,
        "lr": r.learning_rate,
        "metric": res.metric,
        **{f"dev_{k}": v for k, v in res.dev.items()},
        "best_epoch": res.fit.best.get("epoch"),
        "steps": res.fit.steps,
        "train_seconds": round(res.fit.seconds, 2),
        "n_trainable": prep.n_trainable,
        "task_bytes": out.task_bytes,
        "fp32_copy_bytes": fp32_bytes,
        "history": res.fit.history,
    }
    return TrainedTagger(out.model.eval(), metrics, out.save)


def token_solution_stage(recipe: TokenSolutionRecipe, inputs: TokenInputs | None = None) -> Stage:
    """The stage of one token solution (its folder: this module's docstring)."""
    inputs = inputs or TokenInputs(recipe.data, recipe.backbone)

    def save(obj: TrainedTagger, d: Path) -> None:
        from tmlib.core.runs import atomic_write_json

        obj.model.save_pretrained(d / "model")
        inputs.tokenizer.save_pretrained(d / "model")
        files = obj.save(d) if obj.save is not None else []
        if files:
            obj.metrics["file_bytes"] = sum(f.stat().st_size for f in files)
        atomic_write_json(d / "metrics.json", obj.metrics)

    def load(d: Path) -> TrainedTagger:
        from transformers import AutoModelForTokenClassification

        return TrainedTagger(
            AutoModelForTokenClassification.from_pretrained(d / "model").eval(),
            json.loads((d / "metrics.json").read_text()),
        )

    return Stage(
        recipe.name,
        recipe.key(),
        build=lambda ctx: train_token_solution(recipe, inputs),
        save=save,
        load=load,
        seed=recipe.seed,
    )


@dataclass
class TokenEvaluation:
    """A token solution's test evaluation: its metrics (loss, accuracy, f1 for entity tags, n_tokens,
    n_sentences) and each sentence's predicted tag indices (scored words), in the order of the test data."""

    metrics: dict
    predictions: list

    def value(self, metric: str) -> float:
        return float(self.metrics[metric])


def token_evaluation_stage(recipe: TokenSolutionRecipe, solution: Stage, inputs: TokenInputs | None = None) -> Stage:
    """The test evaluation of ``solution`` (the stage of ``recipe``) on the task's test data (the held-out pool
    by default), under the recipe's forward (``kernels``) and arithmetic (``mixed_precision``)."""
    inputs = inputs or TokenInputs(recipe.data, recipe.backbone)
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

    name = f"{TOKEN_EVALUATIONS}/" + recipe.name.split("/", 1)[1]
    return Stage(name, key, build=build, save=save, load=load, seed=recipe.seed, deps={"solution": solution})
