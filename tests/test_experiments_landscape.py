"""tmlib.experiments.landscape on scratch:tiny: solutions trained and cached, reused from a notebook-03 run dir,
paths/plane/summary files written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tmlib.core.config import ConfigError, from_dict, from_flat
from tmlib.core.runs import RunStore
from tmlib.experiments import landscape as L


def tiny_cfg(out_dir, **kw):
    base = dict(
        out_dir=str(out_dir),
        model="scratch:tiny",
        train_examples=32,
        epochs=1.0,
        batch_size=16,
        dev_examples=16,
        test_examples=16,
        n_gammas=3,
        plane_resolution=2,
        plane_examples=8,
        mask_skip_first_blocks=0,
        max_length=32,
        curve_steps=4,
        curve_points=3,
        progress=False,
    )
    return from_flat(L.LandscapeConfig, {**base, **kw})


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="two different fine-tuning seeds"):
        tiny_cfg(tmp_path, seeds=[0, 0])
    with pytest.raises(ConfigError, match="cover \\[0, 1\\]"):
        tiny_cfg(tmp_path, gamma_min=0.1)
    with pytest.raises(ConfigError, match="curve_points >= 2"):
        tiny_cfg(tmp_path, curve_points=1)
    with pytest.raises(ConfigError, match="unknown parameter"):
        from_dict(L.LandscapeConfig, {"out_dir": "x", "n_gamma": 3})
    with pytest.raises(ConfigError, match="mixed_precision"):
        tiny_cfg(tmp_path, mixed_precision="half")
    assert tiny_cfg(tmp_path).gammas == [-0.2, 0.0, 0.5, 1.0, 1.2]  # 0 and 1 always on the grid


def test_end_to_end_and_cache(tmp_path, monkeypatch, tiny_task, tokenizer):
    cfg = tiny_cfg(tmp_path / "out", train_examples=0, dev_examples=4, test_examples=4, plane_examples=4)
    data, tok = tiny_task, tokenizer
    exp = L.Experiment(cfg, data, tok)
    sols = exp.solutions()
    assert set(sols.states) == {"mask-s0", "finetune-s0", "finetune-s1", "pretrained"}
    assert all("trained here" in sols.sources[k] for k in ("mask-s0", "finetune-s0", "finetune-s1"))
    batches = exp.batches(sols)
    assert len(batches["dev"]) == 4 and len(batches["plane"]) == 4
    paths = exp.paths(sols, batches)
    assert set(paths.path) == {"mask<->finetune", "finetune-s0<->finetune-s1", "pretrained<->finetune"}
    assert len(paths) == 3 * len(cfg.gammas) * 2
    curve = exp.curve(sols, batches)
    assert set(curve.path) == {L.CURVE_PATH} and len(curve) == cfg.curve_points * 2
    assert sorted(set(curve.gamma)) == [0.0, 0.5, 1.0] and (out_curve := tmp_path / "out" / "curve_train.csv").is_file()
    assert len(pd.read_csv(out_curve)) == cfg.curve_steps
    line = paths[(paths.path == "mask<->finetune")].set_index(["gamma", "split"])
    for _, r in curve[curve.gamma.isin([0.0, 1.0])].iterrows():  # the curve starts and ends at the two models
        assert r.accuracy == line.loc[(r.gamma, r.split), "accuracy"]
    paths = L.all_paths(paths, curve)
    exp.write(paths=paths)
    assert set(pd.read_csv(tmp_path / "out" / "paths.csv").path) == set(paths.path)
    frame, coords = exp.plane(sols, batches)
    assert set(coords) == {"pretrained", "mask", "finetune"} and coords["pretrained"] == (0.0, 0.0)
    assert (frame.point == "").sum() == 4 and set(frame.point) - {""} == set(coords)
    summary = L.summarize(cfg, paths, frame, coords, sols)
    out = tmp_path / "out"
    assert not (out / "summary.json").exists()  # summarize writes nothing
    exp.write(summary=summary)
    for f in ("paths.csv", "plane.csv", "summary.json", "summary.csv", "plane_coords.json"):
        assert (out / f).is_file(), f
    js = json.loads((out / "summary.json").read_text())
    assert js["mask_finetune_within_1pt_test"] == summary["mask_finetune_within_1pt_test"]
    table = pd.read_csv(out / "summary.csv")
    assert len(table) == 8 and "Bezier" in summary["curve_finding"]
    # each row's drop is recomputed from paths.csv: lower endpoint minus the worst accuracy on [0, 1]
    saved = pd.read_csv(out / "paths.csv")
    for row in table.itertuples():
        d = saved[(saved.path == row.path) & (saved.split == row.split)]
        inside = d[(d.gamma >= 0) & (d.gamma <= 1)]
        ends = (d[np.isclose(d.gamma, 0)].accuracy.iloc[0], d[np.isclose(d.gamma, 1)].accuracy.iloc[0])
        assert row.max_drop_pts == pytest.approx(100 * max(0.0, min(ends) - inside.accuracy.min()), abs=1e-6)
        assert row.min_acc_0_1 == pytest.approx(inside.accuracy.min())
    # a second run reuses every cached artifact: nothing is trained or evaluated again (patching the store's build,
    # not the training code: an edited training function would give the stages new keys, as it should)
    from tmlib.core.runs import RunStore

    monkeypatch.setattr(RunStore, "_build", lambda self, stage, *a: pytest.fail(f"rebuilt the cached {stage.name}"))
    exp2 = L.Experiment(cfg, data, tok)  # a fresh store: reuse goes through the manifests on disk
    sols2 = exp2.solutions()
    pd.testing.assert_frame_equal(exp2.paths(sols2, batches), paths[paths.path != L.CURVE_PATH], check_dtype=False)
    pd.testing.assert_frame_equal(exp2.curve(sols2, batches), curve, check_dtype=False)
    res = exp2.run()  # the whole notebook in one call gives the same tables
    pd.testing.assert_frame_equal(res.paths, paths, check_dtype=False)
    assert res.summary["finding"] == summary["finding"]


def test_reuses_notebook_03_solutions(tmp_path, tiny_task, tokenizer):
    from tmlib.core.models import load_classifier
    from tmlib.tasks.data import label_names

    cfg = tiny_cfg(tmp_path / "out", reuse_runs=str(tmp_path / "nb03"))
    data, tok = tiny_task, tokenizer

    saved, store = {}, RunStore(tmp_path / "nb03" / "solutions")  # notebook 03's artifact layout + manifests
    for method, seed in (("mask", 0), ("finetune", 0), ("finetune", 1)):
        m = load_classifier("scratch:tiny", label_names(data), seed=10 + seed + (5 if method == "mask" else 0))
        store.cached(
            f"mr/{method}-s{seed}",
            {"model": "scratch:tiny", "method": method, "seed": seed},
            build=lambda m=m: m,
            save=lambda obj, d: obj.save_pretrained(d / "model"),
            load=lambda d: None,
        )
        saved[f"{method}-s{seed}"] = m.state_dict()
    from tmlib.masking.solutions import solution_path

    assert (solution_path(tmp_path / "nb03", "mr", "mask", 0) / "model" / "config.json").is_file()
    with pytest.raises(ConfigError, match="trained from model='scratch:tiny'"):
        L.Experiment(
            tiny_cfg(tmp_path / "out", reuse_runs=str(tmp_path / "nb03"), model="scratch:mini"), data, tok
        ).solutions()
    sols = L.Experiment(cfg, data, tok).solutions()
    for k, st in saved.items():
        assert sols.sources[k].startswith("notebook 03:")
        assert all((sols.states[k][n] == v).all() for n, v in st.items())
    assert not (tmp_path / "out" / "solutions").exists(), "nothing should be trained when 03's solutions exist"


def test_kernels_enter_the_cache_keys_unless_hf():
    """04's cached paths / curve / plane keys carry kernels (not for "hf": caches made before the option stay
    valid), and the solutions 04 trains itself use the same setting."""
    fast, hf = L.LandscapeConfig(), L.LandscapeConfig(kernels="hf")
    assert L._compute_key(fast) == {"kernels": "fast"} and L._compute_key(hf) == {}
    assert {r.kernels for r in L.plan(fast).solutions.values()} == {"fast"}
    assert {r.kernels for r in L.plan(hf).solutions.values()} == {"hf"}
    assert {r.kernels for r in (*L.plan(hf).paths, L.plan(hf).curve, L.plan(hf).plane)} == {"hf"}
    # trained as notebook 03 trains: in what "auto" means on this host (bf16 where native, else fp32)
    from tmlib.experiments.masking import MaskingConfig

    assert {r.mixed_precision for r in L.plan(fast).solutions.values()} == {MaskingConfig().mixed_precision}
    with pytest.raises(ConfigError, match="kernels must be one of"):
        L.LandscapeConfig(kernels="triton")


def test_curve_training_enters_the_curve_key_unless_as_before():
    """The curve's training precision and forward are in its cache key, except fp32 with the model's own forward
    (how every curve was trained before the options: those caches stay valid); fp16 is refused."""
    bf16 = L.LandscapeConfig(curve_mixed_precision="bf16")
    assert L._curve_training_key(bf16) == {"curve_mixed_precision": "bf16", "curve_kernels": "fast"}
    assert L._curve_training_key(L.LandscapeConfig(curve_mixed_precision="no", kernels="hf")) == {}
    assert L._curve_training_key(L.LandscapeConfig(curve_mixed_precision="fp32", kernels="hf")) == {}
    assert L._curve_training_key(L.LandscapeConfig(curve_mixed_precision="no")) == {"curve_kernels": "fast"}
    with pytest.raises(ConfigError, match="curve_mixed_precision must be 'auto', 'fp32' or 'bf16'"):
        L.LandscapeConfig(curve_mixed_precision="fp16")
    with pytest.raises(ConfigError, match="mixed_precision"):
        L.LandscapeConfig(curve_mixed_precision="half")


def test_test_pool_is_what_notebook_03_never_trained_or_selected_on(tmp_path, tokenizer):
    """The reused solutions' keys say which train and dev rows they saw: the test pool is every other example."""
    from tmlib.core.runs import RunStore
    from tmlib.tasks.data import load_task

    store = RunStore(tmp_path / "nb03" / "solutions")
    store.cached(
        "mr/finetune-s0",
        {"model": "scratch:tiny", "method": "finetune", "seed": 0, "max_train": 40, "max_dev": 20, "data_seed": 0},
        build=lambda: 0,
        save=lambda obj, d: (d / "x").write_text("x"),
        load=lambda d: None,
    )
    cfg = tiny_cfg(tmp_path / "out", reuse_runs=str(tmp_path / "nb03"), test_examples=0)
    trained_on = L._trained_on(cfg, reused=True)
    assert (trained_on.max_train, trained_on.max_dev) == (40, 20)
    full = load_task("mr")
    batches = L.eval_batches(cfg, full, tokenizer, trained_on)  # what Experiment.batches gives for reused solutions
    assert len(batches["test"]) == sum(map(len, full.values())) - 40 - 20
    split = L.eval_batches(tiny_cfg(tmp_path / "out", test_pool="split", test_examples=0), full, tokenizer, trained_on)
    assert len(split["test"]) == len(full["test"])
