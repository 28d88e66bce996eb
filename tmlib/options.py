"""Command-line options built from a config dataclass: one source of defaults for notebooks and CLI verbs.

:func:`add_options` adds one ``--flag`` per flat parameter of a config class (:func:`tmlib.core.config.flat_defaults`),
typed from its annotation, with the class's default and the comment written beside the field as help (``--help``
shows every default). :func:`flat_values` reads them back as the flat dict :func:`tmlib.core.config.from_flat` takes,
and
:func:`cli_message` rewrites a config error so it names the flag a person types (``--max-dev``), not the Python
field (``max_dev``).

    add_options(parser, MaskingConfig, skip={"out_dir"}, single={"tasks": "task"})
    cfg = from_flat(MaskingConfig, flat_values(args, MaskingConfig, ...))
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any

from tmlib.core.config import _nested_fields, flat_defaults
from tmlib.core.fingerprint import parsing


def flag(name: str) -> str:
    """``max_dev`` -> ``--max-dev``."""
    return "--" + name.replace("_", "-")


def field_comments(cls: type) -> dict[str, str]:
    """The help written for each field of dataclass ``cls``: the comment lines just above the field, its trailing
    comment, and the ``# ^`` lines below it (the project's convention for a comment that continues a field's)."""
    try:
        source = textwrap.dedent(parsing(inspect.getsource, cls))
    except (OSError, TypeError):
        return {}
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, list[str]] = {}
    above: list[str] = []
    current = None
    for i, line in enumerate(source.splitlines(), start=1):
        text = line.strip()
        m = re.match(r"^\s{4}(\w+)\s*:", line)
        if m and m.group(1) in names:
            current = m.group(1)
            out[current] = [*above, *([comments[i]] if i in comments else [])]
            above = []
        elif text.startswith("#") and comments.get(i, "").startswith("^") and current:
            out[current].append(comments[i][1:].strip())
        elif text.startswith("#"):
            above.append(comments[i])
        elif line.startswith(" " * 5) or text[:1] in ")]}":  # inside a field's multi-line default
            continue
        else:
            above, current = [], None if text else current
    return {k: " ".join(v) for k, v in out.items() if v}


def flat_comments(cls: type) -> dict[str, str]:
    """:func:`field_comments` of ``cls`` under flat names (a nested config's fields prefixed, ``mask_tau``)."""
    out = dict(field_comments(cls))
    for prefix, sub in _nested_fields(cls).items():
        out.pop(prefix, None)
        out.update({f"{prefix}_{k}": v for k, v in field_comments(sub).items()})
    return out


def _hint(cls: type, name: str) -> Any:
    """The annotation of flat parameter ``name`` of ``cls``."""
    hints = typing.get_type_hints(cls)
    if name in hints:
        return hints[name]
    for prefix, sub in _nested_fields(cls).items():
        if name.startswith(prefix + "_"):
            return typing.get_type_hints(sub).get(name[len(prefix) + 1 :], Any)
    return Any


def _scalar(tp: Any) -> Any:
    """The argparse ``type`` of one value of annotation ``tp`` (None for a str or anything else)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) in (list, tuple):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return _scalar(inner[0]) if inner else None
    return tp if tp in (int, float) else None


def _is_list(tp: Any) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) and len(args) == 1:
        tp = args[0]
    return typing.get_origin(tp) in (list, tuple)


def _choices(tp: Any) -> tuple | None:
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: set[str] = frozenset(),
    single: dict[str, str] | None = None,
    choices: dict[str, tuple] | None = None,
) -> None:
    """One ``--flag`` per flat parameter of ``cls`` but those in ``skip``. ``single``: a per-task list parameter
    given once (``{"tasks": "task"}``: ``--task``, default the list's first value). ``choices``: allowed values."""
    defaults, comments, single, choices = flat_defaults(cls), flat_comments(cls), single or {}, choices or {}
    for name, default in defaults.items():
        if name in skip:
            continue
        tp, dest = _hint(cls, name), single.get(name, name)
        if name in single:
            default = list(default)[0]
            help_ = comments.get(name, "") + "; one value here, its default the notebook's first"
            kw: dict[str, Any] = {"type": _scalar(tp)}
        elif isinstance(default, bool) or tp is bool:
            kw, help_ = {"action": argparse.BooleanOptionalAction}, comments.get(name, "")
        elif _is_list(tp):
            kw, help_ = {"nargs": "+", "type": _scalar(tp), "metavar": "V"}, comments.get(name, "")
            default = None if default is None else list(default)
        else:
            kw, help_ = {"type": _scalar(tp)}, comments.get(name, "")
        allowed = choices.get(name) or _choices(tp)
        if allowed:
            kw["choices"] = list(allowed)
        if kw.get("type") is None:
            kw.pop("type", None)
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        parser.add_argument(flag(dest), dest=dest, default=default, help=f"{help_} (default: {shown})".strip(), **kw)


def flat_values(args: argparse.Namespace, cls: type, skip: set[str] = frozenset(), single=None) -> dict[str, Any]:
    """The flat parameters :func:`add_options` added, read back from ``args`` (a single value as a one-item list)."""
    single = single or {}
    out = {}
    for name in flat_defaults(cls):
        if name in skip:
            continue
        value = getattr(args, single.get(name, name))
        out[name] = [value] if name in single else value
    return out


def cli_message(message: str, cls: type, single: dict[str, str] | None = None) -> str:
    """A config error's text with every flat parameter name of ``cls`` written as its command-line flag."""
    single = single or {}
    for prefix, sub in _nested_fields(cls).items():  # "MaskConfig: init_sparsity must ..." -> "mask_init_sparsity ..."
        if message.startswith(f"{sub.__name__}: "):
            message = message[len(sub.__name__) + 2 :]
            fields = sorted((f.name for f in dataclasses.fields(sub)), key=len, reverse=True)
            message = re.sub(r"(?<![\w-])(" + "|".join(fields) + r")(?![\w])", f"{prefix}_\\1", message, count=1)
    names = sorted(flat_defaults(cls), key=len, reverse=True)
    # a name with an underscore is code wherever it stands; a one-word name (seeds, methods) only where it is used as
    # one ("seeds is empty", "epochs must be", "lr_grid['mask']"), not in prose ("valid methods: ...")
    pattern = re.compile(
        r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w])(=)?(?=(?:\s+(?:is|must)\b|\[|=|))"
    )

    def rewrite(m: re.Match) -> str:
        name = m.group(1)
        after = message[m.end() : m.end() + 6]
        if "_" in name or m.group(2) or re.match(r"\s+(is|must)\b|\[", after):
            return flag(single.get(name, name)) + ("=" if m.group(2) else "")
        return m.group(0)

    return pattern.sub(rewrite, message)
