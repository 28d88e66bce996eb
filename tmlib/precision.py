"""How a run computes: mixed precision (autocast, the accelerate Accelerator) and the forward's kernels.

:data:`KERNELS` names how a training or evaluation run computes the model's forward; :func:`kernels_context`
sets it for a block; :func:`autocast` and :func:`get_accelerator` apply :data:`MIXED_PRECISIONS`.
"""
from __future__ import annotations

import contextlib

import torch

KERNELS = ("fast", "hf")
"""How a training run computes the model's forward (``TrainConfig.kernels``). The math is the same and, on CPU, so
are the random numbers (dropout draws the same masks in the same order), so the two differ by float rounding only
(on CUDA the fused dropout / SDPA kernels draw otherwise: runs differ as with another dropout seed):

* ``"fast"``: on CPU the Hugging Face model runs its eager attention (``matmul``, softmax, dropout,
  ``matmul``, as BERT was written and as the official code ran it) instead of PyTorch's SDPA kernels, which
  are slower on this CPU's short rows; and a single-label BERT classifier computes its last layer for the
  ``[CLS]`` row only (:class:`tmlib.cls_forward.ClsOnlyClassifier`), the only row its head reads. On CUDA
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


def processes():
    """This process's place in a launch (accelerate's ``PartialState``): one process when started plainly;
    ``accelerate launch`` / ``torchrun`` with N processes -> N (over gloo on a machine without a GPU)."""
    from accelerate.state import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


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
    # TF32 tensor-core matmuls for whatever still runs in fp32 on an Ampere+ GPU (set by fit, not on import)
    if not cpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        if PartialState().num_processes > 1:
            raise ValueError(f"this process already runs with mixed_precision={state.get('_mixed_precision')!r}; "
                             f"a distributed run cannot switch to {mixed_precision!r} mid-run")
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision)
