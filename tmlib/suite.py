"""Run the notebook suite with papermill: one parameter set, one output folder.

    python -m tmlib suite --params default --out runs/default

For every notebook ``notebooks/NN_name.ipynb`` with a ``papermill_params/NN_name/<params>.yaml``, the
parameter file is validated first (malformed YAML stops before anything runs), then the notebook is
executed in its own process with ``out_dir=<out>/NN_name`` injected, up to ``--jobs`` notebooks at once
(default 2; a notebook whose parameters name another's output folder, as 04's ``reuse_runs`` names 03's,
starts after it). The executed notebook is written
to a temporary name and renamed to ``<out>/NN_name.ipynb`` only when every cell ran, so a failed or
interrupted run (a cell's error, a kernel that died) never replaces a good executed notebook: it is kept as
``<out>/NN_name.failed.ipynb``, and the suite prints and raises the reason in one line.
Figures/CSV/JSON land in ``<out>/NN_name/``. Wall time and peak memory of each notebook go to
``<out>/suite_timing.csv`` (the latest run) and ``<out>/suite_history.csv`` (every run, with its time and commit),
and every notebook's ``summary.csv`` is collected into ``<out>/results.md``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from tmlib.core.config import ConfigError, load_yaml, project_root
from tmlib.core.precision import AUTO_ENV, arithmetic

ROOT = project_root() or Path.cwd()  # where the suite finds notebooks and resolves relative paths
NOTEBOOKS = ROOT / "notebooks"  # default of --notebooks
PARAMS = ROOT / "papermill_params"  # default of --params-dir


def notebooks(notebooks_dir: Path | None = None) -> list[Path]:
    """The suite's notebooks, ``NN_name.ipynb`` in ``notebooks_dir`` (default: the repository's)."""
    return sorted(Path(notebooks_dir or NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))


def params_file(notebook: Path, params: str, params_dir: Path | None = None) -> Path:
    """``<params_dir>/<notebook>/<params>.yaml``; ``params`` may also be a path to a YAML file."""
    if str(params).endswith((".yaml", ".yml")):
        return Path(params)
    return Path(params_dir or PARAMS) / notebook.stem / f"{params}.yaml"


def parameter_sets(notebooks_dir: Path | None = None, params_dir: Path | None = None) -> list[str]:
    """Names of the parameter sets every notebook has."""
    sets = [{p.stem for p in (Path(params_dir or PARAMS) / nb.stem).glob("*.yaml")} for nb in notebooks(notebooks_dir)]
    return sorted(set.intersection(*sets)) if sets else []


def run_notebook(
    notebook: Path,
    params: str,
    out: Path,
    kernel: str | None = None,
    extra: dict | None = None,
    cell_timeout: float | None = None,
) -> Path:
    """Execute one notebook with papermill in this process; returns the executed notebook's path.

    ``params`` is a parameter-set name (``papermill_params/<notebook>/<params>.yaml``) or a YAML path.
    ``cell_timeout``: seconds one cell may run before the run fails (papermill's ``execution_timeout``; default:
    no limit).
    The output is written under a temporary name and renamed when the run succeeded; on failure it is
    moved to ``NN_name.failed.ipynb`` (the previous good ``NN_name.ipynb``, if any, stays untouched).
    """
    import papermill as pm

    pfile = params_file(notebook, params)
    values = load_yaml(pfile)
    values["out_dir"] = str((out / notebook.stem).resolve())
    values.update(extra or {})
    out.mkdir(parents=True, exist_ok=True)
    target = out / notebook.name
    partial = out / f".{notebook.stem}.partial.ipynb"
    try:
        # the kernel is killed when the run ends or stops: a graceful shutdown of a kernel busy in a cell (Ctrl-C)
        # lets the cell finish later and print a traceback on its closed sockets
        pm.execute_notebook(
            str(notebook),
            str(partial),
            parameters=values,
            cwd=str(ROOT),
            kernel_name=kernel or _kernel_name(),
            progress_bar=sys.stderr.isatty(),
            log_output=False,
            shutdown_kernel="immediate",
            execution_timeout=cell_timeout,
        )
    except BaseException:
        if partial.exists():
            os.replace(partial, out / f"{notebook.stem}.failed.ipynb")
        raise
    os.replace(partial, target)
    (out / f"{notebook.stem}.failed.ipynb").unlink(missing_ok=True)
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
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ipykernel",
            "install",
            "--sys-prefix",
            "--name",
            name,
            "--display-name",
            "Python (tmlib)",
        ],
        check=True,
        capture_output=True,
    )
    return name


class _follow:
    """Print the lines a notebook's stages append to ``progress.log`` while it runs (one line per stage
    built or loaded, with its time), so a run whose output is not a terminal (a log file, CI) shows
    where it is. Lines already in the file before the run are skipped."""

    def __init__(self, path: Path, prefix: str, every: float = 2.0):
        import threading

        self.path, self.prefix, self.every = path, prefix, every
        self.offset = path.stat().st_size if path.is_file() else 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _drain(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            print(self.prefix + line, flush=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self._drain()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self._drain()
        return False


# Notebooks run at once by `python -m tmlib suite` (= `make run`). A small model's step gains little from a second
# thread, so a second notebook process uses what one leaves idle: the suite finishes sooner with identical numbers
# (same thread count per notebook); the gain is in docs/performance.md. 1 = one after another.
DEFAULT_JOBS = 2


def read_sets(nbs: list[Path], params: str, params_dir: Path | None = None) -> dict[str, dict]:
    """Every notebook's parameter file of set ``params``, read (and so validated) once: stem -> values."""
    return {nb.stem: load_yaml(params_file(nb, params, params_dir)) for nb in nbs}


def reading_parameters(sets: dict[str, dict]) -> dict[str, dict[str, str]]:
    """Per notebook (``sets``: :func:`read_sets`), its string parameters that name another notebook's output
    folder of this run, e.g. ``{"04_loss_landscape": {"reuse_runs": "03_masking_vs_finetuning"}}``."""
    stems = set(sets)
    out = {}
    for stem, values in sets.items():
        out[stem] = {
            k: Path(v.rstrip("/")).name
            for k, v in values.items()
            if isinstance(v, str) and v.strip() and Path(v.rstrip("/")).name in stems - {stem}
        }
    return out


def dependencies(sets: dict[str, dict]) -> dict[str, set[str]]:
    """Which notebooks of this run each notebook reads from: a string parameter naming another notebook's
    output folder (``reuse_runs: runs/default/03_masking_vs_finetuning``) makes it wait for that notebook (and
    :func:`run_suite` points the parameter at that notebook's folder in this run's ``out``)."""
    deps = {stem: set(named.values()) for stem, named in reading_parameters(sets).items()}
    done, left = set(), dict(deps)
    while left:  # notebooks that wait on each other would never start: refuse before running anything
        ready = [k for k, d in left.items() if d <= done]
        if not ready:
            raise ConfigError(
                "notebooks wait on each other's output folders: "
                + "; ".join(f"{k} reads {', '.join(sorted(d))}" for k, d in sorted(left.items()))
                + "; point the parameters at a folder of another run"
            )
        done.update(ready)
        for k in ready:
            del left[k]
    return deps


def start_order(nbs: list[Path], deps: dict[str, set[str]], seconds: dict[str, float] | None = None) -> list[Path]:
    """The order in which ready notebooks are started: first those others wait for (longest chain of
    dependents first: 03 before 01 and 02, so 04 is not left alone at the end), then those that waited for
    another (04: the rest of a chain), then the longest by ``seconds`` (a previous run's
    ``suite_timing.csv``, when there is one), then file order."""
    seconds = seconds or {}

    def depth(stem: str, seen=()) -> int:  # longest chain of notebooks waiting on this one
        below = [s for s, d in deps.items() if stem in d and s not in seen]
        return 1 + max(depth(s, seen + (stem,)) for s in below) if below else 0

    index = {nb.stem: i for i, nb in enumerate(nbs)}
    return sorted(
        nbs, key=lambda nb: (-depth(nb.stem), 0 if deps.get(nb.stem) else 1, -seconds.get(nb.name, 0.0), index[nb.stem])
    )


class _Lane:
    """One notebook running in its own process (``python -m tmlib.suite``); its one-line JSON answer
    goes to a temporary file, not a pipe, so a chatty child can never block on a full pipe."""

    def __init__(self, nb: Path, params_path: Path, out: Path, kernel: str, env: dict):
        import tempfile

        print(f"[tmlib suite] {nb.name} with {params_path.name} -> {out / nb.name}", flush=True)
        self.nb = nb
        self.answer = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - open while the lane runs, closed in finish
        self.follow = _follow(out / nb.stem / "progress.log", prefix=f"[tmlib suite]   {nb.stem[:2]} ").__enter__()
        # stderr is inherited: papermill's cell progress bar (on a terminal) and any traceback show as they happen.
        # Its own session: a terminal's Ctrl-C reaches the suite only, which stops the notebooks (_stop) without
        # their kernels' tracebacks
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tmlib.suite", str(nb), str(params_path), str(out), kernel],
            stdout=self.answer,
            text=True,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )

    def finish(self) -> tuple[int, str]:
        self.follow.__exit__(None, None, None)
        self.answer.seek(0)
        text = self.answer.read()
        self.answer.close()
        return self.proc.returncode, text


def _run_lanes(
    pending, running, done, rows, failures, events, deps, params, pdir, sets, extras, out, kernel, env, jobs
) -> None:
    """Start ready notebooks (up to ``jobs`` at once) and collect the finished ones, until none is left to start.
    ``events`` receives the schedule as it happens: one row per start, end or failure, with the scheduling round
    (a round is one poll; a start in the round its dependency ended waited for nothing else)."""
    start, round_ = time.perf_counter(), 0

    def event(kind: str, nb: Path) -> None:
        events.append(
            {"round": round_, "event": kind, "notebook": nb.stem, "seconds": round(time.perf_counter() - start, 2)}
        )

    while pending or running:
        while not failures and len(running) < jobs:
            ready = [nb for nb in pending if deps[nb.stem] <= done]
            if not ready:
                break
            pending.remove(ready[0])
            event("start", ready[0])
            running.append(
                _Lane(
                    ready[0],
                    _with_extra(params_file(ready[0], params, pdir), sets[ready[0].stem], extras[ready[0].stem], out),
                    out,
                    kernel,
                    env,
                )
            )
        if not running:
            break  # what is left waits for a notebook that failed
        time.sleep(0.2)
        round_ += 1
        for lane in [ln for ln in running if ln.proc.poll() is not None]:
            running.remove(lane)
            code, text = lane.finish()
            event("end" if code == 0 else "failed", lane.nb)
            if code != 0:
                reason = _reason_from(text, code)
                print(f"[tmlib suite]   {lane.nb.stem[:2]} FAILED: {reason}", flush=True)
                failures.append(
                    RuntimeError(
                        f"{lane.nb.name} failed with parameter set {params!r} ({reason}); the "
                        "executed notebook with the error is "
                        f"{out / (lane.nb.stem + '.failed.ipynb')}"
                    )
                )
                continue
            row = json.loads(text.strip().splitlines()[-1])
            row["jobs"] = jobs
            rows[lane.nb.stem] = row
            done.add(lane.nb.stem)
            print(
                f"[tmlib suite]   {lane.nb.stem[:2]} done in {row['seconds']:.0f} s, peak memory "
                f"{row['peak_rss_mb']:.0f} MB",
                flush=True,
            )


class Interrupted(SystemExit):
    """A person's Ctrl-C: the suite stopped; its message is one line (what was kept, how to resume)."""

    def __init__(self, line: str):
        super().__init__(130)
        self.line = line


def _stop(running: list[_Lane]) -> None:
    """After Ctrl-C: ask each running notebook's process to stop (SIGTERM: papermill shuts its kernel down; every
    stage already committed stays), and end the process group of any that has not within 60 s."""
    import signal

    for lane in running:
        lane.proc.terminate()
    for lane in running:
        try:
            lane.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(lane.proc.pid, signal.SIGKILL)
            lane.proc.wait()
        lane.finish()


def kept_stages(folder: Path) -> int:
    """How many committed stages (folders with a manifest) a notebook's run folder holds."""
    from tmlib.core.runs import MANIFEST

    return sum(1 for _ in folder.rglob(MANIFEST)) if folder.is_dir() else 0


def interrupted_line(out: Path, nbs: list[Path], before: dict[str, int]) -> str:
    """The one line a Ctrl-C prints: the stages kept (built before and during this run), and that the same command
    resumes from them."""
    now = {nb.stem: kept_stages(out / nb.stem) for nb in nbs}
    new = sum(max(0, now[k] - before.get(k, 0)) for k in now)
    return (
        f"[tmlib suite] interrupted: {sum(now.values())} finished stages are kept in {out} ({new} built in this "
        "run); run the same command again to resume from them"
    )


def run_suite(
    params: str,
    out: str | Path | None = None,
    only: list[str] | None = None,
    kernel: str | None = None,
    jobs: int = DEFAULT_JOBS,
    notebooks_dir: str | Path | None = None,
    params_dir: str | Path | None = None,
    extra: dict | None = None,
    calibrate: bool = False,
) -> list[dict]:
    """Run the notebooks of a parameter set, up to ``jobs`` at once, each in its own process, in
    :func:`start_order`, a notebook starting only after the notebooks it reads from (:func:`dependencies`).
    Returns one timing row per notebook, in file order. A failure lets the running notebooks finish, starts
    no new one, then raises. ``notebooks_dir`` / ``params_dir``: where the notebooks and their parameter folders
    are (default: the repository's ``notebooks/`` and ``papermill_params/``), so an installed tmlib can run a
    suite it is given. ``extra``: parameters that override the set's (``-p``, :func:`split_extra`). ``calibrate``:
    time a fixed MiniLM training step first (:func:`tmlib.core.runtime.calibrate`, a few seconds) and record it in
    ``suite_timing.csv`` / ``suite_history.csv`` beside every notebook's wall time."""
    out = Path(out or ROOT / "runs" / Path(params).stem)
    ndir, pdir = Path(notebooks_dir or NOTEBOOKS), Path(params_dir or PARAMS)
    nbs = _selected(params, only, jobs, ndir, pdir)
    sets = read_sets(nbs, params, pdir)  # the one read of every parameter file: validated before anything starts
    deps = dependencies(sets)
    extras = split_extra(nbs, extra or {})
    for stem, named in reading_parameters(sets).items():  # read this run's output, wherever out is
        for name, other in named.items():
            extras[stem].setdefault(name, str((out / other).resolve()))
    preflight(params, sets, extras)
    order = start_order(nbs, deps, _previous_seconds(out, params, pdir))
    kernel = kernel or _kernel_name()
    env = dict(os.environ)
    if jobs > 1:  # spinning OpenMP threads steal the other notebook's core: half the throughput (bench_suite_jobs.py)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    started = {nb.stem: kept_stages(out / nb.stem) for nb in nbs}
    calibration = _arithmetic(env, calibrate)
    start = time.perf_counter()
    pending, running, done, rows, failures, events = list(order), [], set(), {}, [], []
    try:
        _run_lanes(
            pending, running, done, rows, failures, events, deps, params, pdir, sets, extras, out, kernel, env, jobs
        )
    except KeyboardInterrupt:
        _stop(running)
        raise Interrupted(interrupted_line(out, nbs, started)) from None
    finally:
        _write_events(out, events)
    rows = [{**rows[nb.stem], **calibration} for nb in nbs if nb.stem in rows]
    if rows:
        _write_summaries(out, params, rows)
    if failures:
        raise failures[0]
    print(f"[tmlib suite] {len(rows)} notebook(s) in {time.perf_counter() - start:.0f} s ({jobs} at once)", flush=True)
    return rows


def _selected(params: str, only: list[str] | None, jobs: int, ndir: Path, pdir: Path) -> list[Path]:
    """The notebooks a suite run starts, after checking its folders, ``jobs`` and that each has the set."""
    for what, d in (("notebooks", ndir), ("params-dir", pdir)):
        if not d.is_dir():
            raise ConfigError(
                f"--{what} {d} is not a folder; give the folder that holds the suite's "
                f"{'NN_name.ipynb notebooks' if what == 'notebooks' else 'per-notebook parameter folders'}"
            )
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs must be a whole number >= 1 (got {jobs!r}); 1 runs the notebooks one after another")
    nbs = [nb for nb in notebooks(ndir) if not only or any(nb.stem.startswith(o) for o in only)]
    if not nbs:
        raise ConfigError(
            f"no notebooks matched {only} in {ndir}; available: "
            f"{', '.join(nb.stem for nb in notebooks(ndir)) or 'none'}"
        )
    missing = [str(params_file(nb, params, pdir)) for nb in nbs if not params_file(nb, params, pdir).is_file()]
    if missing:
        raise ConfigError(
            f"parameter set {params!r} is missing for: {', '.join(missing)}; "
            f"available sets: {', '.join(parameter_sets(ndir, pdir)) or 'none'}"
        )
    return nbs


def _arithmetic(env: dict, calibrate: bool) -> dict:
    """Decide ``auto`` once for the whole suite (every notebook's "auto" then means the same: ``env`` carries it),
    print it, and with ``calibrate`` time the fixed MiniLM step; returns what the timing rows record."""
    found = arithmetic()  # once for the whole suite: every notebook's "auto" means the same
    if AUTO_ENV not in env:
        env.update({AUTO_ENV: found.name, AUTO_ENV + "_REASON": f"{found.reason}; decided by the suite"})
    print(f"[tmlib suite] arithmetic: {found.name} where a set says auto ({found.reason})", flush=True)
    calibration = found.record()
    if calibrate:  # before the notebooks, alone on the machine: this host's speed now
        from tmlib.core.runtime import calibrate as measure

        calibration.update(measure(mixed_precision="auto"))
        also = "".join(
            f", {calibration[k] * 1000:.0f} ms in {k.rsplit('_', 1)[1]}"
            for k in calibration
            if k.startswith("calibration_step_s_")
        )
        print(
            f"[tmlib suite] calibration: {calibration['calibration_step_s'] * 1000:.0f} ms per MiniLM training "
            f"step in fp32{also} (load {calibration['calibration_load']:.1f})",
            flush=True,
        )
    return calibration


def notebook_parameters(nb: Path) -> list[str]:
    """The names a notebook's ``parameters`` cell defines (papermill reads the cell; no kernel starts)."""
    import papermill as pm

    return list(pm.inspect_notebook(str(nb)))


def parameters_document(nbs: list[Path], params_dir: Path) -> str:
    """Markdown: per notebook, every parameter (type, default, help) and the value each parameter set gives it
    where that differs from the default. Generated (``python -m tmlib params doc``), so it cannot go stale."""
    import papermill as pm

    lines = [
        "# Parameters",
        "",
        "Generated by `python -m tmlib params doc --out docs/parameters.md` from the "
        "notebooks' parameters cells and `papermill_params/`; a test checks it is current.",
        "",
    ]
    for nb in nbs:
        info = pm.inspect_notebook(str(nb))
        sets = {f.stem: load_yaml(f) for f in sorted((params_dir / nb.stem).glob("*.yaml"))}
        lines += [
            f"## {nb.stem}",
            "",
            "Sets: " + ", ".join(f"`{k}`" for k in sets),
            "",
            "| parameter | type | default | help | sets that change it |",
            "|---|---|---|---|---|",
        ]
        for name, p in info.items():
            default = p["default"]
            try:
                value = eval(default, {})  # a literal from the parameters cell
            except Exception:
                value = default
            changed = [f"{k}: `{v[name]}`" for k, v in sets.items() if name in v and v[name] != value]
            cell = lambda x: str(x).replace("|", "\\|")
            lines.append(
                f"| `{name}` | {cell(p['inferred_type_name'])} | `{cell(default)}` | {cell(p['help'])} | "
                f"{cell('; '.join(changed))} |"
            )
        lines.append("")
    return "\n".join(lines)


def split_extra(nbs: list[Path], extra: dict) -> dict[str, dict]:
    """Per notebook, the ``-p`` overrides that apply to it: ``NN.name`` for notebook NN only, a plain ``name``
    for every notebook whose parameters cell defines it. A name no chosen notebook defines is an error."""
    known = {nb.stem: set(notebook_parameters(nb)) for nb in nbs}
    out: dict[str, dict] = {nb.stem: {} for nb in nbs}
    for key, value in extra.items():
        prefix, dot, name = key.partition(".")
        if dot and prefix.isdigit():
            targets = [nb.stem for nb in nbs if nb.stem.startswith(prefix)]
            if not targets:
                raise ConfigError(f"-p {key}: no notebook {prefix} in this run ({', '.join(out)})")
        else:
            name, targets = key, [stem for stem in out if key in known[stem]]
            if not targets:
                raise ConfigError(
                    f"-p {key}: no notebook of this run has a parameter {key!r}; "
                    f"`python -m tmlib params show NN` lists a notebook's parameters"
                )
        for stem in targets:
            if name not in known[stem]:
                near = sorted(k for k in known[stem] if name.split("_")[0] in k)[:8]
                raise ConfigError(
                    f"-p {key}: notebook {stem} has no parameter {name!r}"
                    + (f" (similar: {', '.join(near)})" if near else "")
                )
            out[stem][name] = value
    return out


def preflight(params: str, sets: dict[str, dict], extras: dict[str, dict]) -> None:
    """Stop before any notebook starts when a model or dataset the run names is not reachable here
    (:func:`tmlib.preflight.check_params`), listing every one."""
    from tmlib.preflight import check_params

    problems = [
        f"  {stem[:2]} {p}" for stem, values in sets.items() for p in check_params({**values, **extras.get(stem, {})})
    ]
    if problems:
        raise ConfigError(
            f"parameter set {params!r} names {len(problems)} model(s)/dataset(s) not reachable here:\n"
            + "\n".join(problems)
        )


def _with_extra(pfile: Path, values: dict, extra: dict | None, out: Path) -> Path:
    """``pfile`` (read as ``values``), or with ``extra`` a copy of it with those parameters overridden
    (``<out>/.params/<notebook>/``)."""
    if not extra:
        return pfile
    import yaml

    merged = out / ".params" / pfile.parent.name / pfile.name
    merged.parent.mkdir(parents=True, exist_ok=True)
    merged.write_text(yaml.safe_dump({**values, **extra}, sort_keys=False))
    return merged


EXPECTED_SECONDS = "expected_seconds.yaml"  # in the params folder: {set: {notebook stem: seconds}}


def _previous_seconds(out: Path, params: str = "", params_dir: Path | None = None) -> dict[str, float]:
    """Seconds per notebook (``NN_name.ipynb`` keys) of the last run into ``out`` (``suite_timing.csv``); without
    one (a fresh clone), the set's entry in ``<params_dir>/expected_seconds.yaml`` (a measured ``make run``), so
    the longest notebook still starts first; {} if neither is there or readable."""
    import pandas as pd

    try:
        t = pd.read_csv(out / "suite_timing.csv")
        return {str(k): float(v) for k, v in zip(t["notebook"], t["seconds"])}
    except Exception:
        pass
    try:
        expected = load_yaml(Path(params_dir or PARAMS) / EXPECTED_SECONDS).get(Path(params).stem) or {}
        return {f"{k}.ipynb": float(v) for k, v in expected.items()}
    except Exception:
        return {}


def _commit() -> str:
    """The checkout's short commit (with ``+`` when the work tree has changes), "" outside a git checkout."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "--short", "HEAD")
        if head.returncode:
            return ""
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def _write_events(out: Path, events: list[dict]) -> None:
    """``suite_events.csv``: the last run's schedule (round, event, notebook, seconds), in the order it happened."""
    import csv
    import io

    from tmlib.core.runs import atomic_write_text

    if not events:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(events[0]))
    writer.writeheader()
    writer.writerows(events)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suite_events.csv", buf.getvalue())


def _write_summaries(out: Path, params: str, rows: list[dict]) -> None:
    """``suite_timing.csv``: the latest row per notebook (a cached rerun replaces a full run's row, and the
    next run's start order reads it); ``suite_history.csv``: every run's rows appended, with the time it
    finished and the commit, so the time of a full run survives the reruns after it; ``results.md``."""
    import datetime

    import pandas as pd

    from tmlib.core.runs import atomic_write_text

    timing = out / "suite_timing.csv"
    old = pd.read_csv(timing) if timing.is_file() else pd.DataFrame(columns=["notebook"])
    merged = pd.concat([old[~old["notebook"].isin([r["notebook"] for r in rows])], pd.DataFrame(rows)])
    atomic_write_text(timing, merged.sort_values("notebook").to_csv(index=False))
    history = out / "suite_history.csv"
    finished = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    new = pd.DataFrame([{"finished": finished, "commit": _commit(), **r} for r in rows])
    before = pd.read_csv(history, dtype={"commit": str}, keep_default_na=False) if history.is_file() else None
    atomic_write_text(history, (new if before is None else pd.concat([before, new])).to_csv(index=False))
    atomic_write_text(out / "results.md", results_markdown(out, params))


def markdown_table(frame, floatfmt: str = "{:.4g}") -> str:
    """A DataFrame as a GitHub-flavoured markdown table (no extra dependency)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [floatfmt.format(v) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(out: Path, params: str) -> str:
    """One page with every notebook's ``summary.csv`` and the suite timing, for a run folder."""
    import pandas as pd

    parts = [f"# tmlib suite results: parameter set `{params}`", ""]
    timing = out / "suite_timing.csv"
    if timing.is_file():
        parts += ["## Wall time and peak memory per notebook", "", markdown_table(pd.read_csv(timing)), ""]
    for nb_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        summary = nb_dir / "summary.csv"
        if summary.is_file():
            parts += [f"## {nb_dir.name}", "", markdown_table(pd.read_csv(summary)), ""]
    return "\n".join(parts)


def failure_reason(exc: BaseException) -> str:
    """One line saying why a notebook run failed: the cell's exception (``ename: evalue``) for an error in
    a cell, else the exception's type and first line (``DeadKernelError: Kernel died``)."""
    if getattr(exc, "ename", None):  # papermill's PapermillExecutionError: an exception raised in a cell
        where = f" in cell {exc.exec_count}" if getattr(exc, "exec_count", None) is not None else ""
        text = f"{exc.ename}{where}: {exc.evalue}"
    else:
        first = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _reason_from(stdout: str, returncode: int) -> str:
    """The one-line reason a notebook's runner process printed last, or its exit status."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("error"):
            return row["error"]
    return f"the runner process exited with status {returncode}" + (" (killed by a signal)" if returncode < 0 else "")


def _interrupt(signum, frame):
    """The suite stops this notebook (a person's Ctrl-C): from here on its stderr is silent (the kernel it kills and
    the execution it abandons would print tracebacks); the suite says what happened, in one line."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    raise KeyboardInterrupt


def _one(notebook: str, params: str, out: str, kernel: str) -> None:
    import signal

    signal.signal(signal.SIGTERM, _interrupt)  # the suite stopping (a person's Ctrl-C): as Ctrl-C, quietly
    start = time.perf_counter()
    try:
        run_notebook(Path(notebook), params, Path(out), kernel=kernel)
    except KeyboardInterrupt:  # Ctrl-C reached the whole process group: the suite prints the one line
        print(json.dumps({"notebook": Path(notebook).name, "error": "interrupted"}), flush=True)
        raise SystemExit(130) from None
    except Exception as exc:  # the traceback still goes to stderr; the reason, one line, to the suite
        print(json.dumps({"notebook": Path(notebook).name, "error": failure_reason(exc)}), flush=True)
        raise
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "notebook": Path(notebook).name,
                "params": Path(params).stem,
                "seconds": round(time.perf_counter() - start, 1),
                "peak_rss_mb": round(peak_kb / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    _one(*sys.argv[1:5])
