"""Selective-masking experiment: config validation, summaries and plots on synthetic results."""
import json

import numpy as np
import pandas as pd
import pytest

from tmlib.config import ConfigError, from_dict
from tmlib.experiments.selective import (Compute, SelectiveConfig, accuracy_table, buffer_summary, curve_summary,
                                         paired_gaps, summarize)
from tmlib.importance.types import TokenScores


def _results():
    rows = []
    for g in (10, 30):
        for m, base in (("genept", 0.6), ("selective", 0.7), ("random", 0.65)):
            for t in ((0,) if m == "genept" else (5, 10)):
                for seed in (0, 1, 2):
                    acc = base + 0.01 * seed + (0.02 if g == 30 else 0) + (0.01 * t / 10 if t else 0)
                    rows.append({"genept_steps": g, "method": m, "taskpt_steps": t, "seed": seed,
                                 "test_accuracy": acc, "dev_accuracy": acc - 0.01, "seconds": 1.0, "failed": False})
    return pd.DataFrame(rows)


def test_config_validation():
    cfg = from_dict(SelectiveConfig, {"out_dir": "x", "genept_steps": [300, 100, 100], "taskpt_steps": [20, 10]})
    assert cfg.genept_steps == [100, 300] and cfg.taskpt_steps == [10, 20]
    with pytest.raises(ConfigError, match="unknown TaskPT method"):
        from_dict(SelectiveConfig, {"methods": ["selective", "mlm"]})
    with pytest.raises(ConfigError, match="fallback"):
        from_dict(SelectiveConfig, {"fallback": "always"})
    with pytest.raises(ConfigError, match="extra_seeds"):
        from_dict(SelectiveConfig, {"seeds": [0, 1], "extra_seeds": [1, 2]})
    with pytest.raises(ConfigError, match="seeds is empty"):
        from_dict(SelectiveConfig, {"seeds": []})
    with pytest.raises(ConfigError, match="unknown parameter"):
        from_dict(SelectiveConfig, {"genept_step": [1]})
    with pytest.raises(ConfigError, match="expected a list"):
        from_dict(SelectiveConfig, {"seeds": 3})


def test_summaries():
    res = _results()
    final = res[(res["method"] == "genept") | (res["taskpt_steps"] == 10)]
    s = summarize(final)
    assert list(s["method"][:3]) == ["genept", "selective", "random"] and (s["n_seeds"] == 3).all()
    row = s[(s.genept_steps == 10) & (s.method == "selective")].iloc[0]
    assert row.test_mean == pytest.approx(0.72) and row.test_std == pytest.approx(0.01)
    table = accuracy_table(s)
    assert table.loc[10, "+TaskPT selective"] == "72.00 ± 1.00"
    c = curve_summary(res[res.genept_steps == 10])
    sel = c[c.method == "selective"].sort_values("taskpt_steps")
    assert sel["taskpt_steps"].tolist() == [0, 5, 10]  # step 0 = GenePT only, shared
    assert sel["test_mean"].iloc[0] == pytest.approx(0.61)
    assert c[c.method == "random"]["test_mean"].iloc[0] == pytest.approx(0.61)


def test_paired_gaps():
    res = _results()
    # synthetic: selective = random + 5 points at every seed, plus seed-specific noise shared by all methods
    gaps = paired_gaps(res).set_index(["genept_steps", "comparison"])
    row = gaps.loc[(10, "selective - random")]
    assert row.gap_mean == pytest.approx(5.0) and row.wins == 3 and row.n_seeds == 3
    assert np.isnan(row.p) and row.verdict == "within noise"   # zero spread: no test, no claim
    noisy = res.copy()
    jitter = {0: 0.0, 1: 0.02, 2: -0.01}
    sel = noisy["method"] == "selective"
    noisy.loc[sel, "test_accuracy"] += noisy.loc[sel, "seed"].map(jitter)
    g = paired_gaps(noisy).set_index(["genept_steps", "comparison"]).loc[(10, "selective - random")]
    assert g.gap_mean == pytest.approx(5 + 100 * sum(jitter.values()) / 3)
    assert g.p < 0.05 and g.verdict == "separated"
    noisy.loc[sel & (noisy.seed == 2), "test_accuracy"] -= 0.12   # one seed flips the sign: not separated
    g = paired_gaps(noisy).set_index(["genept_steps", "comparison"]).loc[(10, "selective - random")]
    assert g.wins == 2 and g.verdict == "within noise"
    noisy.loc[sel & (noisy.seed == 2), "failed"] = True   # ... because that run never trained: dropped on request
    g = paired_gaps(noisy, drop_failed=True).set_index(["genept_steps", "comparison"]).loc[(10, "selective - random")]
    assert g.n_seeds == 2 and g.wins == 2
    assert summarize(noisy[noisy.taskpt_steps != 5]).set_index(["genept_steps", "method"]).loc[(10, "selective"), "n_failed"] == 1
    assert "random15 - genept" not in set(gaps.reset_index()["comparison"])  # absent methods are skipped


def test_buffer_summary_and_compute():
    ss = [TokenScores("a b", ["a", "b"], [0, 0.1], important=[0, 1], label=1, pred=1),
          TokenScores("c d", ["c", "d"], [0, 0], important=[0, 0], label=1, pred=0)]
    b = buffer_summary({"train": ss}).iloc[0]
    assert b.scorer_correct == 1 and b.important_tokens == 1 and b.important_rate == 0.5
    c = Compute()
    c.add("GenePT 10 steps", "GenePT", 2.0, 10.0, steps=10)
    c.add("GenePT 10 steps", "GenePT", 3.0, 10.0, steps=10)  # re-adding a stage replaces it
    assert c.frame()["seconds"].tolist() == [3.0]


def test_plots(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from tmlib.plots import selective as sp

    res = _results()
    final = res[(res["method"] == "genept") | (res["taskpt_steps"] == 10)]
    sp.accuracy_bars(summarize(final)).savefig(tmp_path / "a.png")
    sp.accuracy_vs_steps(curve_summary(res)).savefig(tmp_path / "b.png")
    compute = {"stages": [
        {"stage": "GenePT 10 steps", "group": "GenePT", "seconds": 5, "flops": 1e9, "steps": 10},
        {"stage": "buffer labels", "group": "importance", "seconds": 2, "flops": 1e8},
        {"stage": "TaskPT selective (GenePT 10)", "group": "TaskPT", "seconds": 3, "flops": 5e8, "genept_steps": 10, "method": "selective"},
        {"stage": "TaskPT random (GenePT 10)", "group": "TaskPT", "seconds": 3, "flops": 5e8, "genept_steps": 10, "method": "random"}]}
    sp.compute_split(compute).savefig(tmp_path / "c.png")
    assert all((tmp_path / f).stat().st_size > 5000 for f in ("a.png", "b.png", "c.png"))


def test_interrupted_genept_resumes(tmp_path, monkeypatch):
    """Kill the GenePT stage after its first budget; the rerun resumes from the stage's checkpoint and
    the artifact equals an uninterrupted build's."""
    import torch
    from safetensors.torch import load_file

    from tmlib.experiments import selective

    monkeypatch.setattr(selective, "PROGRESS", False)
    kw = dict(model="scratch:tiny", genept_steps=[3, 6], genept_max_sentences=60, mlm_batch_size=4, max_length=32,
              task_max_examples=16)
    ref = selective.setup(SelectiveConfig(out_dir=str(tmp_path / "ref"), **kw))
    selective.run_genept(ref)

    class Stop(Exception):
        pass

    real_saver = selective._saver

    def dying_saver(work, start):
        save = real_saver(work, start)

        def on_save(step, model):
            save(step, model)
            if step == 3:
                raise Stop
        return on_save

    p = selective.setup(SelectiveConfig(out_dir=str(tmp_path / "run"), **kw))
    monkeypatch.setattr(selective, "_saver", dying_saver)
    with pytest.raises(Stop):
        selective.run_genept(p)
    assert not (tmp_path / "run" / "genept").exists()          # no partial artifact
    assert list((tmp_path / "run").glob(".genept_work/*/checkpoint.pt"))  # but a resumable checkpoint
    monkeypatch.setattr(selective, "_saver", real_saver)
    dirs = selective.run_genept(p)
    assert not (tmp_path / "run" / ".genept_work").exists()
    for step, d in dirs.items():
        a = load_file(ref.genept_dirs[step] / "model.safetensors")
        b = load_file(d / "model.safetensors")
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=f"step {step}: {k}")
