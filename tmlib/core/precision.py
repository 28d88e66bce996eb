"""How a run computes: mixed precision (autocast, the accelerate Accelerator) and the forward's kernels.

:data:`KERNELS` names how a training or evaluation run computes the model's forward; :func:`kernels_context`
sets it for a block; :func:`autocast` and :func:`get_accelerator` apply :data:`MIXED_PRECISIONS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

KERNELS = ("fast", "hf")
"""How a training run computes the model's forward (``TrainConfig.kernels``). The math is the same and, on CPU, so
are the random numbers (dropout draws the same masks in the same order), so the two differ by float rounding only
(on CUDA the fused dropout / SDPA kernels draw otherwise: runs differ as with another dropout seed):

* ``"fast"``: on CPU the Hugging Face model runs its eager attention (``matmul``, softmax, dropout,
  ``matmul``, as BERT was written and as the official code ran it) instead of PyTorch's SDPA kernels, which
  are slower on this CPU's short rows; and a single-label BERT classifier computes its last layer for the
  ``[CLS]`` row only (:class:`tmlib.tasks.cls_forward.ClsOnlyClassifier`), the only row its head reads. On CUDA
  attention stays SDPA (flash / memory-efficient kernels).
* ``"hf"``: the model's own forward, SDPA attention.

Measured effect: speed in ``docs/performance.md``, the paired accuracy checks in ``docs/reproducibility.md``.
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
    import torch
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


MIXED_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "no")
"""The values of every ``mixed_precision`` setting:

* ``"auto"`` (the default of every experiment): bf16 autocast where bf16 runs natively, fp32 everywhere else,
  decided once per process by :func:`arithmetic` (a timed matmul probe on CPU, the device's bf16 support on
  CUDA);
* ``"fp32"``: full precision (``"no"``, accelerate's name, is the same setting: YAML's ``no`` reads as false, so
  ``false`` is accepted as well);
* ``"bf16"``: bf16 autocast, whatever the hardware (a CPU without native bf16 emulates it: a warning says how much
  slower it measured);
* ``"fp16"``: fp16 autocast with gradient scaling, CUDA only.

Inside tmlib a resolved setting is ``"no"``, ``"bf16"`` or ``"fp16"`` (accelerate's names): the keys of cached
stages carry it, so an fp32 host never loads a bf16 artifact and the reverse."""

FP32 = "no"  # the resolved spelling of full precision (accelerate's), kept in cache keys
AUTO_ENV = "TMLIB_AUTO_PRECISION"
"""Environment variable fixing what ``"auto"`` resolves to (``bf16`` or ``fp32``) instead of measuring it: the
suite measures once and sets it for its notebooks, so all of them compute alike."""
BF16_FASTER = 1.0
"""``"auto"`` picks bf16 on a CPU when the probe's bf16 matmul takes less than this times its fp32 time."""


def check_mixed_precision(mixed_precision, device: torch.device | str | None = None) -> str:
    """Validate a ``mixed_precision`` setting and return its canonical spelling (``"fp32"``, ``"no"`` and ``False``
    -> ``"no"``; ``"auto"`` stays ``"auto"``: :func:`resolve_mixed_precision` decides it); with ``device``, also
    that the device supports it (fp16 autocast + gradient scaling needs CUDA; bf16 runs on CPU and CUDA)."""
    import torch

    if mixed_precision is False or mixed_precision in ("fp32", "no"):
        mixed_precision = FP32
    if not isinstance(mixed_precision, str) or mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(
            f"mixed_precision must be one of {', '.join(map(repr, MIXED_PRECISIONS))}, got {mixed_precision!r}"
        )
    if device is not None and mixed_precision == "fp16" and torch.device(device).type != "cuda":
        raise ValueError(
            f"mixed_precision='fp16' needs a CUDA device (this one is {torch.device(device).type!r}); "
            f"use 'auto', 'bf16' (autocast works on CPU) or 'fp32'"
        )
    return mixed_precision


@dataclasses.dataclass(frozen=True)
class Arithmetic:
    """What ``"auto"`` resolved to in this process, and the measurement behind it."""

    mixed_precision: str  # "bf16" | "no"
    device: str  # "cpu" | "cuda"
    reason: str  # one line for a person
    fp32_matmul_s: float = float("nan")  # the CPU probe's times (NaN: not measured)
    bf16_matmul_s: float = float("nan")
    capability: str = ""  # torch's CPU capability (AVX2, AVX512, ...) or the GPU's name

    @property
    def name(self) -> str:
        """``"bf16"`` or ``"fp32"``: how a person reads it."""
        return precision_name(self.mixed_precision)

    @property
    def bf16_slowdown(self) -> float:
        """bf16 time / fp32 time of the probe's matmul (< 1: bf16 is faster)."""
        return self.bf16_matmul_s / self.fp32_matmul_s

    def record(self) -> dict:
        """The fields that manifests, ``suite_timing.csv`` and ``results.json`` keep."""
        return {
            "arithmetic": self.name,
            "arithmetic_reason": self.reason,
            "bf16_over_fp32_matmul": round(self.bf16_slowdown, 3) if self.fp32_matmul_s == self.fp32_matmul_s else None,
            "cpu_capability": self.capability,
        }


def precision_name(mixed_precision: str) -> str:
    """``"no"`` -> ``"fp32"``; the other resolved values as they are."""
    return "fp32" if mixed_precision == FP32 else mixed_precision


def matmul_probe(rows: int = 64, width: int = 384, reps: int = 8, rounds: int = 5) -> tuple[float, float]:
    """Seconds of one ``rows x width @ width x width`` matmul in fp32 and in bf16 (the best of ``rounds`` rounds of
    ``reps``) on one thread: MiniLM's hidden size, the shape of its linear layers. A native bf16 matmul runs in
    about 0.4-0.6x the fp32 time; an emulated one (no avx512_bf16/AMX) in 10-400x.

    One thread, because the probe asks what the core's instructions can do: a multi-threaded kernel on a busy
    machine waits for its threads at every barrier, and its time measures the other processes (a loaded host with
    native bf16 once measured 319x through two threads, then 0.3-0.5x through one)."""
    import time

    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rows, width, generator=gen)
    b = torch.randn(width, width, generator=gen)

    def best(x, y, n):
        x @ y  # warm-up: kernel selection, first-touch memory
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(n):
                x @ y
            times.append((time.perf_counter() - start) / n)
        return min(times)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = best(a, b, reps)
        ab, bb = a.bfloat16(), b.bfloat16()
        start = time.perf_counter()
        ab @ bb
        first = time.perf_counter() - start
        bf16 = best(ab, bb, reps if first < 20 * fp32 * reps else 1)  # an emulated matmul: one per round is enough
    finally:
        torch.set_num_threads(threads)
    return fp32, bf16


def decide_cpu(fp32_s: float, bf16_s: float, capability: str = "") -> Arithmetic:
    """The CPU decision from a probe's two times: bf16 when its matmul is faster than fp32's
    (:data:`BF16_FASTER`), else fp32. Pure, so it is tested on measured inputs of both kinds of CPU."""
    ratio = bf16_s / fp32_s
    where = f" ({capability})" if capability else ""
    if ratio < BF16_FASTER:
        return Arithmetic(
            "bf16",
            "cpu",
            f"bf16 matmul {ratio:.2f}x the fp32 time on this CPU{where}: native bf16",
            fp32_s,
            bf16_s,
            capability,
        )
    return Arithmetic(
        FP32,
        "cpu",
        f"bf16 matmul {ratio:.1f}x the fp32 time on this CPU{where}: no native bf16, so fp32",
        fp32_s,
        bf16_s,
        capability,
    )


_ARITHMETIC: dict[str, Arithmetic] = {}


def arithmetic(device: torch.device | str | None = None) -> Arithmetic:
    """What ``"auto"`` means on ``device`` (default: CUDA when available, else CPU), decided once per process and
    device type: ``$TMLIB_AUTO_PRECISION`` when set (``bf16`` | ``fp32``), else on CUDA bf16 where the GPU
    supports it, on CPU the timed :func:`matmul_probe` (:func:`decide_cpu`)."""
    import torch

    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind in _ARITHMETIC:
        return _ARITHMETIC[kind]
    forced = os.environ.get(AUTO_ENV, "").strip().lower()
    capability = torch.backends.cpu.get_cpu_capability() if kind == "cpu" else ""
    if forced:
        if forced not in ("bf16", "fp32"):
            raise ValueError(f"${AUTO_ENV}={forced!r}: set it to bf16 or fp32, or unset it to measure")
        why = os.environ.get(AUTO_ENV + "_REASON") or f"${AUTO_ENV}={forced}"  # the suite passes its reason on
        found = Arithmetic("bf16" if forced == "bf16" else FP32, kind, why, capability=capability)
    elif kind == "cuda":
        ok = torch.cuda.is_bf16_supported()
        found = Arithmetic(
            "bf16" if ok else FP32,
            "cuda",
            f"CUDA device {'with' if ok else 'without'} bf16",
            capability=torch.cuda.get_device_name(),
        )
    else:
        found = decide_cpu(*cpu_probe(), capability)
    _ARITHMETIC[kind] = found
    return found


_PROBE: list[tuple[float, float]] = []


def cpu_probe() -> tuple[float, float]:
    """:func:`matmul_probe`'s fp32 and bf16 seconds, measured once per process."""
    if not _PROBE:
        _PROBE.append(matmul_probe())
    return _PROBE[0]


_WARNED: set[str] = set()


def resolve_mixed_precision(mixed_precision, device: torch.device | str | None = None) -> str:
    """The setting a run computes with: ``"auto"`` -> ``"bf16"`` or ``"no"`` (:func:`arithmetic`), the fp32 aliases
    -> ``"no"``, the rest as they are. An explicit ``"bf16"`` on a CPU whose probe measured bf16 slower than fp32
    warns (once per process) with the measured slowdown and the fix: never a silent 10x."""
    import torch

    mp = check_mixed_precision(mixed_precision, device)
    if mp == "auto":
        return arithmetic(device).mixed_precision
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if mp == "bf16" and kind == "cpu" and "bf16" not in _WARNED:
        found = decide_cpu(*cpu_probe(), torch.backends.cpu.get_cpu_capability())
        if found.mixed_precision != "bf16":
            _WARNED.add("bf16")
            warnings.warn(
                f"mixed_precision='bf16' on a CPU without native bf16: its bf16 matmul measured "
                f"{found.bf16_slowdown:.0f}x slower than fp32 ({found.capability}), so training runs many "
                "times slower (about 16x measured on an AVX2 host); set mixed_precision to 'auto' or "
                "'fp32'",
                RuntimeWarning,
                stacklevel=2,
            )
    return mp


def autocast(mixed_precision: str, device: torch.device | str):
    """The precision context of forward passes outside :func:`fit` (evaluation, probes, the buffer walk):
    nothing for fp32, else ``torch.autocast`` to bf16 / fp16 on ``device``'s type (``"auto"`` resolved by
    :func:`resolve_mixed_precision`)."""
    import torch

    device = torch.device(device)
    mp = resolve_mixed_precision(mixed_precision, device)
    if mp == FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if mp == "bf16" else torch.float16)


def processes():
    """This process's place in a launch (accelerate's ``PartialState``): one process when started plainly;
    ``accelerate launch`` / ``torchrun`` with N processes -> N (over gloo on a machine without a GPU)."""
    import torch
    from accelerate.state import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def get_accelerator(mixed_precision: str = FP32, log_with=None):
    """The process's Accelerator. Without a GPU, multi-process launches (``accelerate launch --cpu
    --num_processes N``, ``torchrun``) run data-parallel on CPU over gloo.

    ``mixed_precision`` (any of :data:`MIXED_PRECISIONS`, resolved by :func:`resolve_mixed_precision`) is passed to
    ``Accelerator``; it is the config's
    choice, not the launcher's. accelerate keeps one process-wide state that refuses a second
    ``Accelerator`` with another precision; in a single process (a notebook running an fp32 and a bf16
    fit one after the other) that state is reset so each fit gets its own precision."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    cpu = not torch.cuda.is_available()
    mixed_precision = resolve_mixed_precision(mixed_precision, "cpu" if cpu else "cuda")
    # TF32 tensor-core matmuls for whatever still runs in fp32 on an Ampere+ GPU (set by fit, not on import)
    if not cpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        if PartialState().num_processes > 1:
            raise ValueError(
                f"this process already runs with mixed_precision={state.get('_mixed_precision')!r}; "
                f"a distributed run cannot switch to {mixed_precision!r} mid-run"
            )
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, log_with=log_with)


def resolve_fields(cfg, *names: str) -> None:
    """Resolve the ``mixed_precision`` settings ``names`` of dataclass ``cfg`` in place (frozen ones too): a config
    or recipe holds the arithmetic it computes with, so its cache keys carry it (``"auto"`` never enters a key)."""
    for name in names:
        object.__setattr__(cfg, name, resolve_mixed_precision(getattr(cfg, name)))
