"""The results document of a run folder, generated from its CSV and JSON files so it cannot go stale.

    python -m tmlib report runs/default --out docs/results.md

Each section names the notebook, the primary comparison it was built to answer, and the tables behind it, every
number rounded from the files the notebooks wrote; nothing here is typed by hand.

A parameter set too long for `make run` (``full``, ``cpu_taskpt_budgets``) commits its tables instead of its run
folder: ``python -m tmlib report runs/full --save-tables benchmarks/results/sets/full`` copies each notebook's
CSV/JSON files there, and every later ``report --out`` shows them under the run's own sections, marked as that
set's (:data:`SETS`), so a fresh clone regenerates the page without rerunning them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tmlib.suite import markdown_table

PRIMARY = {
    "01_selective_masking": "selective − random and random − GenePT only, at the short GenePT budget (paired by "
    "fine-tuning seed); the other rows are exploratory",
    "03_masking_vs_finetuning": (
        "mask − fine-tune per task (paired by seed); BitFit (and LoRA, when run) rows are exploratory"
    ),
    "04_loss_landscape": "the largest accuracy drop along the straight line masked ↔ fine-tuned (test)",
    "05_what_masks_learn": "none named: every table is exploratory (a slice of each study in `default`)",
}


SETS = Path("benchmarks") / "results" / "sets"  # committed sets' tables, under the project root: <set>/<notebook>/
TABLE_SUFFIXES = (".csv", ".json")  # what save_tables copies: a notebook folder's tables, never its cache


def _table(path: Path, columns: list[str] | None = None, query: str | None = None, digits: int = 4) -> str:
    if not path.is_file():
        return f"*`{path.name}` not written (the notebook has not run)*"
    df = pd.read_csv(path)
    if query:
        df = df.query(query)
    if columns:
        df = df[[c for c in columns if c in df.columns]]
    return markdown_table(df, floatfmt=f"{{:.{digits}g}}")


def _section_01(d: Path) -> list[str]:
    from tmlib.core.stats import gap_sentence
    from tmlib.experiments.selective.analysis import PRIMARY as SELECTIVE_PRIMARY

    lines = []
    if (d / "gaps.csv").is_file():
        g = pd.read_csv(d / "gaps.csv").query("runs == 'all'")
        short = g["genept_steps"].min() if len(g) else None
        primary = g[(g.genept_steps == short) & g.comparison.isin(SELECTIVE_PRIMARY)]
        for r in primary.itertuples():
            holm = f", Holm-adjusted p = {r.p_holm:.2g} over {len(primary)} primary tests" if "p_holm" in g else ""
            lines.append(
                f"- GenePT {r.genept_steps} steps: {gap_sentence(r._asdict(), {'genept': 'GenePT only'})}{holm}; "
                f"detectable with 80% power {r.detectable_gap:.2f} points; sd of the gap {r.gap_std:.2f} "
                f"(test-sampling part {r.sampling_sd:.2f})"
            )
    out = [
        *lines,
        "",
        "### Accuracy (test, held-out pool; mean ± sd over seeds)",
        "",
        _table(d / "summary.csv", ["genept_steps", "condition", "n_seeds", "test_mean", "test_std", "dev_mean"]),
        "",
        "### Paired gaps (points)",
        "",
        _table(
            d / "gaps.csv",
            [
                "runs",
                "genept_steps",
                "comparison",
                "n_seeds",
                "gap_mean",
                "gap_std",
                "wins",
                "p",
                "p_holm",
                "verdict",
                "ci95",
                "detectable_gap",
                "sampling_sd",
                "test_n",
            ],
            query="runs == 'all'",
        ),
        *_budget_curve_01(d),
        "",
    ]
    return out


def _section_03(d: Path) -> list[str]:
    gaps = d / "gaps.csv"
    sentences = []
    if gaps.is_file():
        g = pd.read_csv(gaps)
        sentences = [
            f"- {r.task}: {r.sentence}; sd of the gap {r.gap_std:.2f}, test-sampling sd "
            f"{r.sampling_sd:.2f}, detectable with 80% power {r.detectable_gap:.2f} points ({int(r.test_n)} "
            f"test examples)"
            for r in g.itertuples()
            if r.a == "mask" and "sampling_sd" in g
        ]
    return [
        *sentences,
        "",
        "### Accuracy per task and method (%)",
        "",
        _table(
            d / "summary.csv",
            [
                "task",
                "method",
                "lr",
                "n_seeds",
                "test_n",
                "test_mean",
                "test_std",
                "paired_gap_pts",
                "paired_gap_ci95_pts",
                "paired_gap_p",
                "detectable_gap_pts",
                "sampling_sd_pts",
                "task_bytes",
            ],
        ),
        "",
    ]


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


def _optional(d: Path, name: str, title: str, query: str | None = None) -> list[str]:
    """A table's subsection when the notebook wrote it (a set that skips a study writes no table of it)."""
    return [f"### {title}", "", _table(d / name, query=query), ""] if _rows(d / name) else []


PRIMARY_05 = (  # the `full` set's primary comparisons (named in full.yaml before the run), Holm-corrected together
    ("token_tasks.csv", {"task": "pos", "method": "mask"}, "POS tagging: mask − fine-tune (token accuracy)"),
    ("sparsity.csv", {"setting": "0.5"}, "initial sparsity: 50% − 5%"),
    ("layers.csv", {"setting": "bottom3"}, "layer-wise: bottom3 − default"),
    ("layers.csv", {"setting": "top3"}, "layer-wise: top3 − default"),
)


def primary_05(d: Path) -> pd.DataFrame:
    """The rows of :data:`PRIMARY_05` in notebook 05's tables, with the 95% CI and Holm's p over all of them; empty
    unless the run has every one (the `full` design: `default` names no primary comparison)."""
    from tmlib.core.stats import ci_half_width, holm

    rows = []
    for table, where, name in PRIMARY_05:
        if not (d / table).is_file():
            return pd.DataFrame()
        df = pd.read_csv(d / table, dtype=dict.fromkeys(where, str))
        hit = df[df["gap_p"].notna()]
        for column, value in where.items():
            hit = hit[hit[column] == value]
        if len(hit) != 1:
            return pd.DataFrame()
        r = hit.iloc[0]
        n = int(r["n_seeds"])
        rows.append(
            {
                "comparison": name,
                "n_seeds": n,
                "gap_pts": r["gap_vs_reference_pts"],
                "gap_sd_pts": r["gap_sd_pts"],
                "ci95_pts": ci_half_width(r["gap_sd_pts"], n),
                "p": r["gap_p"],
                "detectable_gap_pts": r["detectable_gap_pts"],
            }
        )
    out = pd.DataFrame(rows)
    out.insert(out.columns.get_loc("p") + 1, "p_holm", holm(out["p"].to_numpy()))
    return out


def _rows(path: Path) -> int:
    """The number of rows of a CSV table (0 when it is missing, empty or has a header only)."""
    try:
        return len(pd.read_csv(path)) if path.is_file() else 0
    except pd.errors.EmptyDataError:
        return 0


def _probe_table(path: Path) -> str:
    """The probe table with the standard error of each fold mean (sd / sqrt(folds)) beside the folds' sd."""
    if not path.is_file():
        return _table(path)
    df = pd.read_csv(path)
    if {"probe_sd", "folds"} <= set(df.columns):
        df["probe_se"] = df["probe_sd"] / df["folds"].pow(0.5)
    cols = ["representation", "probe_accuracy", "probe_sd", "probe_se", "examples", "folds"]
    return markdown_table(df[[c for c in cols if c in df.columns]], floatfmt="{:.4g}")


def _section_05(d: Path) -> list[str]:
    primary = primary_05(d)
    head = []
    if len(primary):
        head = [
            f"### Primary comparisons (named before the run; paired by seed, Holm over all {len(primary)})",
            "",
            markdown_table(primary, floatfmt="{:.3g}"),
            "",
        ]
    cols = [
        "setting",
        "n_seeds",
        "lr",
        "test_mean",
        "test_std",
        "density_pct",
        "gap_vs_reference_pts",
        "gap_sd_pts",
        "gap_ci95_pts",
        "gap_p",
        "detectable_gap_pts",
    ]
    return [
        *head,
        "### Initial sparsity (reference: 0.05)",
        "",
        _table(d / "sparsity.csv", cols),
        "",
        "### Layer-wise masking (reference: default)",
        "",
        _table(d / "layers.csv", cols),
        "",
        *_optional(d, "lr_selection.csv", "Each setting's lr, chosen on dev (seed 0)", query="chosen"),
        "### Linear probe on the frozen [CLS] vector",
        "",
        "`probe_sd`: the sd over the cross-validation folds (each holds 1/`folds` of the `examples`); `probe_se`: the "
        "standard error of their mean, the probe accuracy's own uncertainty.",
        "",
        _probe_table(d / "probe.csv"),
        "",
        *_optional(d, "tsne.csv", "t-SNE: class structure in the original space and in the map"),
        "### Transfer to other datasets (mask − fine-tune, paired by seed)",
        "",
        _table(d / "transfer_summary.csv"),
        "",
        "### Token-level tasks (each method − fine-tune, paired by seed)",
        "",
        _table(d / "token_tasks.csv") if _rows(d / "token_tasks.csv") else "*no token task in this set*",
        "",
        *_optional(d, "token_baselines.csv", "Token-level baselines (no training)"),
        *_optional(d, "token_lr_selection.csv", "Token-level lrs, chosen on dev (seed 0)", query="chosen"),
        *_optional(d, "token_curve.csv", "Token-level learning curve (fine-tuning, dev)"),
    ]


def _section_02(d: Path) -> list[str]:
    return [_table(d / "summary.csv"), ""]


def budget_figure(d: Path) -> str:
    """Where notebook folder ``d``'s budget curve lies beside the results document, named for its parameter set
    (the folder above ``d``: ``runs/<set>`` or ``benchmarks/results/sets/<set>``); drawn by
    :func:`write_figures`."""
    return f"figures/budget_curve_{d.parent.name}.png"


def _budget_curve_01(d: Path) -> list[str]:
    """Notebook 01's budget curve, when its run has one: the primary gaps per TaskPT budget and the figure."""
    path = d / "budget_gaps.csv"
    if not path.is_file():
        return []
    g = pd.read_csv(path)
    cols = ["taskpt_budget", "taskpt_passes", "comparison", "n_seeds", "gap_mean", "gap_std", "ci95", "p", "p_holm",
            "verdict", "detectable_gap", "sampling_sd"]  # fmt: skip
    primary = g[g["primary"]] if "primary" in g else g.iloc[0:0]
    return [
        "",
        "### Does the gap open as TaskPT grows? (each budget its own TaskPT run)",
        "",
        f"Primary tests: {len(primary)}, Holm-corrected together (`p_holm`); every other row is exploratory.",
        "",
        markdown_table(primary[[c for c in cols if c in primary]], floatfmt="{:.4g}"),
        "",
        f"![budget curve]({budget_figure(d)})",
    ]


def write_figures(run_dir: str | Path, out_dir: str | Path, sets_dir: str | Path | None = None) -> list[Path]:
    """The figures the results document shows, drawn from the run folder's tables (and each committed set's in
    ``sets_dir``) into ``out_dir`` (the document's folder): notebook 01's budget curve where a run has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tmlib.plots.selective import budget_curve

    written = []
    for run in (Path(run_dir), *committed_sets(sets_dir)):
        d = run / "01_selective_masking"
        if (d / "budget_gaps.csv").is_file():
            fig = budget_curve(pd.read_csv(d / "budget_gaps.csv"))
            target = Path(out_dir) / budget_figure(d)
            target.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(target, dpi=130, bbox_inches="tight")
            plt.close(fig)
            written.append(target)
    return written


def _notebook_folders(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("[0-9][0-9]_*") if p.is_dir())


def committed_sets(sets_dir: str | Path | None) -> list[Path]:
    """The committed parameter sets in ``sets_dir`` (:data:`SETS`): each a folder of notebook folders."""
    if sets_dir is None or not Path(sets_dir).is_dir():
        return []
    return sorted(p for p in Path(sets_dir).iterdir() if p.is_dir() and _notebook_folders(p))


def save_tables(run_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy the tables of ``run_dir`` (each notebook folder's top-level CSV and JSON files, and the suite's
    timing) into ``dest``, laid out as a run folder, to commit them: the results document reads them as a
    committed set's. Files of notebooks that are not in ``run_dir`` are left as they were."""
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    folders = _notebook_folders(run_dir)
    if not folders:
        raise FileNotFoundError(f"{run_dir} has no notebook folders (NN_name/); run the set first")
    written = []
    for d in folders:
        (dest / d.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix in TABLE_SUFFIXES:
                written.append(Path(shutil.copy2(f, dest / d.name / f.name)))
    if (run_dir / "suite_timing.csv").is_file():
        written.append(Path(shutil.copy2(run_dir / "suite_timing.csv", dest / "suite_timing.csv")))
    return written


def _section_tables(d: Path) -> list[str]:
    """A notebook without a section of its own: each table it wrote, under its file name."""
    out = []
    for f in sorted(d.glob("*.csv")):
        out += [f"### {f.name}", "", _table(f), ""]
    return out or ["*no tables written*", ""]


SECTIONS = {
    "01_selective_masking": _section_01,
    "02_token_importance_explorer": _section_02,
    "03_masking_vs_finetuning": _section_03,
    "04_loss_landscape": _section_04,
    "05_what_masks_learn": _section_05,
}


def key_numbers(run_dir: str | Path) -> dict:
    """The headline numbers of a run folder, rounded as the README quotes them (1 decimal, points; p 2 digits):
    the primary comparisons of 01 and 03 and the accuracies behind them, 04's largest drop, the suite's minutes.
    Written beside ``docs/results.md`` as ``results.json``; the README's results table is generated from it."""
    run_dir = Path(run_dir)
    out: dict = {}
    d = run_dir / "01_selective_masking"
    if (d / "gaps.csv").is_file():
        g = pd.read_csv(d / "gaps.csv").query("runs == 'all'")
        short = int(g["genept_steps"].min())
        summ = pd.read_csv(d / "summary.csv").query("genept_steps == @short")
        acc = {r.method: [round(100 * r.test_mean, 1), round(100 * r.test_std, 1)] for r in summ.itertuples()}
        out["01"] = {
            "genept_steps": short,
            "accuracy": acc,
            "gaps": {r.comparison: _gap(r) for r in g[g.genept_steps == short].itertuples()},
        }
    d = run_dir / "03_masking_vs_finetuning"
    if (d / "gaps.csv").is_file():
        g, summ = pd.read_csv(d / "gaps.csv"), pd.read_csv(d / "summary.csv")
        out["03"] = {
            t: {
                "accuracy": {
                    r.method: [round(r.test_mean, 1), round(r.test_std, 1)] for r in summ[summ.task == t].itertuples()
                },
                "test_n": int(summ[summ.task == t].test_n.iloc[0]),
                "gaps": {r.comparison: _gap(r) for r in g[g.task == t].itertuples()},
            }
            for t in dict.fromkeys(summ.task)
        }
    d = run_dir / "04_loss_landscape"
    if (d / "summary.csv").is_file():
        t = pd.read_csv(d / "summary.csv")
        row = t[(t.path == "mask<->finetune") & (t.split == "test")].iloc[0]
        out["04"] = {"max_drop_pts": round(float(row.max_drop_pts), 1), "within_1pt": bool(row.within_1pt)}
    timing = run_dir / "suite_timing.csv"
    if timing.is_file():
        t = pd.read_csv(timing)
        out["notebook_minutes_sum"] = round(float(t["seconds"].sum()) / 60, 1)
        if "arithmetic" in t:  # what "auto" computed in: the numbers above come from it
            out["arithmetic"] = str(t["arithmetic"].iloc[0])
    return out


def _gap(r) -> dict:
    out = {
        "gap": round(float(r.gap_mean), 1),
        "ci95": round(float(r.ci95), 1),
        "p": float(f"{r.p:.2g}"),
        "n_seeds": int(r.n_seeds),
        "detectable": round(float(r.detectable_gap), 1),
    }
    holm = getattr(r, "p_holm", None)
    if holm is not None and pd.notna(holm):  # a primary comparison of a set that names several
        out["p_holm"] = float(f"{holm:.2g}")
    return out


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
FP32_START, FP32_END = "<!-- results-fp32:start -->", "<!-- results-fp32:end -->"


def readme_markers(numbers: dict) -> tuple[str, str]:
    """Where a run's numbers go in the README: a run computed in fp32 (``auto`` on a CPU without native bf16) fills
    the fp32 section, any other the results at a glance."""
    return (FP32_START, FP32_END) if numbers.get("arithmetic") == "fp32" else (README_START, README_END)


def readme_table(numbers: dict) -> str:
    """The README's results-at-a-glance tables, from :func:`key_numbers` only (a test checks it)."""
    from tmlib.experiments.selective.analysis import PRIMARY as SELECTIVE_PRIMARY

    lines = []
    if "arithmetic" in numbers:
        lines += [f"Computed in {numbers['arithmetic']} (what `auto` chose on the host that ran it).", ""]
    if "01" in numbers:
        n = numbers["01"]
        lines += [
            f"Selective masking (notebook 01; MiniLM, GenePT {n['genept_steps']} steps, MR, "
            f"{next(iter(n['gaps'].values()))['n_seeds']} fine-tuning seeds):",
            "",
            "| comparison | gap (points) | 95% CI | p | Holm p | detectable (80% power) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c} | {v['gap']:+.1f} | ±{v['ci95']:.1f} | {v['p']:g} | {v.get('p_holm', '–')} | "
            f"{v['detectable']:.1f} |"
            for c, v in n["gaps"].items()
            if c in SELECTIVE_PRIMARY
        ]
        lines += [
            "",
            "A few seeds at one small TaskPT budget are a slice of this study, not its answer: the "
            "`cpu_taskpt_budgets` set asks the same question with 32 seeds at three budgets (docs/measurements.md, "
            '"The budget curve").',
            "",
        ]
    if "03" in numbers:
        lines += [
            "Masking vs fine-tuning (notebook 03; MiniLM, 5 seeds):",
            "",
            "| task | test sentences | fine-tune | mask | mask − fine-tune | 95% CI | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for t, v in numbers["03"].items():
            g = v["gaps"].get("mask - finetune")
            if g is None:
                continue
            ft, mk = v["accuracy"]["finetune"], v["accuracy"]["mask"]
            lines.append(
                f"| {t} | {v['test_n']} | {ft[0]:.1f} ± {ft[1]:.1f} | {mk[0]:.1f} ± {mk[1]:.1f} | "
                f"{g['gap']:+.1f} | ±{g['ci95']:.1f} | {g['p']:g} |"
            )
        lines.append("")
    if "04" in numbers:
        lines.append(
            f"Loss landscape (notebook 04): along the straight line masked → fine-tuned, test accuracy falls "
            f"at most {numbers['04']['max_drop_pts']:.1f} points below the lower endpoint."
        )
    return "\n".join(lines).rstrip() + "\n"


def update_readme(readme: str | Path, numbers: dict) -> None:
    """Replace the README's section between the run's markers (:func:`readme_markers`) with :func:`readme_table`."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    start, end = readme_markers(numbers)
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} section to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{readme_table(numbers)}{end}{tail}", encoding="utf-8")


def _notebook_sections(run_dir: Path, level: str = "##", label: str = "") -> list[str]:
    parts = []
    for d in _notebook_folders(run_dir):
        parts += [f"{level} {label}{d.name}", ""]
        if d.name in PRIMARY and not label:
            parts += [f"Primary comparison: {PRIMARY[d.name]}.", ""]
        parts += SECTIONS.get(d.name, _section_tables)(d)
    return parts


def results_document(run_dir: str | Path, sets_dir: str | Path | None = None) -> str:
    """Markdown for every notebook folder in ``run_dir`` (``runs/<set>``), generated from its files, then each
    committed set in ``sets_dir`` (:data:`SETS`), marked as that set's."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder; run `make run` (or `python -m tmlib suite`) first")
    parts = [
        "# Results",
        "",
        f"Generated by `python -m tmlib report {run_dir.as_posix()}` from the files `make run` wrote; rerun it "
        "after a run instead of editing this page. Every model is tested on every example of its task that it "
        "never trained or selected on; gaps are paired by seed (`detectable_gap`: the smallest true gap the "
        "design detects with 80% power; `sampling_sd`: the part of a seed's gap that the test set's sampling "
        "explains).",
        "",
    ]
    timing = run_dir / "suite_timing.csv"
    if timing.is_file():
        parts += ["## Wall time per notebook (seconds, this machine)", "", _table(timing), ""]
    parts += _notebook_sections(run_dir)
    for folder in committed_sets(sets_dir):
        parts += [
            f"# The `{folder.name}` parameter set (committed tables)",
            "",
            f"Not part of `make run`: `python -m tmlib suite --params {folder.name} --out runs/{folder.name}` ran "
            f"it (the set's file names its primary comparisons), then `python -m tmlib report runs/{folder.name} "
            f"--save-tables {SETS.as_posix()}/{folder.name}` committed these tables from it; each number below is from "
            f"`{SETS.as_posix()}/{folder.name}/`.",
            "",
            *_notebook_sections(folder, label=f"`{folder.name}`: "),
        ]
    return "\n".join(parts).rstrip() + "\n"
