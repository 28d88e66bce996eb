"""Stage keys follow the code: an edited build function (or a helper it calls) rebuilds that stage and what depends on
it, and nothing else; formatting, comments and docstrings rebuild nothing."""

import importlib
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tmlib.core import fingerprint
from tmlib.core.fingerprint import code_fingerprint
from tmlib.core.runs import RunStore, Stage

MODULE = '''
"""A user's stages."""
SCALE = 2


def helper(x):
    return x * SCALE


def build_a(ctx):
    return helper(1)


def build_b(ctx, a):
    """Adds one."""
    return a + 1


def build_c(ctx):
    return 10


def save(value, d):
    (d / "v.txt").write_text(str(value))


def load(d):
    return int((d / "v.txt").read_text())
'''


@pytest.fixture
def kit(tmp_path, monkeypatch):
    """A throwaway package whose module can be rewritten and reloaded, as a researcher edits and reruns."""
    name = f"fpkit_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "stages.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(source: str | None = None):
        if source is not None:
            (pkg / "stages.py").write_text(source)
        fingerprint.forget()
        mod = importlib.import_module(f"{name}.stages")
        return importlib.reload(mod)

    yield load
    for m in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[m]
    fingerprint.forget()


def _graph(m):
    a = Stage("a", {"n": 1}, m.build_a, m.save, m.load)
    b = Stage("b", {"n": 1}, m.build_b, m.save, m.load, deps={"a": a})
    c = Stage("c", {"n": 1}, m.build_c, m.save, m.load)
    return a, b, c


def _built(store: RunStore, stages) -> dict[str, bool]:
    """Which stages get() built (a new manifest) rather than loaded."""
    before = {
        s.name: (store.root / s.name / "manifest.json").stat().st_mtime_ns if store.valid(s.name) else None
        for s in stages
    }
    values = {s.name: store.get(s) for s in stages}
    after = {s.name: (store.root / s.name / "manifest.json").stat().st_mtime_ns for s in stages}
    return {n: before[n] != after[n] for n in values}, values


def test_formatting_comments_and_docstrings_do_not_move_the_fingerprint(kit):
    m = kit()
    before = [code_fingerprint(f) for f in (m.build_a, m.build_b, m.build_c)]
    reformatted = (
        MODULE.replace("return a + 1", "return (a +\n            1)  # one more")
        .replace('"""Adds one."""', '"""Adds one to a: documented differently now."""')
        .replace("def helper(x):", "# a helper\ndef helper(x) :")
    )
    m = kit(reformatted)
    assert [code_fingerprint(f) for f in (m.build_a, m.build_b, m.build_c)] == before


@pytest.mark.parametrize(
    "edit, moved",
    [
        (("return a + 1", "return a + 2"), {"b"}),  # the build function itself
        (("return x * SCALE", "return x * SCALE + 0"), {"a"}),  # a helper the build calls
        (("SCALE = 2", "SCALE = 3"), {"a"}),  # a module constant the helper reads
        (("return 10", "return 11"), {"c"}),
    ],
)
def test_an_edit_moves_the_fingerprint_of_the_code_that_reaches_it(kit, edit, moved):
    m = kit()
    before = {n: code_fingerprint(getattr(m, f"build_{n}")) for n in "abc"}
    m = kit(MODULE.replace(*edit))
    after = {n: code_fingerprint(getattr(m, f"build_{n}")) for n in "abc"}
    assert {n for n in "abc" if before[n] != after[n]} == moved


def test_editing_a_build_function_rebuilds_that_stage_and_its_dependants_only(kit, tmp_path):
    store = RunStore(tmp_path / "run")
    built, values = _built(store, _graph(kit()))
    assert built == {"a": True, "b": True, "c": True} and values == {"a": 2, "b": 3, "c": 10}
    built, _ = _built(store, _graph(kit()))
    assert built == {"a": False, "b": False, "c": False}  # same code: everything loads

    built, values = _built(store, _graph(kit(MODULE.replace("return x * SCALE", "return x * SCALE * 5"))))
    assert built == {"a": True, "b": True, "c": False} and values == {"a": 10, "b": 11, "c": 10}

    built, values = _built(
        store,
        _graph(kit(MODULE.replace("return x * SCALE", "return x * SCALE * 5").replace("return a + 1", "return a - 1"))),
    )
    assert built == {"a": False, "b": True, "c": False} and values["b"] == 9
    assert store.manifest("b")["code"] == _graph(kit())[1].code()  # the manifest records the fingerprint


def test_closures_and_registries_are_followed():
    """A factory's closure reaches the library's training code, through the methods registry."""
    from tmlib.core import training
    from tmlib.masking import methods

    def build(ctx):
        return methods.prepare_method

    base = code_fingerprint(build)
    walk = fingerprint._Walk(frozenset({"tmlib"}))
    walk.code(build, root=True)
    reached = {getattr(o, "__qualname__", "") for o in (methods._mask, methods._lora, methods.get_method)}
    assert {id(methods._mask), id(methods._lora)} <= walk.seen, reached
    assert id(training.fit) not in walk.seen  # prepare_method does not train
    assert len(base) == 16


def test_infrastructure_is_not_followed():
    """Editing the store, the logger or a plot never rebuilds an artifact: those modules are OUTSIDE."""
    from tmlib.core import runs

    def build(ctx):
        runs.atomic_write_text("x", "y")
        return 1

    walk = fingerprint._Walk(frozenset({"tmlib"}))
    walk.code(build, root=True)
    assert id(runs.atomic_write_text) not in walk.seen


def test_a_library_stage_has_a_stable_fingerprint_across_processes(tmp_path):
    """Two fresh processes agree on a real solution stage's fingerprint (nothing in it depends on ids or order)."""
    import subprocess

    code = textwrap.dedent("""
        from tmlib.experiments import masking
        from tmlib.masking.solutions import solution_stage
        p = masking.plan(masking.MaskingConfig(out_dir="unused"))
        print(solution_stage(p.solutions[0]).code())
    """)
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(i), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        ).stdout.strip()
        for i in (1, 2)
    }
    assert len(outs) == 1 and len(next(iter(outs))) == 16


def test_a_selective_stage_fingerprint_is_the_same_in_every_process(tmp_path):
    """Module constants that are sets (the stop lists) enter in a fixed order: the hash seed does not move a key."""
    import subprocess

    code = textwrap.dedent("""
        from tmlib.core import fingerprint
        from tmlib.selective import stopwords
        walk = fingerprint._Walk(frozenset({"tmlib"}))
        walk.code(stopwords.stopword_mask, root=True)
        assert any(p.startswith("STOPWORDS=") for p in walk.parts)  # the stop list is reached
        print(fingerprint.code_fingerprint(stopwords.stopword_mask))
    """)
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={"PYTHONHASHSEED": str(i), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        ).stdout.strip()
        for i in (1, 2, 3)
    }  # fmt: skip
    assert len(outs) == 1


def test_what_the_process_did_before_does_not_move_a_fingerprint():
    """A private mutable module container is process state (a cache): filling it does not move the fingerprint of
    code that names it, so a worker or a torchrun process that did other work first agrees with the process that
    built the stage. Checked against the walk that followed such caches: the fingerprint moved once it was filled."""
    from tmlib.core import precision

    def build(ctx):
        return precision._ARITHMETIC.get("cpu")

    saved = dict(precision._ARITHMETIC)
    try:
        precision._ARITHMETIC.clear()
        before = code_fingerprint(build)
        precision._ARITHMETIC["cpu"] = precision.decide_cpu(1.0, 2.0)  # an Arithmetic object, as arithmetic() caches
        precision._ARITHMETIC["probe"] = lambda: 42  # even a function held in a cache is state, not the stage's code
        assert code_fingerprint(build) == before
    finally:
        precision._ARITHMETIC.clear()
        precision._ARITHMETIC.update(saved)


def test_only_project_code_joins_the_walk():
    """A closure holding a third-party object (a tokenizer, a frame) does not pull that library's code into the
    fingerprint: what it reaches there would depend on what the process imported."""
    import pandas as pd

    assert fingerprint._package(pd.DataFrame()) is None and fingerprint._package(pd.DataFrame) is None
    assert fingerprint._package(json_dumps := __import__("json").dumps) is None, json_dumps
    assert (
        fingerprint._package(code_fingerprint) == "tmlib"
        and fingerprint._package(_graph) == _graph.__module__.split(".")[0]
    )


def test_a_spurious_ast_depth_mismatch_is_parsed_again_and_other_errors_are_not():
    """CPython 3.11 before 3.11.8 can report "AST constructor recursion depth mismatch" while another thread builds
    a syntax tree (gh-106905): the parse is tried again; any other SystemError is raised at once."""
    calls = []

    def flaky(text):
        calls.append(text)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=144, after=26)")
        return text.upper()

    assert fingerprint.parsing(flaky, "x = 1") == "X = 1" and len(calls) == 2

    def broken(text):
        calls.append(text)
        raise SystemError("something else")

    calls.clear()
    with pytest.raises(SystemError, match="something else"):
        fingerprint.parsing(broken, "x")
    assert len(calls) == 1
