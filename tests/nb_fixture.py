"""Config of the fixture notebooks used by tests/test_notebooks.py."""

from dataclasses import dataclass


@dataclass
class FixtureConfig:
    out_dir: str
    steps: int = 3
    sleep: float = 0.0  # seconds the notebook waits (to see two notebooks overlap)
    reads: str = ""  # another notebook's output folder (a dependency of the suite's scheduler)
