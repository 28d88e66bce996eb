"""Config of the fixture notebook used by tests/test_notebooks.py."""
from dataclasses import dataclass


@dataclass
class FixtureConfig:
    out_dir: str
    steps: int = 3
