"""Process-wide runtime settings, set explicitly by a caller (a notebook's config), never on import."""

from __future__ import annotations

import os


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (0: leave torch's default). Returns the count in effect; it is
    recorded in every artifact manifest (:func:`tmlib.core.runs.runtime`)."""
    import torch

    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = torch's default), got {threads}")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def adapt_threads() -> int:
    """Use one torch thread when the CPU is oversubscribed (load average >= cores); for benchmarks.

    On an oversubscribed CPU the small-matrix ops of these models spin-wait for a descheduled partner thread;
    one thread avoids the wait (the measured slowdown is in docs/performance.md). On an idle machine nothing
    changes.
    """
    import torch

    cores = os.cpu_count() or 1
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def calibrate(
    steps: int = 5, warmup: int = 2, batch_size: int = 8, length: int = 64, mixed_precision: str = "no"
) -> dict:
    """Seconds per training step of a fixed workload: the packaged MiniLM classifier, torch's default threads,
    ``batch_size`` x ``length`` tokens, forward + backward + AdamW, median of ``steps`` after ``warmup``; in fp32
    (``calibration_step_s``) and, when ``mixed_precision`` resolves to bf16, also under bf16 autocast
    (``calibration_step_s_bf16``): the arithmetic the run trains with, beside the one every host has. The suite
    records it beside its wall time, so two runs on hosts of different speed (or one host at different loads) are
    compared by the ratio of their calibrations, not by their wall times alone."""
    import torch

    from tmlib.core.precision import autocast, precision_name, resolve_mixed_precision

    mp = resolve_mixed_precision(mixed_precision, "cpu")
    out = {"calibration_step_s": _step_seconds(steps, warmup, batch_size, length, None)}
    if mp != "no":
        out[f"calibration_step_s_{precision_name(mp)}"] = _step_seconds(
            steps, warmup, batch_size, length, lambda: autocast(mp, "cpu")
        )
    out["calibration_arithmetic"] = precision_name(mp)
    out["calibration_load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out["calibration_threads"] = torch.get_num_threads()
    return out


def _step_seconds(steps: int, warmup: int, batch_size: int, length: int, context) -> float:
    import contextlib
    import statistics
    import time

    import torch

    from tmlib.core.models import load_classifier

    torch.manual_seed(0)
    model = load_classifier("minilm", ["a", "b"], seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1000, 20000, (batch_size, length))
    labels = torch.randint(0, 2, (batch_size,))
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with (context or contextlib.nullcontext)():
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
