"""One training loop for everything: classifiers, MLM, token taggers, mask scores.

:func:`fit` is a plain function built on ``accelerate``: the same call runs on this CPU, in a
notebook, or under ``accelerate launch`` on many GPUs. What it trains a model *for* is its ``objective``
(:class:`Objective`): how the data becomes examples and batches, which network computes the loss, how dev is
scored and what the caller gets back. The objectives are configurations of the one loop, each beside its data:

    Batches                                  examples + a collator (the model's forward returns the loss)
    tmlib.tasks.classify.Classification      a sequence classifier; test metrics of the selected state
    tmlib.tasks.token_classify.TokenClassification   a token classifier (token accuracy or entity F1)
    tmlib.selective.mlm.MaskedLM             MLM on a packed corpus (GenePT, TaskPT), states at chosen steps
    tmlib.selective.tagger.ImportanceTagging the tagger on buffer labels, its threshold tuned on dev

The adaptation method (fine-tuning, BitFit, masks, LoRA) is the other half of the configuration: the model it
prepares, the ``params`` it trains, the optimizer and the ``on_step`` hooks (:mod:`tmlib.masking.methods`).
``fit`` trains those parameters (default: every one with ``requires_grad``), keeps the best state by a dev metric,
and, given ``checkpoint_dir``, checkpoints atomically and resumes after an interruption exactly where it stopped.
:mod:`tmlib.core.precision` holds mixed precision and the forward's kernels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tmlib.core.config import config_hash
from tmlib.core.heartbeat import Heartbeat
from tmlib.core.precision import check_kernels, get_accelerator, kernels_context, resolve_fields
from tmlib.core.runs import atomic_save


@dataclass
class TrainConfig:
    lr: float = 2e-5  # peak learning rate (after warmup; see schedule)
    batch_size: int = 32
    epochs: float = 3.0  # used when max_steps == 0
    max_steps: int = 0  # > 0 overrides epochs
    max_length: int = 128  # tokens; longer texts are truncated
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # after warmup: "linear" decay to 0 | "constant" lr (maskbert's official recipe)
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # 0 disables
    eval_every: int = 0  # steps between dev evaluations; 0 = once per epoch
    select_metric: str = "accuracy"  # dev metric for picking the best state ("" = keep the last state)
    seed: int = 0
    checkpoint_every: int = 0  # steps between resumable checkpoints (needs checkpoint_dir); 0 = at evals
    group_by_length: bool = False  # classifier/tagger training: batches of similar length (LengthGroupedBatches)
    progress: bool = True
    # "fp32" (= "no") | "auto" | "bf16" (autocast; works on CPU) | "fp16" (CUDA only), tmlib.core.precision
    mixed_precision: str = "no"
    kernels: str = "fast"  # "fast": eager attention on CPU and, for single-label BERT classifiers, the last
    # ^ layer for [CLS] only (tmlib.tasks.cls_forward): the same math, faster here; "hf": the model's own forward
    # (SDPA).
    # See KERNELS.

    def __post_init__(self):
        if self.lr <= 0 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError("lr must be > 0, batch_size >= 1, max_length >= 2")
        resolve_fields(self, "mixed_precision")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {self.schedule!r}")
        check_kernels(self.kernels)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per evaluation: step, epoch, train_loss, dev metrics
    best: dict = field(default_factory=dict)  # the row of the selected state
    steps: int = 0
    seconds: float = 0.0


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


SCHEDULES = ("linear", "constant")


def lr_multiplier(schedule: str, step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier of ``schedule``: linear warmup over ``warmup`` steps, then linear decay
    to 0 (``"linear"``) or a constant 1 (``"constant"``)."""
    if schedule == "constant":
        return (step + 1) / warmup if step < warmup else 1.0
    return linear_schedule(step, warmup, total)


def linear_schedule(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warmup to 1 over ``warmup`` steps, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Shuffled batches of similar length: a seeded permutation is cut into groups of ``group`` batches,
    each group is sorted by length and cut into batches, and the batch order is shuffled.

    Padding only to the longest example of a batch of look-alikes: on MR sentences (batch 32, 48 tokens
    max) a batch carries ~30 instead of ~48 positions, and a step costs ~0.6x. Every example is seen once
    per epoch; batches still differ from epoch to epoch (a new permutation each time). Off by default
    (``TrainConfig.group_by_length``, as in HF's Trainer): batches of look-alikes are less random, and
    the learned masks of notebook 03 (a straight-through estimator) came out worse with it."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, group: int = 8):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.group = batch_size, seed, group

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        perm = torch.randperm(len(self.lengths), generator=gen).numpy()
        span = self.batch_size * self.group
        batches = []
        for start in range(0, len(perm), span):
            chunk = perm[start : start + span]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[i]


def _loader(data, batch_size: int, collate_fn, shuffle: bool, seed: int, lengths=None) -> DataLoader:
    """A loader that draws nothing from the global random state: a DataLoader without a generator draws its
    workers' base seed from the global state each time it starts an epoch, and a run resumed mid-epoch would
    then draw its dropout masks from a shifted state (weights not bit-identical to an uninterrupted run)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    if lengths is not None:
        return DataLoader(
            data, batch_sampler=LengthGroupedBatches(lengths, batch_size, seed), collate_fn=collate_fn, generator=gen
        )
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, generator=gen)


def make_optimizer(optimizer_cls, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """``optimizer_cls(groups, lr=lr)``, with the fused kernel for Adam/AdamW where torch has one for the
    parameters' device (CPU and CUDA): one kernel over all parameters instead of a loop over them
    (benchmarks/bench_training.py measures the step)."""
    if optimizer_cls in (torch.optim.Adam, torch.optim.AdamW):
        try:
            return optimizer_cls(groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            pass
    return optimizer_cls(groups, lr=lr)


def _examples(rows: list) -> list:
    """Identity collate: the training loop collates (see :func:`fit`)."""
    return rows


def _state_for_best(model) -> dict:
    """A copy of what training can change: the parameters that train and every buffer. Frozen parameters (a mask's,
    LoRA's or BitFit's backbone) stay out, so the copy and a checkpoint hold only the trained share."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def _restore_best(model, state: dict) -> None:
    """Load :func:`_state_for_best`'s copy; what it left out must be exactly the frozen parameters."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if unexpected or set(missing) - frozen:
        raise RuntimeError(
            f"best state does not fit the model: missing {sorted(set(missing) - frozen)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def _param_groups(params: list, weight_decay: float) -> list[dict]:
    """Weight decay on matrices, none on biases and LayerNorm vectors (the usual BERT recipe)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [
        g
        for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
        if g["params"]
    ]


@dataclasses.dataclass
class _Progress:
    """What a run has done so far: the step, the running train loss, the evaluation history and the best state
    (by ``select_metric``); saved in and restored from a resumable checkpoint."""

    select_metric: str | None
    step: int = 0
    running: float = 0.0
    n_running: int = 0
    best_value: float = -math.inf
    best_state: dict | None = None
    result: FitResult = dataclasses.field(default_factory=FitResult)

    def record(self, loss: float) -> None:
        self.step += 1
        self.running += loss
        self.n_running += 1

    def evaluate(self, model, evaluate, epoch: float) -> None:
        """Evaluate ``model`` (unwrapped), append the row to the history, keep the best state."""
        row = {"step": self.step, "epoch": round(epoch, 3), "train_loss": self.running / max(1, self.n_running)}
        self.running, self.n_running = 0.0, 0
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                row.update(evaluate(model))
            model.train()
        self.result.history.append(row)
        value = row.get(self.select_metric) if self.select_metric else None
        if value is not None and value > self.best_value:
            self.best_value, self.best_state, self.result.best = value, _state_for_best(model), row
        elif not self.select_metric or value is None:
            self.result.best = row

    def state(self) -> dict:
        return {
            "step": self.step,
            "history": self.result.history,
            "running": self.running,
            "n_running": self.n_running,
            "best_value": self.best_value,
            "best_state": self.best_state,
            "best": self.result.best,
        }

    def restore(self, state: dict) -> None:
        self.step, self.result.history = state["step"], state["history"]
        self.running, self.n_running = state.get("running", 0.0), state.get("n_running", 0)
        self.best_value, self.best_state = state["best_value"], state["best_state"]
        self.result.best = state["best"]


class _Checkpoint:
    """A resumable checkpoint file (``checkpoint.pt`` in ``checkpoint_dir``): model, optimizer, scheduler, progress,
    CPU random state and the collator's state, written atomically; read back only when it was written by the same
    config and parameter count."""

    def __init__(self, checkpoint_dir, cfg: TrainConfig, n_params: int, acc):
        self.path = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
        self.key, self.n_params, self.acc = config_hash(cfg), n_params, acc

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a truncated or corrupted checkpoint: start over rather than crash
            warnings.warn(
                f"resumable checkpoint {self.path} is unreadable ({type(exc).__name__}); training from the start",
                stacklevel=2,
            )
            return None
        if state.get("config_hash") != self.key or state.get("n_params") != self.n_params:
            warnings.warn(
                f"resumable checkpoint {self.path} was written by another training config; training from "
                "the start (delete the folder to silence this)",
                stacklevel=2,
            )
            return None
        return state

    def save(self, model, optimizer, sched, progress: _Progress, collate_fn) -> None:
        if self.path is None or not self.acc.is_main_process:
            return
        payload = {
            "config_hash": self.key,
            "n_params": self.n_params,
            **progress.state(),
            "model": self.acc.unwrap_model(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": CUDA_RNG.get() if CUDA_RNG.available() else None,
            "collator": collate_fn.state_dict() if hasattr(collate_fn, "state_dict") else None,
        }
        atomic_save(self.path, lambda tmp: torch.save(payload, tmp))

    def remove(self) -> None:
        if self.path is not None and self.acc.is_main_process:
            self.path.unlink(missing_ok=True)  # finished: the caller saves the final artifact


class _CudaRng:
    """The CUDA generators' states, as a resumable checkpoint saves and a resumed run restores them: one narrow
    seam over ``torch.cuda``, so a test can stand in for it on a machine without a GPU."""

    @staticmethod
    def available() -> bool:
        return torch.cuda.is_available()

    @staticmethod
    def get() -> list:
        return torch.cuda.get_rng_state_all()

    @staticmethod
    def set(states: list) -> None:
        torch.cuda.set_rng_state_all(states)


CUDA_RNG = _CudaRng()


def _fault_injection(step: int) -> None:
    """``TMLIB_FAULT_KILL_AT_STEP=<n>``: the process SIGKILLs itself after step ``n`` (and its checkpoint): how the
    resume tests interrupt a fresh process at a known point. Unset (always, outside those tests): nothing."""
    at = os.environ.get("TMLIB_FAULT_KILL_AT_STEP")
    if at and step == int(at):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Setup:
    """What an objective hands :func:`fit`: the network it steps (the model, or a wrapper that computes the
    objective's loss), the training examples, the collator, the dev evaluation, each example's length (for
    ``group_by_length``), hooks of its own, the dev metric it selects by (``None``: the config's) and whatever
    its :meth:`Objective.result` needs afterwards (``context``)."""

    network: torch.nn.Module
    train: Any
    collate_fn: Callable
    evaluate: Callable[[torch.nn.Module], dict] | None = None
    lengths: Sequence[int] | None = None
    hooks: Sequence[Callable[[int, torch.nn.Module, dict], None]] = ()
    select_metric: str | None = None
    context: dict = field(default_factory=dict)


class Objective(Protocol):
    """What a model is trained for: :meth:`setup` turns the model, the data and the config into a :class:`Setup`;
    :meth:`result` turns the trained model and :func:`fit`'s history into what the caller gets."""

    def setup(self, model: torch.nn.Module, data, cfg: TrainConfig) -> Setup: ...

    def result(self, model: torch.nn.Module, setup: Setup, run: FitResult) -> Any: ...


@dataclass
class Batches:
    """The plain objective: ``data`` is a map-style dataset of examples that ``collate_fn`` batches, the model's
    forward returns an object with ``.loss``, ``evaluate`` maps the model to dev metrics; the result is the
    :class:`FitResult`."""

    collate_fn: Callable
    evaluate: Callable[[torch.nn.Module], dict] | None = None
    lengths: Sequence[int] | None = None

    def setup(self, model, data, cfg: TrainConfig) -> Setup:
        return Setup(model, data, self.collate_fn, self.evaluate, self.lengths)

    def result(self, model, setup: Setup, run: FitResult) -> FitResult:
        return run


def fit(
    model: torch.nn.Module,
    data,
    cfg: TrainConfig,
    objective: Objective,
    *,
    params: Iterable[torch.nn.Parameter] | None = None,
    optimizer_cls=torch.optim.AdamW,
    checkpoint_dir: str | Path | None = None,
    on_step: Sequence[Callable[[int, torch.nn.Module, dict], None]] = (),
    desc: str = "train",
    log_with=None,
) -> Any:
    """Train ``model`` on ``data`` for ``objective`` (:class:`Objective`: what the data is, how dev is scored,
    what comes back) and return ``objective.result(...)``.

    ``params``: what is trained (default: every parameter of the objective's network with ``requires_grad``);
    ``optimizer_cls`` steps them. ``on_step(step, model, logs)`` hooks run after every optimizer step with the
    caller's ``model`` (not a wrapper). The state with the best ``cfg.select_metric`` (or the objective's) is
    loaded back at the end. ``cfg.kernels`` picks the attention implementation for the run
    (:func:`kernels_context`). ``log_with``: accelerate trackers (``"tensorboard"``, ``"wandb"``, ... or
    :class:`accelerate.tracking.GeneralTracker` objects) that get every step's loss and lr and every dev
    evaluation, under the run name ``desc``; not part of the config, so it never changes a result or a cache key.
    ``checkpoint_dir``: a resumable checkpoint is written there and a run cut off resumes from it.
    """
    setup = objective.setup(model, data, cfg)
    if setup.select_metric is not None and setup.select_metric != cfg.select_metric:
        cfg = dataclasses.replace(cfg, select_metric=setup.select_metric)
    hooks = [*setup.hooks, *on_step]
    if setup.network is not model:  # the hooks see the caller's model, never the objective's wrapper
        hooks = [lambda step, _net, logs, h=h: h(step, model, logs) for h in hooks]
    res = _loop(
        setup.network,
        setup.train,
        cfg,
        collate_fn=setup.collate_fn,
        evaluate=setup.evaluate,
        params=params,
        optimizer_cls=optimizer_cls,
        checkpoint_dir=checkpoint_dir,
        on_step=hooks,
        desc=desc,
        lengths=setup.lengths,
        log_with=log_with,
    )
    return objective.result(model, setup, res)


def _loop(
    model: torch.nn.Module,
    train_data,
    cfg: TrainConfig,
    *,
    collate_fn: Callable,
    evaluate: Callable[[torch.nn.Module], dict] | None,
    params: Iterable[torch.nn.Parameter] | None,
    optimizer_cls,
    checkpoint_dir: str | Path | None,
    on_step: Sequence[Callable[[int, torch.nn.Module, dict], None]],
    desc: str,
    lengths: Sequence[int] | None,
    log_with,
) -> FitResult:
    """The loop of :func:`fit` on the objective's network: batches, steps, dev evaluations, checkpoints."""
    import time

    set_seed(cfg.seed)
    acc = get_accelerator(cfg.mixed_precision, log_with=log_with)
    if log_with is not None:
        acc.init_trackers(desc)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: every parameter passed has requires_grad=False")
    optimizer = make_optimizer(optimizer_cls, _param_groups(params, cfg.weight_decay), cfg.lr)
    if len(train_data) == 0:
        raise ValueError("training data is empty")
    lengths = lengths if cfg.group_by_length else None
    # batches per epoch *per process*: under data parallelism each process sees 1/N of every epoch
    per_epoch = len(acc.prepare(_loader(train_data, cfg.batch_size, collate_fn, True, cfg.seed, lengths)))
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, int(round(cfg.epochs * per_epoch)))
    warmup = int(cfg.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(cfg.schedule, s, warmup, total))
    model, optimizer, sched = acc.prepare(model, optimizer, sched)

    run = _Run(model, optimizer, sched, acc, params, cfg, collate_fn, evaluate, on_step, log_with, total, per_epoch)
    ckpt = _Checkpoint(checkpoint_dir, cfg, len(params), acc)
    run.resume(ckpt.load())
    start = time.perf_counter()
    bar = tqdm(
        total=total,
        initial=run.progress.step,
        desc=desc,
        disable=not cfg.progress or not acc.is_main_process,
        dynamic_ncols=True,
        leave=False,
    )
    beat = Heartbeat(desc or "training", total, initial=run.progress.step)  # the stage's log, every 30 s
    model.train()
    with kernels_context(model, cfg.kernels, acc.device):  # the attention cfg.kernels asks for, restored after
        while run.progress.step < total:
            epoch = run.progress.step // per_epoch
            # the loader yields lists of examples; they are collated right before the step (:meth:`_Run.step`):
            # accelerate prefetches one batch ahead, and a collator drawing masks there would advance the random
            # state saved in a checkpoint past the step it belongs to (a resumed run would draw other masks)
            loader = acc.prepare(_loader(train_data, cfg.batch_size, _examples, True, cfg.seed * 1000 + epoch, lengths))
            run.epoch(loader, epoch, ckpt, bar, beat)
    bar.close()
    if log_with is not None:
        acc.end_training()
    # drop accelerate's autocast wrapper from the model's forward: after fit it runs in full precision
    acc.unwrap_model(model, keep_fp32_wrapper=False)
    if run.progress.best_state is not None:
        _restore_best(acc.unwrap_model(model), run.progress.best_state)
    result = run.progress.result
    result.steps = run.progress.step
    result.seconds = time.perf_counter() - start
    ckpt.remove()
    return result


@dataclass
class _Run:
    """The state of one :func:`fit` call between its steps: the prepared model, optimizer and schedule, and what
    each step reports to (hooks, trackers, the dev evaluation, the checkpoint)."""

    model: Any
    optimizer: Any
    sched: Any
    acc: Any
    params: list
    cfg: TrainConfig
    collate_fn: Callable
    evaluate: Callable | None
    on_step: Sequence[Callable]
    log_with: Any
    total: int
    per_epoch: int
    progress: _Progress = None

    def __post_init__(self):
        self.progress = _Progress(self.cfg.select_metric)
        self.eval_every = self.cfg.eval_every if self.cfg.eval_every > 0 else self.per_epoch
        self.ckpt_every = self.cfg.checkpoint_every if self.cfg.checkpoint_every > 0 else self.eval_every

    def resume(self, state: dict | None) -> None:
        """Continue from a resumable checkpoint: weights, optimizer, schedule, progress and random states."""
        if state is None:
            return
        self.acc.unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.progress.restore(state)
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and CUDA_RNG.available():  # dropout on the GPU draws from it
            CUDA_RNG.set(state["cuda_rng"])
        if state.get("collator") is not None:
            self.collate_fn.load_state_dict(state["collator"])

    def epoch(self, loader, epoch: int, ckpt: _Checkpoint, bar, beat) -> None:
        """The steps of one epoch still to do (a resumed run skips what was done: same seeded order)."""
        skip = self.progress.step - epoch * self.per_epoch
        before = self.progress.step
        for i, examples in enumerate(loader):
            if i < skip:
                continue
            logs = self.step(examples)
            step = self.progress.step
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            beat(step)
            if step % self.eval_every == 0 or step == self.total:
                self.dev_evaluation(step)
            if step % self.ckpt_every == 0 and step < self.total:
                ckpt.save(self.model, self.optimizer, self.sched, self.progress, self.collate_fn)
            _fault_injection(step)
            if step >= self.total:
                break
        if self.progress.step == before:
            raise RuntimeError(
                f"an epoch produced no training step (resume at step {self.progress.step}, {self.per_epoch} "
                "batches/epoch)"
            )

    def step(self, examples) -> dict:
        """One optimizer step on a batch of examples; the hooks and trackers get its loss and lr."""
        acc, cfg = self.acc, self.cfg
        batch = send_to_device(self.collate_fn(examples), acc.device)
        out = self.model(**batch)
        acc.backward(out.loss)
        if cfg.grad_clip > 0:
            acc.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.sched.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.record(out.loss.item())
        logs = {"loss": out.loss.item(), "lr": self.sched.get_last_lr()[0]}
        for hook in self.on_step:
            hook(self.progress.step, acc.unwrap_model(self.model), logs)
        if self.log_with is not None:
            acc.log(logs, step=self.progress.step)
        return logs

    def dev_evaluation(self, step: int) -> None:
        """Evaluate on dev (keeping the best state) and send the metrics to the trackers."""
        self.progress.evaluate(self.acc.unwrap_model(self.model), self.evaluate, step / self.per_epoch)
        if self.log_with is not None:
            row = self.progress.result.history[-1]
            metrics = {
                f"dev_{k}": v for k, v in row.items() if isinstance(v, int | float) and k not in ("step", "epoch")
            }
            self.acc.log(metrics, step=step)
