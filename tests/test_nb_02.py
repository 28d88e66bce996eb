"""Smoke run of notebook 02 through the suite runner (papermill): every output file is written and sane."""

import json

import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb02")
    return out, run_suite("smoke", out, only=["02"])


@pytest.mark.slow
def test_notebook_02_smoke(smoke_run):
    tmp_path, rows = smoke_run
    # budget: < 1.5 min on 2 free cores; the bound is loose because CI machines are shared
    assert rows[0]["notebook"] == "02_token_importance_explorer.ipynb"
    out = tmp_path / "02_token_importance_explorer"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count('<div class="ex') == 12 * 4
    for m in ("occlusion", "grad_x_input", "integrated_gradients", "buffer"):
        assert f'<span class="meth">{m}</span>' in html
    lines = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == 12 * 4 and all(len(r["tokens"]) == len(r["scores"]) > 0 for r in lines)
    # the tables are those of the stored scores: agreement, top tokens and the summary recomputed from scores.jsonl
    from tmlib.experiments.explorer import agreement, from_record, top_tokens

    cfg = json.loads((out / "config.json").read_text())
    assert [r["method"] for r in lines] == cfg["methods"] * 12 and [r["index"] for r in lines[::4]] == list(range(12))
    scores = {m: [from_record(r) for r in lines if r["method"] == m] for m in cfg["methods"]}
    agree = pd.read_csv(out / "agreement.csv", index_col="method")
    pd.testing.assert_frame_equal(agree, agreement(scores).rename_axis("method"), check_exact=False, atol=1e-12)
    id2label = json.loads((out / "scorer" / "model" / "config.json").read_text())["id2label"]
    names = [id2label[str(i)] for i in range(len(id2label))]
    top = pd.read_csv(out / "top_tokens.csv")
    want = top_tokens(scores, names, cfg["top_k"], cfg["min_count"], cfg["drop_stopwords"])
    assert cfg["min_count"] == 2 and len(top) > 0 and top["count"].ge(2).all()
    pd.testing.assert_frame_equal(top, want, check_dtype=False)
    summary = pd.read_csv(out / "summary.csv").set_index("metric")["value"]
    assert summary["examples_scored"] == 12
    metrics = json.loads((out / "scorer" / "metrics.json").read_text())
    assert summary["scorer_dev_accuracy"] == round(metrics["dev_accuracy"], 4)
    assert summary["scorer_test_accuracy"] == round(metrics["test_accuracy"], 4)
    for i, a in enumerate(cfg["methods"]):
        for b in cfg["methods"][i + 1 :]:
            assert summary[f"spearman_{a}_vs_{b}"] == round(agree.loc[a, b], 4), (a, b)
    timing = pd.read_csv(out / "timing.csv").set_index("method")
    assert list(timing.index) == cfg["methods"] and (timing.texts == 12).all()
    for m, ms in timing.ms_per_text.items():  # seconds are rounded to 0.01 s, ms_per_text to 0.1 ms
        assert summary[f"ms_per_text_{m}"] == ms and abs(ms - 1000 * timing.seconds[m] / 12) <= 0.5, m
    share = sum(sum(r["important"]) for r in lines if r["method"] == "buffer") / sum(
        len(r["important"]) for r in lines if r["method"] == "buffer"
    )
    assert summary["buffer_important_share"] == round(share, 4)
    for png in ("top_tokens.png", "agreement.png"):
        assert (out / png).stat().st_size > 5000
    assert "02_token_importance_explorer" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_notebook_02_papermill_with_live_widget(smoke_run, tmp_path):
    """papermill does not hang on the explorer widget (interactive=True, the notebook's default): nbclient
    runs to the end and stores the widget state in the executed notebook. A hang fails the run (a cell that runs
    10 minutes: the smoke notebook's cells take seconds); cached artifacts keep it quick: every stage is loaded
    from the smoke run's folder, none built or scored again."""
    import nbformat
    import pandas as pd

    from tmlib.suite import NOTEBOOKS, run_notebook

    out = smoke_run[0]  # same out_dir: the scorer and the scores come from the smoke run's cache
    folder = out / "02_token_importance_explorer"
    manifests = {m: m.read_bytes() for m in folder.rglob("manifest.json")}
    assert any(m.parent.name == "scorer" for m in manifests) and len(manifests) >= 5
    done = run_notebook(
        NOTEBOOKS / "02_token_importance_explorer.ipynb",
        "smoke",
        tmp_path / "live",
        extra={"interactive": True, "out_dir": str(folder)},
        cell_timeout=600,
    )
    assert {m: m.read_bytes() for m in folder.rglob("manifest.json")} == manifests, "a stage was built again"
    assert pd.read_csv(folder / "timing.csv")["reused"].all(), "a method's scores were computed again"
    nb = nbformat.read(done, as_version=4)
    last = nb.cells[-1]
    assert "make_explorer" in last.source
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in last.outputs)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = [m for m in state.values() if m["model_name"] == "ButtonModel"]
    assert [m["state"]["description"] for m in models] == ["Compute"]
    assert "tmlib-compute" in models[0]["state"]["_dom_classes"]


def test_parameters_cell_default_yaml_and_dataclass_agree():
    """Notebook 02's parameters cell, its default.yaml and ExplorerConfig() are the same values, apart from the
    one batch-only difference (``interactive``: on in JupyterLab, off in batch)."""
    import papermill as pm
    import yaml

    from tmlib.core.config import flatten, from_flat
    from tmlib.experiments.explorer import ExplorerConfig
    from tmlib.suite import notebooks, params_file

    nb = next(p for p in notebooks() if p.stem.startswith("02"))
    cell = {k: eval(v["default"]) for k, v in pm.inspect_notebook(str(nb)).items()}
    base = ExplorerConfig(out_dir=cell["out_dir"])  # out_dir has no library default; the suite injects it
    ref = flatten(base)
    assert set(cell) == set(ref), "the parameters cell must name every flat parameter of ExplorerConfig"
    default = yaml.safe_load(params_file(nb, "default").read_text())
    assert set(default) <= set(ref)
    differs = {k for k, v in default.items() if from_flat(ExplorerConfig, {**ref, k: v}) != base}
    assert differs <= {"interactive"}, f"default.yaml differs from ExplorerConfig in {differs}"
    assert {k for k in ref if cell[k] != ref[k]} <= {"interactive"}
