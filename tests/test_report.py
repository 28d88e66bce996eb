"""tmlib.report: the results document comes from a run folder's files."""

import json

import pandas as pd
import pytest

from tmlib.report import results_document


def test_results_document_is_generated_from_the_run_files(tmp_path):
    run = tmp_path / "runs" / "default"
    d3, d4 = run / "03_masking_vs_finetuning", run / "04_loss_landscape"
    d3.mkdir(parents=True)
    d4.mkdir(parents=True)
    pd.DataFrame(
        [
            {
                "task": "mr",
                "comparison": "mask - finetune",
                "a": "mask",
                "b": "finetune",
                "n_seeds": 5,
                "gap_mean": -0.61,
                "gap_std": 1.31,
                "p": 0.36,
                "ci95": 1.63,
                "detectable_gap": 2.43,
                "sampling_sd": 0.64,
                "test_n": 3600,
                "sentence": "mask − fine-tune = -0.6 ± 1.6 points (p = 0.36, 5 seeds)",
            }
        ]
    ).to_csv(d3 / "gaps.csv", index=False)
    pd.DataFrame([{"task": "mr", "method": "mask", "lr": 0.003, "n_seeds": 5, "test_mean": 72.5}]).to_csv(
        d3 / "summary.csv", index=False
    )
    (d4 / "summary.json").write_text(json.dumps({"finding": "stays within 1 point: True", "curve_finding": None}))
    text = results_document(run)
    assert "mask − fine-tune = -0.6 ± 1.6 points" in text and "3600 test examples" in text
    assert "| mr | mask | 0.003 | 5 | 72.5 |" in text and "stays within 1 point: True" in text
    assert "01_selective_masking" not in text  # a notebook that did not run has no section
    new = run / "06_new_study"  # a notebook report.py does not know: its tables, under their file names
    new.mkdir()
    pd.DataFrame([{"setting": "x", "acc": 0.5}]).to_csv(new / "table.csv", index=False)
    assert "## 06_new_study\n\n### table.csv\n\n| setting | acc |" in results_document(run)
    with pytest.raises(FileNotFoundError, match="make run"):
        results_document(tmp_path / "nothing")


@pytest.mark.parametrize("results", ["results.json", "results_fp32.json"])
def test_every_number_the_readme_quotes_is_in_the_committed_results(results):
    """The README's results sections are what `tmlib report --readme` generates from docs/results.json (the
    results at a glance) and docs/results_fp32.json (the same run in fp32, as a CPU without native bf16 computes
    it), and every number in them is one of that file's numbers (a hand-edited or stale table fails)."""
    import json
    import re
    from pathlib import Path

    from tmlib.report import readme_markers, readme_table

    root = Path(__file__).resolve().parent.parent
    numbers = json.loads((root / "docs" / results).read_text())
    assert ("fp32" in results) == (numbers.get("arithmetic") == "fp32")
    start, end = readme_markers(numbers)
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split(start, 1)[1].split(end, 1)[0]
    assert section.strip() == readme_table(numbers).strip()

    def flat(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from flat(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from flat(v)
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            yield abs(float(obj))

    known = set(flat(numbers))
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith(("| comparison", "| task"))]
    rows += [ln.split("at most", 1)[1] for ln in section.splitlines() if "at most" in ln]
    quoted = [abs(float(x)) for ln in rows for x in re.findall(r"(?<![\w.])[+-]?\d+(?:\.\d+)?", ln)]
    assert quoted and all(q in known for q in quoted), [q for q in quoted if q not in known]


def test_the_glance_shows_01s_holm_p_where_the_run_has_one_and_points_to_the_powered_set():
    """Notebook 01's primary rows carry Holm's p when its gaps.csv has one (a dash for a run from before Holm), and
    the table says that a few seeds are a slice, naming the set that answers the question."""
    from tmlib.report import _gap, readme_table

    row = dict(gap_mean=0.47, ci95=0.31, p=0.0219, n_seeds=3, detectable_gap=0.40)
    with_holm = _gap(pd.Series({**row, "p_holm": 0.04381}))
    assert with_holm["p_holm"] == 0.044 and "p_holm" not in _gap(pd.Series({**row, "p_holm": float("nan")}))
    table = readme_table({"01": {"genept_steps": 100, "gaps": {"selective - random": with_holm}}})
    assert "| selective - random | +0.5 | ±0.3 | 0.022 | 0.044 | 0.4 |" in table
    assert "cpu_taskpt_budgets" in table and "32 seeds" in table
    old = readme_table({"01": {"genept_steps": 100, "gaps": {"selective - random": _gap(pd.Series(row))}}})
    assert "| selective - random | +0.5 | ±0.3 | 0.022 | – | 0.4 |" in old


def test_a_committed_sets_tables_show_in_the_document_marked_as_that_sets(tmp_path):
    """`report --save-tables` copies a run's tables (not its cache) into a set folder; every later document shows
    them after the run's own sections, under the set's name, and draws the set's budget curve under its own name."""
    from tmlib.report import committed_sets, save_tables, write_figures

    long = tmp_path / "runs" / "budgets" / "01_selective_masking"
    (long / "finetune" / "s1").mkdir(parents=True)
    (long / "finetune" / "s1" / "metrics.json").write_text("{}")  # cache: never copied
    gaps = pd.DataFrame(
        [
            {"taskpt_budget": b, "taskpt_passes": b / 166, "comparison": c, "primary": True, "n_seeds": 32,
             "gap_mean": g, "gap_std": 1.2, "ci95": 0.43, "p": 0.07, "p_holm": 0.28, "detectable_gap": 0.61}
            for b, c, g in [(100, "selective - random", -0.46), (800, "selective - random", 0.22),
                            (100, "random - genept", 0.26), (800, "random - genept", 0.63)]
        ]
    )  # fmt: skip
    gaps.to_csv(long / "budget_gaps.csv", index=False)
    (long / "config.json").write_text(json.dumps({"seeds": [13]}))
    sets = tmp_path / "sets"
    copied = save_tables(long.parent, sets / "budgets")
    assert sorted(p.name for p in copied) == ["budget_gaps.csv", "config.json"]
    assert [p.name for p in committed_sets(sets)] == ["budgets"]

    run = tmp_path / "runs" / "default"
    (run / "02_token_importance_explorer").mkdir(parents=True)
    pd.DataFrame([{"method": "ig", "agreement": 0.5}]).to_csv(run / "02_token_importance_explorer" / "summary.csv")
    text = results_document(run, sets)
    own, committed = text.split("# The `budgets` parameter set (committed tables)")
    assert "## 02_token_importance_explorer" in own and "selective - random" not in own
    assert "## `budgets`: 01_selective_masking" in committed and "| 800 | 4.819 | selective - random |" in committed
    assert "--save-tables benchmarks/results/sets/budgets" in committed
    assert "![budget curve](figures/budget_curve_budgets.png)" in committed
    assert results_document(run) == own.rstrip() + "\n"  # no sets: the run's own sections only
    figures = write_figures(run, tmp_path / "docs", sets)
    assert [f.name for f in figures] == ["budget_curve_budgets.png"] and figures[0].stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="run the set first"):
        save_tables(tmp_path / "runs" / "empty", sets / "x")


def test_the_committed_results_page_shows_every_committed_set_as_its_tables_render():
    """docs/results.md holds each set under benchmarks/results/sets exactly as the tables render now (a set
    committed without regenerating the page, or a page edited by hand, fails)."""
    from pathlib import Path

    from tmlib.report import SETS, _notebook_sections, committed_sets

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "results.md").read_text(encoding="utf-8")
    sets = committed_sets(root / SETS)
    assert sets, "no committed set: benchmarks/results/sets is where long sets' tables live"
    for folder in sets:
        section = "\n".join(_notebook_sections(folder, label=f"`{folder.name}`: ")).rstrip()
        assert section in page, f"docs/results.md is stale for {folder.name}: rerun python -m tmlib report"
        assert (root / "docs" / "figures" / f"budget_curve_{folder.name}.png").is_file() or (
            "budget curve" not in section
        )


def test_notebook_05s_primary_comparisons_get_a_ci_and_holm_over_all_four(tmp_path):
    """The four comparisons `full` names before the run, from notebook 05's tables: the 95% CI from the gap's sd
    (t with n-1 df) and Holm's p over the four; a run without all four (the `default` slice) shows none."""
    from tmlib.report import primary_05

    d = tmp_path / "05_what_masks_learn"
    d.mkdir()
    gap = {"n_seeds": 5, "gap_sd_pts": 1.0, "detectable_gap_pts": 2.0}
    pd.DataFrame(
        [
            {"task": "pos", "method": "finetune", "gap_p": None},
            {"task": "pos", "method": "mask", "gap_vs_reference_pts": -0.5, "gap_p": 0.04, **gap},
            {"task": "ner", "method": "mask", "gap_vs_reference_pts": -9.0, "gap_p": 0.0001, **gap},
        ]
    ).to_csv(d / "token_tasks.csv", index=False)
    pd.DataFrame(
        [{"setting": 0.05, "gap_p": None}, {"setting": 0.5, "gap_vs_reference_pts": -3.0, "gap_p": 0.01, **gap}]
    ).to_csv(d / "sparsity.csv", index=False)
    layers = [
        {"setting": "default", "gap_p": None},
        {"setting": "bottom3", "gap_vs_reference_pts": 1, "gap_p": 0.5, **gap},
    ]
    pd.DataFrame(layers).to_csv(d / "layers.csv", index=False)
    assert primary_05(d).empty  # top3 missing: not the full design
    layers.append({"setting": "top3", "gap_vs_reference_pts": -1, "gap_p": 0.02, **gap})
    pd.DataFrame(layers).to_csv(d / "layers.csv", index=False)
    t = primary_05(d)
    assert list(t.comparison.str.split(":").str[0]) == ["POS tagging", "initial sparsity", "layer-wise", "layer-wise"]
    assert t.gap_pts.tolist() == [-0.5, -3.0, 1.0, -1.0]  # pos, not ner; 0.5 read as the string "0.5"
    assert t.ci95_pts.round(4).tolist() == [1.2417] * 4  # t(0.975, 4) * 1 / sqrt(5)
    assert t.p_holm.round(4).tolist() == [0.08, 0.04, 0.5, 0.06]  # Holm: 0.01*4, 0.02*3, 0.04*2, 0.5
