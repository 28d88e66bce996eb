"""Selective masking for task-guided pre-training (Gu et al. 2020): the whole pipeline at small scale.

* :mod:`.config`    one dataclass per stage, nested in :class:`SelectiveConfig` (= notebook 01 ``default``)
* :mod:`.stages`    :func:`plan` (config -> a recipe per stage: one :class:`MLMRun` for GenePT and each TaskPT
                    method, the data, buffer, tagger, corpus and probe recipes, the classifiers' training configs),
                    one factory per kind of recipe, and :class:`Experiment` (the stages through the run folder's
                    one store): GenePT and TaskPT (one MLM-run stage, :func:`mlm_run_stage`, each over a data
                    stage), scorer, buffer labels, tagger, labelled corpus, MLM probe, fine-tuning runs
* :mod:`.analysis`  tables: summaries, paired gaps with a t test, curve, compute per condition

    exp = Experiment(from_flat(SelectiveConfig, params))
    results = exp.run()                 # builds (or loads) every stage it needs
    exp.write(results)
"""

from __future__ import annotations

from tmlib.experiments.selective.analysis import (
    PRIMARY,
    accuracy_table,
    budget_gaps,
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
    with_holm,
)
from tmlib.experiments.selective.config import (
    TASKPT_METHODS,
    BufferStageConfig,
    FinetuneConfig,
    GeneptConfig,
    ScorerConfig,
    SelectiveConfig,
    TaggerConfig,
    TaskptConfig,
)
from tmlib.experiments.selective.stages import (
    Checkpoints,
    Config,
    Experiment,
    FinetuneJob,
    MLMData,
    MLMRun,
    SelectivePlan,
    collator,
    curve_rows,
    history,
    mlm_run_stage,
    plan,
    split_corpus,
    taskpt_selection,
)

__all__ = [
    "SelectiveConfig",
    "GeneptConfig",
    "ScorerConfig",
    "BufferStageConfig",
    "TaggerConfig",
    "TaskptConfig",
    "FinetuneConfig",
    "TASKPT_METHODS",
    "Config",
    "Experiment",
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
    "PRIMARY",
    "accuracy_table",
    "budget_gaps",
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
    "with_holm",
]
