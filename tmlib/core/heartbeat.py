"""Progress of long work in the run's log: about every 30 seconds one line with the step, the rate and the time left.

A stage's build runs inside :func:`reporting_to` (:meth:`tmlib.core.runs.RunStore.get` passes the stage's log), so a
loop anywhere below it (:func:`tmlib.core.training.fit`, a test evaluation) reports through a :class:`Heartbeat` without
being handed the store: the lines reach ``progress.log`` and the suite's output, where a person watching a slow
host sees that a stage moves and when it ends. Outside a stage nothing is reported (the notebook's progress bars
are there).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable

_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("tmlib_heartbeat", default=None)
EVERY = 30.0  # seconds between two lines of one loop


@contextlib.contextmanager
def reporting_to(sink: Callable[[str], None] | None):
    """While inside: heartbeats report their lines to ``sink`` (None: nowhere)."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``; ``4000`` -> ``"1h06m"``."""
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Heartbeat:
    """Call with the number of units done; every ``every`` seconds (first after ``every``) it reports
    ``"<what>: step 120 / 520, 2.1 steps/s, 3m10s left"`` to the sink of :func:`reporting_to`."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "step",
        initial: int = 0,
        every: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.what, self.total, self.unit, self.initial = what, total, unit, initial
        self.every = EVERY if every is None else every
        self.clock = clock
        self.sink = _SINK.get()
        self.start = self.last = clock()

    def __call__(self, done: int) -> str | None:
        """Report ``done`` when ``every`` seconds passed since the last line; returns the line (None: no line)."""
        if self.sink is None:
            return None
        now = self.clock()
        if now - self.last < self.every:
            return None
        self.last = now
        rate = (done - self.initial) / max(now - self.start, 1e-9)
        left = f", {duration((self.total - done) / rate)} left" if rate > 0 and self.total > done else ""
        line = f"{self.what}: {self.unit} {done} / {self.total}, {rate:.3g} {self.unit}s/s{left}"
        self.sink(line)
        return line
