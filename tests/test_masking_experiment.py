"""tmlib.experiments.masking (config, solutions contract) and tmlib.plots.masking, on tiny models."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

import tmlib.masking.solutions as S
from tmlib.core.config import ConfigError, flatten, from_flat
from tmlib.core.runs import RunStore
from tmlib.experiments.masking import Experiment, MaskingConfig, curve_flatness, plan, storage_table, summarize
from tmlib.masking.solutions import load_solution, solution_key_of, solution_path, task_dirname
from tmlib.plots import masking as pm


def train_solution(cfg, task, method, seed):
    """(model, metrics + test metrics) of one planned solution, trained or reused, as notebook 03 gets it."""
    exp, recipe = Experiment(cfg), plan(cfg).solution(task, method, seed)
    t, ev = exp.solution(recipe), exp.evaluation(recipe)
    return t.model, {**t.metrics, "test_accuracy": ev.accuracy, "test_n": ev.n}


def _cfg(tmp_path, **kw):
    base = dict(
        out_dir=str(tmp_path),
        model="scratch:tiny",
        tasks=["mr"],
        max_lengths=[16],
        max_train=[16],
        max_dev=8,
        max_test=32,
        seeds=[0],
        epochs=1.0,
        batch_size=8,
        mask_skip_first_blocks=1,
        lr_grid={},
        progress=False,
    )
    return from_flat(MaskingConfig, {**base, **kw})


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(methods=["adapter"]), "unknown method.*valid methods: finetune, bitfit, mask, lora"),
        (dict(lr={"adapter": 1e-3}), "unknown method"),
        (dict(lr={"mask": "1e-3"}), "must be a number"),
        (dict(lr={"mask": {"mr": 0}}), r"lr\['mask'\]\['mr'\] must be a number > 0"),
        (dict(lr={"adapter": {"mr": 1e-3}}), "unknown method"),
        (dict(schedule={"finetune": "official"}), "no schedule 'official'"),
        (dict(max_lengths=[16, 32]), "one value per task"),
        (dict(mask_head="random"), "mask.head"),
        (dict(mask_init_sparsity=2.0), "init_sparsity"),
        (dict(mask_skip_blocks=2), "unknown parameter"),
        (dict(lr_grid={"mask": []}), "non-empty list"),
        (dict(lr_grid={"mask": [1e-3, 0.0]}), "numbers > 0"),
        (dict(lr_grid={"mask": [1e-3, 1e-3]}), "repeated"),
        (dict(lr_grid={"adapter": [1e-3]}), "unknown method"),
        (dict(kernels="triton"), "kernels must be one of 'fast', 'hf'"),
        (dict(tasks=[], max_lengths=[], max_train=[]), "tasks is empty"),
    ],
)
def test_config_errors(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        from_flat(MaskingConfig, {**flatten(_cfg(tmp_path)), **kw})


def test_kernels_enter_the_solution_key_unless_hf(tmp_path):
    """kernels="hf" (the forward before the option) leaves the key as it was, so earlier runs stay valid;
    "fast" (the default) is a different run."""
    fast, hf = (plan(_cfg(tmp_path, kernels=k)).solution("mr", "finetune", 0).key() for k in ("fast", "hf"))
    assert "kernels" not in hf and fast == {**hf, "kernels": "fast"}
    assert MaskingConfig().kernels == "fast"


def test_lr_and_schedule_come_from_the_method_spec(tmp_path):
    cfg = _cfg(tmp_path, lr={"mask": 0.02}, methods=["finetune", "bitfit", "mask", "lora"])
    key = {m: plan(cfg).solution("mr", m, 0).key() for m in cfg.methods}
    assert key["mask"]["lr"] == 0.02 and key["lora"]["lr"] == 5e-4 and key["finetune"]["lr"] == 2e-5
    assert key["mask"]["schedule"]["schedule"] == "constant" and key["finetune"]["schedule"]["schedule"] == "linear"
    assert (
        plan(_cfg(tmp_path, schedule={"mask": "linear"})).solution("mr", "mask", 0).key()["schedule"]["grad_clip"]
        == 1.0
    )
    assert cfg.mask.skip_first_blocks == 1 and flatten(cfg)["mask_skip_first_blocks"] == 1


def test_per_task_lr_wins_over_the_grid_and_a_task_not_named_gets_the_grid(tmp_path):
    """lr[method][task] is used as given (no grid for that task); another task of the same method gets the grid;
    a plain number is used only by a method without a grid."""
    grid = {"finetune": [1e-3, 3e-3], "mask": [1e-2, 3e-2]}
    cfg = _cfg(
        tmp_path,
        tasks=["mr", "bbc"],
        max_lengths=[16, 16],
        max_train=[16, 16],
        methods=["finetune", "mask"],
        lr={"finetune": {"mr": 7e-4}, "mask": 5e-2},
        lr_grid=grid,
    )
    p = plan(cfg)
    assert p.solution("mr", "finetune", 0).lr == 7e-4 and ("mr", "finetune") not in p.grids
    assert p.solution("bbc", "finetune", 0).lr is None and p.grids["bbc", "finetune"].lrs == (1e-3, 3e-3)
    assert all(p.solution(t, "mask", 0).lr is None and (t, "mask") in p.grids for t in ("mr", "bbc"))
    no_grid = plan(_cfg(tmp_path, methods=["mask"], lr={"mask": 5e-2}, lr_grid={}))
    assert no_grid.solution("mr", "mask", 0).lr == 5e-2 and not no_grid.grids
    default = MaskingConfig()
    assert not plan(default).grids, "the default replays the grid's choice for its tasks: no grid runs"
    assert plan(default).solution("bbc", "finetune", 3).lr == 4e-4


def test_task_data_caps_are_class_balanced(tmp_path):
    cfg = _cfg(tmp_path, tasks=["bbc"], max_train=[50], max_dev=25, max_test=25)
    d = plan(cfg).data["bbc"].load()
    assert len(d["train"]) == 50 and len(d["dev"]) == 25 and len(d["test"]) == 25
    counts = np.bincount(d["train"]["label"])
    assert counts.max() - counts.min() <= 1


def test_task_dirname():
    assert task_dirname("mr") == "mr" and task_dirname("hub:SetFit/sst2") == "hub_SetFit_sst2"


def test_solution_contract_roundtrip_and_corruption(tmp_path):
    cfg = _cfg(tmp_path)
    model, metrics = train_solution(cfg, "mr", "mask", 0)
    d = solution_path(tmp_path, "mr", "mask", 0)
    assert {"model", "metrics.json", "mask.safetensors", "manifest.json"} <= {p.name for p in d.iterdir()}
    saved = json.loads((d / "metrics.json").read_text())
    assert (
        saved["method"] == "mask"
        and "test_accuracy" not in saved
        and saved["task_bytes"] < saved["fp32_copy_bytes"] / 32
    )
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


def test_lora_solution_contract_storage_and_memory(tmp_path):
    cfg = _cfg(tmp_path, methods=["finetune", "lora"])
    model, metrics = train_solution(cfg, "mr", "lora", 0)
    d = solution_path(tmp_path, "mr", "lora", 0)
    assert {"model", "metrics.json", "adapter", "manifest.json"} <= {p.name for p in d.iterdir()}
    assert (d / "adapter" / "adapter_model.safetensors").is_file() and metrics["file_bytes"] > 0
    loaded = load_solution(tmp_path, "mr", "lora", 0)  # a plain HF model with merged weights
    assert set(loaded.state_dict()) == set(load_solution(tmp_path, "mr", "lora", 0).state_dict())
    assert not any("lora" in k for k in loaded.state_dict())
    _, ft = train_solution(cfg, "mr", "finetune", 0)
    assert metrics["task_bytes"] < ft["task_bytes"] / 10
    results = pd.DataFrame([ft, metrics])
    assert set(summarize(results)["method"]) == {"finetune", "lora"}
    assert set(storage_table(results)["method"]) == {"finetune", "lora"}
    memory, check = Experiment(cfg).memory(results)
    assert check == {} and set(memory["method"]) == {"finetune", "lora"}
    m = memory.set_index(["method", "n_tasks"])["bytes"]
    assert m["lora", 2] - m["lora", 1] == metrics["task_bytes"] and m["finetune", 2] == 2 * ft["fp32_copy_bytes"]
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "memory.csv").exists()  # summaries write nothing


def test_figures_from_tables():
    res = pd.DataFrame(
        [
            {"task": t, "method": m, "seed": s, "test_accuracy": 0.7 + 0.01 * s}
            for t in ("mr", "bbc")
            for m in ("finetune", "bitfit", "mask", "lora")
            for s in (0, 1)
        ]
    )
    fig = pm.accuracy_bars(res)
    assert "LoRA" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    sp = pd.DataFrame(
        [{"task": "mr", "block": b, "type": t, "kept_pct": 90 + b} for b in (2, 3) for t in ("query", "ffn_in")]
        + [{"task": "mr", "block": -1, "type": "pooler", "kept_pct": 93.0}]
    )
    fig = pm.sparsity_heatmap(sp)
    img = np.ma.getdata(fig.axes[0].images[0].get_array())
    assert img.shape == (3, 3) and np.isnan(img[2, 0]) and img[0, 0] == 92
    st = pd.DataFrame(
        {"task": ["mr"] * 2, "method": ["finetune", "mask"], "task_bytes": [9e7, 1e6], "fp32_copy_bytes": [9e7] * 2}
    )
    assert pm.storage_bars(st).axes[0].get_yscale() == "log"
    mib = 2**20
    mem = pd.DataFrame(
        {
            "method": ["mask", "finetune", "mask", "finetune", "mask"],
            "n_tasks": [2, 1, 1, 2, 2],
            "bytes": [3 * mib, 4 * mib, 2 * mib, 8 * mib, 3.5 * mib],
            "kind": ["projected"] * 4 + ["measured"],
        }
    )
    ax = pm.memory_lines(mem).axes[0]
    # one line per method in MiB against n_tasks (sorted), the measured point marked apart
    assert [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()] == [
        ([1, 2], [2, 3]),
        ([1, 2], [4, 8]),
    ]
    assert ax.collections[-1].get_offsets().tolist() == [[2, 3.5]]
    empty = pm.flips_lines(pd.DataFrame(columns=["step", "kept_pct", "flip_pct"]))
    assert [[t.get_text() for t in a.texts] for a in empty.axes] == [
        ["no records: training was shorter than flip_every steps"]
    ] * 2
    assert not any(a.get_lines() for a in empty.axes)
    flips = pd.DataFrame(
        {
            "task": "mr",
            "seed": [0, 0, 1, 1],
            "step": [10, 20, 10, 20],
            "kept_pct": [95, 94, 96, 93],
            "flip_pct": [0.5, 0, 1, 2],
        }
    )
    kept_ax, flip_ax = pm.flips_lines(flips).axes
    assert [list(ln.get_ydata()) for ln in kept_ax.get_lines()] == [[95, 94], [96, 93]]
    assert [list(ln.get_ydata()) for ln in flip_ax.get_lines()] == [[0.5, 1e-4], [1, 2]]  # 0 drawn at the log floor
    assert [ln.get_label() for ln in kept_ax.get_lines()] == ["mr s0", "mr s1"] and flip_ax.get_yscale() == "log"
    curves = pd.DataFrame(
        [
            {"task": t, "method": m, "seed": s, "lr": 1e-3, "step": st, "dev_accuracy": 0.5 + 0.01 * st}
            for t in ("mr", "bbc")
            for m in ("finetune", "mask")
            for s in (0, 1)
            for st in (5, 10, 15)
        ]
    )
    fig = pm.dev_curves(curves)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "training step"
    thick = [line for line in fig.axes[0].get_lines() if line.get_linewidth() == 2]
    assert len(thick) == 2 and list(thick[0].get_ydata()) == pytest.approx([55, 60, 65])
    with pytest.raises(ValueError, match="missing \\['kept_pct'\\]"):
        pm.sparsity_heatmap(sp.drop(columns="kept_pct"))


def test_lr_grid_chosen_on_dev_of_the_first_seed_then_every_seed_trains_at_it(tmp_path, monkeypatch):

    # lr_grid_extend=0: the edge rule has its own test, test_grid_extends_past_an_edge_winner
    cfg = _cfg(
        tmp_path,
        methods=["finetune", "bitfit"],
        seeds=[3, 1],
        lr_grid={"finetune": [1e-3, 3e-2]},
        lr={"bitfit": 1e-2},
        epochs=2.0,
        lr_grid_extend=0,
    )
    calls = []
    real = S.train
    monkeypatch.setattr(S, "train", lambda r, *a: calls.append((r.method, r.seed, r.lr)) or real(r, *a))
    run = Experiment(cfg).run()
    results = run.results
    # finetune: 2 grid runs on seed 3 (the winner is copied as seed 3) + seed 1; bitfit: no grid, 2 runs
    assert [c for c in calls if c[0] == "finetune"][:2] == [("finetune", 3, 1e-3), ("finetune", 3, 3e-2)]
    assert len(calls) == 5
    sel = run.lr_selection
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "lr_selection.csv"), sel)
    assert list(sel.lr) == [1e-3, 3e-2] and sel.chosen.sum() == 1 and (sel.seed == 3).all()
    best = sel[sel.chosen].iloc[0]
    assert best.dev_accuracy == sel.dev_accuracy.max()
    ft = results[results.method == "finetune"].set_index("seed")
    assert (ft.lr == best.lr).all() and ft.loc[3, "dev_accuracy"] == best.dev_accuracy
    assert (results[results.method == "bitfit"].lr == 1e-2).all()
    # the choice is in the solutions' manifests (the selection stage's key hash) and the inner key has the lr
    d = solution_path(tmp_path, "mr", "finetune", 1)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["config"]["deps"]["selection"]["stage"] == "solutions/mr/lr-grid/finetune/selection"
    assert solution_key_of(tmp_path, "mr", "finetune", 1)["lr"] == best.lr
    assert (solution_path(tmp_path, "mr", "finetune", 3) / "model" / "config.json").is_file()
    # dev curves: one row per evaluation (one per epoch) of every run
    curves = run.dev_curves
    assert len(curves) == 4 * 2 and set(curves.method) == {"finetune", "bitfit"}
    # each run's two evaluations, in step order; the run's dev accuracy is its best evaluation's (the state kept)
    for r in results.itertuples():
        c = curves[(curves.method == r.method) & (curves.seed == r.seed)]
        assert list(c.epoch) == [1.0, 2.0] and c.step.is_monotonic_increasing and (c.lr == r.lr).all()
        assert r.dev_accuracy == pytest.approx(c.dev_accuracy.max()), (r.method, r.seed)
    flat = curve_flatness(curves)
    assert set(flat.method) == {"finetune", "bitfit"} and (flat.evals == 2).all()
    summary = summarize(results)
    row = summary[summary.method == "bitfit"].iloc[0]
    assert row.vs_finetune.startswith("bitfit \u2212 fine-tune = ") and row.vs_finetune.endswith("2 seeds)")
    assert summary[summary.method == "finetune"].vs_finetune.iloc[0] == ""
    # a rerun reuses the selection and every solution: nothing is trained
    monkeypatch.setattr(S, "train", lambda *a, **k: pytest.fail("retrained"))
    pd.testing.assert_frame_equal(Experiment(cfg).run().results, results)
    # a changed grid reruns the selection and, through its key, the solutions; its grid point 1e-3 is the cached
    # stage of the first grid (one stage per method and lr), so only seed 1 trains
    calls.clear()
    monkeypatch.setattr(S, "train", lambda r, *a: calls.append(r.seed) or real(r, *a))
    Experiment(
        _cfg(tmp_path, methods=["finetune"], seeds=[3, 1], lr={}, lr_grid={"finetune": [1e-3]}, epochs=2.0)
    ).run()
    assert calls == [1]


def test_next_edge_lr_steps_beyond_an_edge_winner_only():
    from tmlib.masking.solutions import next_edge_lr

    assert next_edge_lr([1e-3, 3e-3, 1e-2], 1e-2) == pytest.approx(3.3e-2)
    assert next_edge_lr([1e-3, 3e-3, 1e-2], 1e-3) == pytest.approx(3.3e-4)
    assert next_edge_lr([5e-5, 1e-4, 2e-4], 2e-4) == pytest.approx(4e-4)
    assert next_edge_lr([1e-3, 3e-3, 1e-2], 3e-3) is None  # inside: the grid brackets the optimum
    assert next_edge_lr([1e-3], 1e-3) is None  # one lr: no ratio to step with
    assert next_edge_lr([1.0e-3, 1.01e-3], 1.01e-3) is None  # the step rounds onto a tried lr


def test_grid_extends_past_an_edge_winner_and_records_it(tmp_path, monkeypatch):
    cfg = _cfg(
        tmp_path,
        methods=["finetune"],
        seeds=[0],
        lr={},
        lr_grid={"finetune": [1e-4, 1e-3]},
        lr_grid_extend=1,
        epochs=1.0,
    )
    tried = []
    # larger lr wins
    monkeypatch.setattr(
        S,
        "train",
        lambda r, inputs: (
            tried.append(r.lr) or S.Trained(model=None, metrics={"dev_accuracy": r.lr, "dev_loss": 0.0, "lr": r.lr})
        ),
    )
    monkeypatch.setattr(
        S,
        "save",
        lambda t, d, tok: (
            d.mkdir(parents=True, exist_ok=True),
            (d / "metrics.json").write_text(json.dumps(t.metrics)),
        ),
    )
    sel = Experiment(cfg).selection("mr", "finetune")
    assert tried == [1e-4, 1e-3, 1e-2]  # one extension (lr_grid_extend=1), although 1e-2 is again the edge
    assert sel.lr == 1e-2 and list(sel.table.edge_extension) == [False, False, True]
    assert list(sel.table.chosen) == [False, False, True]
    with pytest.raises(ConfigError, match="lr_grid_extend"):
        _cfg(tmp_path, lr_grid_extend=-1)


def test_test_evaluation_is_its_own_stage_on_the_held_out_pool(tmp_path, monkeypatch):
    """Every solution is tested on the examples train and dev leave out (test_pool "heldout"), in a stage of its
    own: predictions in test order give the reported accuracy, and a new test cap re-evaluates without
    retraining."""
    cfg = _cfg(tmp_path, methods=["finetune", "mask"], seeds=[0, 1], max_test=0)
    run = Experiment(cfg).run()
    data = plan(cfg).data["mr"].load()
    labels = np.asarray(data["test"]["label"])
    from tmlib.tasks.data import load_task

    assert len(labels) == sum(map(len, load_task("mr").values())) - 16 - 8  # everything but train and dev
    for (_task, method, seed), pred in run.predictions.items():
        row = run.results.set_index(["method", "seed"]).loc[(method, seed)]
        assert len(pred) == row.test_n == len(labels) and row.test_accuracy == pytest.approx((pred == labels).mean())
    gaps = summarize(run.results, run.predictions)
    mask = gaps[gaps.method == "mask"].iloc[0]
    dis = np.mean([(run.predictions["mr", "mask", s] != run.predictions["mr", "finetune", s]).mean() for s in (0, 1)])
    assert mask.sampling_sd_pts == pytest.approx(100 * np.sqrt(dis / len(labels)))
    built = []
    real_build = RunStore._build
    monkeypatch.setattr(RunStore, "_build", lambda self, st, *a: built.append(st.name) or real_build(self, st, *a))
    again = Experiment(_cfg(tmp_path, methods=["finetune", "mask"], seeds=[0, 1], max_test=100)).run()
    assert (
        again.results.test_n == 100
    ).all() and again.results.dev_accuracy.tolist() == run.results.dev_accuracy.tolist()
    assert built and all(name.startswith("evaluations/") for name in built), built  # nothing retrained
