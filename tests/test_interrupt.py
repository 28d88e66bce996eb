"""A person's Ctrl-C during a suite: one line (what was kept, how to resume), no traceback; the same command then
resumes, loading every stage that had finished and building only the rest."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

STAGES = 6

BUILD = f"""from tmlib.core.runs import RunStore, Stage
store = RunStore(cfg.out_dir, progress=True)

def build(ctx, i):
    time.sleep(cfg.sleep)
    return i

for i in range({STAGES}):
    store.get(Stage(f"stage{{i}}", {{"i": i}}, lambda ctx, i=i: build(ctx, i),
                    save=lambda v, d: (d / "v.txt").write_text(str(v)), load=lambda d: int((d / "v.txt").read_text())))
"""


def _stage_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import time\nfrom tmlib.core.config import notebook_config\n"
            "from tests.nb_fixture import FixtureConfig\n_before = set(globals())"
        ),
        nbformat.v4.new_code_cell(
            'out_dir = "x"\nsteps = 3\nsleep = 0.0\nreads = ""', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell("cfg = notebook_config(FixtureConfig, globals(), _before)"),
        nbformat.v4.new_code_cell(BUILD),
    ]
    nbformat.write(nb, path)


def _suite(tmp_path: Path) -> list[str]:
    nbdir, pdir = tmp_path / "notebooks", tmp_path / "params"
    (pdir / "00_stages").mkdir(parents=True, exist_ok=True)
    nbdir.mkdir(exist_ok=True)
    _stage_notebook(nbdir / "00_stages.ipynb")
    (pdir / "00_stages" / "smoke.yaml").write_text("sleep: 1.5\n")
    return [
        sys.executable,
        "-m",
        "tmlib",
        "suite",
        "--params",
        "smoke",
        "--notebooks",
        str(nbdir),
        "--params-dir",
        str(pdir),
        "--out",
        str(tmp_path / "run"),
        "--no-calibration",
        "--jobs",
        "1",
    ]


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_the_same_command_resumes(tmp_path):
    cmd = _suite(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    log = tmp_path / "run" / "00_stages" / "progress.log"
    # its own process group, as a terminal's foreground job, with Ctrl-C's default action (a shell starting this test
    # in the background, as CI may, leaves SIGINT ignored, and children inherit that)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 180
    while time.time() < deadline and (not log.is_file() or log.read_text().count(": built in") < 2):
        time.sleep(0.2)
    assert log.is_file() and log.read_text().count(": built in") >= 2, "two stages should have been built"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: every process of the foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err + out, err
    lines = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and "run the same command again to resume" in lines[0], err
    kept = int(lines[0].split("interrupted: ")[1].split()[0])
    built = {ln.split()[1].rstrip(":") for ln in log.read_text().splitlines() if ": built in" in ln}
    assert kept == len(built) >= 2 and kept < STAGES, (kept, built)
    # the same command again: the finished stages load, only the rest are built
    log.write_text("")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    second = log.read_text().splitlines()
    cached = {ln.split()[1].rstrip(":") for ln in second if ln.endswith(": cached")}
    rebuilt = {ln.split()[1].rstrip(":") for ln in second if ": built in" in ln}
    assert cached == built, "every stage finished before Ctrl-C loads"
    assert rebuilt == {f"stage{i}" for i in range(STAGES)} - built, "only the rest are built"
