"""`python -m tmlib worker` beside a running notebook 01: the two processes share the run folder's stages (file
locks; the worker walks them in reverse order), each stage is built once, by either process, and every artifact
is the one the notebook builds alone."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tmlib.suite import ROOT, run_suite

TIMING = ("seconds", "time", "created", "path", "peak", "rss", "memory")


def _weights(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("model.safetensors"))
    }


@pytest.mark.slow
def test_a_worker_beside_the_notebook_shares_the_stages_and_gives_the_same_artifacts(tmp_path):
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    run_suite("smoke", alone, only=["01"])
    worker = subprocess.Popen(
        [sys.executable, "-m", "tmlib", "worker", "--params", "smoke", "--out", str(shared)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_suite("smoke", shared, only=["01"])
    said, _ = worker.communicate(timeout=900)
    assert worker.returncode == 0, said[-2000:]
    a, b = alone / "01_selective_masking", shared / "01_selective_masking"
    wa, wb = _weights(a), _weights(b)
    assert wa and wa == wb, "an artifact differs from the one the notebook builds alone"
    ra, rb = (pd.read_csv(d / "results.csv") for d in (a, b))
    keep = [c for c in ra.columns if not any(t in c for t in TIMING)]
    pd.testing.assert_frame_equal(ra[keep], rb[keep])
    # each stage built once, by one of the two processes (which one builds what is a race, so not asserted)
    log = (b / "progress.log").read_text().splitlines()
    built = [ln.split(" ", 1)[1].split(":")[0] for ln in log if ": built in" in ln]
    assert built and len(built) == len(set(built)), "a stage was built twice: the lock did not hold"
    pids = {json.loads(m.read_text())["runtime"]["pid"] for m in b.rglob("manifest.json")}
    assert 1 <= len(pids) <= 2
