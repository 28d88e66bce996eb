"""tmlib.core.stats: paired gaps over seeds (mean, std, wins, paired t, p, 95% CI) and the gap sentence."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tmlib.core.stats import GAP_COLUMNS, ci_half_width, detectable_gap, gap_sentence, paired_gap_table


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


def _two(values_a, values_b, seeds=None):
    seeds = range(len(values_a)) if seeds is None else seeds
    return pd.DataFrame(
        [
            {"method": m, "seed": s, "v": v}
            for s, a, b in zip(seeds, values_a, values_b)
            for m, v in (("a", a), ("b", b))
        ]
    )


def test_gap_table_edge_cases():
    """Two seeds; a gap of zero on a seed (neither a win nor a loss); gaps below one; the same gap on every seed
    (std 0: nothing to test); no seed shared by both methods; no pair present at all; the default alpha."""
    g = paired_gap_table(_two([0.5, 0.3], [0.2, 0.3]), by=None, method_col="method", value_col="v", pairs=[("a", "b")])
    r = g.iloc[0]
    assert list(g.columns) == GAP_COLUMNS and (r.n_seeds, r.wins, r.losses) == (2, 1, 0)
    assert r.gap_mean == pytest.approx(0.15) and r.gap_std == pytest.approx(0.3 / np.sqrt(2))
    assert r.ci95 == pytest.approx(ci_half_width(r.gap_std, 2)) and np.isfinite(r.t)
    assert r.detectable_gap == pytest.approx(detectable_gap(r.gap_std, 2)) and r.verdict == "within noise"
    small = paired_gap_table(
        _two([0.3, 0.2, 0.8], [0.1, 0.5, 0.7]), by=None, method_col="method", value_col="v", pairs=[("a", "b")]
    ).iloc[0]
    assert (small.wins, small.losses) == (2, 1) and 0 < small.gap_std < 1
    assert small.ci95 == pytest.approx(ci_half_width(small.gap_std, 3))
    assert small.detectable_gap == pytest.approx(detectable_gap(small.gap_std, 3))
    flat = paired_gap_table(
        _two([3.0, 4.0, 5.0], [1.0, 2.0, 3.0]), by=None, method_col="method", value_col="v", pairs=[("a", "b")]
    ).iloc[0]
    assert flat.gap_mean == 2.0 and flat.gap_std == 0 and flat.wins == 3
    assert np.isnan(flat.t) and np.isnan(flat.p) and np.isnan(flat.ci95) and np.isnan(flat.detectable_gap)
    assert flat.verdict == "within noise"
    apart = pd.concat([_two([0.5], [0.4]).query("method == 'a'"), _two([0.5], [0.4], seeds=[7]).query("method == 'b'")])
    none = paired_gap_table(apart, by=None, method_col="method", value_col="v", pairs=[("a", "b")]).iloc[0]
    assert none.n_seeds == 0 and np.isnan(none.gap_mean) and np.isnan(none.gap_std) and none.wins == 0
    empty = paired_gap_table(apart, by=None, method_col="method", value_col="v", pairs=[("x", "y")])
    assert empty.empty and list(empty.columns) == GAP_COLUMNS


def test_gap_table_keeps_every_pair_present_and_tests_at_alpha():
    df, _, _ = frame()
    g = paired_gap_table(
        df, by="task", method_col="method", value_col="acc", pairs=[("lora", "finetune"), ("mask", "finetune")]
    )
    assert list(g.task) == ["mr", "bbc"] and set(g.comparison) == {"mask - finetune"}
    noisy = _two([0.71, 0.74, 0.69, 0.75], [0.70, 0.72, 0.71, 0.72])
    r = paired_gap_table(noisy, by=None, method_col="method", value_col="v", pairs=[("a", "b")]).iloc[0]
    assert 0.05 < r.p < 1 and r.verdict == "within noise"  # the default alpha is 0.05
    at = paired_gap_table(noisy, by=None, method_col="method", value_col="v", pairs=[("a", "b")], alpha=r.p).iloc[0]
    assert at.verdict == "within noise"  # separated only below alpha
    above = paired_gap_table(noisy, by=None, method_col="method", value_col="v", pairs=[("a", "b")], alpha=r.p * 1.01)
    assert above.iloc[0].verdict == "separated"


def test_gap_table_predictions_missing_for_a_seed_or_a_group():
    res = _two([0.8, 0.7, 0.9], [0.7, 0.7, 0.6])
    preds = {("a", 0): np.array([1, 0, 1, 1]), ("b", 0): np.array([1, 1, 1, 1]), ("a", 1): np.array([0, 0, 0, 0])}
    kw = dict(by=None, method_col="method", value_col="v", pairs=[("a", "b")])
    r = paired_gap_table(res, **kw, predictions=preds).iloc[0]  # seed 1 lacks b's predictions, seed 2 both
    assert r.test_n == 4 and r.disagreement == 0.25 and r.sampling_sd == pytest.approx(np.sqrt(0.25 / 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice"
        none = paired_gap_table(res, **kw, predictions={}).iloc[0]
    assert none.test_n == 0 and np.isnan(none.disagreement) and np.isnan(none.sampling_sd)


def test_gap_sentence_names_formats_and_p_bands():
    row = {"a": "finetune", "b": "mask", "n_seeds": 3, "gap_mean": 0.5, "ci95": 1.25, "p": 0.2}
    assert gap_sentence(row) == "fine-tune \u2212 mask = +0.5 \u00b1 1.2 points (p = 0.20, 3 seeds)"
    assert gap_sentence(row, names={"mask": "Mask"}, unit="pp").endswith(
        "Mask = +0.5 \u00b1 1.2 pp (p = 0.20, 3 seeds)"
    )
    flat = {**row, "n_seeds": 2, "ci95": float("nan"), "p": float("nan")}  # the same gap on both seeds
    assert gap_sentence(flat) == "fine-tune \u2212 mask = +0.5 \u00b1 0.0 points (p = n/a, 2 seeds)"
    bands = {0.0005: "p < 0.001", 0.001: "p = 0.001", 0.005: "p = 0.005", 0.01: "p = 0.01", 0.034: "p = 0.03"}
    for p, text in bands.items():
        assert f"({text}, 3 seeds)" in gap_sentence({**row, "p": p}), p


def test_ci_and_detectable_gap_edges():
    from tmlib.core.stats import detectable_gap

    assert ci_half_width(1.0, 2) == pytest.approx(stats.t.ppf(0.975, 1) / np.sqrt(2))
    assert ci_half_width(2.0, 3, level=0.9) == pytest.approx(stats.t.ppf(0.95, 2) * 2 / np.sqrt(3))
    assert np.isnan(ci_half_width(float("inf"), 5)) and np.isnan(detectable_gap(float("inf"), 5))
    assert np.isnan(detectable_gap(1.0, 1)) and detectable_gap(0.0, 5) == 0.0
    assert detectable_gap(2.0, 10, exact=False) == pytest.approx(2 * detectable_gap(1.0, 10, exact=False))
    for power in (0.05, 1.0):  # power must lie strictly between alpha and 1
        with pytest.raises(ValueError, match=r"power must be in \(alpha, 1\)"):
            detectable_gap(1.0, 5, alpha=0.05, power=power)
    # the exact gap is where the two-sided test's power is reached, both tails counted (also a power below 0.5)
    for n, power in ((3, 0.8), (10, 0.1)):
        nc = detectable_gap(2.0, n, power=power) * np.sqrt(n) / 2.0
        crit = stats.t.ppf(0.975, n - 1)
        reach = 1 - stats.nct.cdf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
        assert reach == pytest.approx(power, abs=1e-8)


def test_seeds_needed_bounds_and_options():
    from tmlib.core.stats import detectable_gap, seeds_needed

    exact = detectable_gap(1.0, 12)
    assert seeds_needed(1.0, exact) == 12  # at or below the gap: the boundary counts
    n = seeds_needed(1.0, 0.5, alpha=0.01, power=0.9)
    assert detectable_gap(1.0, n, alpha=0.01, power=0.9) <= 0.5 < detectable_gap(1.0, n - 1, alpha=0.01, power=0.9)
    n = seeds_needed(1.0, 0.5, power=0.99)  # 34 seeds at power 0.8: doubling with the wrong power stops at 64
    assert n > 64 and detectable_gap(1.0, n, power=0.99) <= 0.5 < detectable_gap(1.0, n - 1, power=0.99)
    assert seeds_needed(1.0, 0.05, max_seeds=20) == 20 and seeds_needed(1.0, 0.01, max_seeds=64) == 64
    assert seeds_needed(1.0, 0.002) == 10_000  # the default cap
    for sd, gap in ((1.0, 0.0), (1.0, -1.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="gap must be > 0 and sd finite"):
            seeds_needed(sd, gap)


def test_power_table_passes_alpha_and_power_and_defaults_to_no_fixed_cost():
    from tmlib.core.stats import detectable_gap, power_table

    t = power_table({"x": 2.0}, [4, 8], {"x": 30.0}, alpha=0.01, power=0.9)
    assert list(t.columns) == ["setting", "n_seeds", "gap_sd", "detectable_gap", "minutes"]
    assert list(t["gap_sd"]) == [2.0, 2.0] and list(t["minutes"]) == [2.0, 4.0]
    assert list(t["detectable_gap"]) == [detectable_gap(2.0, n, alpha=0.01, power=0.9) for n in (4, 8)]


def test_holm_reads_an_object_column_and_names_the_fix():
    from tmlib.core.stats import holm

    np.testing.assert_allclose(holm(pd.Series([0.01, 0.04], dtype=object)), [0.02, 0.04])
    with pytest.raises(ValueError, match=r"^holm needs a flat list of p-values without NaN \(leave untested rows"):
        holm([[0.1, 0.2]])


def test_disagreement_edges():
    from tmlib.core.stats import disagreement

    assert disagreement([0, 1, 1, 0], [0, 1, 0, 1]) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice"
        assert np.isnan(disagreement([], []))
    with pytest.raises(ValueError, match=r"predictions of different test sets: \(2,\) vs \(3,\)"):
        disagreement([0, 1], [0, 1, 1])


def test_compare_arms_scale_seed_column_and_lr_per_arm():
    from tmlib.core.stats import compare_arms

    a = pd.DataFrame({"task": "t", "method": "m", "run": [0, 1, 2], "lr": [1e-3, 3e-3, 1e-3], "acc": [0.8, 0.7, 0.9]})
    b = a.assign(acc=[0.75, 0.7, 0.8], lr=2e-3)
    t = compare_arms({"x": a, "y": b}, value_col="acc", seed_col="run").iloc[0]
    assert t["gap_mean"] == pytest.approx(5.0) and t["n_seeds"] == 3  # in points, paired by "run"
    assert t["lr_x"] == "0.001/0.003" and t["lr_y"] == "0.002"
    one = compare_arms({"x": a, "y": b.drop(columns=["lr"])}, value_col="acc", seed_col="run")
    assert not any(c.startswith("lr_") for c in one.columns)  # only where both arms have an lr column
    two = compare_arms({"x": a.drop(columns=["lr"]), "y": b}, value_col="acc", seed_col="run")
    assert not any(c.startswith("lr_") for c in two.columns)
