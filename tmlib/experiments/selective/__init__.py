"""Selective masking for task-guided pre-training (Gu et al. 2020): the whole pipeline at small scale.

* :mod:`.config`    one dataclass per stage, nested in :class:`SelectiveConfig` (= notebook 01 ``default``)
* :mod:`.stages`    :func:`plan` (config -> run recipes: one :class:`MLMRun` for GenePT and each TaskPT method,
                    the classifiers' training configs) and the stage graph (:class:`SelectiveExperiment`):
                    GenePT and TaskPT (one MLM-run stage, :func:`mlm_run_stage`, each over a data stage),
                    scorer, buffer labels, tagger, labelled corpus, MLM probe, fine-tuning runs
* :mod:`.analysis`  tables: summaries, paired gaps with a t test, curve, compute per condition

    exp = SelectiveExperiment(from_flat(SelectiveConfig, params))
    results = exp.finetune()            # builds (or loads) every stage it needs
    write_outputs(exp, results)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from .analysis import (
    accuracy_table,
    buffer_summary,
    compute_split,
    condition_costs,
    corpus_summary,
    curve_summary,
    detectable_gap,
    importance_examples,
    paired_gaps,
    probe_table,
    summarize,
    threshold_table,
)
from .config import (
    TASKPT_METHODS,
    BufferStageConfig,
    FinetuneConfig,
    GeneptConfig,
    ScorerConfig,
    SelectiveConfig,
    TaggerConfig,
    TaskptConfig,
)
from .stages import (
    Checkpoints,
    FinetuneJob,
    MLMData,
    MLMRun,
    SelectiveExperiment,
    SelectivePlan,
    collator,
    mlm_run_stage,
    plan,
    split_corpus,
)


def history(exp: SelectiveExperiment) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MLM training-loss curves: (GenePT, TaskPT per budget and method, with held-out loss per checkpoint)."""
    gen = pd.DataFrame(exp.genept().stats["history"])
    rows = []
    for (g, m), run in exp.taskpt().items():
        rows += [{"genept_steps": g, "method": m, **h} for h in run.stats["history"]]
    return gen, pd.DataFrame(rows)


def taskpt_selection(exp: SelectiveExperiment) -> pd.DataFrame:
    """Held-out MLM loss of every TaskPT checkpoint and which one was selected for fine-tuning."""
    rows = []
    for (g, m), run in exp.taskpt().items():
        for step, rec in sorted(run.stats["saved"].items()):
            rows.append(
                {
                    "genept_steps": g,
                    "method": m,
                    "taskpt_steps": step,
                    "dev_loss": rec["dev_loss"],
                    "selected": step == run.selected,
                }
            )
    return pd.DataFrame(rows)


def curve_rows(exp: SelectiveExperiment, results: pd.DataFrame) -> pd.DataFrame:
    """The runs behind the accuracy-vs-TaskPT-steps curve (the smallest budget unless curve_all_budgets)."""
    cfg = exp.cfg
    budgets = cfg.genept.steps if cfg.curve_all_budgets else [min(cfg.genept.steps)]
    return results[results["genept_steps"].isin(budgets) & results["seed"].isin(cfg.seeds)].reset_index(drop=True)


def write_outputs(exp: SelectiveExperiment, results: pd.DataFrame) -> dict[str, Path]:
    """results.csv (per run), summary.csv (mean/std + pre-training compute), gaps.csv (paired by seed),
    steps.csv (curve), probe.csv (MLM probe per checkpoint), compute.json, tagger.json, config.json."""
    cfg, store = exp.cfg, exp.store
    compute = exp.compute_rows(results)
    summary = summarize(results).merge(
        condition_costs(compute, cfg.genept.steps, cfg.taskpt.methods), on=["genept_steps", "method"], how="left"
    )
    curve = curve_rows(exp, results)
    preds = exp.predictions()
    gaps = pd.concat(
        [
            paired_gaps(results, predictions=preds).assign(runs="all"),
            paired_gaps(results, drop_failed=True, predictions=preds).assign(runs="failed dropped"),
        ]
    )
    tagger = exp.get(exp.tagger_stage).stats
    return {
        "results": store.write_csv("results.csv", results),
        "summary": store.write_csv("summary.csv", summary),
        "gaps": store.write_csv("gaps.csv", gaps),
        "steps": store.write_csv("steps.csv", curve),
        "steps_summary": store.write_csv("steps_summary.csv", curve_summary(curve)),
        "probe": store.write_csv("probe.csv", exp.probe()),
        "taskpt_selection": store.write_csv("taskpt_selection.csv", taskpt_selection(exp)),
        "compute": store.write_json("compute.json", compute_split(compute, exp.threads)),
        "tagger": store.write_json("tagger.json", {k: v for k, v in tagger.items() if k != "history"}),
        "config": store.write_json("config.json", asdict(cfg)),
    }


def build_all(cfg: SelectiveConfig, reverse: bool = False) -> int:
    """Build (or load) every TaskPT and fine-tuning stage of ``cfg``, in order or in ``reverse`` order;
    returns the number of fine-tuning runs. A second process running this with ``reverse=True`` on the
    same ``out_dir`` as a notebook (or ``python -m tmlib worker``) shares the work: the file lock of
    each stage keeps anything from being built twice, and every result is the same whoever builds it."""
    exp = SelectiveExperiment(cfg)
    order = (lambda xs: list(reversed(xs))) if reverse else list
    for g in order(cfg.genept.steps):
        for m in order(cfg.taskpt.methods):
            exp.get(exp.taskpt_stage(g, m))
    jobs = order(exp.finetune_jobs())
    for j in jobs:
        exp.get(exp.finetune_stage(j))
    return len(jobs)


def run_pipeline(cfg: SelectiveConfig) -> dict:
    """Every stage (what notebook 01 does), outputs written; returns the experiment and its tables."""
    exp = SelectiveExperiment(cfg)
    results = exp.finetune()
    write_outputs(exp, results)
    return {"experiment": exp, "results": results, "summary": summarize(results)}


__all__ = [
    "SelectiveConfig",
    "GeneptConfig",
    "ScorerConfig",
    "BufferStageConfig",
    "TaggerConfig",
    "TaskptConfig",
    "FinetuneConfig",
    "TASKPT_METHODS",
    "SelectiveExperiment",
    "SelectivePlan",
    "plan",
    "MLMRun",
    "MLMData",
    "FinetuneJob",
    "mlm_run_stage",
    "Checkpoints",
    "collator",
    "split_corpus",
    "history",
    "taskpt_selection",
    "curve_rows",
    "build_all",
    "write_outputs",
    "run_pipeline",
    "accuracy_table",
    "buffer_summary",
    "compute_split",
    "condition_costs",
    "corpus_summary",
    "curve_summary",
    "detectable_gap",
    "importance_examples",
    "paired_gaps",
    "probe_table",
    "summarize",
    "threshold_table",
]
