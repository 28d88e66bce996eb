"""Faults a long run meets, each simulated for real: a full or read-only disk under the run folder, a kill
in the middle of an artifact write, a corrupted cached dataset or checkpoint, a kernel that dies under the
suite runner. Each ends in a clear error or a rebuild, never in a run that uses a half-written file."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tmlib.core import runs
from tmlib.core.runs import ArtifactError, RunStore, Stage


@dataclass
class C:
    n: int = 1


def _save(obj, d):
    (d / "value.txt").write_text(str(obj))


def _load(d):
    return int((d / "value.txt").read_text())


def _stage(n: int, build=None, save=_save) -> Stage:
    return Stage("a", C(n), build or (lambda ctx: n * 10), save, _load)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".a."))


def _full_or_readonly(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


# ---------------------------------------------------------------- (a) full or read-only disk


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("where", ["mkdtemp", "save", "manifest", "move_aside", "swap_in", "swap_in_and_back"])
def test_full_or_readonly_disk_is_a_clear_error_and_keeps_earlier_artifacts(tmp_path, monkeypatch, code, where):
    """Rebuilding artifact `a` (a new config) when the disk is full or read-only, failing at each write of
    the build: the temp folder, a file of the stage, the manifest, moving the old version aside, renaming
    the new one in place (after the old one was moved aside). The error names the artifact's folder and
    the fix; the earlier artifact still validates and loads; no temp folder is left; after the disk is
    fixed the same call builds."""
    store = RunStore(tmp_path)
    assert store.get(_stage(1)) == 10
    save = _save
    if where == "mkdtemp":
        monkeypatch.setattr(runs.tempfile, "mkdtemp", _full_or_readonly(code))
    elif where == "save":

        def save(obj, d):  # the stage's own writer hits the full disk half-way
            (d / "value.txt").write_text("2")
            raise OSError(code, os.strerror(code), str(d / "weights.bin"))
    else:
        real = os.replace
        fails = {
            "manifest": lambda dst: dst.name == "manifest.json",
            "move_aside": lambda dst: dst.name.startswith(".a.old-"),
            "swap_in": lambda dst: dst == tmp_path / "a",
            "swap_in_and_back": lambda dst: dst == tmp_path / "a",
        }[where]

        def replace(src, dst):
            putting_back = Path(src).name.startswith(".a.old-")
            if fails(Path(dst)) and (where == "swap_in_and_back" or not putting_back):
                raise OSError(code, os.strerror(code))
            return real(src, dst)

        monkeypatch.setattr(runs.os, "replace", replace)
    with pytest.warns(UserWarning, match="different config"), pytest.raises(ArtifactError) as err:
        RunStore(tmp_path).get(_stage(2, save=save))
    msg = str(err.value)
    assert f"could not write artifact {tmp_path / 'a'} ({os.strerror(code)})" in msg
    assert "free disk space or choose another out_dir; earlier artifacts are intact" in msg
    monkeypatch.undo()
    if where == "swap_in_and_back":
        # not even the old version could be renamed back: it waits aside, and the next run puts it back
        assert not (tmp_path / "a").exists() and [n for n in _leftovers(tmp_path) if n.startswith(".a.old-")]
        with pytest.warns(UserWarning, match="restored the previous a"):
            assert RunStore(tmp_path).get(_stage(1)) == 10
    assert store.artifact("a", C(1)).check() is None and _load(tmp_path / "a") == 10
    assert RunStore(tmp_path).get(_stage(1)) == 10  # the earlier artifact is used as it is
    assert _leftovers(tmp_path) == []
    with pytest.warns(UserWarning, match="different config"):
        assert RunStore(tmp_path).get(_stage(2)) == 20  # disk fixed: the same call builds


def test_readonly_run_folder_still_loads_valid_artifacts_and_names_the_fix_for_a_build(tmp_path, monkeypatch):
    """A run folder on a disk that became read-only (lock files cannot be opened): valid artifacts still
    load; a stage that needs building stops with an ArtifactError naming the folder and the fix."""
    RunStore(tmp_path).get(_stage(1))
    real_open = os.open

    def readonly_open(path, flags, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", readonly_open)
    assert RunStore(tmp_path).get(_stage(1)) == 10
    with pytest.raises(
        ArtifactError,
        match=rf"cannot lock b in {tmp_path} to build it \(Read-only file system\); "
        "free disk space, make the folder writable or choose another out_dir",
    ):
        RunStore(tmp_path).get(Stage("b", C(1), lambda ctx: 1, _save, _load))
    monkeypatch.undo()
    assert not (tmp_path / "b").exists() and RunStore(tmp_path).valid("a")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs) where this user may mount one (root in a container), else None."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    yield disk if mounted.returncode == 0 else None
    if mounted.returncode == 0:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


_FILL = r"""
import resource, signal, sys
from dataclasses import dataclass
from pathlib import Path
from tmlib.core.runs import ArtifactError, RunStore, Stage

@dataclass
class C:
    n: int = 1

def save(obj, d):
    (d / "value.txt").write_text(str(obj))
    (d / "weights.bin").write_bytes(b"\0" * (4 << 20))   # 4 MiB: more than the disk (or the size limit) holds

root = Path(sys.argv[1])
load = lambda d: int((d / "value.txt").read_text())
RunStore(root).get(Stage("a", C(1), lambda ctx: 10, lambda o, d: (d / "value.txt").write_text(str(o)), load))
if sys.argv[2] == "limit":   # no file system to fill: the kernel's per-process file size limit fails the write
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    RunStore(root).get(Stage("a", C(2), lambda ctx: 20, save, load))
except ArtifactError as exc:
    print(exc)
"""


def test_a_really_full_disk_is_a_clear_error_and_keeps_the_earlier_artifact(tmp_path, small_disk):
    """No monkeypatching: a build writes 4 MiB onto a 1 MiB tmpfs (where one can be mounted; else under a 1 MiB
    RLIMIT_FSIZE, the kernel failing the write). The error names the folder and the fix; the earlier artifact
    still validates and loads; no temp folder is left."""
    root, how = (small_disk, "tmpfs") if small_disk else (tmp_path / "run", "limit")
    proc = subprocess.run(
        [sys.executable, "-c", _FILL, str(root), how], capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    reason = os.strerror(errno.ENOSPC if how == "tmpfs" else errno.EFBIG)
    assert f"could not write artifact {root / 'a'} ({reason})" in proc.stdout, (proc.stdout, proc.stderr[-2000:])
    assert "free disk space or choose another out_dir; earlier artifacts are intact" in proc.stdout
    assert RunStore(root).artifact("a", C(1)).check() is None and _load(root / "a") == 10
    assert _leftovers(root) == []


def test_a_really_read_only_run_folder_loads_valid_artifacts_and_names_the_fix(tmp_path, small_disk):
    """No monkeypatching: the run folder's file system remounted read-only (or, for a user who is not root, the
    folder made read-only). A valid artifact loads; a stage that needs building names the folder and the fix."""
    root = small_disk or tmp_path / "run"
    RunStore(root).get(_stage(1))
    if small_disk:
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True, capture_output=True)
    elif os.geteuid() != 0:
        root.chmod(0o555)
    else:
        pytest.skip("root without mount: no real read-only folder to make")
    try:
        assert RunStore(root).get(_stage(1)) == 10
        with pytest.raises(ArtifactError, match=r"free disk space, make the folder writable or choose another out_dir"):
            RunStore(root).get(Stage("b", C(1), lambda ctx: 1, _save, _load))
    finally:
        if not small_disk:
            root.chmod(0o755)
    assert not (root / "b").exists()


def test_run_folder_that_cannot_be_created_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", _full_or_readonly(errno.EROFS))
    with pytest.raises(
        ArtifactError,
        match=rf"cannot create the run folder {tmp_path / 'new'} \(Read-only file system\); "
        "choose a writable out_dir",
    ):
        RunStore(tmp_path / "new")


# ---------------------------------------------------------------- (b) a kill during an artifact write

_KILLED = r"""
import os, signal, sys
from dataclasses import dataclass
from pathlib import Path
from tmlib.core import runs
from tmlib.core.runs import RunStore, Stage

@dataclass
class C:
    n: int = 1

root, where = Path(sys.argv[1]), sys.argv[2]

def save(obj, d):
    (d / "value.txt").write_text(str(obj))
    (d / "weights.bin").write_bytes(b"\0" * 100_000)
    if where == "save":
        os.kill(os.getpid(), signal.SIGKILL)   # killed half-way through writing the artifact

if where == "swap":   # killed between moving the old version aside and renaming the new one in place
    real = os.replace
    def replace(src, dst):
        if Path(dst) == root / "a":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    runs.os.replace = replace
RunStore(root).get(Stage("a", C(2), lambda ctx: 20, save, lambda d: int((d / "value.txt").read_text())))
print("not killed")
"""


@pytest.mark.parametrize("where", ["save", "swap"])
def test_kill_during_artifact_write_is_detected_and_rebuilt(tmp_path, where):
    """A process SIGKILLed while writing artifact `a` (in its stage's save, or between the two renames
    of the swap) leaves no half-written artifact under `a`; the next get cleans the leftover (or puts
    the previous version back), warns, and rebuilds."""
    RunStore(tmp_path).get(_stage(1))
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, str(tmp_path), where],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == -9 and "not killed" not in proc.stdout, proc.stderr[-2000:]
    left = _leftovers(tmp_path)
    if where == "save":
        # the partial write is only in a temp folder; `a` is still the previous, valid version
        assert len(left) == 1 and (tmp_path / left[0] / "a" / "weights.bin").is_file()
        assert RunStore(tmp_path).valid("a") and _load(tmp_path / "a") == 10
        expect = "removed .a.* (a partial write)"
    else:
        # `a` was moved aside and the new version not yet renamed in place
        assert not (tmp_path / "a").exists() and any(n.startswith(".a.old-") for n in left)
        expect = "restored the previous a (a swap cut off between its two renames)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert RunStore(tmp_path).get(_stage(2)) == 20
    said = [str(w.message) for w in caught]
    assert any(expect.split("*")[0] in m and expect.split("*")[-1] in m for m in said), said
    assert any("produced by a different config" in m for m in said), said  # the previous version is not used
    assert _leftovers(tmp_path) == [] and RunStore(tmp_path).valid("a")
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["config"] == {"n": 2}


def test_a_swap_whose_second_rename_fails_puts_the_previous_version_back(tmp_path, monkeypatch):
    """In-process, the folder swap's second rename failing (a disk error) puts the previous version back where it
    was and raises: the folder is never missing or half-new (a kill there is the recovery's case, above)."""
    from tmlib.core import runs

    target = tmp_path / "a"
    runs.atomic_save(target, lambda d: (d.mkdir(), (d / "value.txt").write_text("old")))
    real = os.replace

    def replace(src, dst):
        if Path(dst) == target and ".old-" not in Path(src).name:  # the new version's rename into place
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(runs.os, "replace", replace)
    with pytest.raises(OSError, match="I/O error"):
        runs.atomic_save(target, lambda d: (d.mkdir(), (d / "value.txt").write_text("new")))
    assert (target / "value.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no old copy or temp folder left behind


# ---------------------------------------------------------------- (c) corrupted dataset / checkpoint


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_cached_dataset_is_detected_and_rebuilt(tmp_path):
    """A `datasets` folder saved by a stage, one byte flipped in its Arrow file: the next run finds the
    hash mismatch, warns, rebuilds, and loads the rebuilt rows (not the corrupt ones)."""
    from datasets import Dataset

    rows = {"text": [f"sentence {i}" for i in range(200)], "label": [i % 2 for i in range(200)]}
    builds = []
    stage = Stage(
        "labels",
        {"n": 200},
        lambda ctx: builds.append(1) or Dataset.from_dict(rows),
        lambda ds, d: ds.save_to_disk(str(d / "data")),
        lambda d: Dataset.load_from_disk(str(d / "data")),
    )
    assert RunStore(tmp_path).get(stage)["text"] == rows["text"]
    arrow = next((tmp_path / "labels" / "data").glob("*.arrow"))
    data = arrow.read_bytes()
    _flip(arrow, data.index(b"sentence 123") + len("sentence "))  # "sentence 123" -> a garbled digit
    assert (
        RunStore(tmp_path).artifact("labels", stage.key()).check()
        == f"file data/{arrow.name} is corrupt (hash mismatch)"
    )
    with pytest.warns(UserWarning, match=rf"labels is not reusable \(file data/{arrow.name} is corrupt"):
        ds = RunStore(tmp_path).get(stage)
    assert ds["text"] == rows["text"] and ds["label"] == rows["label"] and len(builds) == 2


def test_truncated_checkpoint_is_detected_and_rebuilt(tmp_path):
    """A model checkpoint artifact (model.safetensors) truncated, as by a disk that filled up under another
    writer: detected by size and hash, rebuilt, and the rebuilt weights equal the original ones."""
    import torch

    from tmlib.core.models import load_mlm

    def save(model, d):
        model.save_pretrained(d / "model")

    def load(d):
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM.from_pretrained(d / "model")

    stage = Stage("genept", {"seed": 0}, lambda ctx: load_mlm("scratch:tiny", seed=0), save, load)
    store = RunStore(tmp_path)
    first = {k: v.clone() for k, v in store.get(stage).state_dict().items()}
    ckpt = tmp_path / "genept" / "model" / "model.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"genept is not reusable \(file model/model.safetensors is corrupt"):
        again = store.get(stage)  # the same store: the changed size makes it re-hash
    assert (
        all(torch.equal(first[k], v) for k, v in again.state_dict().items())
        and first.keys() == again.state_dict().keys()
    )
    _flip(ckpt, ckpt.stat().st_size - 10)  # same size, one weight byte: a new run re-hashes every file
    with pytest.warns(UserWarning, match="model/model.safetensors is corrupt"):
        again = RunStore(tmp_path).get(stage)
    assert all(torch.equal(first[k], v) for k, v in again.state_dict().items())


# ---------------------------------------------------------------- (d) a kernel that dies mid-notebook


@pytest.fixture
def dying_notebook(tmp_path, monkeypatch):
    """A one-notebook suite whose notebook runs, or (``DIE=exit|kill`` in its parameters) kills its own
    kernel half-way: ``os._exit(1)`` or SIGKILL."""
    import nbformat

    from tmlib import suite

    nbdir, pdir = tmp_path / "notebooks", tmp_path / "params"
    (pdir / "00_dying").mkdir(parents=True)
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    nb.cells = [
        nbformat.v4.new_code_cell('out_dir = "x"\ndie = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os, pathlib, signal\nprint('first cell ran')"),
        nbformat.v4.new_code_cell(
            "if die == 'exit':\n    os._exit(1)\nif die == 'kill':\n    os.kill(os.getpid(), signal.SIGKILL)"
        ),
        nbformat.v4.new_code_cell(
            "p = pathlib.Path(out_dir); p.mkdir(parents=True, exist_ok=True)\n"
            "(p / 'summary.csv').write_text('metric,value\\ndone,1\\n')"
        ),
    ]
    nbformat.write(nb, nbdir / "00_dying.ipynb")
    for name, die in (("good", ""), ("exit", "exit"), ("kill", "kill")):
        (pdir / "00_dying" / f"{name}.yaml").write_text(f"die: '{die}'\n")
    monkeypatch.setattr(suite, "NOTEBOOKS", nbdir)
    monkeypatch.setattr(suite, "PARAMS", pdir)
    return nbdir / "00_dying.ipynb"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "kill"])
def test_kernel_dying_mid_notebook_keeps_the_failed_notebook_and_the_good_one(dying_notebook, tmp_path, capsys, how):
    """run_notebook and the suite runner, with a kernel that exits or is SIGKILLed in cell 3: the
    executed notebook so far is kept as 00_dying.failed.ipynb, the previous good 00_dying.ipynb is
    untouched (byte for byte), and the reason is one line (printed by the suite and in its error)."""
    import nbformat
    from nbclient.exceptions import DeadKernelError

    from tmlib import suite

    out = tmp_path / "run"
    good = suite.run_notebook(dying_notebook, "good", out)
    before = good.read_bytes()
    with pytest.raises(DeadKernelError, match="Kernel died"):
        suite.run_notebook(dying_notebook, how, out)
    failed = out / "00_dying.failed.ipynb"
    assert good.read_bytes() == before and failed.is_file() and not list(out.glob(".*partial*"))
    cells = nbformat.read(failed, as_version=4).cells
    # what ran is kept
    assert "first cell ran" in "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
    failed.unlink()

    with pytest.raises(RuntimeError) as err:
        suite.run_suite(how, out)
    msg = str(err.value)
    assert "\n" not in msg and "00_dying.ipynb failed with parameter set" in msg
    assert "(DeadKernelError: Kernel died)" in msg and str(failed) in msg
    # numbered: lanes run side by side
    assert "[tmlib suite]   00 FAILED: DeadKernelError: Kernel died" in capsys.readouterr().out
    assert good.read_bytes() == before and failed.is_file()


def test_failure_reason_is_one_line():
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    from tmlib.suite import _reason_from, failure_reason

    cell = pm.PapermillExecutionError(
        cell_index=3,
        exec_count=4,
        source="x",
        ename="ValueError",
        evalue="unknown parameter(s) stpes\nvalid names: steps",
        traceback=["..."],
    )
    assert failure_reason(cell) == "ValueError in cell 4: unknown parameter(s) stpes valid names: steps"
    assert failure_reason(DeadKernelError("Kernel died")) == "DeadKernelError: Kernel died"
    assert failure_reason(MemoryError()) == "MemoryError"
    assert len(failure_reason(RuntimeError("x" * 1000))) == 300
    assert (
        _reason_from('{"notebook": "a", "error": "DeadKernelError: Kernel died"}\n', 1)
        == "DeadKernelError: Kernel died"
    )
    assert _reason_from("", -9) == "the runner process exited with status -9 (killed by a signal)"
