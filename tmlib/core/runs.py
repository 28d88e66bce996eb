"""Run directories: stages with dependencies, atomic artifacts with manifests, file locks.

An *artifact* is a named folder under a run directory holding one result (a checkpoint, importance
labels, a mask, a metrics table) plus ``manifest.json``: the key that produced it (the stage's config
and the keys of the stages it depends on), its hash, library versions, the runtime facts that can
change a result (torch threads, deterministic flags), the seed, and the SHA-256 of every file. Files
are written to a temp name and renamed, and the manifest is written last, so a crash leaves either
the old artifact or an invalid one, never a half-written one that looks valid; the next build of that
artifact removes what a killed write left (:func:`recover_partial_writes`). A write that fails (a full or
read-only disk) raises :class:`ArtifactError` naming the folder and the fix, the old artifact in place.
This module is the only code that reads or writes a manifest.

A :class:`Stage` declares its name, its config, the stages it depends on, and build / save / load.
:meth:`RunStore.get` builds missing dependencies first (their hashes enter the stage's key, so a
changed upstream rebuilds everything below it), builds the stage if its artifact is missing, stale or
corrupt, and always returns the value *loaded from disk*. Two processes asking for the same stage
(a papermill batch while the same run folder is open in JupyterLab) serialise on a file lock: one
builds, the other waits and then loads.

    store = RunStore("runs/default/01_selective_masking")
    corpus = Stage("corpus", {"n": 100}, build=lambda ctx: make(100), save=..., load=...)
    labels = Stage("labels", {"delta": 0.01}, deps={"corpus": corpus},
                   build=lambda ctx, corpus: label(corpus), save=..., load=...)
    value = store.get(labels)          # builds corpus, then labels; later calls load
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from tmlib.core.assets import sha256_file
from tmlib.core.config import config_hash
from tmlib.core.heartbeat import reporting_to
from tmlib.core.logs import LOGGER

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
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # the previous version goes back where it was
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def recover_partial_writes(path: str | Path) -> list[str]:
    """Clean up after an :func:`atomic_save` of the folder ``path`` cut off by a kill: its temp folders
    (``.name.XXXXXXXX``, a partial write) are removed, and a previous version moved aside for the swap
    (``.name.old-PID``) is moved back when ``path`` is missing (else removed). Returns what it did, one
    line each. Call it only where no other process is writing ``path`` (under its lock)."""
    import re

    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:[a-z0-9_]{{8}}|old-(\d+))$")
    found = [
        (p, m) for p in path.parent.iterdir() if (m := pattern.match(p.name)) and p.is_dir() and not p.is_symlink()
    ]
    done = []
    olds = sorted((p for p, m in found if m.group(1)), key=lambda p: p.stat().st_mtime)
    if olds and not path.exists():
        os.replace(olds.pop(), path)
        done.append(f"restored the previous {path.name} (a swap cut off between its two renames)")
    for p in olds + [p for p, m in found if not m.group(1)]:
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p.name} (a partial write)")
    return done


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays of any size
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def runtime() -> dict[str, Any]:
    """What can change a result beyond the config: threads, deterministic flags and the arithmetic ``auto`` chose
    (in every manifest; the resolved arithmetic of a stage is also in its key)."""
    import torch

    from tmlib.core.precision import arithmetic

    return {
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cuda": torch.cuda.is_available(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "pid": os.getpid(),  # which process built it (a notebook, or a `tmlib worker` beside it)
        **arithmetic().record(),
    }  # what "auto" resolved to here, and the probe behind it


VERSIONED = (
    "transformers",
    "tokenizers",
    "datasets",
    "accelerate",
    "peft",
    "captum",
    "spacy",
    "scikit-learn",
    "numpy",
    "safetensors",
)
"""Libraries whose version can move a number (a kernel, a tokenizer, a split, an attribution): in every manifest."""


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from tmlib import __version__

    out = {"tmlib": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in VERSIONED:  # read from the installed metadata: nothing is imported
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


class ArtifactError(RuntimeError):
    """An artifact on disk is corrupt, partial, or was produced by a different config."""


@dataclasses.dataclass
class Artifact:
    """One artifact folder; :meth:`check` says whether it may be reused for ``config``."""

    path: Path
    config: Any
    code: str | None = None  # the stage's code fingerprint; None: any code (reading an artifact, not reusing it)

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
        if self.code is not None and manifest.get("code") != self.code:
            return "built by different code (a function its build reaches was edited)"
        for rel, digest in manifest.get("files", {}).items():
            f = self.path / rel
            if not f.is_file():
                return f"file {rel} is missing"
            if sha256_file(f) != digest:
                return f"file {rel} is corrupt (hash mismatch)"
        return None

    def manifest(self) -> dict:
        """The manifest of this artifact (raises :class:`ArtifactError` when absent or unreadable)."""
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError as exc:
            raise ArtifactError(f"{self.path} has no {MANIFEST}: it was never built or its write was cut off") from exc
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"{self.manifest_path} is unreadable ({exc}); delete {self.path} to rebuild it"
            ) from exc

    def commit(self, seed: int | None = None, extra: dict | None = None) -> None:
        """Hash every file and write the manifest (last, atomically)."""
        files = {
            str(p.relative_to(self.path)): sha256_file(p)
            for p in sorted(self.path.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        cfg = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else self.config
        atomic_write_json(
            self.manifest_path,
            {
                "config": cfg,
                "config_hash": config_hash(self.config),
                "code": self.code,
                "seed": seed,
                "versions": versions(),
                "runtime": runtime(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "files": files,
                **(extra or {}),
            },
        )


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What a stage's ``build`` gets besides its dependencies' values."""

    store: RunStore
    name: str
    key_hash: str
    work_dir: Path  # scratch space for resumable builds (checkpoints), keyed by the stage's key

    def log(self, message: str) -> None:
        self.store.log(f"[{self.name}] {message}")


@dataclasses.dataclass(frozen=True, eq=False)
class Stage(Generic[T]):
    """One cached step of an experiment.

    ``config``: what the result depends on (a dataclass or a JSON-able mapping). ``deps``: argument
    name -> upstream stage; their keys enter this stage's key and their loaded values are passed to
    ``build(ctx, **deps)``. ``save(value, dir)`` writes the built value into a fresh folder and
    ``load(dir)`` reads it back; ``get`` always returns what ``load`` gives, so a cold and a warm run
    see the same objects. ``info(dir)`` (optional) reads small side facts (seconds, FLOPs) kept in
    the artifact, for :meth:`RunStore.info`.
    """

    name: str
    config: Any
    build: Callable[..., T]
    save: Callable[[T, Path], None]
    load: Callable[[Path], Any]
    deps: Mapping[str, Stage] = dataclasses.field(default_factory=dict)
    seed: int | None = None

    def key(self) -> dict:
        """The stage's full key: its config and, per dependency, that dependency's key hash."""
        cfg = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config)
        if not self.deps:
            return cfg
        return {
            "config": cfg,
            "deps": {arg: {"stage": d.name, "key": d.key_hash()} for arg, d in sorted(self.deps.items())},
        }

    def code(self) -> str:
        """The fingerprint of the code that builds, saves and loads it
        (:func:`tmlib.core.fingerprint.code_fingerprint`):
        an edit to that code, or to a tmlib function it reaches, gives the stage, and every stage below it, a new
        key."""
        cached = self.__dict__.get("_code")
        if cached is None:
            from tmlib.core.fingerprint import code_fingerprint

            cached = code_fingerprint(self.build, self.save, self.load)
            object.__setattr__(self, "_code", cached)
        return cached

    def key_hash(self) -> str:
        """The hash of the stage's key and its code fingerprint: what a dependant's key holds of it."""
        return config_hash({"key": self.key(), "code": self.code()})


def default_reuse(root: Path) -> list[Path]:
    """``runs/dev/<notebook>`` -> ``[runs/default/<notebook>]`` where that folder exists; else no folder."""
    if root.parent.name == "dev":
        made = root.parent.parent / "default" / root.name
        if made.is_dir():
            return [made]
    return []


def _stat_signature(path: Path) -> tuple:
    """(relative path, size, mtime) of every file under ``path``: cheap evidence that nothing changed."""
    out = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append((str(p.relative_to(path)), st.st_size, st.st_mtime_ns))
    return tuple(out)


class RunStore:
    """A run directory holding named artifacts; :meth:`get` resolves :class:`Stage` graphs.

    ``progress``: print one line per stage built or loaded (with elapsed seconds) to stdout and to
    ``<root>/progress.log`` (or ``log_file``: a store of sub-artifacts logging into its notebook's log),
    so a long non-interactive run shows where it is. ``lock_timeout``: seconds to wait for another
    process building the same stage (-1: forever).

    ``on_build``: called with a stage's name when this store starts building it, holding its lock (no other process
    builds that stage until it is committed): how ``tmlib worker`` tells which stages it builds.

    ``reuse``: other run folders whose valid artifacts are loaded (read-only, never written) when this folder
    has none for a stage's key; new stages are built here. Default (None): a notebook's development folder
    ``runs/dev/<notebook>`` reuses ``runs/default/<notebook>``, so a notebook opened after ``make run`` loads
    that run's stages in seconds and a changed parameter rebuilds only what depends on it, in ``runs/dev``.
    """

    def __init__(
        self,
        root: str | Path,
        progress: bool = False,
        lock_timeout: float = -1,
        log_file: str | Path | None = None,
        reuse: list[str | Path] | None = None,
        on_build: Callable[[str], None] | None = None,
    ):
        self.root = Path(root)
        self.on_build = on_build
        self.reuse = [Path(r) for r in (default_reuse(self.root) if reuse is None else reuse)]
        self.reuse = [r for r in self.reuse if r.resolve() != self.root.resolve()]
        self.log_file = Path(log_file) if log_file is not None else self.root / "progress.log"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(
                f"cannot create the run folder {self.root} ({exc.strerror}); choose a writable out_dir"
            ) from exc
        self.progress = progress
        self.lock_timeout = lock_timeout
        # artifacts this store has verified (hashes checked): name -> (key hash, stat signature of its files);
        # a later get() re-hashes only if a file's size or mtime changed since
        self._verified: dict[str, tuple[str, tuple]] = {}
        self._reused: dict[str, tuple[str, Path, tuple]] = {}  # name -> (key hash, folder, stat signature)

    # ----------------------------------------------------------------------------------- stages
    def log(self, message: str) -> None:
        if not self.progress:
            return
        line = f"{time.strftime('%H:%M:%S')} {message}"
        LOGGER.info(line)
        try:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError:
            pass

    def artifact(self, name: str, config: Any) -> Artifact:
        return Artifact(self.root / name, config)

    def _lock(self, name: str):
        from filelock import FileLock

        lock_dir = self.root / ".locks"
        try:
            lock_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise ArtifactError(
                f"cannot create lock folder {lock_dir} ({exc.strerror}); choose a writable out_dir"
            ) from exc
        return FileLock(str(lock_dir / (name.replace("/", "__") + ".lock")), timeout=self.lock_timeout)

    def get(self, stage: Stage[T]) -> Any:
        """The stage's value: loaded if its artifact is valid for its key, else built (dependencies
        first), saved atomically, committed and then loaded."""
        key, code = stage.key(), stage.code()
        key_hash = stage.key_hash()
        deps = {arg: self.get(d) for arg, d in stage.deps.items()}
        art = Artifact(self.root / stage.name, key, code)
        if self._verified.get(stage.name) == (key_hash, _stat_signature(art.path)):
            return stage.load(art.path)
        other = self._reused.get(stage.name)
        if other is not None and other[0] == key_hash and other[2] == _stat_signature(other[1]):
            return stage.load(other[1])
        try:
            lock = self._lock(stage.name)
            lock.acquire()
        except (OSError, ArtifactError) as exc:  # no lock file: a read-only or full disk
            from filelock import Timeout

            if isinstance(exc, Timeout):
                raise
            if art.check() is None:  # nothing to write: a valid artifact on a read-only disk still loads
                self._verified[stage.name] = (key_hash, _stat_signature(art.path))
                return stage.load(art.path)
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(
                f"cannot lock {stage.name} in {self.root} to build it ({exc.strerror or exc}); "
                "free disk space, make the folder writable or choose another out_dir"
            ) from exc
        try:
            for line in recover_partial_writes(art.path):  # a build cut off by a kill (we hold the lock)
                warnings.warn(f"{self.root}: {line}", stacklevel=2)
            reason = art.check()
            if reason is not None:
                for root in self.reuse:  # a valid artifact of another run folder: loaded, not copied
                    there = Artifact(root / stage.name, key, code)
                    if there.path.is_dir() and there.check() is None:
                        self.log(f"{stage.name}: reused from {root}")
                        self._reused[stage.name] = (key_hash, there.path, _stat_signature(there.path))
                        return stage.load(there.path)
                if reason != "missing":
                    warnings.warn(f"artifact {art.path} is not reusable ({reason}); rebuilding it", stacklevel=2)
                self._build(stage, key, code, key_hash, deps)
            else:
                self.log(f"{stage.name}: cached")
            self._verified[stage.name] = (key_hash, _stat_signature(art.path))
            self._reused.pop(stage.name, None)
            return stage.load(art.path)
        finally:
            lock.release()

    def _build(self, stage: Stage, key: dict, code: str, key_hash: str, deps: dict) -> None:
        work = self.root / ".work" / stage.name / key_hash
        ctx = StageContext(self, stage.name, key_hash, work)
        start = time.perf_counter()
        self.log(f"{stage.name}: building")
        if self.on_build is not None:
            self.on_build(stage.name)
        with reporting_to(ctx.log if self.progress else None):  # long loops inside report every 30 s (heartbeat)
            obj = stage.build(ctx, **deps)

        def write(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            stage.save(obj, tmp)
            Artifact(tmp, key, code).commit(
                seed=stage.seed, extra={"stage": stage.name, "build_seconds": time.perf_counter() - start}
            )

        try:
            atomic_save(self.root / stage.name, write)
        except OSError as exc:
            raise ArtifactError(
                f"could not write artifact {self.root / stage.name} ({exc.strerror or exc}); "
                "free disk space or choose another out_dir; earlier artifacts are intact"
            ) from exc
        shutil.rmtree(work, ignore_errors=True)
        for parent in work.parents:  # drop emptied .work/<name>/ folders
            if parent == self.root or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
        self.log(f"{stage.name}: built in {time.perf_counter() - start:.1f} s")

    def folder(self, name: str) -> Path:
        """Where artifact ``name`` was loaded from: this run folder, or the ``reuse`` folder it was found in."""
        other = self._reused.get(name)
        return other[1] if other is not None else self.root / name

    def manifest(self, name: str) -> dict:
        """The manifest of artifact ``name`` (:class:`ArtifactError` when it has none)."""
        return Artifact(self.root / name, None).manifest()

    def has(self, stage: Stage) -> bool:
        """Whether :meth:`get` would load ``stage`` without building it: a valid artifact for its key here or in a
        reuse folder (its dependencies are not looked at)."""
        key, code = stage.key(), stage.code()
        return any(Artifact(root / stage.name, key, code).check() is None for root in (self.root, *self.reuse))

    def valid(self, name: str) -> bool:
        """Whether artifact ``name`` exists, is complete and matches its own manifest (any config)."""
        try:
            key = self.manifest(name).get("config")
        except ArtifactError:
            return False
        return self.artifact(name, key).check() is None

    def cached(
        self,
        name: str,
        config: Any,
        build: Callable[[], T],
        save: Callable[[T, Path], None],
        load: Callable[[Path], T],
        seed: int | None = None,
    ) -> T:
        """A stage without dependencies, built by ``build()``: ``get(Stage(name, config, ...))``."""
        return self.get(Stage(name, config, lambda ctx: build(), save, load, seed=seed))

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.root / name, obj)

    def write_csv(self, name: str, frame) -> Path:
        return atomic_write_text(self.root / name, frame.to_csv(index=False))

    def save_figure(self, name: str, fig, dpi: int = 130) -> Path:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format=Path(name).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
        return atomic_write_bytes(self.root / name, buf.getvalue())
