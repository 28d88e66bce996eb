"""The structure docs/architecture.md states, checked on the code: the layers and what may import what, no import
cycle, one experiment shape in all five notebook modules, stages only from recipes through factories, one training
loop."""

from __future__ import annotations

import ast
import collections
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "tmlib"

# lowest first: a module may import its own layer and the layers below it, never one above
LAYERS = {
    "infrastructure": [
        "tmlib",
        "tmlib.core",
        "tmlib.core.logs",
        "tmlib.core.heartbeat",
        "tmlib.core.fingerprint",
        "tmlib.core.config",
        "tmlib.core.precision",
        "tmlib.core.assets",
        "tmlib.core.hub",
        "tmlib.core.stats",
        "tmlib.core.runs",
    ],
    "data and models": [
        "tmlib.tasks",
        "tmlib.tasks.data",
        "tmlib.tasks.token_data",
        "tmlib.core.models",
        "tmlib.tasks.cls_forward",
        "tmlib.selective",
        "tmlib.selective.collators",
        "tmlib.selective.types",
        "tmlib.selective.stopwords",
        "tmlib.masking",
        "tmlib.masking.config",
        "tmlib.masking.layer",
        "tmlib.masking.model",
        "tmlib.masking.packing",
        "tmlib.export_snippets.*",
    ],
    "training": [
        "tmlib.core.training",
        "tmlib.core.runtime",
        "tmlib.tasks.classify",
        "tmlib.tasks.token_classify",
        "tmlib.selective.mlm",
        "tmlib.selective.buffer",
        "tmlib.selective.tagger",
        "tmlib.masking.landscape",
        "tmlib.masking.methods",
        "tmlib.masking.multitask",
        "tmlib.importance",
        "tmlib.importance.*",
    ],
    "runs": ["tmlib.masking.solutions", "tmlib.tasks.finetune"],
    "presentation": ["tmlib.plots", "tmlib.plots.*", "tmlib.highlight", "tmlib.widgets"],
    "experiments": ["tmlib.experiments", "tmlib.experiments.*"],
    "entry points": [
        "tmlib.suite",
        "tmlib.cli",
        "tmlib.__main__",
        "tmlib.export",
        "tmlib.preflight",
        "tmlib.options",
        "tmlib.report",
    ],
}
# the folders: the two papers over a shared core. A folder may import the folders it lists, nothing else of tmlib
# below the experiments (the papers never import each other; the core knows neither).
FOLDERS = {
    "core": {"core", "tmlib"},
    "tasks": {"tasks", "core", "tmlib"},
    "selective": {"selective", "tasks", "core", "tmlib"},
    "importance": {"importance", "selective", "tasks", "core", "tmlib"},
    "masking": {"masking", "tasks", "core", "tmlib", "export_snippets"},
    "export_snippets": {"export_snippets"},
}
EXPERIMENT_MODULES = sorted(  # one per notebook: every module or package directly under tmlib/experiments
    f"tmlib.experiments.{p.stem}"
    for p in (PKG / "experiments").iterdir()
    if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
)


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every tmlib module ``name`` imports, at the top or inside a function."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for n in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - n.level + 1] + ([n.module] if n.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in n.names]
        elif isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        out |= {t for t in targets if t.split(".")[0] == "tmlib" and t != name}
    return out


def _layer(name: str) -> int:
    for i, (_, patterns) in enumerate(LAYERS.items()):
        for p in patterns:
            if name == p or (p.endswith(".*") and name.startswith(p[:-1])):
                return i
    raise AssertionError(f"{name} is in no layer of docs/architecture.md: add it to LAYERS and to the doc")


def test_every_import_goes_down_the_layers():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        for target in _imports(name, path, modules):
            if _layer(target) > _layer(name):
                wrong.append(f"{name} ({list(LAYERS)[_layer(name)]}) imports {target} ({list(LAYERS)[_layer(target)]})")
    assert not wrong, "\n".join(wrong)


def _folder(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and (PKG / parts[1]).is_dir() else "tmlib"


def test_each_paper_has_its_folder_over_a_shared_core():
    """selective/ and masking/ never import each other; core/ imports no paper and no task; tasks/ no paper."""
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        folder = _folder(name)
        if folder not in FOLDERS:
            continue
        wrong += [
            f"{name} ({folder}/) imports {t}"
            for t in _imports(name, path, modules)
            if _folder(t) not in FOLDERS[folder]
        ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    modules = _modules()
    graph = {n: _imports(n, p, modules) & set(modules) for n, p in modules.items()}
    state: dict[str, int] = {}

    def visit(n, path):
        state[n] = 1
        for m in graph[n]:
            if state.get(m) == 1:
                raise AssertionError(" -> ".join([*path, n, m]))
            if m not in state:
                visit(m, [*path, n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def test_one_experiment_module_per_notebook():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks and len(EXPERIMENT_MODULES) == len(notebooks), (EXPERIMENT_MODULES, notebooks)


@pytest.mark.parametrize("name", EXPERIMENT_MODULES)
def test_every_experiment_module_has_the_same_shape(name):
    """A config dataclass (``Config``), a pure ``plan(cfg)``, an ``Experiment`` resolving the stages through one
    store with ``run`` and ``write``."""
    mod = importlib.import_module(name)
    assert dataclasses.is_dataclass(mod.Config), name
    assert callable(mod.plan) and list(__import__("inspect").signature(mod.plan).parameters)[0] == "cfg"
    for method in ("run", "write"):
        assert callable(getattr(mod.Experiment, method, None)), f"{name}.Experiment.{method}"
    source = "".join(p.read_text() for p in _files(name))
    assert len(re.findall(r"RunStore\(", source)) == 1, f"{name}: one RunStore, made by its Experiment"
    assert "cached_property" not in source


def _files(name: str) -> list[Path]:
    base = ROOT / Path(*name.split("."))
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def test_stages_come_from_recipes_through_factories():
    """In experiments/, every ``Stage(...)`` is made by a module-level factory that takes a recipe and keys the
    stage by it (``recipe.key()``): no stage built inline from a hand-made key dict."""
    wrong = []
    for path in sorted((PKG / "experiments").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in tree.body:
            inner = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Stage"]
            if not inner:
                continue
            if not isinstance(fn, ast.FunctionDef):
                wrong.append(f"{path.name}: Stage(...) outside a factory function")
                continue
            recipes = [
                a.arg for a in fn.args.args if re.search(r"(Recipe|Run)$", ast.unparse(a.annotation or ast.Name("")))
            ]
            for call in inner:
                key = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
                if not recipes or not any(f"{r}.key()" in key for r in recipes):
                    wrong.append(f"{path.name}:{call.lineno} {fn.name}: the key is not its recipe's ({key})")
    assert not wrong, "\n".join(wrong)


# the loops that step an optimizer outside fit, each with its reason (docs/architecture.md)
OWN_LOOPS = {
    "tmlib/masking/landscape.py": "the Bezier curve's control point: a functional loop over a point in weight space",
    "tmlib/core/runtime.py": "calibration times one fixed step; it trains nothing that is kept",
}


def test_optimizer_steps_run_in_fit_only():
    found = collections.defaultdict(int)
    for path in PKG.rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "step":
                owner = ast.unparse(n.func.value)
                if "sched" not in owner and owner != "self":
                    found[str(path.relative_to(ROOT))] += 1
    assert set(found) - {"tmlib/core/training.py"} == set(OWN_LOOPS), dict(found)
    assert found["tmlib/core/training.py"] == 1  # _Run.step: the one optimizer step of fit
