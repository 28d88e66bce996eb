"""Smoke run of notebooks/05_what_masks_learn.ipynb and its parameter sets."""

import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.mark.slow
def test_nb05_smoke(tmp_path):
    run_suite("smoke", tmp_path, only=["05"])
    out = tmp_path / "05_what_masks_learn"
    sol = pd.read_csv(out / "solutions.csv")
    assert set(sol.study) == {"sparsity", "layers", "reference"} and (sol.test_n == 48).all()
    sparsity, layers = pd.read_csv(out / "sparsity.csv"), pd.read_csv(out / "layers.csv")
    assert list(sparsity.setting.astype(str)) == ["0.05", "0.5"] and list(layers.setting) == [
        "default",
        "bottom1",
        "top1",
    ]
    # an initial sparsity of 50% leaves about half the weights after one short epoch; 5% about 95%
    dens = sparsity.set_index(sparsity.setting.astype(str)).density_pct
    assert 40 < dens["0.5"] < 60 and 90 < dens["0.05"] < 99
    probe = pd.read_csv(out / "probe.csv")
    assert set(probe.model) == {"pretrained", "mask", "finetune"} and probe.probe_accuracy.between(0, 100).all()
    summary = pd.read_csv(out / "transfer_summary.csv")
    assert set(summary.task) == {"amazon", "pang_lee_docs"} and (summary.n_seeds == 2).all()
    # every setting at its own lr, chosen on dev on the first seed
    sel = pd.read_csv(out / "lr_selection.csv")
    assert sel.groupby(["study", "setting"]).chosen.sum().eq(1).all() and set(sel.study) == {"sparsity", "layers"}
    for (study, setting), d in sel[sel.chosen].groupby(["study", "setting"]):
        assert (sol[(sol.study == study) & (sol.setting == setting)].lr == d.lr.iloc[0]).all()
    tsne = pd.read_csv(out / "tsne.csv")
    assert set(tsne.space) == {"original", "t-SNE map"} and tsne.knn_accuracy.between(0, 100).all()
    base = pd.read_csv(out / "token_baselines.csv")
    assert len(base) == 2 and base.accuracy.between(0, 100).all()
    assert pd.read_csv(out / "token_lr_selection.csv").chosen.sum() == 1
    assert list(pd.read_csv(out / "token_curve.csv").sentences) == [8, 16]
    tokens = pd.read_csv(out / "token_tasks.csv")
    assert list(tokens.method) == ["mask", "finetune", "bitfit", "lora"] and set(tokens.task) == {"pos"}
    assert (tokens.n_seeds == 2).all() and (tokens.metric == "accuracy").all() and tokens["mean"].between(0, 100).all()
    assert tokens.set_index("method").gap_vs_reference_pts.drop("finetune").notna().all()
    runs = pd.read_csv(out / "token_runs.csv")
    assert len(runs) == 8 and (runs.n_sentences == 16).all()
    for fig in ("initial_sparsity.png", "layers.png", "probe.png", "tsne.png", "transfer.png", "token_tasks.png"):
        assert (out / fig).stat().st_size > 5_000, fig


def test_parameters_cell_default_yaml_and_dataclass_agree():
    import papermill as pm
    import yaml

    from tmlib.core.config import flatten, from_flat
    from tmlib.experiments.mask_study import StudyConfig
    from tmlib.suite import notebooks, params_file

    nb = next(p for p in notebooks() if p.stem.startswith("05"))
    cell = {k: eval(v["default"]) for k, v in pm.inspect_notebook(str(nb)).items()}
    ref = flatten(StudyConfig())
    assert set(cell) == set(ref) and from_flat(StudyConfig, cell) == StudyConfig()
    default = yaml.safe_load(params_file(nb, "default").read_text())
    assert set(default) == set(ref) - {"out_dir"} and from_flat(StudyConfig, default) == StudyConfig()
    for s in ("smoke", "full", "paper"):
        from_flat(StudyConfig, yaml.safe_load(params_file(nb, s).read_text()))
