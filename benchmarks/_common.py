"""Shared bits of the benchmark scripts: the ``--precision`` option (fp32 and bf16 side by side), the
load average to print next to every time, and medians of interleaved repeats.

Not a benchmark itself (``run_all.py`` runs ``bench_*.py`` only).
"""

from __future__ import annotations

import contextlib
import os
import statistics

PRECISIONS = {"both": ("no", "bf16"), "no": ("no",), "fp32": ("no",), "bf16": ("bf16",)}
LABEL = {"no": "fp32", "bf16": "bf16"}


def add_precision_arg(ap) -> None:
    ap.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="both",
        help="fp32 ('no'), bf16 autocast, or both side by side (default)",
    )


def precisions(args) -> tuple[str, ...]:
    """The ``mixed_precision`` values to run; bf16 only where this CPU / torch can autocast to it."""
    want = PRECISIONS[args.precision]
    if "bf16" in want and not bf16_ok():
        print("bf16 autocast is not usable here: fp32 only")
        want = tuple(p for p in want if p != "bf16") or ("no",)
    return want


def bf16_ok() -> bool:
    import torch

    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    except Exception:
        return False


def autocast(mixed_precision: str, device: str = "cpu"):
    """bf16 autocast for ``"bf16"``, nothing for ``"no"`` (for library calls without their own option)."""
    import torch

    if mixed_precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16)


def load() -> str:
    """The 1-minute load average, to print next to a time (this machine is shared)."""
    return f"load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load ?"


def median(xs) -> float:
    return statistics.median(xs)
