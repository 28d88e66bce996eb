"""Run the notebook suite with papermill: one parameter set, one output folder.

    python -m tmlib suite --params default --out runs/default

For every notebook ``notebooks/NN_name.ipynb`` with a ``papermill_params/NN_name/<params>.yaml``, the
parameter file is validated first (malformed YAML stops before anything runs), then the notebook is
executed in its own process with ``out_dir=<out>/NN_name`` injected; the executed notebook lands in
``<out>/NN_name.ipynb`` and its figures/CSV/JSON in ``<out>/NN_name/``. Wall time and peak memory
of each notebook go to ``<out>/suite_timing.csv``.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from .config import ConfigError, load_yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PARAMS = ROOT / "papermill_params"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def params_file(notebook: Path, params: str) -> Path:
    return PARAMS / notebook.stem / f"{params}.yaml"


def run_notebook(notebook: Path, params: str, out: Path, kernel: str | None = None, extra: dict | None = None) -> Path:
    """Execute one notebook with papermill in this process; returns the executed notebook's path."""
    import papermill as pm

    pfile = params_file(notebook, params)
    values = load_yaml(pfile)
    values["out_dir"] = str((out / notebook.stem).resolve())
    values.update(extra or {})
    out.mkdir(parents=True, exist_ok=True)
    target = out / notebook.name
    pm.execute_notebook(str(notebook), str(target), parameters=values, cwd=str(ROOT),
                        kernel_name=kernel or _kernel_name(), progress_bar=False, log_output=False)
    return target


def _kernel_name() -> str:
    """A kernel spec pointing at this interpreter (installed into the venv on first use)."""
    from jupyter_client.kernelspec import KernelSpecManager

    name = "tmlib"
    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(name)
        if Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return name
    except Exception:
        pass
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", name,
                    "--display-name", "Python (tmlib)"], check=True, capture_output=True)
    return name


def run_suite(params: str, out: str | Path | None = None, only: list[str] | None = None, kernel: str | None = None) -> list[dict]:
    out = Path(out or ROOT / "runs" / params)
    nbs = [nb for nb in notebooks() if not only or any(nb.stem.startswith(o) for o in only)]
    if not nbs:
        raise ConfigError(f"no notebooks matched {only} in {NOTEBOOKS}")
    missing = [str(params_file(nb, params)) for nb in nbs if not params_file(nb, params).is_file()]
    if missing:
        raise ConfigError(f"parameter set {params!r} is missing for: {', '.join(missing)}")
    for nb in nbs:  # validate every file before spending time on the first notebook
        load_yaml(params_file(nb, params))
    kernel = kernel or _kernel_name()
    rows = []
    for nb in nbs:
        print(f"[tmlib suite] {nb.name} with {params}.yaml -> {out / nb.name}", flush=True)
        proc = subprocess.run([sys.executable, "-m", "tmlib.suite", str(nb), params, str(out), kernel],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-6000:])
            raise RuntimeError(f"{nb.name} failed with parameter set {params!r}; the executed notebook with the "
                               f"error is {out / nb.name}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"[tmlib suite]   done in {row['seconds']:.0f} s, peak memory {row['peak_rss_mb']:.0f} MB", flush=True)
    import pandas as pd

    from .runs import atomic_write_text

    atomic_write_text(out / "suite_timing.csv", pd.DataFrame(rows).to_csv(index=False))
    return rows


def _one(notebook: str, params: str, out: str, kernel: str) -> None:
    start = time.perf_counter()
    run_notebook(Path(notebook), params, Path(out), kernel=kernel)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"notebook": Path(notebook).name, "params": params, "seconds": time.perf_counter() - start,
                      "peak_rss_mb": peak_kb / 1024}))


if __name__ == "__main__":
    _one(*sys.argv[1:5])
