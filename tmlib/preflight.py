"""Is everything a parameter set names reachable, before any notebook starts?

The suite asks :func:`check_params` for every notebook's parameters: each model (a packaged name, ``scratch:<size>``,
a local checkpoint folder, a hub name in the local hub cache or on a reachable hub) and each dataset or corpus (a
builtin name, a ``csv:`` / ``jsonl:`` / ``txt:`` file, a ``hub:`` name with a reachable hub) is checked without
loading it, and each problem is one line naming the notebook's parameter, the value and the fix. A set that needs
the hub offline (e.g. ``paper``) then stops in seconds with that list, instead of two kernels and two tracebacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# parameter names (flat, as in the parameter files) that name a model / a labelled task / an unlabelled corpus
MODEL_KEYS = ("model", "backbone", "genept_model", "scorer_model", "tagger_model", "genept_checkpoints")
TASK_KEYS = ("task", "tasks", "transfer_tasks")
CORPUS_KEYS = ("genept_corpus", "taskpt_corpus")
NOT_A_MODEL = ("genept",)  # "the GenePT checkpoint of this run": built by the run itself

FILE_PREFIXES = ("csv:", "jsonl:", "txt:")


def check_model(name: str) -> str | None:
    """None when ``name`` can be loaded here, else why not (and the fix)."""
    from tmlib.core.models import SCRATCH_SIZES

    if not isinstance(name, str) or not name.strip():
        return f"{name!r} is not a model name"
    if name in NOT_A_MODEL:
        return None
    if name == "minilm":
        return _asset_problem("minilm")
    if name.startswith("scratch:"):
        size = name.split(":", 1)[1]
        return None if size in SCRATCH_SIZES else f"unknown scratch size {size!r} (choose {', '.join(SCRATCH_SIZES)})"
    p = Path(name).expanduser()
    if p.exists() or name.startswith((".", "/", "~")):
        return None if (p / "config.json").is_file() else f"{p} is not a checkpoint folder (no config.json)"
    return _hub_problem(name, "model")


def check_data(name: str, corpus: bool = False) -> str | None:
    """None when the labelled task (or, with ``corpus``, the unlabelled corpus) ``name`` is reachable."""
    from tmlib.tasks.data import CORPORA, DOCUMENTS, TASKS

    if not isinstance(name, str) or not name.strip():
        return f"{name!r} is not a dataset name"
    if name.startswith(FILE_PREFIXES):
        kind, path = name.split(":", 1)
        path = Path(path).expanduser()
        return None if path.is_file() else f"file {path} does not exist (give the path to your file after '{kind}:')"
    if name.startswith("hub:"):
        from tmlib.core.hub import hub_reachable, local_dataset

        if local_dataset(name[4:].split("@", 1)[0]) is not None:
            return None
        return (
            None
            if hub_reachable()
            else (
                f"{name!r} needs the dataset hub, which is unreachable (offline); "
                f"use a builtin name, a local csv:/jsonl: copy, or a copy of the hub "
                f"dataset under $TMLIB_DATASETS_DIR"
            )
        )
    known = {**CORPORA, **DOCUMENTS} if corpus else TASKS
    if name in known:
        return None
    kinds = "corpora" if corpus else "tasks"
    return f"unknown {'corpus' if corpus else 'task'} {name!r}; builtin {kinds}: {', '.join(sorted(known))}"


def check_params(values: Mapping[str, Any]) -> list[str]:
    """Problems with the models and datasets a notebook's flat parameters name: ``"<key>=<value>: <why>"``."""
    problems = []
    for key, value in values.items():
        names = value if isinstance(value, (list, tuple)) else [value]
        for name in names:
            if key in MODEL_KEYS:
                why = check_model(name)
            elif key in TASK_KEYS:
                why = check_data(name)
            elif key in CORPUS_KEYS:
                why = check_data(name, corpus=True)
            else:
                continue
            if why:
                problems.append(f"{key}={name}: {why}")
    return problems


def _asset_problem(name: str) -> str | None:
    from tmlib.core.assets import AssetError, asset_path

    try:
        asset_path(name)
    except AssetError as exc:
        return str(exc)
    return None


def _hub_problem(name: str, kind: str) -> str | None:
    """A hub model: in the local hub cache, or the hub reachable."""
    from tmlib.core.hub import hub_reachable

    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None
    except Exception:  # a malformed repo id: let the hub check below answer
        pass
    if hub_reachable():
        return None
    return (
        f"{kind} {name!r} is not packaged, not a local folder and not in the local hub cache, and the hub is "
        f"unreachable (offline); download it where there is internet, or use 'minilm'"
    )
