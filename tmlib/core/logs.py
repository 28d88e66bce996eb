"""tmlib's logger, ``logging.getLogger("tmlib")``: the stages' progress lines and the arithmetic line.

Out of the box it prints each message alone to the current ``sys.stdout`` (a notebook cell, the suite, a terminal),
as the library's output always looked. It is a logger like any other: ``logging.getLogger("tmlib").setLevel(
logging.WARNING)`` silences the progress, another handler sends the lines elsewhere. A run folder's
``progress.log`` is written either way (:meth:`tmlib.core.runs.RunStore.log`).
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("tmlib")


class _CurrentStdout(logging.StreamHandler):
    """A stream handler on whatever ``sys.stdout`` is when a line is written (a kernel or pytest replaces it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


if not LOGGER.handlers:
    _handler = _CurrentStdout()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(_handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False  # one copy of each line, also under a root logger configured by the user
