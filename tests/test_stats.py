"""tmlib.core.stats: paired gaps over seeds (mean, std, wins, paired t, p, 95% CI) and the gap sentence."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tmlib.core.stats import ci_half_width, gap_sentence, paired_gap_table


def frame():
    rows = []
    mask = {0: 0.70, 1: 0.74, 2: 0.69, 3: 0.72, 4: 0.71}
    ft = {0: 0.73, 1: 0.75, 2: 0.74, 3: 0.73, 4: 0.76}
    for s in range(5):
        rows += [
            {"task": "mr", "method": "mask", "seed": s, "acc": mask[s]},
            {"task": "mr", "method": "finetune", "seed": s, "acc": ft[s]},
            {"task": "bbc", "method": "mask", "seed": s, "acc": 0.9},
            {"task": "bbc", "method": "finetune", "seed": s, "acc": 0.8 + 0.01 * s},
        ]
    return pd.DataFrame(rows), mask, ft


def test_paired_gap_matches_scipy_paired_t():
    df, mask, ft = frame()
    g = paired_gap_table(df, by=["task"], method_col="method", value_col="acc", pairs=[("mask", "finetune")], scale=100)
    assert list(g.task) == ["mr", "bbc"] and list(g.comparison) == ["mask - finetune"] * 2
    mr = g[g.task == "mr"].iloc[0]
    d = 100 * (np.array([mask[s] for s in range(5)]) - np.array([ft[s] for s in range(5)]))
    ref = stats.ttest_rel([100 * mask[s] for s in range(5)], [100 * ft[s] for s in range(5)])
    assert mr.gap_mean == pytest.approx(d.mean()) and mr.gap_std == pytest.approx(d.std(ddof=1))
    assert mr.t == pytest.approx(ref.statistic) and mr.p == pytest.approx(ref.pvalue)
    assert mr.ci95 == pytest.approx(stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5))
    assert (mr.wins, mr.losses, mr.n_seeds) == (0, 5, 5) and mr.verdict == "separated"
    bbc = g[g.task == "bbc"].iloc[0]
    assert bbc.wins == 5 and bbc.gap_mean == pytest.approx(8.0)


def test_pairs_only_seeds_present_for_both_and_skips_absent_methods():
    df, _, _ = frame()
    df = df[~((df.method == "finetune") & (df.seed == 4))]
    g = paired_gap_table(
        df, by="task", method_col="method", value_col="acc", pairs=[("mask", "finetune"), ("lora", "finetune")]
    )
    assert set(g.comparison) == {"mask - finetune"} and (g.n_seeds == 4).all()


def test_degenerate_cases_and_errors():
    one = pd.DataFrame([{"method": "a", "seed": 0, "v": 1.0}, {"method": "b", "seed": 0, "v": 0.5}])
    r = paired_gap_table(one, by=None, method_col="method", value_col="v", pairs=[("a", "b")]).iloc[0]
    assert r.gap_mean == 0.5 and np.isnan(r.t) and np.isnan(r.p) and np.isnan(r.ci95) and r.verdict == "within noise"
    with pytest.raises(ValueError, match="no column"):
        paired_gap_table(one, by=["task"], method_col="method", value_col="v", pairs=[("a", "b")])
    assert np.isnan(ci_half_width(1.0, 1))


def test_gap_sentence():
    df, _, _ = frame()
    g = paired_gap_table(df, by=["task"], method_col="method", value_col="acc", pairs=[("mask", "finetune")], scale=100)
    s = gap_sentence(g.iloc[0])
    assert s == "mask \u2212 fine-tune = -3.0 \u00b1 2.5 points (p = 0.03, 5 seeds)", s
    one = {"a": "bitfit", "b": "finetune", "n_seeds": 1, "gap_mean": 1.25, "ci95": float("nan"), "p": float("nan")}
    assert gap_sentence(one) == "bitfit \u2212 fine-tune = +1.2 points (p = n/a, 1 seed)"


def test_compare_arms_pairs_runs_by_group_and_seed():
    from tmlib.core.stats import compare_arms

    rows = []
    for method, _shift in (("finetune", 0.0), ("mask", 0.05)):
        for seed in range(5):
            base = 0.7 + 0.01 * seed
            rows.append({"task": "mr", "method": method, "seed": seed, "lr": 1e-3, "test_accuracy": base})
    a = pd.DataFrame(rows)
    b = a.copy()
    b["test_accuracy"] = b["test_accuracy"] - np.where(b["method"] == "mask", 0.05, 0.0) + 0.001 * b["seed"] % 0.002
    b.loc[b.method == "mask", "lr"] = 3e-3
    t = compare_arms({"bf16": a, "fp32": b}).set_index("method")
    assert list(t["comparison"].unique()) == ["bf16 - fp32"]
    assert t.loc["mask", "gap_mean"] > 4.5 and t.loc["mask", "verdict"] == "separated"
    assert abs(t.loc["finetune", "gap_mean"]) < 0.2
    assert t.loc["mask", "lr_fp32"] == "0.003" and t.loc["mask", "lr_bf16"] == "0.001"
    assert t.loc["mask", "sentence"].startswith("bf16 \u2212 fp32 = +")
    with pytest.raises(ValueError, match="exactly two"):
        compare_arms({"a": a})
    with pytest.raises(ValueError, match="no column"):
        compare_arms({"a": a, "b": b.drop(columns=["seed"])})


def test_power_columns_detectable_gap_and_test_sampling_term():
    """detectable_gap is the 80%-power shift of a paired t test; with predictions the gap table reports how much
    of a seed's gap the test set's sampling explains: sqrt(disagreement / n)."""
    from tmlib.core.stats import detectable_gap, paired_gap_table

    res = pd.DataFrame(
        [
            {"task": "t", "method": m, "seed": s, "acc": v}
            for s, (a, b) in enumerate([(0.80, 0.78), (0.75, 0.76), (0.79, 0.75)])
            for m, v in (("a", a), ("b", b))
        ]
    )
    rng = np.random.default_rng(0)
    preds = {}
    for s in range(3):
        base = rng.integers(0, 2, 400)
        flip = base.copy()
        flip[:40] = 1 - flip[:40]  # the two models disagree on exactly 10% of 400 examples
        preds["t", "a", s], preds["t", "b", s] = base, flip
    g = paired_gap_table(
        res, by=["task"], method_col="method", value_col="acc", pairs=[("a", "b")], scale=100, predictions=preds
    ).iloc[0]
    assert g.test_n == 400 and g.disagreement == pytest.approx(0.1)
    assert g.sampling_sd == pytest.approx(100 * np.sqrt(0.1 / 400))
    assert g.detectable_gap == pytest.approx(detectable_gap(g.gap_std, 3)) and g.detectable_gap > g.ci95
    assert (
        "sampling_sd"
        not in paired_gap_table(res, by=["task"], method_col="method", value_col="acc", pairs=[("a", "b")]).columns
    )


def test_power_table_and_seeds_needed():
    from tmlib.core.stats import detectable_gap, power_table, seeds_needed

    t = power_table({400: 3.0, 1600: 1.5}, [3, 10], {400: 60.0, 1600: 240.0}, fixed_seconds=600)
    assert list(t["setting"]) == [400, 400, 1600, 1600] and list(t["n_seeds"]) == [3, 10, 3, 10]
    # the detectable gap falls with seeds and with a smaller sd; minutes add the fixed cost once
    assert t["detectable_gap"].iloc[1] < t["detectable_gap"].iloc[0]
    assert t["detectable_gap"].iloc[2] < t["detectable_gap"].iloc[0]
    assert t["minutes"].iloc[3] == (600 + 10 * 240) / 60
    n = seeds_needed(3.0, 1.0)
    assert detectable_gap(3.0, n) <= 1.0 < detectable_gap(3.0, n - 1)  # the fewest such seeds
    assert seeds_needed(0.1, 1.0) == 3  # exact: at 2 seeds the detectable gap is 1.15 (the approximation: 1.0)


def test_detectable_gap_is_the_exact_noncentral_t_of_a_published_power_table():
    """G*Power's one-sample (paired) t test, two-sided, alpha 0.05, power 0.80: effect size d = 0.5 needs n = 34
    and d = 0.8 needs n = 15 (Faul et al. 2007; Cohen 1988, Table 2.4.1 gives the same n). The approximation that
    adds two t quantiles understates the gap at few seeds (about 5% at 3) and agrees from 10 seeds on."""
    from tmlib.core.stats import detectable_gap, seeds_needed

    assert seeds_needed(1.0, 0.5) == 34 and seeds_needed(1.0, 0.8) == 15
    assert detectable_gap(1.0, 34) <= 0.5 < detectable_gap(1.0, 33)
    exact, approx = detectable_gap(1.0, 3), detectable_gap(1.0, 3, exact=False)
    assert 0.03 < (exact - approx) / exact < 0.07
    assert abs(detectable_gap(1.0, 10) / detectable_gap(1.0, 10, exact=False) - 1) < 0.01
    assert detectable_gap(1.0, 30) / detectable_gap(1.0, 30, exact=False) - 1 < 0.002
    with pytest.raises(ValueError, match="power"):
        detectable_gap(1.0, 5, power=0.01)


def test_holm_matches_the_textbook_example():
    """Holm (1979)-adjusted p of four tests, as R's p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") gives them:
    0.03, 0.06, 0.06, 0.02 (each sorted p times m - rank, then made non-decreasing)."""
    from tmlib.core.stats import holm

    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.049, 0.2]), [0.098, 0.2])  # p = 0.049 of two primary tests is not separated
    assert holm([0.9, 0.8]).max() == 1.0 and len(holm([])) == 0
    with pytest.raises(ValueError, match="NaN"):
        holm([0.1, float("nan")])
