import json
from dataclasses import dataclass

import pytest

from tmlib.runs import RunStore, atomic_save, atomic_write_text


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
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dirs cleaned


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_text(target, "old")

    def failing(tmp):
        tmp.write_text("partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic_save(target, failing)
    assert target.read_text() == "old"
