"""Smoke run of notebooks/05_what_masks_learn.ipynb and its parameter sets."""

import pandas as pd
import pytest

from tmlib.suite import run_suite


@pytest.mark.slow
def test_nb05_smoke(tmp_path):
    run_suite("smoke", tmp_path, only=["05"])
    out = tmp_path / "05_what_masks_learn"
    from tmlib.core.config import from_flat, load_yaml
    from tmlib.experiments.mask_study import StudyConfig
    from tmlib.suite import NOTEBOOKS, params_file

    cfg = from_flat(StudyConfig, load_yaml(params_file(next(NOTEBOOKS.glob("05_*.ipynb")), "smoke")))
    seeds = len(cfg.seeds)
    sol = pd.read_csv(out / "solutions.csv")
    assert set(sol.study) == {"sparsity", "layers", "reference"} and (sol.test_n == cfg.max_test).all()
    assert all(sorted(d) == cfg.seeds for _, d in sol.groupby(["study", "setting"]).seed)
    sparsity, layers = pd.read_csv(out / "sparsity.csv"), pd.read_csv(out / "layers.csv")
    assert list(sparsity.setting.astype(str)) == ["0.05", "0.5"] and list(layers.setting) == [
        "default",
        "bottom1",
        "top1",
    ]
    # each setting's row summarises its seeds' rows of solutions.csv (accuracies in %)
    for study, table in (("sparsity", sparsity), ("layers", layers)):
        rows = sol[sol.study == study].assign(setting=lambda d: d.setting.astype(str))
        for r in table.assign(setting=table.setting.astype(str)).itertuples():
            d = rows[rows.setting == r.setting]
            assert r.n_seeds == len(d) == seeds, (study, r.setting)
            assert r.test_mean == pytest.approx(100 * d.test_accuracy.mean(), abs=1e-3), (study, r.setting)
            assert r.dev_mean == pytest.approx(100 * d.dev_accuracy.mean(), abs=1e-3), (study, r.setting)
            assert r.density_pct == pytest.approx(d.density_pct.mean(), abs=1e-3), (study, r.setting)
    # an initial sparsity of 50% leaves about half the weights after one short epoch; 5% about 95%
    dens = sparsity.set_index(sparsity.setting.astype(str)).density_pct
    assert 40 < dens["0.5"] < 60 and 90 < dens["0.05"] < 99
    # one probe per representation, on every probe sentence's features, cross-validated with the configured folds:
    # each fold scores a whole number of its 16 sentences, so the mean accuracy is a multiple of 100 / 48 %
    import numpy as np

    probe = pd.read_csv(out / "probe.csv")
    names = ["pretrained"] + [f"{m}-s{s}" for m in ("mask", "finetune") for s in cfg.seeds]
    assert sorted(probe.representation) == sorted(names) and list(probe.model) == [
        n.split("-s")[0] for n in probe.representation
    ]
    for r in probe.itertuples():
        assert (
            r.examples == len(np.load(out / "features" / r.representation / "X.npy")) == 48
            and r.folds == cfg.probe_folds
        )
        assert r.probe_accuracy * 48 / 100 == pytest.approx(round(r.probe_accuracy * 48 / 100), abs=1e-3), r
    transfer = pd.read_csv(out / "transfer.csv")
    assert len(transfer) == len(cfg.transfer_tasks) * 2 * seeds and (transfer.n == cfg.transfer_examples).all()
    summary = pd.read_csv(out / "transfer_summary.csv")
    assert list(summary.task) == cfg.transfer_tasks and (summary.n_seeds == seeds).all()
    for r in summary.itertuples():
        acc = {
            m: 100 * transfer[(transfer.task == r.task) & (transfer.method == m)].accuracy for m in ("mask", "finetune")
        }
        assert r.mask_mean == pytest.approx(acc["mask"].mean(), abs=1e-3)
        assert r.finetune_mean == pytest.approx(acc["finetune"].mean(), abs=1e-3)
        assert r.gap_mean == pytest.approx(r.mask_mean - r.finetune_mean, abs=1e-3)
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
    assert len(runs) == len(cfg.token_methods) * seeds and (runs.n_sentences == cfg.token_curve[-1]).all()
    # each method's row is the mean of its runs (in %), its gap the difference to fine-tuning's mean
    by = tokens.set_index("method")
    for method, d in runs.groupby("method"):
        assert by.n_seeds[method] == len(d) and by["mean"][method] == pytest.approx(100 * d.value.mean(), abs=1e-3)
        if method != "finetune":
            gap = by["mean"][method] - by["mean"]["finetune"]
            assert by.gap_vs_reference_pts[method] == pytest.approx(gap, abs=2e-3), method
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
