"""tmlib.experiments.mask_study: layer settings, the plan, and the pure tables."""

import numpy as np
import pandas as pd
import pytest

from tmlib.core.config import ConfigError
from tmlib.experiments import mask_study as M
from tmlib.masking.config import MaskConfig


def test_layer_settings_map_onto_the_backbone_blocks():
    assert M.layer_mask("default", 6) == MaskConfig()  # blocks 2..5 of 6
    assert MaskConfig().selected_blocks(6) == [2, 3, 4, 5]
    assert M.layer_mask("bottom2", 6).selected_blocks(6) == [0, 1]
    assert M.layer_mask("top2", 6).selected_blocks(6) == [4, 5]
    assert M.layer_mask("all", 6).selected_blocks(6) == list(range(6))
    with pytest.raises(ConfigError, match="1 <= k <= 6"):
        M.layer_mask("top7", 6)
    with pytest.raises(ConfigError, match="layer_settings must be"):
        M.StudyConfig(layer_settings=["middle2"])
    with pytest.raises(ConfigError, match="init_sparsities"):
        M.StudyConfig(init_sparsities=[0.0])


def test_plan_shares_the_default_mask_between_the_two_studies():
    cfg = M.StudyConfig(seeds=[0, 1], init_sparsities=[0.05, 0.5], layer_settings=["default", "top3"])
    p = M.plan(cfg, n_blocks=6)
    sweep = {r.name: r.key() for s, _, r in p.rows if s == "sparsity"}
    layers = {r.name: r.key() for s, setting, r in p.rows if s == "layers" and setting == "default"}
    assert set(layers) <= set(sweep) and all(sweep[n] == k for n, k in layers.items())  # one model, two studies
    names = [r.name for _, _, r in p.rows]
    assert "solutions/mr/mask-init0.5-s1" in names and "solutions/mr/mask-top3-s0" in names
    assert len({r.name for _, _, r in p.rows}) == 2 * (2 + 1) + 2  # 0.05 = default shared
    assert p.data.test_pool == "heldout" and p.data.max_test == cfg.max_test


def test_study_table_pairs_each_setting_with_the_reference_by_seed():
    rows = [
        {
            "study": "layers",
            "setting": s,
            "method": "mask",
            "seed": k,
            "dev_accuracy": 0.7,
            "test_accuracy": acc,
            "test_n": 100,
            "density_pct": 90.0,
            "train_seconds": 1.0,
        }
        for s, accs in (("default", (0.80, 0.78, 0.82)), ("top3", (0.77, 0.76, 0.78)))
        for k, acc in enumerate(accs)
    ]
    t = M.study_table(pd.DataFrame(rows), "layers", reference="default").set_index("setting")
    assert t.loc["top3", "gap_vs_reference_pts"] == pytest.approx(-3.0)
    assert t.loc["top3", "gap_sd_pts"] == pytest.approx(np.std([-3, -2, -4], ddof=1))
    assert np.isnan(t.loc["default", "gap_vs_reference_pts"]) and t.loc["default", "test_mean"] == pytest.approx(80)


def test_probe_reads_a_linearly_separable_representation():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    separable = rng.normal(size=(200, 8)) + 3.0 * y[:, None]
    noise = rng.normal(size=(200, 8))
    t = M.probe_table({"good": {"X": separable, "y": y}, "noise": {"X": noise, "y": y}}, folds=5).set_index(
        "representation"
    )
    assert t.loc["good", "probe_accuracy"] > 95 and t.loc["noise", "probe_accuracy"] < 70


def test_tag_baselines_majority_and_word_majority():
    """What a tagger must beat: the train split's majority tag, and each word's most frequent train tag."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    from tmlib.experiments.mask_study import tag_baselines

    feats = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=["NN", "VB", "DT"]))})
    train = Dataset.from_dict({"tokens": [["the", "dog", "runs"], ["a", "dog"]], "tags": [[2, 0, 1], [2, 0]]}, feats)
    test = Dataset.from_dict({"tokens": [["The", "cat", "runs"]], "tags": [[2, 0, 1]]}, feats)
    t = tag_baselines(DatasetDict(train=train, dev=train, test=test)).set_index("baseline").accuracy
    # train: DT 2, NN 2, VB 1; the tie goes to the first seen (DT), right on "The" only
    assert t.index[0] == "majority tag (DT)" and t.iloc[0] == pytest.approx(100 / 3)
    # "The" (lowercased) and "runs" by their train tags; the unseen "cat" gets the majority (DT): wrong
    assert t["word majority"] == pytest.approx(200 / 3)


def test_tsne_scores_read_the_same_points_in_both_spaces():
    from tmlib.experiments.mask_study import tsne_frame, tsne_scores

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 8)) + 6 * y[:, None]  # two far-apart classes
    feats = {"sep": {"X": X, "y": y}, "noise": {"X": rng.normal(size=(80, 8)), "y": y}}
    scores = tsne_scores(feats, tsne_frame(feats, ["sep", "noise"], 80)).set_index(["representation", "space"])
    assert (
        scores.loc[("sep", "original"), "knn_accuracy"] == 100.0 and scores.loc[("sep", "original"), "silhouette"] > 0.5
    )
    assert (
        scores.loc[("noise", "original"), "knn_accuracy"] < 75
        and abs(scores.loc[("noise", "original"), "silhouette"]) < 0.1
    )
    assert set(scores.n) == {80}
