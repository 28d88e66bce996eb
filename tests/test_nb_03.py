"""Smoke run of notebook 03 (masking vs fine-tuning): every cell runs and every artifact is written."""
import json

import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.mark.slow
def test_nb03_smoke(tmp_path):
    run_suite("smoke", tmp_path, only=["03"])
    out = tmp_path / "03_masking_vs_finetuning"
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 * 3 * 2  # tasks x methods x seeds
    assert results["test_accuracy"].between(0, 1).all() and results["steps"].gt(0).all()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["method"]) == {"finetune", "bitfit", "mask"} and summary["n_seeds"].eq(2).all()
    storage = pd.read_csv(out / "storage.csv")
    mask = storage[storage["method"] == "mask"]
    assert (mask["task_bytes"] * 32 <= mask["fp32_copy_bytes"]).all()  # 1 bit per weight << fp32 copy
    sparsity = pd.read_csv(out / "sparsity.csv")
    assert sparsity["kept_pct"].between(0, 100).all() and {"pooler", "head"} <= set(sparsity["type"])
    memory = pd.read_csv(out / "memory.csv")
    assert set(memory["kind"]) == {"measured", "projected"} and memory["n_tasks"].max() == 5
    check = json.loads((out / "multitask.json").read_text())
    assert check["all_identical"] and len(check["tasks"]) == 2
    for png in ("accuracy.png", "sparsity.png", "mask_flips.png", "storage.png", "memory.png"):
        assert (out / png).stat().st_size > 5000, png
    for task in ("mr", "bbc"):  # the solutions contract notebook 04 relies on
        for method in ("finetune", "bitfit", "mask"):
            d = out / "solutions" / task / f"{method}-s0"
            assert (d / "model" / "config.json").is_file() and (d / "metrics.json").is_file() and (d / "manifest.json").is_file()
        assert (out / "solutions" / task / "mask-s1" / "mask.safetensors").is_file()
