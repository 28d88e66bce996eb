"""Shared fixtures: tiny models and tiny data so unit tests run in seconds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tokenizer():
    from tmlib.models import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture
def tiny_task():
    """A 2-class DatasetDict with obvious sentiment words (learnable in a few steps)."""
    from tmlib.data import stratified_split

    pos = [
        "a great , wonderful film",
        "truly great acting",
        "wonderful and moving",
        "great fun , loved it",
        "a wonderful , great story",
        "loved the great cast",
        "moving and wonderful",
        "great , great , great",
    ]
    neg = [
        "a terrible , awful film",
        "truly awful acting",
        "boring and terrible",
        "awful mess , hated it",
        "a terrible , boring story",
        "hated the awful cast",
        "boring and awful",
        "terrible , terrible",
    ]
    texts = pos + neg
    labels = [1] * len(pos) + [0] * len(neg)
    return stratified_split(texts * 3, labels * 3, ["negative", "positive"], seed=0, fractions=(0.5, 0.25, 0.25))


@pytest.fixture
def chromium_required():
    """Under TMLIB_REQUIRE_BROWSER=1 (CI) a browser test fails, not skips, without Chromium."""
    from tests.browser_screenshot import find_chromium

    if find_chromium() is None:
        pytest.fail(
            "Chromium is required here (TMLIB_REQUIRE_BROWSER=1) but not installed: "
            "make browser, i.e. apt-get update && apt-get install -y chromium"
        )
