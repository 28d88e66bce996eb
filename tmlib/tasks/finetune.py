"""Fine-tune a sequence classifier on a task and cache it: the one helper every notebook uses.

:func:`classifier_stage` returns a :class:`~tmlib.core.runs.Stage` whose value is a :class:`Classifier`
(the saved model folder and its metrics). One on-disk layout for every notebook::

    <run>/<name>/model/          save_pretrained() of the fine-tuned classifier
    <run>/<name>/metrics.json    dev/test accuracy of the selected epoch, best epoch, steps, seconds
    <run>/<name>/predictions.npy the predicted class of every test example (paired gaps' test-sampling term)
    <run>/<name>/manifest.json   key (init, task, training config, seed, upstream stage keys)

``init`` is a model name (``minilm``, a hub name, a directory) or an upstream :class:`Stage` whose
value has a ``model_dir`` attribute or is a path (a GenePT or TaskPT checkpoint): its key then
enters this stage's key.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tmlib.core.runs import Stage
from tmlib.tasks.data import TaskRecipe


@dataclass
class Classifier:
    model_dir: Path
    metrics: dict = field(default_factory=dict)

    @property
    def predictions(self):
        """The predicted class of every test example, in the order of the task's test data."""
        import numpy as np

        return np.load(self.model_dir.parent / "predictions.npy")

    def load(self):
        from tmlib.core.models import load_saved_classifier

        return load_saved_classifier(self.model_dir)


def _init_path(init: Any, pick: Any = None) -> str:
    """A model path from a name or an upstream stage's value: ``value.checkpoint(pick)`` when ``pick``
    is given (one of several checkpoints), else ``value.model_dir``, else the value itself."""
    if isinstance(init, (str, Path)):
        return str(init)
    if pick is not None:
        return str(init.checkpoint(pick))
    return str(getattr(init, "model_dir", init))


def classifier_stage(
    name: str,
    init: str | Stage,
    task: TaskRecipe,
    train,
    data=None,
    tokenizer=None,
    seed: int | None = None,
    pick: Any = None,
    desc: str = "fine-tune",
    test_mixed_precision: str = "no",
) -> Stage[Classifier]:
    """Stage ``name``: fine-tune ``init`` on ``task`` with ``train`` (a :class:`~tmlib.core.training.TrainConfig`;
    its seed fixes head init and batch order). ``data`` / ``tokenizer`` may be passed to avoid
    reloading; they must be what ``task`` loads (the key is ``task``, not the data). ``test_mixed_precision``:
    the test evaluation's autocast ("bf16": 3x faster on this CPU, accuracies within 0.14 points of fp32 in the
    paired check of docs/performance.md; "no": fp32)."""
    from tmlib.core.training import TrainConfig

    if not isinstance(train, TrainConfig):
        raise TypeError(f"train must be a TrainConfig, got {type(train).__name__}")
    seed = train.seed if seed is None else seed
    # progress cannot change a result; kernels="hf" (the forward before the option) keeps earlier keys valid
    key_train = {k: v for k, v in asdict(train).items() if k != "progress" and not (k == "kernels" and v == "hf")}
    config = {
        "task": task.key(),
        "train": key_train,
        "seed": seed,
        "init": init if isinstance(init, str) else "<upstream>",
        "pick": pick,
    }
    if test_mixed_precision != "no":  # only when set: keys of runs evaluated in fp32 stay valid
        config["test_mixed_precision"] = test_mixed_precision
    deps = {} if isinstance(init, str) else {"init": init}

    def build(ctx, init=init):
        from tmlib.core.models import load_classifier, load_tokenizer
        from tmlib.core.training import fit
        from tmlib.tasks.classify import Classification
        from tmlib.tasks.data import label_names

        d = data if data is not None else task.load()
        path = _init_path(init, pick)
        tok = tokenizer if tokenizer is not None else load_tokenizer("minilm" if path.startswith("scratch:") else path)
        start = time.perf_counter()
        model = load_classifier(path, label_names(d), seed=seed)
        objective = Classification(tok, test_predictions=True, test_mixed_precision=test_mixed_precision)
        res = fit(model, d, train, objective, desc=desc)
        metrics = {
            "dev_accuracy": res.dev["accuracy"],
            "test_accuracy": res.test["accuracy"],
            "dev_loss": res.dev.get("loss"),
            "best_epoch": res.fit.best.get("epoch"),
            "steps": res.fit.steps,
            "seconds": time.perf_counter() - start,
            "train_examples": len(d["train"]),
            "test_n": len(d["test"]),
            "history": res.fit.history,
        }
        return model, metrics, res.test["predictions"]

    def save(obj, d: Path) -> None:
        import numpy as np

        obj[0].save_pretrained(d / "model")
        (d / "metrics.json").write_text(json.dumps(obj[1], indent=2, default=float))
        np.save(d / "predictions.npy", np.asarray(obj[2], dtype=np.int16))

    def load(d: Path) -> Classifier:
        return Classifier(d / "model", json.loads((d / "metrics.json").read_text()))

    return Stage(name, config, build, save, load, deps=deps, seed=seed)
