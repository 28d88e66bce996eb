"""tmlib.experiments.masking (config, solutions contract) and tmlib.plots.masking, on tiny models."""
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

from tmlib.config import ConfigError, from_dict
from tmlib.experiments.masking import (MaskingConfig, load_solution, solution_path, task_dirname, train_solution)
from tmlib.plots import masking as pm


def _cfg(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path), model="scratch:tiny", tasks=["mr"], max_lengths=[16], max_train=[16], max_eval=8,
                seeds=[0], epochs=1.0, batch_size=8, mask_skip_first_blocks=1, progress=False)
    return MaskingConfig(**{**base, **kw})


@pytest.mark.parametrize("kw, match", [(dict(methods=["lora"]), "unknown method.*valid methods: finetune, bitfit, mask"),
                                       (dict(max_lengths=[16, 32]), "one value per task"),
                                       (dict(mask_head="random"), "mask_head"),
                                       (dict(init_sparsity=2.0), "init_sparsity"),
                                       (dict(tasks=[], max_lengths=[], max_train=[]), "tasks is empty")])
def test_config_errors(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(MaskingConfig, {**vars(_cfg(tmp_path)), **kw})


def test_task_dirname():
    assert task_dirname("mr") == "mr" and task_dirname("hub:SetFit/sst2") == "hub_SetFit_sst2"


def test_solution_contract_roundtrip_and_corruption(tmp_path):
    cfg = _cfg(tmp_path)
    model, metrics = train_solution(cfg, "mr", "mask", 0)
    d = solution_path(tmp_path, "mr", "mask", 0)
    assert {"model", "metrics.json", "mask.safetensors", "manifest.json"} <= {p.name for p in d.iterdir()}
    saved = json.loads((d / "metrics.json").read_text())
    assert saved["method"] == "mask" and 0 <= saved["test_accuracy"] <= 1 and saved["task_bytes"] < saved["fp32_copy_bytes"] / 32
    loaded = load_solution(tmp_path, "mr", "mask", 0)
    x = torch.randint(1000, 2000, (2, 6))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits)
    # reused, not retrained, on a second call with the same config
    mtime = (d / "manifest.json").stat().st_mtime_ns
    train_solution(cfg, "mr", "mask", 0)
    assert (d / "manifest.json").stat().st_mtime_ns == mtime
    assert load_solution(tmp_path, "mr", "finetune", 0) is None  # absent
    w = d / "model" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-10] + b"0123456789")  # corrupt
    assert load_solution(tmp_path, "mr", "mask", 0) is None


def test_figures_from_tables():
    res = pd.DataFrame([{"task": t, "method": m, "seed": s, "test_accuracy": 0.7 + 0.01 * s}
                        for t in ("mr", "bbc") for m in ("finetune", "bitfit", "mask") for s in (0, 1)])
    assert pm.accuracy_bars(res).axes
    sp = pd.DataFrame([{"task": "mr", "block": b, "type": t, "kept_pct": 90 + b} for b in (2, 3)
                       for t in ("query", "ffn_in")] + [{"task": "mr", "block": -1, "type": "pooler", "kept_pct": 93.0}])
    fig = pm.sparsity_heatmap(sp)
    img = np.ma.getdata(fig.axes[0].images[0].get_array())
    assert img.shape == (3, 3) and np.isnan(img[2, 0]) and img[0, 0] == 92
    st = pd.DataFrame({"task": ["mr"] * 2, "method": ["finetune", "mask"], "task_bytes": [9e7, 1e6], "fp32_copy_bytes": [9e7] * 2})
    assert pm.storage_bars(st).axes[0].get_yscale() == "log"
    mem = pd.DataFrame({"method": ["mask", "finetune"], "n_tasks": [1, 1], "bytes": [1, 2], "kind": ["projected"] * 2})
    assert pm.memory_lines(mem).axes
    assert pm.flips_lines(pd.DataFrame(columns=["step", "kept_pct", "flip_pct"])).axes
    with pytest.raises(ValueError, match="missing \\['kept_pct'\\]"):
        pm.sparsity_heatmap(sp.drop(columns="kept_pct"))
