"""Smoke run of notebooks/04_loss_landscape.ipynb (trains tiny solutions itself; no notebook 03 needed)."""
import json

import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.mark.slow
def test_nb04_smoke(tmp_path):
    rows = run_suite("smoke", tmp_path, only=["04"])
    out = tmp_path / "04_loss_landscape"
    paths = pd.read_csv(out / "paths.csv")
    assert set(paths.path) == {"mask<->finetune", "finetune-s0<->finetune-s1", "pretrained<->finetune"}
    assert set(paths.split) == {"dev", "test"} and {0.0, 1.0} <= set(paths.gamma)
    assert paths.accuracy.between(0, 1).all() and (paths.loss > 0).all()
    plane = pd.read_csv(out / "plane.csv", keep_default_na=False)
    assert (plane.point == "").sum() == 9 and {"pretrained", "mask", "finetune"} <= set(plane.point)
    summary = json.loads((out / "summary.json").read_text())
    assert isinstance(summary["mask_finetune_within_1pt_test"], bool)
    assert all("trained here" in s for k, s in summary["sources"].items() if k != "pretrained")
    for fig in ("paths.png", "plane_accuracy.png", "plane_loss.png"):
        assert (out / fig).stat().st_size > 10_000, fig
    assert (tmp_path / "04_loss_landscape.ipynb").is_file()
