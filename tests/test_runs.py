import json
from dataclasses import dataclass

import pytest

from tmlib.core.runs import RunStore, Stage, atomic_save, atomic_write_text


@dataclass
class C:
    n: int = 1


def _save(obj, d):
    (d / "value.txt").write_text(str(obj))


def _load(d):
    return int((d / "value.txt").read_text())


def test_cached_builds_once_then_reuses(tmp_path):
    store, calls = RunStore(tmp_path), []
    build = lambda: calls.append(1) or 41 + len(calls)
    assert store.cached("a", C(), build, _save, _load) == 42
    assert store.cached("a", C(), build, _save, _load) == 42
    assert len(calls) == 1
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["config"] == {"n": 1} and "value.txt" in manifest["files"] and manifest["versions"]["torch"]
    from importlib.metadata import version

    for lib in ("transformers", "tokenizers", "datasets", "accelerate", "peft", "captum", "spacy"):
        assert manifest["versions"][lib] == version(lib), lib
    assert manifest["runtime"]["arithmetic"] in ("bf16", "fp32")  # what "auto" resolved to where it was built


def test_config_change_rebuilds(tmp_path):
    store = RunStore(tmp_path)
    store.cached("a", C(1), lambda: 1, _save, _load)
    assert store.cached("a", C(2), lambda: 2, _save, _load) == 2


def test_corrupt_artifact_detected_and_rebuilt(tmp_path):
    store = RunStore(tmp_path)
    store.cached("a", C(), lambda: 7, _save, _load)
    (tmp_path / "a" / "value.txt").write_text("999")
    assert store.artifact("a", C()).check() == "file value.txt is corrupt (hash mismatch)"
    with pytest.warns(UserWarning, match="not reusable"):
        assert store.cached("a", C(), lambda: 7, _save, _load) == 7


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_one_flipped_byte_anywhere_in_a_large_file_is_caught(tmp_path, where):
    """The manifest's SHA-256 covers every byte: one flipped byte at the start, the middle or the end of a 1 MiB
    file (past any prefix a cheaper check might hash) makes the artifact corrupt, and it is rebuilt."""
    blob = bytes(range(256)) * 4096  # 1 MiB

    def save(obj, d):
        (d / "blob.bin").write_bytes(blob)

    def load(d):
        return (d / "blob.bin").read_bytes() == blob

    store = RunStore(tmp_path)
    assert store.cached("big", C(), lambda: True, save, load)
    path = tmp_path / "big" / "blob.bin"
    data = bytearray(path.read_bytes())
    i = {"start": 0, "middle": len(data) // 2, "end": len(data) - 1}[where]
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
    assert store.artifact("big", C()).check() == "file blob.bin is corrupt (hash mismatch)"
    with pytest.warns(UserWarning, match="not reusable"):
        assert store.cached("big", C(), lambda: True, save, load)
    assert path.read_bytes() == blob


def test_partial_artifact_without_manifest_is_not_used(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "value.txt").write_text("5")
    store = RunStore(tmp_path)
    assert store.artifact("a", C()).check() == "no manifest (partial write?)"
    with pytest.warns(UserWarning):
        assert store.cached("a", C(), lambda: 6, _save, _load) == 6


def test_failed_build_keeps_old_artifact(tmp_path):
    store = RunStore(tmp_path)
    store.cached("a", C(1), lambda: 1, _save, _load)

    def boom(obj, d):
        (d / "value.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.cached("a", C(2), lambda: 2, boom, _load)
    assert store.artifact("a", C(1)).check() is None  # the old, valid artifact is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a")]  # temp dirs cleaned


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_text(target, "old")

    def failing(tmp):
        tmp.write_text("partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic_save(target, failing)
    assert target.read_text() == "old"


# ------------------------------------------------------------------------------- stages and deps


def _stages(calls, upstream_n=1):
    up = Stage("up", {"n": upstream_n}, build=lambda ctx: calls.append("up") or upstream_n * 10, save=_save, load=_load)
    down = Stage(
        "down", {"k": 1}, deps={"x": up}, build=lambda ctx, x: calls.append("down") or x + 1, save=_save, load=_load
    )
    return up, down


def test_get_builds_dependencies_first_and_returns_loaded_values(tmp_path):
    store, calls = RunStore(tmp_path), []
    assert store.get(_stages(calls)[1]) == 11
    assert calls == ["up", "down"]
    assert store.get(_stages(calls)[1]) == 11 and calls == ["up", "down"]  # both cached now
    m = store.manifest("down")
    assert m["config"]["deps"]["x"] == {"stage": "up", "key": _stages([])[0].key_hash()}
    assert m["runtime"]["torch_threads"] >= 1 and "deterministic_algorithms" in m["runtime"]


def test_changed_upstream_rebuilds_downstream(tmp_path):
    store, calls = RunStore(tmp_path), []
    store.get(_stages(calls, 1)[1])
    calls.clear()
    with pytest.warns(UserWarning, match="different config"):
        assert store.get(_stages(calls, 2)[1]) == 21
    assert calls == ["up", "down"]


def test_corrupt_upstream_is_rebuilt_but_same_key_keeps_downstream(tmp_path):
    store, calls = RunStore(tmp_path), []
    store.get(_stages(calls)[1])
    (tmp_path / "up" / "value.txt").write_text("999")
    calls.clear()
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.get(_stages(calls)[1]) == 11
    assert calls == ["up"]  # the rebuilt upstream has the same key: downstream stays valid


def test_work_dir_is_keyed_and_removed_after_commit(tmp_path):
    seen = []

    def build(ctx):
        ctx.work_dir.mkdir(parents=True)
        (ctx.work_dir / "ckpt").write_text("x")
        seen.append(ctx.work_dir)
        return 3

    RunStore(tmp_path).get(Stage("w", {"a": 1}, build, _save, _load))
    assert seen[0].name == Stage("w", {"a": 1}, build, _save, _load).key_hash()
    assert not (tmp_path / ".work").exists()


_TWO_PROC = r"""
import sys, time
from pathlib import Path
from tmlib.core.runs import RunStore, Stage
# hold: seconds the build takes, or "other": the build ends once another process has asked for the stage
root, tag, hold = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "other"
log = Path(root).parent / "events.txt"
def note(what):
    with open(log, "a") as fh:
        fh.write(f"{time.time():.6f} {tag} {what}\n")
def another_asked():
    return any(ln.split()[1:] == [t, "ask"] for ln in log.read_text().splitlines() for t in "ab" if t != tag)
def build(ctx):
    with open(Path(root).parent / "builds.txt", "a") as fh:
        fh.write(tag + "\n")
    note("build-start")
    if hold == "other":
        deadline = time.monotonic() + 300
        while not another_asked():
            assert time.monotonic() < deadline, "the other process never asked"
            time.sleep(0.02)
    else:
        time.sleep(float(hold))
    note("build-end")
    return 5
save = lambda v, d: (d / "value.txt").write_text(str(v))
load = lambda d: int((d / "value.txt").read_text())
note("ask")
value = RunStore(root).get(Stage("slow", {"a": 1}, build, save, load))
note("got")
print(value)
"""


def _events(path):
    rows = [line.split() for line in path.read_text().splitlines()]
    return {(tag, what): float(t) for t, tag, what in rows}


def test_two_processes_build_once_the_other_waits_and_loads(tmp_path):
    """Two processes ask for one stage; whichever takes the lock builds it and holds its build open until the other
    has asked (an event, not a time window), so the other always asks during the build: it waits, then loads."""
    import subprocess
    import sys

    root = tmp_path / "run"
    procs = [
        subprocess.Popen([sys.executable, "-c", _TWO_PROC, str(root), tag], stdout=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["5", "5"]
    assert len((tmp_path / "builds.txt").read_text().split()) == 1  # built exactly once
    assert RunStore(root).valid("slow")
    assert not [p for p in root.iterdir() if p.name.startswith(".slow")]  # nothing half-written left
    # the timestamps: the other process asked while the build ran, waited, and got the value after it ended
    ev = _events(tmp_path / "events.txt")
    builder = (tmp_path / "builds.txt").read_text().split()[0]
    waiter = "b" if builder == "a" else "a"
    assert ev[(waiter, "ask")] < ev[(builder, "build-end")] <= ev[(waiter, "got")]
    assert (waiter, "build-start") not in ev


def test_a_builder_killed_holding_the_lock_lets_the_waiter_build(tmp_path):
    """SIGKILL the process that holds a stage's lock mid-build: the waiting process takes the lock, builds the
    stage itself, and nothing the killed build left behind is used."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "run"
    a = subprocess.Popen([sys.executable, "-c", _TWO_PROC, str(root), "a", "60"], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "builds.txt").is_file() and time.time() < deadline:  # a holds the lock and builds
        time.sleep(0.05)
    b = subprocess.Popen([sys.executable, "-c", _TWO_PROC, str(root), "b", "0.1"], stdout=subprocess.PIPE, text=True)
    while " b ask" not in (tmp_path / "events.txt").read_text() and time.time() < deadline:  # b asked
        time.sleep(0.05)
    killed = time.time()  # that b waits instead of building beside a is the two-process test's promise (no window)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    assert b.communicate(timeout=120)[0].strip() == "5" and b.returncode == 0
    assert (tmp_path / "builds.txt").read_text().split() == ["a", "b"]  # the waiter built it after the kill
    ev = _events(tmp_path / "events.txt")
    assert ("a", "build-end") not in ev and killed < ev[("b", "build-start")] < ev[("b", "got")]
    assert RunStore(root).valid("slow") and (root / "slow" / "value.txt").read_text() == "5"


def test_unwritable_run_folder_is_a_clear_error(tmp_path):
    import os

    from tmlib.core.runs import ArtifactError

    ro = tmp_path / "ro"
    ro.mkdir()
    RunStore(ro).cached("a", C(1), lambda: 1, _save, _load)
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write read-only folders (root)")
        with pytest.raises(ArtifactError, match="could not write artifact"):
            RunStore(ro).cached("b", C(1), lambda: 1, _save, _load)
    finally:
        os.chmod(ro, 0o700)
    assert RunStore(ro).valid("a")


def test_progress_lines_go_to_the_log_file_named(tmp_path, capsys):
    """A store of sub-artifacts (notebook 03's solutions/) logs into its notebook's progress.log, the file
    `tmlib suite` follows; without log_file the log is the store's own root/progress.log."""
    calls = []
    store = RunStore(tmp_path / "nb" / "solutions", progress=True, log_file=tmp_path / "nb" / "progress.log")
    store.get(_stages(calls)[1])
    RunStore(store.root, progress=True, log_file=store.log_file).get(_stages(calls)[1])  # a rerun: loads
    lines = (tmp_path / "nb" / "progress.log").read_text().splitlines()
    assert any(line.endswith("down: building") for line in lines) and any("down: built in" in line for line in lines)
    assert any(line.endswith("down: cached") for line in lines)
    assert not (tmp_path / "nb" / "solutions" / "progress.log").exists()
    assert "down: built in" in capsys.readouterr().out
    quiet = RunStore(tmp_path / "q")
    quiet.get(_stages(calls)[1])
    assert not (tmp_path / "q" / "progress.log").exists()


def test_dev_folder_reuses_the_default_run_without_writing_it(tmp_path):
    """runs/dev/<nb> loads a valid artifact of runs/default/<nb> (read-only), builds what is new in runs/dev."""
    calls = []
    build = lambda ctx: calls.append(1) or len(calls)
    made = RunStore(tmp_path / "runs" / "default" / "01_x")
    made.get(Stage("a", C(1), build, _save, _load))
    before = sorted(p.name for p in (tmp_path / "runs" / "default" / "01_x").iterdir())
    dev = RunStore(tmp_path / "runs" / "dev" / "01_x")
    assert dev.reuse == [tmp_path / "runs" / "default" / "01_x"]
    assert dev.get(Stage("a", C(1), build, _save, _load)) == 1  # reused, not rebuilt
    assert dev.folder("a") == tmp_path / "runs" / "default" / "01_x" / "a" and calls == [1]
    assert dev.get(Stage("a", C(2), build, _save, _load)) == 2  # a new key: built in runs/dev
    assert dev.folder("a") == tmp_path / "runs" / "dev" / "01_x" / "a"
    assert sorted(p.name for p in (tmp_path / "runs" / "default" / "01_x").iterdir()) == before
    assert RunStore(tmp_path / "elsewhere").reuse == []


def test_notebook_out_dir_is_taken_from_the_project_root(tmp_path, monkeypatch):
    from dataclasses import dataclass

    from tmlib.core.config import notebook_config

    @dataclass
    class Cfg:
        out_dir: str = "runs/dev/01_x"

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "papermill_params").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where JupyterLab starts a notebook's kernel
    assert notebook_config(Cfg, {}, set()).out_dir == str(tmp_path / "runs" / "dev" / "01_x")
    assert notebook_config(Cfg, {"out_dir": "/abs/x"}, set()).out_dir == "/abs/x"


def test_progress_lines_go_through_the_tmlib_logger(tmp_path, capsys, caplog):
    """A stage's lines reach logging.getLogger("tmlib") (printed to stdout by default); silencing the logger keeps
    progress.log complete."""
    import logging

    store = RunStore(tmp_path, progress=True)
    store.cached("a", C(), lambda: 1, _save, _load)
    assert "a: building" in capsys.readouterr().out
    log = logging.getLogger("tmlib")
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log.addHandler(handler)
    old = log.level
    try:
        store.cached("b", C(), lambda: 2, _save, _load)
        log.setLevel(logging.WARNING)
        store.cached("c", C(), lambda: 3, _save, _load)
    finally:
        log.setLevel(old)
        log.removeHandler(handler)
    assert any(s.endswith("b: building") for s in seen) and not any("c:" in s for s in seen)
    assert "c: building" not in capsys.readouterr().out
    assert "c: building" in (tmp_path / "progress.log").read_text()


def test_json_default_writes_what_a_manifest_or_table_holds(tmp_path):
    from pathlib import Path

    import numpy as np

    store = RunStore(tmp_path)

    class Odd:
        def __str__(self):
            return "odd"

    class Scalar:  # has item() only
        def item(self):
            return 7

    obj = {
        "cfg": C(3),
        "path": Path("a/b"),
        "n": np.int64(5),
        "x": np.float32(0.5),
        "arr": np.arange(3),
        "o": Odd(),
        "s": Scalar(),
    }
    path = store.write_json("facts.json", obj)
    assert path == tmp_path / "facts.json" and path.read_text().endswith("\n")
    assert json.loads(path.read_text()) == {
        "arr": [0, 1, 2],
        "cfg": {"n": 3},
        "n": 5,
        "o": "odd",
        "path": "a/b",
        "s": 7,
        "x": 0.5,
    }
    assert list(json.loads(path.read_text())) == sorted(obj)  # keys sorted: a stable file


def test_write_csv_and_save_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    store = RunStore(tmp_path)
    assert store.write_csv("t.csv", pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})).read_text() == "a,b\n1,x\n2,y\n"
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    png, svg, bare = store.save_figure("f.png", fig), store.save_figure("f.svg", fig), store.save_figure("f", fig)
    hi = store.save_figure("hi.png", fig, dpi=260)
    assert png == tmp_path / "f.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bare.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # no suffix: PNG
    assert b"<svg" in svg.read_bytes()[:400]

    def width(p):
        return int.from_bytes(p.read_bytes()[16:20], "big")

    assert 1.8 < width(hi) / width(png) < 2.2
    ref = __import__("io").BytesIO()
    fig.savefig(ref, format="png", dpi=130, bbox_inches="tight")  # 130 dpi by default, cropped to the content
    assert png.read_bytes() == ref.getvalue()
    plt.close(fig)
    assert not list(tmp_path.glob(".*tmp"))


def test_has_looks_here_and_in_the_reuse_folders(tmp_path):
    other = tmp_path / "other"
    stage = Stage("a", C(1), lambda ctx: 1, _save, _load)
    RunStore(other).get(stage)
    store = RunStore(tmp_path / "here", reuse=[other])
    assert store.has(stage) and not RunStore(tmp_path / "alone", reuse=[]).has(stage)
    assert not store.has(Stage("a", C(2), lambda ctx: 2, _save, _load))  # another config
    b = Stage("b", C(1), lambda ctx: 1, _save, _load)
    store.get(b)
    assert store.has(b) and not RunStore(other).has(b)
    assert not store.has(Stage("b", C(1), lambda ctx: 2, _save, _load))  # other code: rebuilt, not loaded
    store.cached("s", C(1), lambda: 1, _save, _load, seed=5)
    assert json.loads((tmp_path / "here" / "s" / "manifest.json").read_text())["seed"] == 5


def test_a_stage_logs_under_its_name(tmp_path):
    store = RunStore(tmp_path, progress=True)

    def build(ctx):
        ctx.log("half way")
        return 1

    store.get(Stage("s", C(1), build, _save, _load))
    lines = (tmp_path / "progress.log").read_text().splitlines()
    assert any(line.endswith(" [s] half way") for line in lines), lines


def test_recovery_restores_the_newest_version_moved_aside(tmp_path):
    import os

    from tmlib.core.runs import recover_partial_writes

    for name, mtime in ((".a.old-9", 1_000_000_000), (".a.old-10", 2_000_000_000)):  # name order != time order
        (tmp_path / name).mkdir()
        (tmp_path / name / "v.txt").write_text(name)
        os.utime(tmp_path / name, (mtime, mtime))
    (tmp_path / ".a.abcd1234").mkdir()  # a partial write
    done = recover_partial_writes(tmp_path / "a")
    assert (tmp_path / "a" / "v.txt").read_text() == ".a.old-10"  # the newest
    assert done[0].startswith("restored the previous a") and len(done) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert recover_partial_writes(tmp_path / "missing" / "a") == []


def test_manifest_records_versions_and_runtime(tmp_path, monkeypatch):
    import os
    import platform

    import tmlib
    from tmlib.core import runs

    monkeypatch.setattr(runs, "VERSIONED", (*runs.VERSIONED, "no-such-package-tmlib"))
    RunStore(tmp_path).cached("a", C(), lambda: 1, _save, _load)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    v, r = manifest["versions"], manifest["runtime"]
    assert v["tmlib"] == tmlib.__version__ and v["python"] == platform.python_version()
    assert v["no-such-package-tmlib"] == "not installed"
    assert r["pid"] == os.getpid() and r["cpu_count"] == os.cpu_count() and r["machine"] == platform.machine()
    assert isinstance(r["cuda"], bool)


def test_manifest_layout_and_the_key_hash_stay_stable(tmp_path):
    """The manifest's fields and a stage's key hash are what an existing run folder is checked against: their
    layout must not drift, or every artifact of every run would be rebuilt."""
    import re

    from tmlib.core.config import config_hash

    store, calls = RunStore(tmp_path), []
    up, down = _stages(calls)
    store.get(down)
    m = store.manifest("down")
    assert m["config"] == {"config": {"k": 1}, "deps": {"x": {"stage": "up", "key": up.key_hash()}}}
    assert m["stage"] == "down" and m["build_seconds"] >= 0 and m["code"] == down.code()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", m["created"])
    assert down.key_hash() == config_hash({"key": down.key(), "code": down.code()})
    assert up.key() == {"n": 1}  # no dependencies: the config itself


def test_code_is_fingerprinted_once_per_stage_from_build_save_and_load(monkeypatch):
    from tmlib.core import fingerprint

    def save_other(obj, d):
        (d / "other.txt").write_text(str(obj))

    def load_other(d):
        return int((d / "other.txt").read_text())

    base = Stage("a", C(1), lambda ctx: 1, _save, _load)
    assert base.code() != Stage("a", C(1), base.build, save_other, _load).code()
    assert base.code() != Stage("a", C(1), base.build, _save, load_other).code()
    calls = []
    real = fingerprint.code_fingerprint
    monkeypatch.setattr(fingerprint, "code_fingerprint", lambda *f: calls.append(f) or real(*f))
    stage = Stage("b", C(1), lambda ctx: 2, _save, _load)
    assert stage.code() == stage.code() == stage.code() and len(calls) == 1


def test_another_code_rebuilds_and_locks_are_named_per_stage(tmp_path):
    from filelock import FileLock, Timeout

    store, built = RunStore(tmp_path, lock_timeout=0.2), []
    store.get(Stage("sub/a", C(1), lambda ctx: built.append(1) or 1, _save, _load))
    assert (tmp_path / ".locks" / "sub__a.lock").exists()
    assert RunStore(tmp_path).get(Stage("sub/a", C(1), lambda ctx: built.append(2) or 2, _save, _load)) == 2
    assert built == [1, 2]  # the same name and config built by other code: rebuilt, not loaded
    with FileLock(str(tmp_path / ".locks" / "b.lock")), pytest.raises(Timeout):
        store.get(Stage("b", C(1), lambda ctx: 3, _save, _load))  # lock_timeout is the wait for another builder


def test_a_loaded_artifact_is_not_hashed_again_until_it_changes(tmp_path, monkeypatch):
    from tmlib.core import runs
    from tmlib.core.runs import _stat_signature

    default = tmp_path / "runs" / "default" / "nb"
    stage = Stage("a", C(1), lambda ctx: 1, _save, _load)
    RunStore(default).get(stage)
    store, here = RunStore(tmp_path / "runs" / "dev" / "nb"), RunStore(tmp_path / "own")
    assert store.get(stage) == 1 and here.get(stage) == 1  # reused from runs/default; built in own
    hashed = []
    real = runs.sha256_file
    monkeypatch.setattr(runs, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert store.get(stage) == 1 and here.get(stage) == 1 and hashed == []
    assert store.folder("a") == default / "a"
    (default / "a" / "value.txt").write_text("7")  # the reused artifact changed (same size): checked again
    assert store.get(stage) == 1 and hashed and (tmp_path / "runs" / "dev" / "nb" / "a").is_dir()
    assert {name for name, _, _ in _stat_signature(default / "a")} == {"value.txt", "manifest.json"}


def test_an_artifact_committed_with_a_dataclass_config(tmp_path):
    from tmlib.core.runs import Artifact

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "v.txt").write_text("1")
    art = Artifact(tmp_path / "a", C(3))
    art.commit(seed=4)
    m = art.manifest()
    assert m["config"] == {"n": 3} and m["seed"] == 4 and list(m["files"]) == ["v.txt"] and art.check() is None


def test_a_build_gets_its_context_and_reports_through_the_stage_log(tmp_path):
    import re

    from tmlib.core import heartbeat

    seen, started = {}, []

    def build(ctx):
        seen.update(name=ctx.name, key=ctx.key_hash, work=ctx.work_dir, sink=heartbeat._SINK.get())
        heartbeat._SINK.get()("step 3 of 9")  # what a Heartbeat inside the build writes
        return 1

    stage = Stage("s", C(1), build, _save, _load)
    RunStore(tmp_path, progress=True, on_build=started.append).get(stage)
    assert started == ["s"] and seen["name"] == "s" and seen["key"] == stage.key_hash()
    assert seen["work"] == tmp_path / ".work" / "s" / stage.key_hash() and not (tmp_path / ".work").exists()
    lines = (tmp_path / "progress.log").read_text().splitlines()
    assert any(line.endswith(" [s] step 3 of 9") for line in lines)
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines)
    built = [line for line in lines if " s: built in " in line]
    assert len(built) == 1 and float(re.search(r"built in ([\d.]+) s", built[0]).group(1)) < 60
    assert RunStore(tmp_path).manifest("s")["build_seconds"] < 60
    RunStore(tmp_path / "quiet").get(
        Stage("q", C(1), lambda ctx: seen.update(q=heartbeat._SINK.get()) or 1, _save, _load)
    )
    assert seen["q"] is None  # without progress nothing reports


def test_a_first_build_warns_nothing_a_rebuild_says_why(tmp_path):
    import warnings as w

    store = RunStore(tmp_path)
    with w.catch_warnings(record=True) as rec:
        w.simplefilter("always")
        store.get(Stage("a", C(1), lambda ctx: 1, _save, _load))
    assert rec == []  # a missing artifact is simply built
    (tmp_path / ".a.abcd1234").mkdir()  # a partial write left by a kill
    with pytest.warns(UserWarning, match=r"removed \.a\.abcd1234 \(a partial write\)"):
        RunStore(tmp_path).get(Stage("a", C(1), lambda ctx: 1, _save, _load))
    with pytest.warns(UserWarning, match="produced by a different config"):
        RunStore(tmp_path).get(Stage("a", C(2), lambda ctx: 2, _save, _load))


def test_reuse_needs_the_same_code_and_is_logged(tmp_path):
    default, dev = tmp_path / "runs" / "default" / "nb", tmp_path / "runs" / "dev" / "nb"
    RunStore(default).get(Stage("a", C(1), lambda ctx: 1, _save, _load))
    store = RunStore(dev, progress=True)
    assert store.get(Stage("a", C(1), lambda ctx: 2, _save, _load)) == 2  # other code: built here
    assert store.get(Stage("b", C(1), lambda ctx: 3, _save, _load)) == 3
    RunStore(default).get(Stage("c", C(1), lambda ctx: 4, _save, _load))
    assert RunStore(dev, progress=True).get(Stage("c", C(1), lambda ctx: 4, _save, _load)) == 4
    assert f"c: reused from {default}" in (dev / "progress.log").read_text()


def test_a_failed_write_names_the_folder_and_the_fix(tmp_path, monkeypatch):
    import errno

    from tmlib.core import runs
    from tmlib.core.runs import ArtifactError

    def full(path, writer):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "atomic_save", full)
    with pytest.raises(
        ArtifactError, match=r"\(No space left on device\); free disk space or choose another out_dir; "
    ):
        RunStore(tmp_path).get(Stage("a", C(1), lambda ctx: 1, _save, _load))
    with pytest.raises(ArtifactError, match=r"earlier artifacts are intact$"):
        RunStore(tmp_path).get(Stage("a", C(1), lambda ctx: 1, _save, _load))


def test_atomic_writes_create_folders_and_write_beside_the_target(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    from tmlib.core import runs
    from tmlib.core.runs import atomic_write_json

    assert atomic_write_text(tmp_path / "x" / "y" / "f.txt", "é").read_bytes() == "é".encode()
    assert atomic_save(tmp_path / "p" / "q" / "a", lambda t: t.mkdir()).is_dir()
    path = atomic_write_json(tmp_path / "m.json", {"b": [1], "a": 1})
    assert path.read_text() == '{\n  "a": 1,\n  "b": [\n    1\n  ]\n}\n'  # indented, sorted: a readable manifest
    moved = []
    real = runs.os.replace
    monkeypatch.setattr(runs.os, "replace", lambda src, dst: moved.append(Path(src)) or real(src, dst))
    atomic_write_text(tmp_path / "f.txt", "1")
    assert moved[0].parent == tmp_path and re.fullmatch(r"\.f\.txt\..+\.tmp", moved[0].name), moved


def test_a_cleanup_that_fails_never_fails_the_write(tmp_path, monkeypatch):
    """Removing a temp folder or a version moved aside is best effort: an error there (a file held open on some
    file systems) must not turn a finished write into a failure."""
    from tmlib.core import runs
    from tmlib.core.runs import recover_partial_writes

    def rmtree(path, ignore_errors=False):
        if not ignore_errors:
            raise PermissionError(f"cannot remove {path}")

    monkeypatch.setattr(runs.shutil, "rmtree", rmtree)
    (tmp_path / "a").mkdir()
    atomic_save(tmp_path / "a", lambda t: t.mkdir())  # swaps a folder: the old one and the temp folder are removed
    (tmp_path / ".b.abcd1234").mkdir()
    (tmp_path / ".b.old-12").mkdir()
    (tmp_path / "b").mkdir()
    assert len(recover_partial_writes(tmp_path / "b")) == 2


def test_check_and_manifest_say_what_is_wrong(tmp_path):
    from tmlib.core.config import config_hash
    from tmlib.core.runs import Artifact, ArtifactError

    store = RunStore(tmp_path)
    assert Artifact(tmp_path / "none", {}).check() == "missing"
    (tmp_path / "half").mkdir()
    assert Artifact(tmp_path / "half", {}).check() == "no manifest (partial write?)"
    with pytest.raises(ArtifactError, match=r"half has no manifest.json: it was never built or its write was cut off"):
        store.manifest("half")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    assert Artifact(tmp_path / "bad", {}).check() == "unreadable manifest"
    with pytest.raises(ArtifactError, match=r"manifest.json is unreadable \(.*\); delete .*bad to rebuild it$"):
        store.manifest("bad")
    assert not store.valid("bad") and not store.valid("none")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "manifest.json").write_text(json.dumps({"config_hash": config_hash({"n": 1}), "code": "c1"}))
    assert Artifact(tmp_path / "ok", {"n": 1}).check() is None  # no files listed: nothing to hash
    assert Artifact(tmp_path / "ok", {"n": 2}).check() == "produced by a different config"
    other = Artifact(tmp_path / "ok", {"n": 1}, code="c2").check()
    assert other == "built by different code (a function its build reaches was edited)"


def test_a_lock_folder_that_cannot_be_made_still_loads_a_valid_artifact(tmp_path, monkeypatch):
    """A read-only or full disk: no lock can be taken; a valid artifact still loads (and is not hashed again on the
    next get), a missing one is an error naming the folder and the fix."""
    import shutil

    from tmlib.core import runs
    from tmlib.core.runs import ArtifactError

    stage = Stage("a", C(1), lambda ctx: 1, _save, _load)
    RunStore(tmp_path).get(stage)
    shutil.rmtree(tmp_path / ".locks")
    (tmp_path / ".locks").write_text("")  # a file where the lock folder goes: mkdir fails as on a read-only disk
    store = RunStore(tmp_path)
    assert store.get(stage) == 1
    hashed = []
    real = runs.sha256_file
    monkeypatch.setattr(runs, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert store.get(stage) == 1 and hashed == []
    with pytest.raises(ArtifactError, match=r"cannot create lock folder .*\.locks \(File exists\); choose a writable"):
        store.get(Stage("b", C(1), lambda ctx: 2, _save, _load))
