"""Shared fixtures: tiny models and tiny data so unit tests run in seconds."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Tests never reach the network: the hub libraries are offline (also in every notebook and CLI subprocess, which
# inherit the environment), and in this process a connection to anything but this machine fails loudly.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"


class NetworkBlocked(ConnectionRefusedError):
    """A test tried to open a connection off this machine."""


def _local(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return not isinstance(host, str) or host in ("localhost", "::1", "") or host.startswith("127.")


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _guard(real):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
            raise NetworkBlocked(
                f"tests never reach the network: a connection to {address} was refused (tests/conftest.py)"
            )
        return real(self, address)

    return connect


socket.socket.connect, socket.socket.connect_ex = _guard(_connect), _guard(_connect_ex)


@pytest.fixture(scope="session")
def tokenizer():
    from tmlib.core.models import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture
def tiny_task():
    """A 2-class DatasetDict with obvious sentiment words (learnable in a few steps)."""
    from tmlib.tasks.data import stratified_split

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
