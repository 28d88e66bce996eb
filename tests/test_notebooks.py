"""Every notebook follows the suite's conventions; the suite runner is atomic and rejects bad parameters.

The smoke runs of each notebook live beside its experiment's tests (tests/test_nb_NN.py).
"""

import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
import yaml

from tmlib import suite
from tmlib.core.config import ConfigError
from tmlib.suite import notebooks, params_file, run_suite

NOTEBOOKS = notebooks()
SETS = ("smoke", "default", "paper")


def test_suite_has_notebooks():
    """The suite is the five numbered notebooks, in order, and not the explorer app beside them; each has a
    parameter file per set."""
    assert [nb.name for nb in NOTEBOOKS] == [
        "01_selective_masking.ipynb",
        "02_token_importance_explorer.ipynb",
        "03_masking_vs_finetuning.ipynb",
        "04_loss_landscape.ipynb",
        "05_what_masks_learn.ipynb",
    ]
    assert (suite.NOTEBOOKS / "explorer_app.ipynb").is_file()  # in the folder, not in the suite
    assert all(params_file(nb, s).is_file() for nb in NOTEBOOKS for s in SETS)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_conventions(nb):
    doc = json.loads(nb.read_text())
    cells = doc["cells"]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        "commit notebooks with outputs stripped"
    )
    assert cells[0]["cell_type"] == "markdown", "open with prose: what the paper claims and what this notebook shows"
    after = "".join(cells[tagged[0] + 1]["source"])
    assert "notebook_config(" in after, "the cell after the parameters must build the config (rejects unknown names)"
    before = "".join("".join(c["source"]) for c in cells[: tagged[0]] if c["cell_type"] == "code")
    assert "_before = set(globals())" in before
    params = pm.inspect_notebook(str(nb))
    assert "out_dir" in params
    for name, p in params.items():
        assert p["help"], f"parameter {name} needs a '# comment' (shown by papermill --help-notebook)"
    for s in SETS:
        values = yaml.safe_load(params_file(nb, s).read_text()) or {}
        unknown = set(values) - set(params)
        assert not unknown, f"{s}.yaml sets parameters the notebook does not have: {unknown}"
    default = yaml.safe_load(params_file(nb, "default").read_text()) or {}
    for name, value in default.items():
        if name in BATCH_ONLY:  # deliberate: what a person in JupyterLab wants differs from a batch run
            assert eval(params[name]["default"]) == BATCH_ONLY[name][0] and value == BATCH_ONLY[name][1], name
            continue
        assert eval(params[name]["default"]) == value, f"parameters cell default of {name} differs from default.yaml"


# The one list of deliberate differences between a notebook's parameters cell (what a person opening it in
# JupyterLab gets) and its batch default.yaml: name -> (notebook value, default.yaml value)
BATCH_ONLY = {"interactive": (True, False)}


def test_notebooks_are_thin():
    """Logic lives in tmlib: notebook code cells hold no function/class definitions and no long loops."""
    for nb in NOTEBOOKS:
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            assert "\ndef " not in "\n" + src and "\nclass " not in "\n" + src, (
                f"{nb.name}: move definitions into tmlib"
            )
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                continue  # one documented `name = value` line per parameter: data, not logic
            assert len(src.splitlines()) <= 25, f"{nb.name}: a {len(src.splitlines())}-line cell; move logic into tmlib"


def test_every_parameter_has_a_type():
    """Parameters cells are ``name: type = value  # help``: ``papermill --help-notebook`` and ``tmlib params show``
    print each parameter's type, not "Unknown type"."""
    import papermill as pm

    for nb in NOTEBOOKS:
        untyped = [k for k, v in pm.inspect_notebook(str(nb)).items() if v["inferred_type_name"] in ("None", None)]
        assert not untyped, f"{nb.name}: parameters without a type annotation: {untyped}"


# ------------------------------------------------------------------ the runner itself, on a fixture notebook


def _fixture_notebook(path: Path) -> None:
    """A 2-second notebook: writes summary.csv, and its start/end times to times.json."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell("# fixture"),
        nbformat.v4.new_code_cell(
            "import json, pathlib\nfrom tmlib.core.config import notebook_config\n"
            "from tests.nb_fixture import FixtureConfig\n_before = set(globals())"
        ),
        nbformat.v4.new_code_cell(
            'out_dir = "x"  # output folder\nsteps = 3  # how many steps\n'
            'sleep = 0.0  # seconds to wait\nreads = ""  # another notebook\'s output folder',
            metadata={"tags": ["parameters"]},
        ),
        nbformat.v4.new_code_cell("cfg = notebook_config(FixtureConfig, globals(), _before)"),
        nbformat.v4.new_code_cell(
            "import time\nt0 = time.time(); time.sleep(cfg.sleep)\n"
            "assert cfg.steps > 0, 'steps must be positive'\n"
            "p = pathlib.Path(cfg.out_dir); p.mkdir(parents=True, exist_ok=True)\n"
            "(p / 'summary.csv').write_text(f'metric,value\\nsteps,{cfg.steps}\\n')\n"
            "(p / 'times.json').write_text(json.dumps([t0, time.time()]))"
        ),
    ]
    nbformat.write(nb, path)


@pytest.fixture
def fixture_suite(tmp_path, monkeypatch):
    """A one-notebook suite (a 2-second notebook) so the runner's behaviour is tested without training."""
    nbdir, pdir = tmp_path / "notebooks", tmp_path / "params"
    nbdir.mkdir()
    (pdir / "00_fixture").mkdir(parents=True)
    _fixture_notebook(nbdir / "00_fixture.ipynb")
    (pdir / "00_fixture" / "smoke.yaml").write_text("steps: 2\n")
    (pdir / "00_fixture" / "bad.yaml").write_text("steps: -1\n")
    monkeypatch.setattr(suite, "NOTEBOOKS", nbdir)
    monkeypatch.setattr(suite, "PARAMS", pdir)
    return nbdir / "00_fixture.ipynb"


@pytest.mark.slow
def test_runner_rejects_unknown_parameter_and_keeps_good_output(fixture_suite, tmp_path):
    out = tmp_path / "run"
    good = suite.run_notebook(fixture_suite, "smoke", out)
    assert good == out / "00_fixture.ipynb" and (out / "00_fixture" / "summary.csv").read_text().endswith("steps,2\n")
    before = good.read_bytes()
    # papermill injects a misspelt parameter without complaint: the notebook's config cell must reject it
    with pytest.raises(pm.PapermillExecutionError, match=r"unknown parameter\(s\) stpes"):
        suite.run_notebook(fixture_suite, "smoke", out, extra={"stpes": 4})
    with pytest.raises(pm.PapermillExecutionError, match="expected an integer"):
        suite.run_notebook(fixture_suite, "smoke", out, extra={"steps": "four"})
    assert good.read_bytes() == before, "a failed run must not replace the last good executed notebook"
    assert (out / "00_fixture.failed.ipynb").is_file()
    assert not list(out.glob(".*partial*"))


@pytest.mark.slow
def test_run_suite_writes_timing_and_results(fixture_suite, tmp_path):
    out = tmp_path / "run"
    rows = run_suite("smoke", out)
    assert [r["notebook"] for r in rows] == ["00_fixture.ipynb"] and rows[0]["peak_rss_mb"] > 0
    assert "00_fixture" in (out / "results.md").read_text() and "| steps | 2 |" in (out / "results.md").read_text()
    run_suite("smoke", out)  # a second run: the latest row in suite_timing, both in suite_history
    timing, history = (
        pd.read_csv(out / "suite_timing.csv"),
        pd.read_csv(out / "suite_history.csv", dtype={"commit": str}),
    )
    assert list(timing.notebook) == ["00_fixture.ipynb"] and len(history) == 2
    assert list(history.columns[:3]) == ["finished", "commit", "notebook"] and history.finished.is_monotonic_increasing
    assert timing.seconds.iloc[0] == history.seconds.iloc[-1]
    with pytest.raises(RuntimeError, match="00_fixture.failed.ipynb"):
        run_suite("bad", out)
    assert (out / "00_fixture.ipynb").is_file()


@pytest.mark.slow
def test_suite_runs_notebooks_side_by_side_and_waits_for_a_dependency(fixture_suite, tmp_path):
    """jobs=2: 00 and 01 overlap; 02 reads 00's output folder, so it starts only after 00 ended (not 01)."""
    for stem, text in [("01_other", "sleep: 4\n"), ("02_reader", "reads: runs/x/00_fixture\n")]:
        _fixture_notebook(suite.NOTEBOOKS / f"{stem}.ipynb")
        (suite.PARAMS / stem).mkdir()
        (suite.PARAMS / stem / "smoke.yaml").write_text(text)
    (suite.PARAMS / "00_fixture" / "smoke.yaml").write_text("sleep: 1\n")
    assert suite.dependencies(suite.read_sets(suite.notebooks(), "smoke")) == {
        "00_fixture": set(),
        "01_other": set(),
        "02_reader": {"00_fixture"},
    }
    out = tmp_path / "run"
    rows = run_suite("smoke", out, jobs=2)
    assert [r["notebook"] for r in rows] == ["00_fixture.ipynb", "01_other.ipynb", "02_reader.ipynb"]
    assert {r["jobs"] for r in rows} == {2}
    # the suite's own record of its schedule (not wall-clock overlap, which a loaded machine can delay)
    ev = pd.read_csv(out / "suite_events.csv")
    seq = list(zip(ev.event, ev.notebook))
    at = {(e, n): r for e, n, r in zip(ev.event, ev.notebook, ev["round"])}
    assert seq[:2] == [("start", "00_fixture"), ("start", "01_other")], "the two independent notebooks start at once"
    assert seq.index(("start", "02_reader")) > seq.index(("end", "00_fixture")), (
        "a notebook must wait for the one whose output it reads"
    )
    assert at[("start", "02_reader")] == at[("end", "00_fixture")], "... and start in the round its dependency ended"
    assert sorted(seq) == sorted([(e, n) for e in ("start", "end") for n in ("00_fixture", "01_other", "02_reader")])
    t = {s: json.loads((out / s / "times.json").read_text()) for s in ("00_fixture", "02_reader")}
    assert t["02_reader"][0] >= t["00_fixture"][1], "the reader's kernel ran after its dependency's kernel ended"
    # a failure: the running notebook finishes, its dependent never starts, the error names the failed one
    (suite.PARAMS / "00_fixture" / "bad.yaml").write_text("steps: -1\n")
    (suite.PARAMS / "01_other" / "bad.yaml").write_text("sleep: 1\n")
    (suite.PARAMS / "02_reader" / "bad.yaml").write_text("reads: runs/x/00_fixture\n")
    (out / "02_reader" / "times.json").unlink()
    with pytest.raises(RuntimeError, match="00_fixture.ipynb failed .*00_fixture.failed.ipynb"):
        run_suite("bad", out, jobs=2)
    assert not (out / "02_reader" / "times.json").exists()
    assert (out / "01_other.ipynb").is_file() and (out / "00_fixture.ipynb").is_file()
    with pytest.raises(ConfigError, match="jobs must be a whole number >= 1"):
        run_suite("smoke", out, jobs=0)
    (suite.PARAMS / "00_fixture" / "loop.yaml").write_text("reads: runs/x/02_reader\n")
    (suite.PARAMS / "01_other" / "loop.yaml").write_text("sleep: 0\n")
    (suite.PARAMS / "02_reader" / "loop.yaml").write_text("reads: runs/x/00_fixture\n")
    with pytest.raises(ConfigError, match="wait on each other.*00_fixture reads 02_reader; 02_reader reads 00_fixture"):
        run_suite("loop", out, jobs=2)


def test_start_order_puts_chains_first_and_fillers_last():
    """The suite's order on default (04 reads 03): 03 first (04 waits on it), then 04 as soon as 03 is done,
    01 and 02 fill the other lane; a previous run's seconds order the rest, longest first."""
    nbs = [Path(f"{s}.ipynb") for s in ("01_a", "02_b", "03_c", "04_d")]
    deps = {"01_a": set(), "02_b": set(), "03_c": set(), "04_d": {"03_c"}}
    assert [nb.stem for nb in suite.start_order(nbs, deps)] == ["03_c", "04_d", "01_a", "02_b"]
    assert [nb.stem for nb in suite.start_order(nbs, deps, {"02_b.ipynb": 900.0, "01_a.ipynb": 60.0})][2:] == [
        "02_b",
        "01_a",
    ]
    chain = {"01_a": set(), "02_b": {"01_a"}, "03_c": {"02_b"}, "04_d": set()}
    assert [nb.stem for nb in suite.start_order(nbs, chain)][:2] == ["01_a", "02_b"]


def test_malformed_yaml_stops_before_running(fixture_suite, tmp_path):
    (suite.PARAMS / "00_fixture" / "broken.yaml").write_text("steps: [0, 1\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*broken.yaml \(line 2"):
        run_suite("broken", tmp_path / "run")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.ipynb"))


def test_missing_parameter_set(fixture_suite, tmp_path):
    with pytest.raises(ConfigError, match="parameter set 'nonexistent' is missing.*available sets: bad, smoke"):
        run_suite("nonexistent", tmp_path)
    with pytest.raises(ConfigError, match="no notebooks matched.*available: 00_fixture"):
        run_suite("smoke", tmp_path, only=["99"])


@pytest.mark.slow
def test_suite_runs_notebooks_and_parameters_it_is_given(tmp_path):
    """`tmlib suite --notebooks DIR --params-dir DIR` (what an installed tmlib runs): no monkeypatching, the
    repository's folders are not used; a YAML path as --params works too; a wrong folder is a clear error."""
    from tmlib.cli import main

    nbdir, pdir = tmp_path / "nbs", tmp_path / "params"
    nbdir.mkdir()
    (pdir / "00_fixture").mkdir(parents=True)
    _fixture_notebook(nbdir / "00_fixture.ipynb")
    (pdir / "00_fixture" / "mine.yaml").write_text("steps: 3\n")
    out = tmp_path / "run"
    assert (
        main(
            [
                "suite",
                "--params",
                "mine",
                "--out",
                str(out),
                "--notebooks",
                str(nbdir),
                "--params-dir",
                str(pdir),
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    assert (out / "00_fixture" / "summary.csv").read_text().endswith("steps,3\n")
    one = tmp_path / "one.yaml"
    one.write_text("steps: 5\n")
    assert main(["suite", "--params", str(one), "--out", str(out), "--notebooks", str(nbdir), "--jobs", "1"]) == 0
    assert (out / "00_fixture" / "summary.csv").read_text().endswith("steps,5\n")
    with pytest.raises(ConfigError, match="--params-dir .* is not a folder"):
        suite.run_suite("mine", out, notebooks_dir=nbdir, params_dir=tmp_path / "nope")


@pytest.mark.slow
def test_suite_parameter_overrides_reach_every_notebook(fixture_suite, tmp_path):
    """`tmlib suite -p steps 4` / `-p 00.steps=6`: the value (read as YAML) overrides the set's in the notebook; a
    misspelt name, or a notebook number not in the run, stops before any notebook starts."""
    from tmlib.cli import main

    out = tmp_path / "run"
    assert main(["suite", "--params", "smoke", "--out", str(out), "--jobs", "1", "-p", "steps", "4"]) == 0
    assert (out / "00_fixture" / "summary.csv").read_text().endswith("steps,4\n")
    timing = pd.read_csv(out / "suite_timing.csv")  # the CLI times a fixed training step first
    assert timing["calibration_step_s"].iloc[0] > 0 and timing["calibration_threads"].iloc[0] >= 1
    assert main(["suite", "--params", "smoke", "--out", str(out), "--jobs", "1", "-p", "00.steps=6"]) == 0
    assert (out / "00_fixture" / "summary.csv").read_text().endswith("steps,6\n")
    before = (out / "00_fixture" / "summary.csv").stat().st_mtime_ns
    for bad, why in (
        (["-p", "stpes", "4"], "no notebook of this run has a parameter 'stpes'"),
        (["-p", "00.stpes=4"], "notebook 00_fixture has no parameter 'stpes'"),
        (["-p", "07.steps=4"], "no notebook 07"),
    ):
        with pytest.raises(ConfigError, match=why):
            suite.run_suite("smoke", out, jobs=1, extra={bad[1].split("=")[0]: 4} if "=" in bad[1] else {bad[1]: 4})
    assert (out / "00_fixture" / "summary.csv").stat().st_mtime_ns == before  # nothing ran


def test_preflight_names_what_is_not_reachable(tmp_path, monkeypatch):
    """A set naming a model or dataset that is not here stops with one line per item, before any kernel."""
    from tmlib.preflight import check_params

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "mine.csv").write_text("text,label\na,0\n")
    assert (
        check_params(
            {
                "model": "minilm",
                "task": "mr",
                "tasks": ["mr", f"csv:{tmp_path / 'mine.csv'}"],
                "taskpt_corpus": "pang_lee",
                "tagger_model": "genept",
                "seeds": [0],
            }
        )
        == []
    )
    problems = check_params(
        {
            "model": "some-org/not-cached-model",
            "tasks": ["mr", "hub:glue:rte"],
            "task": f"csv:{tmp_path / 'nope.csv'}",
            "genept_corpus": "wikipedia",
            "genept_model": "scratch:huge",
        }
    )
    assert [p.split(":")[0] for p in problems] == [
        "model=some-org/not-cached-model",
        "tasks=hub",
        "task=csv",
        "genept_corpus=wikipedia",
        "genept_model=scratch",
    ]
    assert "unreachable (offline)" in problems[0] and "does not exist" in problems[2]


def test_parameters_document_is_current():
    """docs/parameters.md is what `python -m tmlib params doc` generates from the notebooks and parameter sets."""
    from tmlib.suite import PARAMS, ROOT, parameters_document

    assert (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8") == parameters_document(notebooks(), PARAMS), (
        "docs/parameters.md is stale: run python -m tmlib params doc --out docs/parameters.md"
    )


@pytest.mark.slow
def test_two_notebooks_at_once_give_the_same_numbers_as_one_after_another(tmp_path):
    """`suite --jobs 2` (two notebook processes at once) and `--jobs 1`: every CSV and JSON the notebooks write is the
    same, apart from the columns that hold seconds, memory, times or paths (benchmarks/compare_runs.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_runs", suite.ROOT / "benchmarks" / "compare_runs.py")
    compare_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_runs)
    for jobs in (1, 2):
        run_suite("smoke", tmp_path / f"jobs{jobs}", only=["02", "04"], jobs=jobs)
    files = sorted(
        p.relative_to(tmp_path / "jobs1")
        for p in (tmp_path / "jobs1").rglob("*")
        if p.suffix in (".csv", ".json")
        and not set(p.parts) & compare_runs.SKIP_PARTS
        and p.name not in compare_runs.SCHEDULE_FILES
    )
    assert len(files) > 10
    ev = pd.read_csv(tmp_path / "jobs2" / "suite_events.csv")  # the two really ran at once: both started in round 0
    assert list(ev[ev.event == "start"]["round"]) == [0, 0]
    ev = pd.read_csv(tmp_path / "jobs1" / "suite_events.csv")  # and one after the other with --jobs 1
    assert list(ev.event) == ["start", "end", "start", "end"]
    diffs = {str(f): compare_runs.compare_file(tmp_path / "jobs1" / f, tmp_path / "jobs2" / f) for f in files}
    assert {f: d for f, d in diffs.items() if d and "manifest" not in f and "timing" not in f} == {}


def test_a_fresh_run_folder_orders_notebooks_by_the_expected_seconds(tmp_path):
    """Without a suite_timing.csv of its own (a fresh clone), the suite reads the set's measured seconds from the
    params folder's expected_seconds.yaml, so the longer of two ready notebooks starts first; its own timing wins."""
    from tmlib import suite

    pdir = tmp_path / "params"
    pdir.mkdir()
    (pdir / "expected_seconds.yaml").write_text("default: {01_a: 60, 02_b: 900}\n")
    assert suite._previous_seconds(tmp_path / "out", "default", pdir) == {"01_a.ipynb": 60.0, "02_b.ipynb": 900.0}
    assert suite._previous_seconds(tmp_path / "out", "smoke", pdir) == {}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "suite_timing.csv").write_text("notebook,seconds\n01_a.ipynb,5\n")
    assert suite._previous_seconds(tmp_path / "out", "default", pdir) == {"01_a.ipynb": 5.0}
    nbs = [tmp_path / "01_a.ipynb", tmp_path / "02_b.ipynb"]
    order = suite.start_order(
        nbs, {"01_a": set(), "02_b": set()}, suite._previous_seconds(tmp_path / "x", "default", pdir)
    )
    assert [nb.stem for nb in order] == ["02_b", "01_a"]
    real = suite._previous_seconds(tmp_path / "none", "default")
    # a measured make run names the notebooks it ran; a notebook it does not name starts after the named ones
    assert real and set(real) <= {nb.name for nb in suite.notebooks()}, "expected_seconds.yaml names a lost notebook"
