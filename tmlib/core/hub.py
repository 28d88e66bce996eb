"""Is a model/dataset hub reachable? Asked once, quickly, before any hub call.

``huggingface_hub`` retries unreachable hosts for about a minute before giving up; tmlib checks
first (a 3 s TCP connect to ``$HF_ENDPOINT``, default huggingface.co) so offline users get an
immediate, clear error instead. ``HF_HUB_OFFLINE=1`` skips the check and means "offline".
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout
        ):
            return True
    except OSError:
        return False


DATASETS_DIR = "TMLIB_DATASETS_DIR"


def local_dataset(name: str) -> str | None:
    """The local copy of hub dataset ``name`` (``<path>[:<config>]``, as after ``hub:``) when the environment
    variable ``TMLIB_DATASETS_DIR`` names a folder that holds it as ``<folder>/<path>[/<config>]/`` with the
    split files ``datasets.load_dataset`` reads from a folder (``train.jsonl``, ``validation.jsonl``,
    ``test.jsonl``, or csv/parquet). For machines without the hub (an air-gapped cluster, CI): the same
    ``load_dataset`` call reads the folder instead of the hub. None when unset or not there."""
    root = os.environ.get(DATASETS_DIR, "")
    if not root:
        return None
    path, _, config = name.partition(":")
    folder = os.path.join(root, *path.split("/"), *([config] if config else []))
    return folder if os.path.isdir(folder) else None
