"""Smoke run of notebooks/01_selective_masking.ipynb (papermill, smoke parameters) and a cached rerun."""

import json

import numpy as np
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
    assert sorted(results["seed"].unique()) == [0, 1, 7] and set(results["genept_steps"]) == {3, 6}
    assert set(results[results.seed == 7]["genept_steps"]) == {3, 6}  # extra seeds: final rows of every budget
    assert results[results.seed == 7]["final"].all()  # ... but not the steps curve
    # one row per fine-tuning run; the final ones are GenePT only and each TaskPT run's selected checkpoint
    sel = pd.read_csv(out / "taskpt_selection.csv")
    for (g, m), d in sel.groupby(["genept_steps", "method"]):
        best = d.loc[d["dev_loss"].idxmin(), "taskpt_steps"]  # official: lowest held-out MLM loss
        assert d.loc[d["selected"], "taskpt_steps"].tolist() == [best]
        fin = results[(results.genept_steps == g) & (results.method == m) & results["final"]]
        assert set(fin["taskpt_steps"]) == {best}
    probe = pd.read_csv(out / "probe.csv")
    assert set(probe["domain"]) == {"general", "in-domain"} and len(probe) == 2 * (2 + 4)  # 2 GenePT + 4 TaskPT ckpts
    assert (probe["loss"] > 0).all()
    # every checkpoint is probed on the same masked positions of a domain, and top1 is a share of them
    assert probe.groupby("domain")["n_masked"].nunique().eq(1).all() and (probe["n_masked"] > 0).all()
    hits = probe["top1"] * probe["n_masked"]
    assert np.allclose(hits, hits.round(), atol=1e-6), "top1 is not (right predictions) / n_masked"
    assert summary.set_index("genept_steps")["n_seeds"].to_dict() == {3: 3, 6: 3} and len(summary) == 6
    assert sorted(steps["taskpt_steps"].unique()) == [0, 2, 4] and set(steps["genept_steps"]) == {3}
    assert set(steps["seed"]) == {0, 1}
    gaps = pd.read_csv(out / "gaps.csv")
    assert set(gaps["comparison"]) == {"selective - random", "selective - genept", "random - genept"}
    assert set(gaps["runs"]) == {"all", "failed dropped"}
    assert gaps[gaps.runs == "all"].set_index("genept_steps")["n_seeds"].to_dict() == {3: 3, 6: 3}
    # tested on the held-out pool (smoke: capped at 64), with the power columns beside every gap
    assert (results["test_n"] == 64).all() and (gaps.loc[gaps.runs == "all", "test_n"] == 64).all()
    assert {"detectable_gap", "sampling_sd", "disagreement"} <= set(gaps.columns)
    assert gaps.loc[gaps.runs == "all", ["sampling_sd", "disagreement"]].notna().all().all()
    # the primary tests are Holm-corrected together; the raw p stays
    primary = gaps[gaps.primary]
    assert set(primary.comparison) == {"selective - random", "random - genept"} and set(primary.genept_steps) == {3}
    assert (primary.p_holm.dropna() >= primary.p.dropna()).all() and gaps.loc[~gaps.primary, "p_holm"].isna().all()
    # the budget curve: a TaskPT run of its own per budget, fine-tuned at its last step with every seed
    budget = pd.read_csv(out / "budget_results.csv")
    assert set(budget.taskpt_budget) == {3} and (budget[budget.method != "genept"].taskpt_steps == 3).all()
    assert sorted(budget.seed.unique()) == [0, 1, 7] and (budget.taskpt_passes > 0).all()
    bg = pd.read_csv(out / "budget_gaps.csv")
    assert bg[bg.primary].groupby("taskpt_budget").comparison.nunique().eq(2).all()
    assert (out / "budgets" / "t3" / "taskpt_g3_selective" / "manifest.json").is_file()
    assert (out / "budget_curve.png").stat().st_size > 5000
    compute = json.loads((out / "compute.json").read_text())
    assert {"GenePT", "importance", "TaskPT"} <= set(compute["groups_seconds"])
    genept = [r for r in compute["stages"] if r["group"] == "GenePT"]
    assert [r["stage"] for r in genept] == ["GenePT steps 0-3", "GenePT steps 3-6"]  # increments of one run
    assert genept[0]["flops"] == pytest.approx(genept[1]["flops"])
    assert all(v > 0 for k, v in compute["groups_flops"].items() if k != "fine-tune")
    for png in (
        "accuracy.png",
        "accuracy_vs_steps.png",
        "compute_seconds.png",
        "compute_flops.png",
        "mlm_loss.png",
        "mlm_probe.png",
        "gaps.png",
    ):
        assert (out / png).stat().st_size > 5000, png
    for art in (
        "genept",
        "scorer",
        "buffer",
        "tagger",
        "corpus_labels",
        "taskpt_g3_selective",
        "taskpt_g3_random",
        "probe",
    ):
        assert (out / art / "manifest.json").is_file(), art
    # rerun: every stage is reused (artifacts untouched), same numbers
    stamp = (out / "genept" / "manifest.json").stat().st_mtime_ns
    run_suite("smoke", tmp_path, only=["01"])
    assert (out / "genept" / "manifest.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "results.csv").drop(columns="seconds"), results.drop(columns="seconds")
    )
