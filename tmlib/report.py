"""The results document of a run folder, generated from its CSV and JSON files so it cannot go stale.

    python -m tmlib report runs/default --out docs/results.md

Each section names the notebook, the primary comparison it was built to answer, and the tables behind it, every
number rounded from the files the notebooks wrote; nothing here is typed by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .suite import markdown_table

PRIMARY = {
    "01_selective_masking": "selective − random and random − GenePT only, at the short GenePT budget (paired by "
                            "fine-tuning seed); the other rows are exploratory",
    "03_masking_vs_finetuning": "mask − fine-tune per task (paired by seed); BitFit and LoRA rows are exploratory",
    "04_loss_landscape": "the largest accuracy drop along the straight line masked ↔ fine-tuned (test)",
    "05_what_masks_learn": "none named: every table is exploratory (a slice of each study in `default`)",
}


def _table(path: Path, columns: list[str] | None = None, query: str | None = None, digits: int = 4) -> str:
    if not path.is_file():
        return f"*`{path.name}` not written (the notebook has not run)*"
    df = pd.read_csv(path)
    if query:
        df = df.query(query)
    if columns:
        df = df[[c for c in columns if c in df.columns]]
    return markdown_table(df, floatfmt="{:.%dg}" % digits)


def _section_01(d: Path) -> list[str]:
    from .stats import gap_sentence

    lines = []
    if (d / "gaps.csv").is_file():
        g = pd.read_csv(d / "gaps.csv").query("runs == 'all'")
        short = g["genept_steps"].min() if len(g) else None
        primary = g[(g.genept_steps == short) & g.comparison.isin(["selective - random", "random - genept"])]
        for r in primary.itertuples():
            lines.append(f"- GenePT {r.genept_steps} steps: {gap_sentence(r._asdict(), {'genept': 'GenePT only'})}; "
                         f"detectable with 80% power {r.detectable_gap:.2f} points; sd of the gap {r.gap_std:.2f} "
                         f"(test-sampling part {r.sampling_sd:.2f})")
    out = [*lines, "", "### Accuracy (test, held-out pool; mean ± sd over seeds)", "",
           _table(d / "summary.csv", ["genept_steps", "condition", "n_seeds", "test_mean", "test_std", "dev_mean"]),
           "", "### Paired gaps (points)", "",
           _table(d / "gaps.csv", ["runs", "genept_steps", "comparison", "n_seeds", "gap_mean", "gap_std", "wins", "p",
                                   "ci95", "detectable_gap", "sampling_sd", "test_n"], query="runs == 'all'"), ""]
    return out


def _section_03(d: Path) -> list[str]:
    gaps = d / "gaps.csv"
    sentences = []
    if gaps.is_file():
        g = pd.read_csv(gaps)
        sentences = [f"- {r.task}: {r.sentence}; sd of the gap {r.gap_std:.2f}, test-sampling sd "
                     f"{r.sampling_sd:.2f}, detectable with 80% power {r.detectable_gap:.2f} points ({int(r.test_n)} "
                     f"test examples)" for r in g.itertuples() if r.a == "mask" and "sampling_sd" in g]
    return [*sentences, "", "### Accuracy per task and method (%)", "",
            _table(d / "summary.csv", ["task", "method", "lr", "n_seeds", "test_n", "test_mean", "test_std",
                                       "paired_gap_pts", "paired_gap_ci95_pts", "paired_gap_p", "detectable_gap_pts",
                                       "sampling_sd_pts", "task_bytes"]), ""]


def _section_04(d: Path) -> list[str]:
    f = d / "summary.json"
    if not f.is_file():
        return ["*`summary.json` not written (the notebook has not run)*", ""]
    s = json.loads(f.read_text())
    lines = [f"- {s['finding']}"]
    if s.get("curve_finding"):
        lines.append(f"- {s['curve_finding']}")
    if s.get("test_n"):
        lines.append(f"- test examples per point: {s['test_n']} ({s.get('test_pool', 'split')} pool)")
    return [*lines, "", _table(d / "summary.csv", digits=3), ""]


def _section_05(d: Path) -> list[str]:
    cols = ["setting", "n_seeds", "test_mean", "test_std", "density_pct", "gap_vs_reference_pts", "gap_sd_pts",
            "gap_p", "detectable_gap_pts"]
    return ["### Initial sparsity (reference: 0.05)", "", _table(d / "sparsity.csv", cols), "",
            "### Layer-wise masking (reference: default)", "", _table(d / "layers.csv", cols), "",
            "### Linear probe on the frozen [CLS] vector", "",
            _table(d / "probe.csv", ["representation", "probe_accuracy", "probe_sd", "examples"]), "",
            "### Transfer to other datasets (mask − fine-tune, paired by seed)", "",
            _table(d / "transfer_summary.csv"), ""]


def _section_02(d: Path) -> list[str]:
    return [_table(d / "summary.csv"), ""]


SECTIONS = {"01_selective_masking": _section_01, "02_token_importance_explorer": _section_02,
            "03_masking_vs_finetuning": _section_03, "04_loss_landscape": _section_04,
            "05_what_masks_learn": _section_05}


def results_document(run_dir: str | Path) -> str:
    """Markdown for every notebook folder in ``run_dir`` (``runs/<set>``), generated from its files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder; run `make run` (or `python -m tmlib suite`) first")
    parts = ["# Results", "",
             f"Generated by `python -m tmlib report {run_dir.as_posix()}` from the files `make run` wrote; rerun it "
             "after a run instead of editing this page. Every model is tested on every example of its task that it "
             "never trained or selected on; gaps are paired by seed (`detectable_gap`: the smallest true gap the "
             "design detects with 80% power; `sampling_sd`: the part of a seed's gap that the test set's sampling "
             "explains).", ""]
    timing = run_dir / "suite_timing.csv"
    if timing.is_file():
        parts += ["## Wall time per notebook (seconds, this machine)", "", _table(timing), ""]
    for name, section in SECTIONS.items():
        d = run_dir / name
        if not d.is_dir():
            continue
        parts += [f"## {name}", ""]
        if name in PRIMARY:
            parts += [f"Primary comparison: {PRIMARY[name]}.", ""]
        parts += section(d)
    return "\n".join(parts).rstrip() + "\n"
