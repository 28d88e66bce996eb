"""Run directories: atomic artifacts with manifests, reused when valid, rebuilt when not.

An *artifact* is a named folder under a run directory holding one result (a checkpoint, importance
labels, a mask, a metrics table) plus ``manifest.json``: the config that produced it, its hash,
library versions, the seed, and the SHA-256 of every file. Files are written to a temp name and
renamed, and the manifest is written last, so a crash leaves either the old artifact or an
invalid one, never a half-written one that looks valid.

    store = RunStore("runs/default/01_selective_masking")
    labels = store.cached("importance", cfg, build=lambda: compute(...),
                          save=lambda obj, d: obj.save_to_disk(d / "data"),
                          load=lambda d: Dataset.load_from_disk(d / "data"))
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

from .assets import sha256_file
from .config import config_hash

T = TypeVar("T")
MANIFEST = "manifest.json"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result onto ``path`` (a file or a directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmpdir / path.name
    try:
        writer(tmp)
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def versions() -> dict[str, str]:
    import torch
    import transformers

    from . import __version__

    return {"tmlib": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


class ArtifactError(RuntimeError):
    """An artifact on disk is corrupt, partial, or was produced by a different config."""


@dataclasses.dataclass
class Artifact:
    """One artifact folder; :meth:`check` says whether it may be reused for ``config``."""

    path: Path
    config: Any

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def check(self) -> str | None:
        """``None`` if valid for this config, else the reason it is not."""
        if not self.manifest_path.is_file():
            return "missing" if not self.path.exists() else "no manifest (partial write?)"
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return "unreadable manifest"
        if manifest.get("config_hash") != config_hash(self.config):
            return "produced by a different config"
        for rel, digest in manifest.get("files", {}).items():
            f = self.path / rel
            if not f.is_file():
                return f"file {rel} is missing"
            if sha256_file(f) != digest:
                return f"file {rel} is corrupt (hash mismatch)"
        return None

    def commit(self, seed: int | None = None, extra: dict | None = None) -> None:
        """Hash every file and write the manifest (last, atomically)."""
        files = {str(p.relative_to(self.path)): sha256_file(p)
                 for p in sorted(self.path.rglob("*")) if p.is_file() and p.name != MANIFEST}
        cfg = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else self.config
        atomic_write_json(self.manifest_path, {
            "config": cfg, "config_hash": config_hash(self.config), "seed": seed, "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files, **(extra or {}),
        })


class RunStore:
    """A run directory holding named artifacts."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def artifact(self, name: str, config: Any) -> Artifact:
        return Artifact(self.root / name, config)

    def cached(self, name: str, config: Any, build: Callable[[], T], save: Callable[[T, Path], None],
               load: Callable[[Path], T], seed: int | None = None) -> T:
        """Reuse artifact ``name`` if valid for ``config``; otherwise build, save atomically and commit."""
        art = self.artifact(name, config)
        reason = art.check()
        if reason is None:
            return load(art.path)
        if reason != "missing":
            warnings.warn(f"artifact {art.path} is not reusable ({reason}); rebuilding it", stacklevel=2)
        obj = build()

        def write(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            save(obj, tmp)
            Artifact(tmp, config).commit(seed=seed)

        atomic_save(art.path, write)
        return obj

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.root / name, obj)

    def write_csv(self, name: str, frame) -> Path:
        return atomic_write_text(self.root / name, frame.to_csv(index=False))

    def save_figure(self, name: str, fig, dpi: int = 130) -> Path:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format=Path(name).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
        return atomic_write_bytes(self.root / name, buf.getvalue())
