"""Process-wide runtime settings, set explicitly by a caller (a notebook's config), never on import."""
from __future__ import annotations

import os


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (0: leave torch's default). Returns the count in effect; it is
    recorded in every artifact manifest (:func:`tmlib.runs.runtime`)."""
    import torch

    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = torch's default), got {threads}")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def adapt_threads() -> int:
    """Use one torch thread when the CPU is oversubscribed (load average >= cores); for benchmarks.

    Measured on the shared 2-core machine at load ~7: with 2 OpenMP threads the small-matrix ops of
    these models spin-wait for a descheduled partner thread and ran 7-30x slower than with 1 thread
    (buffer importance: 27 s vs 0.95 s for the same 16 sentences). On an idle machine nothing changes.
    """
    import torch

    cores = os.cpu_count() or 1
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
    return torch.get_num_threads()
