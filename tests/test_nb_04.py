"""Smoke run of notebooks/04_loss_landscape.ipynb (trains tiny solutions itself; no notebook 03 needed)."""

import json

import numpy as np
import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.mark.slow
def test_nb04_smoke(tmp_path):
    run_suite("smoke", tmp_path, only=["04"])
    out = tmp_path / "04_loss_landscape"
    paths = pd.read_csv(out / "paths.csv")
    assert set(paths.path) == {
        "mask<->finetune",
        "finetune-s0<->finetune-s1",
        "pretrained<->finetune",
        "mask~finetune (Bezier curve)",
    }
    curve = paths[paths.path == "mask~finetune (Bezier curve)"]
    assert sorted(set(curve.gamma)) == [0.0, 0.5, 1.0] and len(pd.read_csv(out / "curve_train.csv")) == 6
    assert set(paths.split) == {"dev", "test"} and {0.0, 1.0} <= set(paths.gamma)
    # one model, one evaluation: a model at an end of two paths (finetune-s0 at gamma 1 of mask<->finetune and of
    # pretrained<->finetune, at gamma 0 of finetune-s0<->finetune-s1) has the same loss and accuracy on each
    ends = pd.concat(
        [
            paths[np.isclose(paths.gamma, 0)].assign(model=paths.model_a),
            paths[np.isclose(paths.gamma, 1)].assign(model=paths.model_b),
        ]
    )
    ft = ends[(ends.model == "finetune-s0") & ~ends.path.str.contains("Bezier")]
    assert set(ft.path) == {"mask<->finetune", "pretrained<->finetune", "finetune-s0<->finetune-s1"}
    for split, d in ft.groupby("split"):
        assert d.accuracy.nunique() == 1 and np.allclose(d.loss, d.loss.iloc[0], rtol=1e-5), split
    plane = pd.read_csv(out / "plane.csv", keep_default_na=False)
    assert (plane.point == "").sum() == 9 and {"pretrained", "mask", "finetune"} <= set(plane.point)
    summary = json.loads((out / "summary.json").read_text())
    # the finding, recomputed from paths.csv: accuracy on [0, 1] of mask<->finetune (test) never more than 1 point
    # below the lower endpoint
    line = paths[(paths.path == "mask<->finetune") & (paths.split == "test")]
    inner = line[line.gamma.between(0, 1)]
    at = {g: float(line[np.isclose(line.gamma, g)].accuracy.iloc[0]) for g in (0, 1)}
    assert summary["mask_finetune_within_1pt_test"] is bool(min(at.values()) - inner.accuracy.min() <= 0.01 + 1e-12)
    along = pd.DataFrame(summary["accuracy_along_mask_finetune"])
    mf = paths[paths.path == "mask<->finetune"]
    assert sorted(zip(along.gamma, along.split, along.accuracy)) == sorted(zip(mf.gamma, mf.split, mf.accuracy))
    assert all("trained here" in s for k, s in summary["sources"].items() if k != "pretrained")
    assert "Bezier" in summary["curve_finding"]
    for fig in ("paths.png", "curve_vs_line.png", "plane_accuracy.png", "plane_loss.png"):
        assert (out / fig).stat().st_size > 10_000, fig
    assert (tmp_path / "04_loss_landscape.ipynb").is_file()


# Deliberate differences between LandscapeConfig() and the notebook's parameters cell / default.yaml, in one place:
# the notebook reuses the `default` run of notebook 03; the library default trains its own solutions (a library
# default must not depend on a run folder existing). out_dir is not in default.yaml: the suite injects it.
DIFFERENCES = {"reuse_runs": "runs/default/03_masking_vs_finetuning"}


def test_parameters_cell_default_yaml_and_dataclass_agree():
    import papermill as pm
    import yaml

    from tmlib.core.config import flatten, from_flat
    from tmlib.experiments.landscape import LandscapeConfig
    from tmlib.suite import notebooks, params_file

    nb = next(p for p in notebooks() if p.stem.startswith("04"))
    cell = {k: eval(v["default"]) for k, v in pm.inspect_notebook(str(nb)).items()}
    ref = flatten(LandscapeConfig())
    assert set(cell) == set(ref), "the parameters cell must name every flat parameter of LandscapeConfig"
    expected = from_flat(LandscapeConfig, DIFFERENCES)
    assert from_flat(LandscapeConfig, cell) == expected
    default = yaml.safe_load(params_file(nb, "default").read_text())
    assert set(default) == set(ref) - {"out_dir"}
    assert from_flat(LandscapeConfig, default) == expected
    assert {k for k, v in flatten(expected).items() if v != ref[k]} == set(DIFFERENCES)
    for s in ("smoke", "paper", "hf_kernels"):
        from_flat(LandscapeConfig, yaml.safe_load(params_file(nb, s).read_text()))
    overlay = yaml.safe_load(params_file(nb, "hf_kernels").read_text())  # the paired check of kernels
    assert overlay["kernels"] == "hf" and "hf_kernels" in overlay["reuse_runs"]
    # the curve as trained before the option: runs/hf_kernels stays a cache
    assert overlay["curve_mixed_precision"] == "fp32"
