"""Configuration as dataclasses, shared by the library, the CLI and the notebooks' parameter cells.

One way to build a config from outside data: :func:`from_dict` (strict: unknown keys and wrong
types raise :class:`ConfigError` naming the field and the fix). YAML parameter files go through
:func:`load_yaml`, which reports malformed files with their path and line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter file or parameter dict does not fit the expected configuration."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; allow the lossless coercions YAML needs (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, args, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        return _coerce_sequence(value, origin, args, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _coerce_dataclass(value, tp, where)
    return _coerce_scalar(value, tp, where)


def _coerce_union(value: Any, tp: Any, args: tuple, where: str) -> Any:
    """Return ``value`` coerced to the first member of union ``tp`` that accepts it, so ``X | None`` fields work."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _coerce_sequence(value: Any, origin: Any, args: tuple, where: str) -> Any:
    """Coerce each item of a list/tuple value, so element types are checked with their index in the message."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r} ({type(value).__name__})")
    inner = args[0] if args else Any
    items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    return items if origin is list else tuple(items)


def _coerce_dataclass(value: Any, tp: Any, where: str) -> Any:
    """Build nested dataclass ``tp`` from a mapping (or pass an instance through), so sub-configs nest."""
    if isinstance(value, tp):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
    return from_dict(tp, value, _where=where)


def _coerce_scalar(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against a scalar annotation (float, int, bool, str); other annotations pass unchecked."""
    if tp is float or tp is int:
        return _coerce_number(value, tp, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r} ({type(value).__name__})")
        return value
    if tp is str:
        return _coerce_str(value, where)
    return value


def _coerce_number(value: Any, tp: Any, where: str) -> Any:
    """Check a float or int value, rejecting booleans; ints widen to float, the one lossless YAML coercion."""
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r} ({type(value).__name__})")
    return value


def _coerce_str(value: Any, where: str) -> str:
    """Check a string value, naming YAML's unquoted-word-as-boolean trap when a boolean arrives instead."""
    if isinstance(value, bool):  # YAML 1.1 (papermill -y, PyYAML) reads unquoted no/off/yes/on as booleans
        raise ConfigError(
            f"{where}: expected a string, got {value!r}: YAML read an unquoted word as a boolean; "
            f'quote it ("no", "off")'
        )
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, _where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    prefix = f"{_where}." if _where else ""
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(prefix + u for u in unknown)} for {cls.__name__}; "
            f"valid names: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{cls.__name__}: {exc}") from exc
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of a config (dataclass or mapping), used to key cached artifacts."""
    payload = to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def replace(cfg: T, **changes: Any) -> T:
    """Validated ``dataclasses.replace``."""
    return from_dict(type(cfg), {**to_dict_shallow(cfg), **changes})


def to_dict_shallow(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init}


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only ``true`` / ``false`` are booleans; ``no``, ``off``, ``yes``, ``on``, ``y``
    and ``n`` stay strings, so a documented value such as ``mixed_precision: no`` means what it says."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    """One YAML document (a parameter file, a ``-p NAME=VALUE`` value) with YAML 1.2's booleans (:class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML parameter file into a dict, with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist; see papermill_params/ for the available sets")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{loc}: {getattr(exc, 'problem', exc)}; fix the syntax") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"parameter file {path} is not UTF-8 text: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"parameter file {path} must hold a mapping of name: value, got {type(data).__name__}")
    return data


def _nested_fields(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init and dataclasses.is_dataclass(hints[f.name])
    }


def flatten(cfg: Any) -> dict[str, Any]:
    """Nested config -> the flat parameter names of notebooks, YAML files and the CLI.

    The one mapping rule: a field ``x`` of a nested stage config ``stage`` is the flat parameter
    ``stage_x`` (``genept.lr`` <-> ``genept_lr``); top-level fields keep their names. Nested
    configs nest one level deep."""
    out: dict[str, Any] = {}
    nested = _nested_fields(type(cfg))
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        value = getattr(cfg, f.name)
        if f.name in nested:
            for sub in dataclasses.fields(value):
                if sub.init:
                    out[f"{f.name}_{sub.name}"] = getattr(value, sub.name)
        else:
            out[f.name] = value
    return out


def flat_defaults(cls: type) -> dict[str, Any]:
    """Every flat parameter of config class ``cls`` with its declared default, as written in the class (an instance
    may differ: ``"auto"`` is resolved when a config is built). The notebooks' parameters cells and ``default.yaml``
    are checked against it."""

    def default(f):
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING

    nested = _nested_fields(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in nested:
            out.update({f"{f.name}_{sub.name}": default(sub) for sub in dataclasses.fields(nested[f.name]) if sub.init})
        else:
            out[f.name] = default(f)
    return out


def flat_names(cls: type) -> list[str]:
    """Every flat parameter name of config class ``cls`` (no instance needed: required fields are fine)."""
    return list(flat_defaults(cls))


def from_flat(cls: type[T], flat: Mapping[str, Any] | None) -> T:
    """Flat parameters (see :func:`flatten`) -> nested config ``cls``, strictly validated: an unknown
    or misspelt name raises :class:`ConfigError` listing every valid flat name."""
    flat = dict(flat or {})
    nested = _nested_fields(cls)
    data: dict[str, Any] = {}
    unknown = []
    for key, value in flat.items():
        if key in nested and isinstance(value, Mapping):
            data.setdefault(key, {}).update(value)
            continue
        stage = next((n for n in sorted(nested, key=len, reverse=True) if key.startswith(n + "_")), None)
        if stage is not None and key[len(stage) + 1 :] in {f.name for f in dataclasses.fields(nested[stage])}:
            data.setdefault(stage, {})[key[len(stage) + 1 :]] = value
        elif key in {f.name for f in dataclasses.fields(cls)} and key not in nested:
            data[key] = value
        else:
            unknown.append(key)
    if unknown:
        valid = sorted(flat_names(cls))
        raise ConfigError(
            f"unknown parameter(s) {', '.join(sorted(unknown))} for {cls.__name__}; valid names: {', '.join(valid)}"
        )
    return from_dict(cls, data)


def notebook_config(cls: type[T], namespace: Mapping[str, Any], before: set[str]) -> T:
    """Build a notebook's config from the names its parameter cells defined.

    ``before`` is the set of global names that existed before the parameters cell ran. Every name
    added since (the parameters cell plus papermill's injected cell) must be a field of ``cls``:
    papermill silently injects misspelt parameters, so this is where they are rejected.

    A relative ``out_dir`` is taken from the project root (:func:`project_path`), so a notebook opened in
    JupyterLab (whose kernel starts in ``notebooks/``) writes where the same notebook run by the suite does.
    """
    params = {k: v for k, v in namespace.items() if k not in before and not k.startswith("_")}
    params = {k: v for k, v in params.items() if not isinstance(v, types.ModuleType) and not callable(v)}
    cfg = from_flat(cls, params)
    if isinstance(getattr(cfg, "out_dir", None), str):
        cfg = dataclasses.replace(cfg, out_dir=str(project_path(cfg.out_dir)))
    line = arithmetic_line(cfg)
    if line:
        from tmlib.core.logs import LOGGER

        LOGGER.info(line)
    return cfg


def arithmetic_line(cfg: Any) -> str:
    """One line saying how ``cfg`` computes: each ``*mixed_precision`` setting as resolved, and what ``auto`` means
    on this machine and why (:func:`tmlib.core.precision.arithmetic`); "" for a config without such settings."""
    from tmlib.core.precision import arithmetic, precision_name

    settings = {k: v for k, v in flatten(cfg).items() if k.endswith("mixed_precision")}
    if not settings:
        return ""
    found = arithmetic()
    shown = ", ".join(f"{k}={precision_name(v)}" for k, v in settings.items())
    return f"[tmlib] arithmetic: {shown}; auto here = {found.name} ({found.reason})"


def project_root(start: str | Path | None = None) -> Path | None:
    """The project's one root finder: the nearest folder at or above ``start`` (default: the working directory)
    holding both ``notebooks/`` and ``papermill_params/`` (a tmlib checkout or a copy of its notebooks), else the
    checkout this package sits in when it has them (an editable install run from elsewhere); None for an installed
    wheel run outside a project."""
    here = Path(start or Path.cwd()).resolve()
    checkout = Path(__file__).resolve().parent.parent
    for d in (here, *here.parents, checkout):
        if (d / "notebooks").is_dir() and (d / "papermill_params").is_dir():
            return d
    return None


def project_path(path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to :func:`project_root` (or the working directory)."""
    p = Path(path)
    if p.is_absolute():
        return p
    return (project_root() or Path.cwd()) / p
