"""Selective-masking experiment: config validation, summaries and plots on synthetic results."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tmlib.core.config import ConfigError, from_flat
from tmlib.experiments.selective import (
    Experiment,
    SelectiveConfig,
    accuracy_table,
    buffer_summary,
    curve_summary,
    paired_gaps,
    summarize,
)
from tmlib.selective.types import TokenScores


def _results():
    rows = []
    for g in (10, 30):
        for m, base in (("genept", 0.6), ("selective", 0.7), ("random", 0.65)):
            for t in (0,) if m == "genept" else (5, 10):
                for seed in (0, 1, 2):
                    acc = base + 0.01 * seed + (0.02 if g == 30 else 0) + (0.01 * t / 10 if t else 0)
                    rows.append(
                        {
                            "genept_steps": g,
                            "method": m,
                            "taskpt_steps": t,
                            "seed": seed,
                            "test_accuracy": acc,
                            "dev_accuracy": acc - 0.01,
                            "seconds": 1.0,
                            "failed": False,
                        }
                    )
    return pd.DataFrame(rows)


def test_config_validation():
    cfg = from_flat(SelectiveConfig, {"out_dir": "x", "genept_steps": [300, 100, 100], "taskpt_steps": [20, 10]})
    assert cfg.genept.steps == [100, 300] and cfg.taskpt.steps == [10, 20]
    with pytest.raises(ConfigError, match="unknown TaskPT method"):
        from_flat(SelectiveConfig, {"taskpt_methods": ["selective", "mlm"]})
    with pytest.raises(ConfigError, match="fallback"):
        from_flat(SelectiveConfig, {"taskpt_fallback": "always"})
    with pytest.raises(ConfigError, match="taskpt.select"):
        from_flat(SelectiveConfig, {"taskpt_select": "best"})
    with pytest.raises(ConfigError, match="extra_seeds"):
        from_flat(SelectiveConfig, {"seeds": [0, 1], "extra_seeds": [1, 2]})
    with pytest.raises(ConfigError, match="seeds is empty"):
        from_flat(SelectiveConfig, {"seeds": []})
    with pytest.raises(ConfigError, match=r"unknown parameter.*genept_step for.*valid names:.*genept_steps"):
        from_flat(SelectiveConfig, {"genept_step": [1]})
    with pytest.raises(ConfigError, match="expected a list"):
        from_flat(SelectiveConfig, {"seeds": 3})
    with pytest.raises(ConfigError, match="kernels must be one of"):
        from_flat(SelectiveConfig, {"kernels": "triton"})


def test_kernels_reach_every_training_stage_and_the_keys(tmp_path):
    """kernels goes into every TrainConfig the experiment builds and into the root stage's key (GenePT; the
    others chain it through their upstream keys, the classifier stages also through their TrainConfig);
    "hf" keeps the keys of runs made before the option."""
    from tmlib.experiments.selective import Experiment

    exps = {
        k: Experiment(
            from_flat(
                SelectiveConfig, {"out_dir": str(tmp_path / k), "kernels": k, "progress": False, "task_max_examples": 8}
            )
        )
        for k in ("fast", "hf")
    }
    assert exps["fast"].plan.finetune.kernels == "fast" and exps["hf"].plan.tagger.train.kernels == "hf"
    g = {k: e.genept_stage().key() for k, e in exps.items()}  # GenePT's own config holds its run recipe
    assert g["fast"]["config"]["run"]["kernels"] == "fast" and "kernels" not in g["hf"]["config"]["run"]
    scorer = {k: e.scorer_stage().key() for k, e in exps.items()}  # scorer: minilm, no upstream stage
    assert scorer["fast"]["train"]["kernels"] == "fast" and "kernels" not in scorer["hf"]["train"]
    assert (
        exps["fast"].taskpt_stage(100, "selective").key_hash() != exps["hf"].taskpt_stage(100, "selective").key_hash()
    )


def test_notebook_yaml_and_dataclass_defaults_agree():
    """One source of defaults: notebook 01's parameters cell and default.yaml are SelectiveConfig()."""
    import ast

    import yaml

    from tmlib.core.config import flat_defaults
    from tmlib.suite import PARAMS

    defaults = flat_defaults(SelectiveConfig)
    nb = json.loads(Path("notebooks/01_selective_masking.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params = {}
    for node in ast.parse("".join(cell["source"])).body:  # name: type = value (typed for papermill --help)
        params[node.target.id] = ast.literal_eval(node.value)
    assert params == defaults
    yml = yaml.safe_load((PARAMS / "01_selective_masking" / "default.yaml").read_text())
    assert {k: v for k, v in yml.items() if k != "out_dir"} == {k: v for k, v in defaults.items() if k != "out_dir"}
    sets = sorted(p.stem for p in (PARAMS / "01_selective_masking").glob("*.yaml"))
    assert {"smoke", "cpu", "cpu_budgets", "paper", "seeds10", "fp32", "hf_kernels"} <= set(sets)
    for name in sets:  # all valid
        from_flat(SelectiveConfig, yaml.safe_load((PARAMS / "01_selective_masking" / f"{name}.yaml").read_text()))
    for name in ("cpu_budgets", "seeds10", "fp32", "hf_kernels"):  # measured with the model's own forward: pinned
        assert yaml.safe_load((PARAMS / "01_selective_masking" / f"{name}.yaml").read_text())["kernels"] == "hf"


def test_split_corpus_is_seeded_and_disjoint():
    from tmlib.experiments.selective import split_corpus

    texts = [f"s{i}" for i in range(50)]
    tr, dev = split_corpus(texts, 0.1, 0)
    assert len(dev) == 5 and not set(tr) & set(dev) and sorted(tr + dev) == list(range(50))
    assert split_corpus(texts, 0.1, 0) == (tr, dev) and split_corpus(texts, 0.1, 1) != (tr, dev)


def test_detectable_gap_matches_a_simulation():
    """The 80%-power detectable gap of a paired t test: simulated power at that gap is ~0.8."""
    from scipy import stats

    from tmlib.experiments.selective import detectable_gap

    sd, n = 2.0, 10
    mde = detectable_gap(sd, n)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(4000, n))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    assert 0.75 < (p < 0.05).mean() < 0.85
    approx = detectable_gap(sd, n, power=0.5, exact=False)
    assert approx == pytest.approx(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n))  # the 95% CI half-width


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
    assert np.isnan(row.p) and row.verdict == "within noise"  # zero spread: no test, no claim
    noisy = res.copy()
    jitter = {0: 0.0, 1: 0.02, 2: -0.01}
    sel = noisy["method"] == "selective"
    noisy.loc[sel, "test_accuracy"] += noisy.loc[sel, "seed"].map(jitter)
    g = paired_gaps(noisy).set_index(["genept_steps", "comparison"]).loc[(10, "selective - random")]
    assert g.gap_mean == pytest.approx(5 + 100 * sum(jitter.values()) / 3)
    assert g.p < 0.05 and g.verdict == "separated"
    noisy.loc[sel & (noisy.seed == 2), "test_accuracy"] -= 0.12  # one seed flips the sign: not separated
    g = paired_gaps(noisy).set_index(["genept_steps", "comparison"]).loc[(10, "selective - random")]
    assert g.wins == 2 and g.verdict == "within noise"
    noisy.loc[sel & (noisy.seed == 2), "failed"] = True  # ... because that run never trained: dropped on request
    g = paired_gaps(noisy, drop_failed=True).set_index(["genept_steps", "comparison"]).loc[(10, "selective - random")]
    assert g.n_seeds == 2 and g.wins == 2
    assert (
        summarize(noisy[noisy.taskpt_steps != 5])
        .set_index(["genept_steps", "method"])
        .loc[(10, "selective"), "n_failed"]
        == 1
    )
    assert "random15 - genept" not in set(gaps.reset_index()["comparison"])  # absent methods are skipped


def test_buffer_summary():
    ss = [
        TokenScores("a b", ["a", "b"], [0, 0.1], important=[0, 1], label=1, pred=1),
        TokenScores("c d", ["c", "d"], [0, 0], important=[0, 0], label=1, pred=0),
    ]
    b = buffer_summary({"train": ss}).iloc[0]
    assert b.scorer_correct == 1 and b.important_tokens == 1 and b.important_rate == 0.5


def test_plots(tmp_path):
    """Each figure plots the numbers it is given, in the units its axis names (accuracy x100 -> %)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.patches import Rectangle

    from tmlib.plots import selective as sp

    res = _results()
    final = res[(res["method"] == "genept") | (res["taskpt_steps"] == 10)]
    # bars: per condition (genept, selective, random) one bar per GenePT budget (10, 30), mean over seeds in %
    fig = sp.accuracy_bars(summarize(final))
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [round(b.get_height(), 6) for b in bars] == [61, 63, 72, 74, 67, 69]
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.1f}" for v in (61, 63, 72, 74, 67, 69))
    assert ax.get_ylabel() == "test accuracy (%)" and 55 <= ax.get_ylim()[0] < 61 and 75 <= ax.get_ylim()[1] <= 100
    assert [t.get_text() for t in ax.get_xticklabels()] == ["GenePT 10 steps", "GenePT 30 steps"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "GenePT only",
        "+TaskPT selective",
        "+TaskPT random (same count)",
    ]
    fig.savefig(tmp_path / "a.png")

    fig = sp.paired_gap_plot(final, paired_gaps(final))
    assert [a.get_title() for a in fig.axes] == ["GenePT 10 steps", "GenePT 30 steps"]
    dots = fig.axes[0].collections[0].get_offsets()[:, 1]  # selective - random per seed, in points
    assert np.allclose(sorted(dots), [5.0, 5.0, 5.0])
    assert fig.axes[0].get_ylabel() == "gap (points)"

    # accuracy vs TaskPT steps: step 0 is the shared GenePT-only model; y in %
    fig = sp.accuracy_vs_steps(curve_summary(res))
    ax10, ax30 = fig.axes
    assert ax10.get_title() == "GenePT 10 steps" and ax10.get_xlabel() == "TaskPT steps"
    assert ax10.get_ylabel() == "test accuracy (%)"
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax10.get_lines()}
    assert lines.keys() == {"+TaskPT selective", "+TaskPT random (same count)"}
    assert lines["+TaskPT selective"][0] == [0, 5, 10]
    assert np.allclose(lines["+TaskPT selective"][1], [61, 71.5, 72])
    assert np.allclose(lines["+TaskPT random (same count)"][1], [61, 66.5, 67])
    assert np.allclose([ln.get_ydata() for ln in ax30.get_lines()][0], [63, 73.5, 74])
    fig.savefig(tmp_path / "b.png")

    compute = {
        "stages": [
            {"stage": "GenePT 10 steps", "group": "GenePT", "seconds": 5, "flops": 1e9, "steps": 10},
            {"stage": "buffer labels", "group": "importance", "seconds": 2, "flops": 1e8},
            {
                "stage": "TaskPT selective (GenePT 10)",
                "group": "TaskPT",
                "seconds": 3,
                "flops": 5e8,
                "genept_steps": 10,
                "method": "selective",
            },
            {
                "stage": "TaskPT random (GenePT 10)",
                "group": "TaskPT",
                "seconds": 3,
                "flops": 5e8,
                "genept_steps": 10,
                "method": "random",
            },
        ]
    }
    fig = sp.compute_split(compute)
    pie, per_stage = fig.axes
    assert pie.get_title() == "compute split (seconds), GenePT 10"
    texts = [t.get_text() for t in pie.texts]
    assert texts == ["GenePT", "importance pipeline", "TaskPT (selective)", "50%", "20%", "30%"]
    assert [b.get_width() for b in per_stage.patches] == [5, 2, 3, 3] and per_stage.get_xlabel() == "seconds"
    assert [t.get_text() for t in per_stage.get_yticklabels()] == [s["stage"] for s in compute["stages"]]
    fig.savefig(tmp_path / "c.png")
    assert [t.get_text() for t in sp.compute_split(compute, key="flops").axes[0].texts][3:] == ["62%", "6%", "31%"]


def test_interrupted_genept_resumes(tmp_path, monkeypatch):
    """Kill the GenePT stage after its first budget; the rerun resumes from the stage's checkpoint and
    the artifact equals an uninterrupted build's, weight for weight."""
    import torch
    from safetensors.torch import load_file

    from tmlib.experiments.selective import Experiment, stages

    kw = dict(
        genept_model="scratch:tiny",
        genept_steps=[3, 6],
        genept_max_sentences=60,
        genept_batch_size=4,
        genept_max_length=32,
        task_max_examples=16,
        progress=False,
    )
    ref = Experiment(from_flat(SelectiveConfig, {"out_dir": str(tmp_path / "ref"), **kw})).genept()

    class Stop(Exception):
        pass

    real = stages._write_json

    def dying(path, obj):
        real(path, obj)
        if path.name == "record.json" and path.parent.name == "step_3":
            raise Stop

    exp = Experiment(from_flat(SelectiveConfig, {"out_dir": str(tmp_path / "run"), **kw}))
    monkeypatch.setattr(stages, "_write_json", dying)
    with pytest.raises(Stop):
        exp.genept()
    assert not (tmp_path / "run" / "genept").exists()  # no partial artifact
    assert list((tmp_path / "run" / ".work" / "genept").glob("*/checkpoint.pt"))  # but a resumable checkpoint
    monkeypatch.setattr(stages, "_write_json", real)
    got = exp.genept()
    assert not (tmp_path / "run" / ".work").exists()
    for step in (3, 6):
        a = load_file(ref.checkpoint(step) / "model.safetensors")
        b = load_file(got.checkpoint(step) / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=f"step {step}: {k}")


def test_document_sentences_keeps_document_labels():
    from tmlib.selective.buffer import document_sentences

    texts, labels, docs = document_sentences(["A fine film. But too long!", "no boundary here"], [1, 0])
    assert texts == ["A fine film.", "But too long!", "no boundary here"]
    assert labels == [1, 1, 0] and docs == [0, 0, 1]


def test_threshold_table_counts_follow_the_threshold():
    from datasets import Dataset

    from tmlib.core.models import load_tokenizer
    from tmlib.experiments.selective import threshold_table

    tok = load_tokenizer("minilm")
    ids = tok(["great acting", "the plot"], add_special_tokens=False)["input_ids"]
    ds = Dataset.from_dict({"token_ids": ids, "importance": [[0.9, 0.3], [0.2, 0.1]]})
    t = threshold_table(ds, tok, {"argmax": 0.5, "low": 0.25}, stopwords="spacy").set_index("threshold")
    assert t.loc["argmax", "important_rate"] == 0.25 and t.loc["low", "important_rate"] == 0.5  # "the" is a stop word
    assert t.loc["argmax", "sentences_without_important"] == 0.5


def test_buffer_and_tagger_options_are_checked():
    from tmlib.experiments.selective import BufferStageConfig
    from tmlib.experiments.selective.config import TaggerConfig

    with pytest.raises(ValueError, match="buffer.sentences"):
        BufferStageConfig(sentences="nltk")
    with pytest.raises(ValueError, match="tagger.threshold"):
        TaggerConfig(threshold="0.3")


def test_failed_run_flag_is_the_dev_majority_rate_plus_the_margin():
    import pandas as pd

    from tmlib.experiments.selective.analysis import FAILED_MARGIN, flag_failed

    dev = [0] * 60 + [1] * 40  # majority class: 60%
    runs = pd.DataFrame({"dev_accuracy": [0.60, 0.60 + FAILED_MARGIN, 0.66, 0.91]})
    assert flag_failed(runs, dev).tolist() == [True, True, False, False]
    assert flag_failed(runs, [0] * 50 + [1] * 50).tolist() == [False] * 4  # balanced dev: the bound is 0.55
    assert flag_failed(runs, dev, margin=0.0).tolist() == [True, False, False, False]


def test_flop_accounting():
    from tmlib.experiments.selective.analysis import forward_flops, train_flops

    # 6 FLOPs per parameter per token for training (2 forward, 4 backward), 2 for a forward pass
    assert train_flops(22_000_000, 1000, passes=3) == 6 * 22e6 * 1000 * 3
    assert forward_flops(22_000_000, 1000) == 2 * 22e6 * 1000
    assert train_flops(10, 5) == 3 * forward_flops(10, 5)


def test_training_curves_without_a_genept_history_says_so():
    """GenePT loaded from checkpoints (the paper sets' MultiBERTs) has no loss history: the figure's first panel
    says so instead of failing on a missing column."""
    import pandas as pd

    from tmlib.plots.selective import training_curves

    taskpt = pd.DataFrame(
        {"genept_steps": [1, 1], "method": ["random", "random"], "step": [1, 2], "train_loss": [5.0, 4.0]}
    )
    fig = training_curves(pd.DataFrame(), taskpt)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["GenePT not trained here\n(loaded from checkpoints)"] and len(fig.axes[1].lines) == 1
    fig = training_curves(pd.DataFrame({"step": [1, 2], "train_loss": [6.0, 5.0]}))
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1 and not fig.axes[0].texts


def test_tagger_dev_split_is_the_buffer_tail_by_default():
    """Official merge_pkl.py: the tagger's dev set is the last 10% of the buffer labels of the train split."""
    from tmlib.experiments.selective.stages import tagger_split

    scores = {"train": list(range(20)), "dev": ["d1", "d2"]}
    train, dev = tagger_split(scores, "buffer_tail")
    assert train == list(range(18)) and dev == [18, 19]
    assert tagger_split(scores, "task_dev") == (list(range(20)), ["d1", "d2"])
    with pytest.raises(ValueError, match="task_dev"):
        tagger_split({"train": [1], "dev": []}, "buffer_tail")


def test_official_details_are_the_defaults_and_old_sets_pin_the_old_ones():
    from tmlib.core.config import from_flat, load_yaml
    from tmlib.experiments.selective import SelectiveConfig, plan

    cfg = SelectiveConfig()
    assert (cfg.tagger.dev, cfg.tagger.stopwords, cfg.taskpt.mask_positions, cfg.taskpt.rank) == (
        "buffer_tail", "none", "sentence", "logit",
    )  # fmt: skip
    p = plan(cfg)
    assert p.corpus.stopwords == "none" and p.taskpt_data["selective"].per_sentence
    assert "threshold" not in p.tagger.key()["tagger"]  # labelling options do not retrain the tagger
    from tmlib.suite import PARAMS

    for name in ("cpu", "cpu_budgets", "seeds10", "fp32", "hf_kernels"):
        old = from_flat(SelectiveConfig, load_yaml(PARAMS / "01_selective_masking" / f"{name}.yaml"))
        assert (old.tagger.dev, old.tagger.stopwords, old.taskpt.mask_positions, old.taskpt.rank) == (
            "task_dev", "buffer", "row", "probability",
        ), name  # fmt: skip
        assert plan(old).corpus.stopwords == old.buffer.stopwords
    with pytest.raises(ValueError, match="taskpt.rank"):
        from_flat(SelectiveConfig, {"taskpt_rank": "p"})


def test_a_budget_equal_to_the_notebooks_own_run_is_that_run(tmp_path):
    """The budget curve's runs sit under budgets/t<steps>/; the budget the notebook itself ran (one checkpoint at
    that step) is not trained twice."""
    from tmlib.core.config import from_flat, load_yaml
    from tmlib.suite import PARAMS

    flat = load_yaml(PARAMS / "01_selective_masking" / "smoke.yaml")
    cfg = from_flat(SelectiveConfig, {**flat, "out_dir": str(tmp_path), "taskpt_steps": [3], "taskpt_budgets": [3, 5]})
    exp = Experiment(cfg)
    assert exp.budget_experiment(3) is exp
    other = exp.budget_experiment(5)
    assert other.cfg.taskpt.steps == [5] and other.cfg.taskpt.budgets == []
    assert other.taskpt_stage(3, "selective").name == "budgets/t5/taskpt_g3_selective"
    assert exp.taskpt_stage(3, "selective").name == "taskpt_g3_selective"
