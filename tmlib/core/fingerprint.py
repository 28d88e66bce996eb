"""A stage's code fingerprint: the hash of the syntax trees of the code that builds it.

A stage's key holds its config and its dependencies' keys; :func:`code_fingerprint` adds what the config cannot
say, the code. It starts from the stage's ``build``, ``save`` and ``load`` functions and follows every name they
use to a function, class or module-level constant of the same package (tmlib, or the package a user's own stage
lives in), transitively. Each function or class enters as its syntax tree (``ast.dump`` without docstrings or
positions), so formatting, comments and docstrings never move it, while an edited body, an edited helper it calls or
a changed module constant does. Closures are followed through their cells, registries (a module-level dict of
specs) through their values; a private mutable container (``_CACHE = {}``) is process state, not code, and is
not followed, so two processes that did different work before fingerprint a stage alike.

The infrastructure modules in :data:`OUTSIDE` (the store, logging, progress, configuration parsing, plots and the
entry points) are not followed: editing them does not change what a stage computes, and following them would
rebuild every artifact for a log message. Third-party code is not followed either: its versions are in every
manifest.

    code_fingerprint(stage.build, stage.save, stage.load)   # 16 hex digits
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

OUTSIDE = (
    "tmlib.core.runs",
    "tmlib.core.logs",
    "tmlib.core.heartbeat",
    "tmlib.core.config",
    "tmlib.core.fingerprint",
    "tmlib.plots",
    "tmlib.suite",
    "tmlib.cli",
    "tmlib.report",
    "tmlib.widgets",
    "tmlib.highlight",
)
"""Modules whose edits do not change a stage's result: their code never enters a fingerprint."""

_SIMPLE = (int, float, str, bool, bytes, type(None))
_DEPTH = 4  # how deep a module-level container (a registry of specs) is searched for code


def parsing(fn: Callable, *args, tries: int = 3):
    """``fn(*args)`` (a call that builds a syntax tree: ``ast.parse``, ``inspect.getsource``), again when CPython
    3.11's AST constructor reports a "recursion depth mismatch": before 3.11.8 its depth counter is shared by the
    interpreter's threads (cpython gh-106905), so a parse fails spuriously while another thread builds a tree, and
    the next one succeeds."""
    for attempt in range(tries):
        try:
            return fn(*args)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


@functools.cache
def _module_tree(filename: str) -> ast.Module:
    return parsing(ast.parse, Path(filename).read_text(encoding="utf-8"))


class _NoDocstrings(ast.NodeTransformer):
    """Drops docstrings: they describe the code and never change what it computes."""

    def _strip(self, node):
        self.generic_visit(node)
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


@functools.cache
def _index(filename: str) -> dict[tuple[str, int | None], list[ast.AST]]:
    """Every definition in a file: (function name, first line) -> nodes, ("<lambda>", line), (class name, None)."""
    out: dict[tuple[str, int | None], list[ast.AST]] = {}
    for n in ast.walk(_module_tree(filename)):
        if isinstance(n, ast.Lambda):
            out.setdefault(("<lambda>", n.lineno), []).append(n)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
            for line in {n.lineno, *(d.lineno for d in n.decorator_list)}:
                out.setdefault((n.name, line), []).append(n)
        elif isinstance(n, ast.ClassDef):
            out.setdefault((n.name, None), []).append(n)
    return out


def _nodes(obj: Any) -> list[ast.AST]:
    """The syntax nodes that define a function (by its first line) or a class (by name) in its module's file."""
    try:
        index = _index(inspect.getsourcefile(obj) or "")
    except (OSError, TypeError, SyntaxError):
        return []
    if isinstance(obj, type):
        return index.get((obj.__name__, None), [])
    return index.get((obj.__code__.co_name, obj.__code__.co_firstlineno), [])


_DIRECT: dict[Any, tuple[Any, list[str], list[tuple[str, ...]], dict[str, Any]]] = {}


def _direct(obj: Any) -> tuple[list[str], list[tuple[str, ...]], dict[str, Any]]:
    """A function's or class's own dumps, the dotted names it reads and what it imports in its body: computed once
    per code object (closures of one function share it) or class."""
    key = obj.__code__ if isinstance(obj, types.FunctionType) else obj
    hit = _DIRECT.get(id(key))
    if hit is None or hit[0] is not key:
        nodes = _nodes(obj)
        module = getattr(obj, "__module__", "") or ""
        local: dict[str, Any] = {}
        for n in nodes:
            local.update(_imports(n, module))
        hit = (key, [_dump(n) for n in nodes], sorted({c for n in nodes for c in _names(n)}), local)
        _DIRECT[id(key)] = hit  # holds the key itself, so its id is never reused while the entry lives
    return hit[1], hit[2], hit[3]


_DUMPS: dict[int, str] = {}  # id of a node of a cached module tree -> its dump (the trees live as long as the process)


def _dump(node: ast.AST) -> str:
    import copy

    if id(node) not in _DUMPS:
        _DUMPS[id(node)] = ast.dump(_NoDocstrings().visit(copy.deepcopy(node)), include_attributes=False)
    return _DUMPS[id(node)]


def _imports(node: ast.AST, module: str) -> dict[str, Any]:
    """The names a function binds by importing inside its body (``from .training import fit``): name -> value."""
    import importlib
    import importlib.util
    import sys

    package = getattr(sys.modules.get(module), "__package__", None) or module.rpartition(".")[0]
    out: dict[str, Any] = {}
    for n in ast.walk(node):
        try:
            if isinstance(n, ast.ImportFrom):
                base = importlib.util.resolve_name("." * n.level + (n.module or ""), package) if n.level else n.module
                if base.split(".", 1)[0] != module.split(".", 1)[0]:
                    continue  # third-party code is not followed
                mod = importlib.import_module(base)
                for alias in n.names:
                    value = getattr(mod, alias.name, None)
                    if value is None:
                        value = importlib.import_module(f"{base}.{alias.name}")
                    out[alias.asname or alias.name] = value
            elif isinstance(n, ast.Import):
                for alias in n.names:
                    if alias.name.split(".", 1)[0] == module.split(".", 1)[0]:
                        top = alias.asname or alias.name.split(".", 1)[0]
                        out[top] = importlib.import_module(alias.name if alias.asname else top)
        except ImportError:
            continue
    return out


def _names(node: ast.AST) -> Iterator[tuple[str, ...]]:
    """Every dotted name the node reads: ``fit`` -> ("fit",), ``stats.paired_gaps`` -> ("stats", "paired_gaps")."""
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute):
            chain, cur = [], n
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                yield (cur.id, *reversed(chain))
        elif isinstance(n, ast.Name):
            yield (n.id,)


class _Walk:
    """One fingerprint's traversal: the digests of every piece of code reached, each visited once."""

    def __init__(self, packages: frozenset[str]):
        self.packages = packages
        self.parts: set[str] = set()
        self.seen: set[int] = set()

    def ours(self, obj: Any) -> bool:
        module = getattr(obj, "__module__", None) or ""
        top = module.split(".", 1)[0]
        return top in self.packages and not any(module == o or module.startswith(o + ".") for o in OUTSIDE)

    def code(self, obj: Any, root: bool = False) -> None:
        """A function or class: its syntax tree, then everything it names (a root is read wherever it lives)."""
        if id(obj) in self.seen or not (root or self.ours(obj)):
            return
        self.seen.add(id(obj))
        dumps, chains, local = _direct(obj)
        self.parts.update(dumps)
        scope = getattr(obj, "__globals__", None) or vars(inspect.getmodule(obj) or types.ModuleType("_"))
        closure = {}
        if isinstance(obj, types.FunctionType) and obj.__closure__:
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__):
                try:
                    closure[name] = cell.cell_contents
                except ValueError:  # a cell not filled yet
                    continue
        for chain in chains:
            if chain[0] in closure:
                cell = closure[chain[0]]
                if isinstance(cell, types.ModuleType):  # a module imported in the enclosing function
                    self.resolved(cell, chain[1:], chain[0])
                else:  # data of the enclosing call (a recipe, the inputs) is the key's business, not the code's
                    self.value(cell, constants=False)
            elif chain[0] in local:
                self.resolved(local[chain[0]], chain[1:], chain[0])
            elif chain[0] in scope:
                self.resolved(scope[chain[0]], chain[1:], chain[0])

    def resolved(self, value: Any, rest: tuple[str, ...], name: str) -> None:
        """A module-level name: a module is followed along the attribute chain, anything else by value."""
        while isinstance(value, types.ModuleType) and rest:
            if value.__name__.split(".", 1)[0] not in self.packages:
                return  # third-party code: its version is in the manifest
            value, name, rest = _attribute(value, rest[0]), rest[0], rest[1:]
        if isinstance(value, types.ModuleType):
            return
        if name.startswith("_") and isinstance(value, dict | list | set):
            return  # a private mutable container is process state (a cache such as precision._ARITHMETIC): what it
            # holds depends on what the process did before, so it must not move a fingerprint
        if isinstance(value, _SIMPLE) or (
            isinstance(value, tuple | frozenset) and all(isinstance(v, _SIMPLE) for v in value)
        ):
            shown = sorted(value, key=repr) if isinstance(value, frozenset) else value  # a set's order is per process
            self.parts.add(f"{name}={shown!r}")
            return
        self.value(value, constants=True)

    def value(self, value: Any, constants: bool, depth: int = 0) -> None:
        """Code reachable from a value: functions, classes, bound methods, partials, registries of them."""
        if depth > _DEPTH:
            return
        try:
            self._value(value, constants, depth)
        except Exception:  # an exotic object (a torch class namespace) that fails attribute lookups holds no code
            return

    def _value(self, value: Any, constants: bool, depth: int) -> None:
        if isinstance(value, types.MethodType):
            value = value.__func__
        if isinstance(value, functools.partial):
            self.value(value.func, constants, depth + 1)
        elif isinstance(value, types.FunctionType | type):
            self.code(value)
        elif constants and isinstance(value, dict):
            for v in value.values():
                self.value(v, constants, depth + 1)
        elif constants and isinstance(value, list | tuple | frozenset | set):
            for v in value:
                self.value(v, constants, depth + 1)
        elif constants and hasattr(value, "__dataclass_fields__") and self.ours(type(value)):
            self.code(type(value))
            for f in value.__dataclass_fields__:
                self.value(getattr(value, f, None), constants, depth + 1)


def forget() -> None:
    """Drop the cached syntax trees: for a process that reloads edited modules (``importlib.reload``, autoreload)."""
    _module_tree.cache_clear()
    _index.cache_clear()
    _DIRECT.clear()
    _DUMPS.clear()


def _attribute(module: types.ModuleType, name: str) -> Any:
    """``module.name``, importing ``module.name`` when it is a submodule not imported yet: what a walk reaches must
    not depend on what the process happened to import before."""
    import importlib

    value = getattr(module, name, None)
    if value is None and hasattr(module, "__path__"):
        try:
            value = importlib.import_module(f"{module.__name__}.{name}")
        except ImportError:
            return None
    return value


def _package(obj: Any) -> str | None:
    """The top-level package of a function or class written in this project or the user's (a file outside
    site-packages and the standard library); None for anything else (data, third-party code)."""
    import sysconfig

    obj = getattr(obj, "__func__", obj)
    if not isinstance(obj, types.FunctionType | type):
        return None
    try:
        path = str(Path(inspect.getsourcefile(obj) or "").resolve())
    except (TypeError, OSError):
        return None
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    if not path or any(path.startswith(str(Path(p).resolve())) for p in installed):
        return None
    return (obj.__module__ or "").split(".", 1)[0] or None


def code_fingerprint(*functions: Callable) -> str:
    """16 hex digits of SHA-256 over the syntax trees of ``functions`` and of the code they reach (see module doc)."""
    roots = [getattr(fn, "__func__", fn) for fn in functions]
    packages = {"tmlib"}
    for fn in roots:  # a user's own stage: its package's code is followed too
        packages.add(_package(fn))
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                packages.add(_package(cell.cell_contents))
            except ValueError:
                continue
    packages.discard(None)
    walk = _Walk(frozenset(packages))
    for fn in roots:
        if isinstance(fn, types.FunctionType | type):
            walk.code(fn, root=True)
        else:
            walk.value(fn, constants=False)
    digest = hashlib.sha256()
    for part in sorted(walk.parts):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]
