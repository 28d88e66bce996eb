"""Smoke run of notebooks/01_selective_masking.ipynb (papermill, smoke parameters) and a cached rerun."""
import json

import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.mark.slow
def test_nb_01_smoke(tmp_path):
    run_suite("smoke", tmp_path, only=["01"])
    out = tmp_path / "01_selective_masking"
    results = pd.read_csv(out / "results.csv")
    summary = pd.read_csv(out / "summary.csv")
    steps = pd.read_csv(out / "steps.csv")
    assert set(results["method"]) == {"genept", "selective", "random"}
    assert sorted(results["seed"].unique()) == [0, 1] and set(results["genept_steps"]) == {3, 6}
    assert results["test_accuracy"].between(0, 1).all()
    assert (summary["n_seeds"] == 2).all() and len(summary) == 6
    assert sorted(steps["taskpt_steps"].unique()) == [0, 2, 4] and set(steps["genept_steps"]) == {3}
    compute = json.loads((out / "compute.json").read_text())
    assert {"GenePT", "importance", "TaskPT"} <= set(compute["groups_seconds"])
    assert all(v > 0 for k, v in compute["groups_flops"].items() if k != "fine-tune")
    for png in ("accuracy.png", "accuracy_vs_steps.png", "compute_seconds.png", "compute_flops.png", "mlm_loss.png"):
        assert (out / png).stat().st_size > 5000, png
    for art in ("genept", "scorer", "buffer", "tagger", "corpus_labels", "taskpt_g3_selective", "taskpt_g3_random"):
        assert (out / art / "manifest.json").is_file(), art
    # rerun: every stage is reused (artifacts untouched), same numbers
    stamp = (out / "genept" / "manifest.json").stat().st_mtime_ns
    run_suite("smoke", tmp_path, only=["01"])
    assert (out / "genept" / "manifest.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv").drop(columns="seconds"), results.drop(columns="seconds"))
