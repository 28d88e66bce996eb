"""`python -m tmlib worker` beside a running notebook 01: the two processes share the run folder's stages (file
locks; the worker walks them in reverse order), each stage is built once, by either process, and every artifact
is the one the notebook builds alone. The handoff is deterministic: the notebook starts only once the worker has
said it builds its first stage (a line it prints holding that stage's lock), so the worker provably builds it and
the notebook loads it."""

import hashlib
import json
import queue
import subprocess
import sys
import threading
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
    lines: queue.Queue = queue.Queue()
    said: list[str] = []

    def read() -> None:
        for line in worker.stdout:
            said.append(line)
            lines.put(line)
        lines.put(None)  # the worker's output ended

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # wait for the worker to hold its first stage's lock (an event, with a deadline against a hung worker)
        while True:
            line = lines.get(timeout=600)
            assert line is not None, "the worker ended without building a stage:\n" + "".join(said)[-2000:]
            if line.startswith("[tmlib worker] building "):
                break
        first = line.split()[3]
        run_suite("smoke", shared, only=["01"])
        assert worker.wait(timeout=900) == 0, "".join(said)[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    reader.join(timeout=60)
    a, b = alone / "01_selective_masking", shared / "01_selective_masking"
    wa, wb = _weights(a), _weights(b)
    assert wa and wa == wb, "an artifact differs from the one the notebook builds alone"
    ra, rb = (pd.read_csv(d / "results.csv") for d in (a, b))
    keep = [c for c in ra.columns if not any(t in c for t in TIMING)]
    pd.testing.assert_frame_equal(ra[keep], rb[keep])
    # each stage built once, by one of the two processes
    log = (b / "progress.log").read_text().splitlines()
    built = [ln.split(" ", 1)[1].split(":")[0] for ln in log if ": built in" in ln]
    assert built and len(built) == len(set(built)), "a stage was built twice: the lock did not hold"
    # who built what, by the pid in each manifest: the worker the stages it said it builds (its first one among
    # them), the notebook (one other process) all the others, loading the worker's
    manifests = {str(p.parent.relative_to(b)): json.loads(p.read_text()) for p in b.rglob("manifest.json")}
    pid_of = {stage: m["runtime"]["pid"] for stage, m in manifests.items()}
    announced = {ln.split()[3] for ln in said if ln.startswith("[tmlib worker] building ")}
    by_worker = {stage for stage, pid in pid_of.items() if pid == worker.pid}
    assert first in by_worker and by_worker == announced, (first, sorted(by_worker), sorted(announced))
    notebook = set(pid_of.values()) - {worker.pid}
    assert len(notebook) == 1, f"stages built by {len(notebook)} processes beside the worker: {pid_of}"
