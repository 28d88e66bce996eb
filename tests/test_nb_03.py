"""Smoke run of notebook 03 (masking vs fine-tuning): every cell runs and every artifact is written."""

import json

import numpy as np
import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.mark.slow
def test_nb03_smoke(tmp_path):
    run_suite("smoke", tmp_path, only=["03"])
    out = tmp_path / "03_masking_vs_finetuning"
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 * 4 * 2  # tasks x methods x seeds (smoke runs LoRA too)
    sel = pd.read_csv(out / "lr_selection.csv")  # smoke grids: finetune and mask, 2 values each, per task
    assert (~sel.edge_extension).sum() == 2 * 2 * 2 and sel.groupby(["task", "method"]).chosen.sum().eq(1).all()
    assert sel.groupby(["task", "method"]).edge_extension.sum().le(2).all()  # lr_grid_extend: 2
    chosen = sel[sel.chosen].set_index(["task", "method"]).lr
    for (task, method), lr in chosen.items():
        assert (results[(results.task == task) & (results.method == method)].lr == lr).all()
    assert (results[results.method == "bitfit"].lr == 1e-2).all()
    curves = pd.read_csv(out / "dev_curves.csv")
    assert len(curves) == 2 * 4 * 2 * 2  # 2 evaluations per run
    # each run keeps its best dev state: its dev accuracy is the best of its curve
    best = curves.groupby(["task", "method", "seed"]).dev_accuracy.max()
    kept = results.set_index(["task", "method", "seed"]).dev_accuracy
    pd.testing.assert_series_equal(kept.sort_index(), best.reindex(kept.index).sort_index(), check_names=False)
    gaps = pd.read_csv(out / "gaps.csv")
    assert (
        set(gaps.comparison) == {"bitfit - finetune", "mask - finetune", "lora - finetune"}
        and (gaps.n_seeds == 2).all()
    )
    assert pd.read_csv(out / "flatness.csv").shape[0] == 2 * 4
    assert results["steps"].gt(0).all()
    # test accuracy = the share of right answers among the saved test predictions, against the test labels
    from tmlib.core.config import from_flat, load_yaml
    from tmlib.experiments.masking import MaskingConfig, plan
    from tmlib.suite import NOTEBOOKS, params_file

    nb = next(NOTEBOOKS.glob("03_*.ipynb"))
    recipes = plan(from_flat(MaskingConfig, load_yaml(params_file(nb, "smoke"))))
    labels = {task: np.asarray(list(recipes.data[task].load()["test"]["label"])) for task in set(results.task)}
    for r in results.itertuples():
        pred = np.load(out / "evaluations" / r.task / f"{r.method}-s{r.seed}" / "predictions.npy")
        assert len(pred) == len(labels[r.task]) == r.test_n
        assert r.test_accuracy == pytest.approx((pred == labels[r.task]).mean()), (r.task, r.method, r.seed)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["method"]) == {"finetune", "bitfit", "mask", "lora"} and summary["n_seeds"].eq(2).all()
    mask = summary[summary.method == "mask"]
    assert mask.vs_finetune.str.match(
        r"mask \u2212 fine-tune = [+-]\d+\.\d( ± \d+\.\d)? points \(p = .*, 2 seeds\)"
    ).all()
    storage = pd.read_csv(out / "storage.csv")
    mask = storage[storage["method"] == "mask"]
    assert (mask["task_bytes"] * 32 <= mask["fp32_copy_bytes"]).all()  # 1 bit per weight << fp32 copy
    # per task, block and type: the share of 1-bits in the saved masks, mean over the seeds
    from tmlib.masking.packing import read_mask

    sparsity = pd.read_csv(out / "sparsity.csv")
    assert {"pooler", "head"} <= set(sparsity["type"]) and sparsity.seeds.eq(2).all()
    kept = []
    for task in ("mr", "bbc"):
        for seed in (0, 1):
            packed = read_mask(out / "solutions" / task / f"mask-s{seed}" / "mask.safetensors")
            mods = {m["name"]: m for m in json.loads(packed.meta["modules"])}
            for name in packed.bits:
                bits = packed.mask(name)
                kept.append((task, mods[name]["block"], mods[name]["type"], bits.numel(), 100 * bits.float().mean()))
    want = pd.DataFrame(kept, columns=["task", "block", "type", "weights", "kept_pct"])
    want = want.groupby(["task", "block", "type"]).agg(weights=("weights", "first"), kept_pct=("kept_pct", "mean"))
    got = sparsity.set_index(["task", "block", "type"])[["weights", "kept_pct"]]
    pd.testing.assert_frame_equal(got.sort_index(), want.sort_index(), check_dtype=False, atol=1e-3)
    assert set(storage["method"]) == {"finetune", "bitfit", "mask", "lora"}
    memory = pd.read_csv(out / "memory.csv")
    assert set(memory["method"]) == {"finetune", "bitfit", "mask", "lora"}
    assert set(memory["kind"]) == {"measured", "projected"} and memory["n_tasks"].max() == 5
    check = json.loads((out / "multitask.json").read_text())
    assert check["all_identical"] and len(check["tasks"]) == 2
    for png in ("accuracy.png", "dev_curves.png", "sparsity.png", "mask_flips.png", "storage.png", "memory.png"):
        assert (out / png).stat().st_size > 5000, png
    for task in ("mr", "bbc"):  # the solutions contract notebook 04 relies on
        for method in ("finetune", "bitfit", "mask", "lora"):
            d = out / "solutions" / task / f"{method}-s0"
            assert (
                (d / "model" / "config.json").is_file()
                and (d / "metrics.json").is_file()
                and (d / "manifest.json").is_file()
            )
        assert (out / "solutions" / task / "mask-s1" / "mask.safetensors").is_file()
        assert (out / "solutions" / task / "lora-s1" / "adapter" / "adapter_model.safetensors").is_file()


# Deliberate differences between MaskingConfig() and the notebook's parameters cell / default.yaml: none.
# (out_dir is not in default.yaml: the suite injects it.)
DIFFERENCES: dict[str, object] = {}


def test_parameters_cell_default_yaml_and_dataclass_agree():
    """One source of defaults: the parameters cell and default.yaml give MaskingConfig() (flat names via
    tmlib.core.config.flatten / from_flat)."""
    import papermill as pm
    import yaml

    from tmlib.core.config import flatten, from_flat
    from tmlib.experiments.masking import MaskingConfig
    from tmlib.suite import notebooks, params_file

    nb = next(p for p in notebooks() if p.stem.startswith("03"))
    cell = {k: eval(v["default"]) for k, v in pm.inspect_notebook(str(nb)).items()}
    ref = flatten(MaskingConfig())
    assert set(cell) == set(ref), "the parameters cell must name every flat parameter of MaskingConfig"
    assert from_flat(MaskingConfig, {**cell, **DIFFERENCES}) == MaskingConfig()
    default = yaml.safe_load(params_file(nb, "default").read_text())
    assert set(default) == set(ref) - {"out_dir"}
    assert from_flat(MaskingConfig, {**default, **DIFFERENCES}) == MaskingConfig()
    for s in ("smoke", "paper"):  # every set builds a valid config
        from_flat(MaskingConfig, yaml.safe_load(params_file(nb, s).read_text()))
    # one-setting overlays on default; fp32 and threads1 also pin kernels: hf, the forward they were measured with,
    # and every overlay the 200-sentence test split its quoted numbers were measured on
    pinned = {"kernels", "test_pool", "max_test", "eval_mixed_precision", "methods", "lr"}
    for s, fields in (("fp32", {"mixed_precision"}), ("threads1", {"threads"}), ("hf_kernels", set())):
        overlay = yaml.safe_load(params_file(nb, s).read_text())
        assert set(overlay) == fields | pinned and (overlay["test_pool"], overlay["max_test"]) == ("split", 200)
        assert overlay["kernels"] == "hf"
        assert from_flat(MaskingConfig, {**default, **overlay}) != from_flat(MaskingConfig, default)
        assert "lora" in overlay["methods"] and not any(isinstance(v, dict) for v in overlay["lr"].values())
    grid = from_flat(MaskingConfig, {**default, **yaml.safe_load(params_file(nb, "grid").read_text())})
    assert grid.lr == {} and "lora" in grid.methods and grid.lr_grid == MaskingConfig().lr_grid


@pytest.mark.slow
def test_nb03_runs_without_the_mask_method(tmp_path):
    """A set that compares other methods only (no masks to analyse) still runs every cell: the mask-only
    analyses (sparsity, flips, multi-task serving) are left out, the rest is written."""
    extra = {"methods": ["finetune", "bitfit"], "tasks": ["mr"], "max_lengths": [32], "max_train": [32], "lr_grid": {}}
    run_suite("smoke", tmp_path, only=["03"], extra=extra)
    out = tmp_path / "03_masking_vs_finetuning"
    assert set(pd.read_csv(out / "results.csv").method) == {"finetune", "bitfit"}
    assert (out / "storage.csv").is_file() and not (out / "sparsity.csv").exists()
