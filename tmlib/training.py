"""One training loop for everything: classifiers, MLM, token taggers, mask scores.

:func:`fit` is a plain function built on ``accelerate``: the same call runs on this CPU, in a
notebook, or under ``accelerate launch`` on many GPUs. It trains whatever parameters are passed
(default: those with ``requires_grad``), evaluates with a pluggable ``evaluate`` function, keeps the
best state by a dev metric, logs through ``on_step`` hooks, and, given ``checkpoint_dir``,
checkpoints atomically and resumes after an interruption exactly where it stopped.

:func:`train_classifier` and :func:`evaluate_classifier` wrap it for sequence classification.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import config_hash
from .runs import atomic_save


@dataclass
class TrainConfig:
    lr: float = 2e-5               # peak learning rate (after warmup; see schedule)
    batch_size: int = 32
    epochs: float = 3.0            # used when max_steps == 0
    max_steps: int = 0             # > 0 overrides epochs
    max_length: int = 128          # tokens; longer texts are truncated
    warmup_ratio: float = 0.1
    schedule: str = "linear"       # after warmup: "linear" decay to 0 | "constant" lr (maskbert's official recipe)
    weight_decay: float = 0.01
    grad_clip: float = 1.0         # 0 disables
    eval_every: int = 0            # steps between dev evaluations; 0 = once per epoch
    select_metric: str = "accuracy"  # dev metric for picking the best state ("" = keep the last state)
    seed: int = 0
    checkpoint_every: int = 0      # steps between resumable checkpoints (needs checkpoint_dir); 0 = at evals
    group_by_length: bool = False  # classifier/tagger training: batches of similar length (LengthGroupedBatches)
    progress: bool = True
    mixed_precision: str = "no"    # "no" | "bf16" (autocast; works on CPU) | "fp16" (CUDA only): Accelerator(mixed_precision=)
    kernels: str = "fast"          # "fast": eager attention on CPU and, for single-label BERT classifiers, the last layer
    # ^ for [CLS] only (tmlib.cls_forward): the same math, faster here; "hf": the model's own forward (SDPA). See KERNELS.

    def __post_init__(self):
        if self.lr <= 0 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError("lr must be > 0, batch_size >= 1, max_length >= 2")
        check_mixed_precision(self.mixed_precision)
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {self.schedule!r}")
        check_kernels(self.kernels)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)   # one row per evaluation: step, epoch, train_loss, dev metrics
    best: dict = field(default_factory=dict)            # the row of the selected state
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


KERNELS = ("fast", "hf")
"""How a training run computes the model's forward (``TrainConfig.kernels``). The math is the same and, on CPU, so
are the random numbers (dropout draws the same masks in the same order), so the two differ by float rounding only
(on CUDA the fused dropout / SDPA kernels draw otherwise: runs differ as with another dropout seed):

* ``"fast"``: on CPU the Hugging Face model runs its eager attention (``matmul``, softmax, dropout,
  ``matmul``, as BERT was written and as the official code ran it) instead of PyTorch's SDPA kernels, which
  are slower on this CPU's short rows; and a single-label BERT classifier computes its last layer for the
  ``[CLS]`` row only (:class:`tmlib.cls_forward.ClsOnlyClassifier`), the only row its head reads. On CUDA
  attention stays SDPA (flash / memory-efficient kernels).
* ``"hf"``: the model's own forward, SDPA attention (tmlib's only behaviour before this option, 2026-11-24).

Measured effect (speed and a paired check of accuracy): README, "Performance".
"""


def check_kernels(kernels: str) -> str:
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))}, got {kernels!r}")
    return kernels


@contextlib.contextmanager
def kernels_context(model: torch.nn.Module, kernels: str, device: torch.device | str):
    """While inside: the attention implementation ``kernels`` asks for on ``device`` (``"fast"`` on CPU:
    eager) for the first Hugging Face model in ``model`` (itself, or inside a wrapper: peft, the MLM
    head wrapper); the previous implementation is restored on leaving."""
    from transformers import PreTrainedModel

    check_kernels(kernels)
    hf = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    prev = getattr(getattr(hf, "config", None), "_attn_implementation", None)
    want = "eager" if kernels == "fast" and torch.device(device).type == "cpu" else None
    if hf is None or want is None or prev == want:
        yield model
        return
    hf.set_attn_implementation(want)
    try:
        yield model
    finally:
        hf.set_attn_implementation(prev)


MIXED_PRECISIONS = ("no", "bf16", "fp16")


def check_mixed_precision(mixed_precision: str, device: torch.device | str | None = None) -> str:
    """Validate a ``mixed_precision`` setting; with ``device``, also that the device supports it
    (fp16 autocast + gradient scaling needs CUDA; bf16 autocast runs on CPU and CUDA)."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(map(repr, MIXED_PRECISIONS))}, "
                         f"got {mixed_precision!r}")
    if device is not None and mixed_precision == "fp16" and torch.device(device).type != "cuda":
        raise ValueError(f"mixed_precision='fp16' needs a CUDA device (this one is {torch.device(device).type!r}); "
                         f"use 'bf16' (autocast works on CPU) or 'no'")
    return mixed_precision


def autocast(mixed_precision: str, device: torch.device | str):
    """The precision context of forward passes outside :func:`fit` (evaluation, probes, the buffer walk):
    nothing for ``"no"``, else ``torch.autocast`` to bf16 / fp16 on ``device``'s type (validated by
    :func:`check_mixed_precision`)."""
    import contextlib

    device = torch.device(device)
    mp = check_mixed_precision(mixed_precision, device)
    if mp == "no":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if mp == "bf16" else torch.float16)


def get_accelerator(mixed_precision: str = "no"):
    """The process's Accelerator. Without a GPU, multi-process launches (``accelerate launch --cpu
    --num_processes N``, ``torchrun``) run data-parallel on CPU over gloo.

    ``mixed_precision`` ("no" | "bf16" | "fp16") is passed to ``Accelerator``; it is the config's
    choice, not the launcher's. accelerate keeps one process-wide state that refuses a second
    ``Accelerator`` with another precision; in a single process (a notebook running an fp32 and a bf16
    fit one after the other) that state is reset so each fit gets its own precision."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    cpu = not torch.cuda.is_available()
    check_mixed_precision(mixed_precision, "cpu" if cpu else "cuda")
    if not cpu:  # TF32 tensor-core matmuls for whatever still runs in fp32 on an Ampere+ GPU (set by fit, not on import)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        if PartialState().num_processes > 1:
            raise ValueError(f"this process already runs with mixed_precision={state.get('_mixed_precision')!r}; "
                             f"a distributed run cannot switch to {mixed_precision!r} mid-run")
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision)


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
            chunk = perm[start:start + span]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[i]


def _loader(data, batch_size: int, collate_fn, shuffle: bool, seed: int, lengths=None) -> DataLoader:
    if lengths is not None:
        return DataLoader(data, batch_sampler=LengthGroupedBatches(lengths, batch_size, seed), collate_fn=collate_fn)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, generator=gen)


def make_optimizer(optimizer_cls, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """``optimizer_cls(groups, lr=lr)``, with the fused kernel for Adam/AdamW where torch has one for the
    parameters' device (CPU and CUDA): on this 2-core CPU a MiniLM fine-tuning step costs 0.74x of the
    default per-parameter loop (see benchmarks/bench_training.py)."""
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
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _param_groups(params: list, weight_decay: float) -> list[dict]:
    """Weight decay on matrices, none on biases and LayerNorm vectors (the usual BERT recipe)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]


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
        return {"step": self.step, "history": self.result.history, "running": self.running,
                "n_running": self.n_running, "best_value": self.best_value, "best_state": self.best_state,
                "best": self.result.best}

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
            warnings.warn(f"resumable checkpoint {self.path} is unreadable ({type(exc).__name__}); training from the start")
            return None
        if state.get("config_hash") != self.key or state.get("n_params") != self.n_params:
            warnings.warn(f"resumable checkpoint {self.path} was written by another training config; training from "
                          "the start (delete the folder to silence this)")
            return None
        return state

    def save(self, model, optimizer, sched, progress: _Progress, collate_fn) -> None:
        if self.path is None or not self.acc.is_main_process:
            return
        payload = {"config_hash": self.key, "n_params": self.n_params, **progress.state(),
                   "model": self.acc.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                   "collator": collate_fn.state_dict() if hasattr(collate_fn, "state_dict") else None}
        atomic_save(self.path, lambda tmp: torch.save(payload, tmp))

    def remove(self) -> None:
        if self.path is not None and self.acc.is_main_process:
            self.path.unlink(missing_ok=True)  # finished: the caller saves the final artifact


def fit(
    model: torch.nn.Module,
    train_data,
    cfg: TrainConfig,
    *,
    collate_fn: Callable,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    params: Iterable[torch.nn.Parameter] | None = None,
    optimizer_cls=torch.optim.AdamW,
    checkpoint_dir: str | Path | None = None,
    on_step: Sequence[Callable[[int, torch.nn.Module, dict], None]] = (),
    desc: str = "train",
    lengths: Sequence[int] | None = None,
) -> FitResult:
    """Train ``model`` on ``train_data`` (a map-style dataset fed through ``collate_fn``).

    The model's forward must return an object with ``.loss`` given a collated batch. ``evaluate``
    maps the model to a dict of dev metrics; the state with the best ``cfg.select_metric`` is loaded
    back at the end. Returns the evaluation history. ``lengths`` (one per example, for variable-length
    inputs padded per batch) are used when ``cfg.group_by_length``: :class:`LengthGroupedBatches`.
    ``cfg.kernels`` picks the attention implementation for the run (:func:`kernels_context`).
    ``checkpoint_dir``: a resumable checkpoint is written there and a run cut off resumes from it.
    """
    import time

    set_seed(cfg.seed)
    acc = get_accelerator(cfg.mixed_precision)
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

    progress = _Progress(cfg.select_metric)
    ckpt = _Checkpoint(checkpoint_dir, cfg, len(params), acc)
    state = ckpt.load()
    if state is not None:
        acc.unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        progress.restore(state)
        torch.set_rng_state(state["rng"])
        if state.get("collator") is not None:
            collate_fn.load_state_dict(state["collator"])

    start = time.perf_counter()
    eval_every = cfg.eval_every if cfg.eval_every > 0 else per_epoch
    ckpt_every = cfg.checkpoint_every if cfg.checkpoint_every > 0 else eval_every
    bar = tqdm(total=total, initial=progress.step, desc=desc, disable=not cfg.progress or not acc.is_main_process,
               dynamic_ncols=True, leave=False)
    model.train()
    with kernels_context(model, cfg.kernels, acc.device):   # the attention cfg.kernels asks for, restored after
        while progress.step < total:
            epoch = progress.step // per_epoch
            skip = progress.step - epoch * per_epoch  # resume mid-epoch: same seeded order, skip what was done
            # the loader yields lists of examples; they are collated here, right before the step: accelerate
            # prefetches one batch ahead, and a collator drawing masks there would advance the random state
            # saved in a checkpoint past the step it belongs to (a resumed run would draw other masks)
            loader = acc.prepare(_loader(train_data, cfg.batch_size, _examples, True, cfg.seed * 1000 + epoch, lengths))
            before = progress.step
            for i, examples in enumerate(loader):
                if i < skip:
                    continue
                batch = send_to_device(collate_fn(examples), acc.device)
                out = model(**batch)
                acc.backward(out.loss)
                if cfg.grad_clip > 0:
                    acc.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                sched.step()
                optimizer.zero_grad(set_to_none=True)
                progress.record(out.loss.item())
                step = progress.step
                logs = {"loss": out.loss.item(), "lr": sched.get_last_lr()[0]}
                for hook in on_step:
                    hook(step, acc.unwrap_model(model), logs)
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.3f}")
                if step % eval_every == 0 or step == total:
                    progress.evaluate(acc.unwrap_model(model), evaluate, step / per_epoch)
                if step % ckpt_every == 0 and step < total:
                    ckpt.save(model, optimizer, sched, progress, collate_fn)
                if step >= total:
                    break
            if progress.step == before:
                raise RuntimeError(f"an epoch produced no training step (resume at step {progress.step}, "
                                   f"{per_epoch} batches/epoch)")
    bar.close()
    # drop accelerate's autocast wrapper from the model's forward: after fit it runs in full precision
    acc.unwrap_model(model, keep_fp32_wrapper=False)
    if progress.best_state is not None:
        acc.unwrap_model(model).load_state_dict(progress.best_state)
    result = progress.result
    result.steps = progress.step
    result.seconds = time.perf_counter() - start
    ckpt.remove()
    return result


# ------------------------------------------------------------------------------------- classification

AUTO = "auto"


def input_columns(column_names, pair_column: str | None = AUTO, aspect_column: str | None = AUTO) -> tuple[str | None, str | None]:
    """``(pair_column, aspect_column)`` actually used for a dataset with ``column_names``: ``"auto"``
    picks ``text_pair`` / ``aspect`` where present (aspect first), None turns one off."""
    from .data import ASPECT_COLUMN, PAIR_COLUMN

    if aspect_column == AUTO:
        aspect_column = ASPECT_COLUMN if ASPECT_COLUMN in column_names else None
    if pair_column == AUTO:
        pair_column = PAIR_COLUMN if PAIR_COLUMN in column_names and not aspect_column else None
    if pair_column and aspect_column:
        raise ValueError(f"a task has one second input: got pair_column={pair_column!r} and aspect_column={aspect_column!r}")
    for col in (pair_column, aspect_column):
        if col and col not in column_names:
            raise ValueError(f"no column {col!r} to encode (columns: {list(column_names)})")
    return pair_column, aspect_column


def encode(ds, tokenizer, max_length: int, text_column: str = "text", pair_column: str | None = AUTO,
           aspect_column: str | None = AUTO):
    """Tokenize a ``datasets.Dataset`` (truncating to ``max_length``) into model inputs + ``labels``.

    Single text: ``[CLS] text [SEP]``. With a second input (``"auto"``: the ``text_pair`` / ``aspect``
    column where the dataset has one; None: ignore it) the tokenizer's pair encoding, segment ids 0 then 1:
    a sentence pair is ``[CLS] text [SEP] text_pair [SEP]`` (the longer side truncated first, as BERT's
    GLUE code); an aspect task is ``[CLS] aspect [SEP] text [SEP]`` with only the text truncated (the
    official selective-masking code's ``ASC`` / ``ABSAProcessor``: ``text_a`` = aspect, ``text_b`` = text).
    """
    pair_column, aspect_column = input_columns(ds.column_names, pair_column, aspect_column)

    def fn(batch):
        if aspect_column:
            enc = tokenizer(batch[aspect_column], batch[text_column], truncation="only_second", max_length=max_length)
        elif pair_column:
            enc = tokenizer(batch[text_column], batch[pair_column], truncation=True, max_length=max_length)
        else:
            enc = tokenizer(batch[text_column], truncation=True, max_length=max_length)
        if "label" in batch:
            enc["labels"] = batch["label"]
        return enc

    keep = [c for c in ds.column_names]
    return ds.map(fn, batched=True, remove_columns=keep, desc="tokenize",
                  new_fingerprint=_encode_fingerprint(ds, tokenizer, max_length, text_column,
                                                      pair_column if not aspect_column else f"aspect:{aspect_column}"))


def _encode_fingerprint(ds, tokenizer, max_length, text_column, pair_column) -> str:
    """A cheap fingerprint for :func:`encode`'s map. Without it ``datasets`` dill-hashes the closure,
    tokenizer included: ~0.1-2 s per call, which dominated short runs."""
    from datasets.fingerprint import Hasher

    return Hasher.hash([getattr(ds, "_fingerprint", None), type(tokenizer).__name__,
                        getattr(tokenizer, "name_or_path", ""), len(tokenizer),
                        getattr(tokenizer, "truncation_side", None), max_length, text_column, pair_column])


class ClassifierCollator:
    """Pads a list of encoded examples into a batch."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, examples: list[dict]) -> dict:
        return self.tokenizer.pad(examples, return_tensors="pt")


class EvalBatches:
    """Tokenized, padded, length-sorted batches built once and reused for every evaluation."""

    def __init__(self, encoded, tokenizer, batch_size: int = 64):
        order = np.argsort([len(x) for x in encoded["input_ids"]], kind="stable")
        collate = ClassifierCollator(tokenizer)
        rows = [encoded[int(i)] for i in order]
        self.batches = [collate(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
        self.n = len(rows)
        self.order = order   # batch row k is example order[k] of ``encoded``

    def __len__(self) -> int:
        return self.n


@torch.no_grad()
def evaluate_classifier(model, batches: EvalBatches, device: torch.device | str | None = None,
                        mixed_precision: str = "no", kernels: str = TrainConfig.kernels,
                        predictions: bool = False) -> dict:
    """Mean cross-entropy and accuracy over cached batches; ``mixed_precision="bf16"`` runs the forward
    passes under bf16 autocast ("fp16": CUDA only); ``kernels="fast"`` computes a single-label BERT
    classifier's last layer for ``[CLS]`` only (:class:`~tmlib.cls_forward.ClsOnlyClassifier`; the same
    numbers up to float rounding), ``"hf"`` calls the model itself. ``predictions``: also return the
    predicted class of every example, in the order of the encoded dataset (``"predictions"``)."""
    from .cls_forward import ClsOnlyClassifier

    model = ClsOnlyClassifier.for_kernels(model, check_kernels(kernels))
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ctx = autocast(mixed_precision, device)
    loss_sum, correct, preds = 0.0, 0, []
    for batch in batches.batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with ctx:
            out = model(**batch)
        n = batch["labels"].numel()
        loss_sum += out.loss.float().item() * n
        pred = out.logits.argmax(-1)
        correct += (pred == batch["labels"]).sum().item()
        if predictions:
            preds.append(pred.cpu())
    model.train(was_training)
    metrics = {"loss": loss_sum / len(batches), "accuracy": correct / len(batches)}
    if predictions:
        flat = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)
        metrics["predictions"] = np.empty_like(flat)
        metrics["predictions"][batches.order] = flat
    return metrics


@dataclass
class ClassifierResult:
    dev: dict
    test: dict | None
    fit: FitResult


def train_classifier(model, data, tokenizer, cfg: TrainConfig, *, params=None, optimizer_cls=torch.optim.AdamW,
                     checkpoint_dir=None, on_step=(), desc="fine-tune", test_predictions: bool = False) -> ClassifierResult:
    """Fine-tune a sequence classifier on ``data`` (DatasetDict train/dev/test with text+label, and a
    ``text_pair`` or ``aspect`` column for two-input tasks: :func:`encode` builds the pair inputs).

    Selects the best state by dev accuracy, then reports dev and test metrics of that state (``test`` is None
    when ``data`` has no test split: the caller evaluates elsewhere). Under
    ``cfg.kernels="fast"`` a single-label BERT classifier trains and evaluates through
    :class:`~tmlib.cls_forward.ClsOnlyClassifier` (the same parameters; ``on_step`` hooks still get ``model``).
    """
    from .cls_forward import ClsOnlyClassifier

    check_labels(model, data)
    enc = {s: encode(data[s], tokenizer, cfg.max_length) for s in ("train", "dev", "test") if s in data}
    dev = EvalBatches(enc["dev"], tokenizer)
    net = ClsOnlyClassifier.for_kernels(model, cfg.kernels)
    hooks = [h if net is model else (lambda step, _net, logs, h=h: h(step, model, logs)) for h in on_step]
    res = fit(net, enc["train"], cfg, collate_fn=ClassifierCollator(tokenizer),
              evaluate=lambda m: _dev_metrics(m, dev, cfg.kernels),
              params=params, optimizer_cls=optimizer_cls, checkpoint_dir=checkpoint_dir, on_step=hooks, desc=desc,
              lengths=[len(x) for x in enc["train"]["input_ids"]])
    # fit ends with the state it evaluated in its best row (the last eval when nothing is selected):
    # its dev metrics are that row's, no second pass over dev
    best = {"loss": res.best["dev_loss"], "accuracy": res.best["accuracy"]}
    if "test" not in enc:
        return ClassifierResult(dev=best, test=None, fit=res)
    # the test split with the attention the dev evaluations had inside fit
    with kernels_context(net, cfg.kernels, get_accelerator(cfg.mixed_precision).device):
        test_metrics = evaluate_classifier(net, EvalBatches(enc["test"], tokenizer), kernels=cfg.kernels,
                                           predictions=test_predictions)
    return ClassifierResult(dev=best, test=test_metrics, fit=res)


def _dev_metrics(model, dev: EvalBatches, kernels: str) -> dict:
    m = evaluate_classifier(model, dev, kernels=kernels)
    return {"accuracy": m["accuracy"], "dev_loss": m["loss"]}


def check_labels(model, data) -> None:
    """The model head must have exactly as many outputs as the task has classes."""
    from .data import label_names

    names = label_names(data)
    n_head = getattr(model.config, "num_labels", None)
    if n_head is not None and n_head != len(names):
        raise ValueError(
            f"the model head has {n_head} outputs but the task has {len(names)} classes {names}; "
            f"load the model with tmlib.models.load_classifier(name, label_names)"
        )
