"""Notebook 01's paired gaps read from a run folder's cache alone, while (or after) the notebook runs: nothing is
built; a fine-tuning run that is not cached yet stops it with the count missing.

    python benchmarks/cached_gaps.py --params cpu_taskpt_budgets --out runs/cpu_taskpt_budgets/01_selective_masking \
        --save benchmarks/results/cpu_taskpt_budgets_t100

Writes <save>_results.csv and <save>_gaps.csv (the notebook's own TaskPT runs, `taskpt_steps`, or with
``--budget N`` the budget curve's runs of N TaskPT steps; the primary tests marked and Holm-corrected among
themselves). Run it with the code the run folder was built with (its stage
keys hold the code's fingerprint), e.g. PYTHONPATH=<that checkout>.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from tmlib.core.config import from_flat, load_yaml
    from tmlib.experiments.selective import Experiment, SelectiveConfig, paired_gaps, summarize, with_holm

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True, help="the notebook's run folder (…/01_selective_masking)")
    ap.add_argument("--save", help="prefix of the CSV files to write")
    ap.add_argument("--budget", type=int, help="a budget of taskpt_budgets (default: the notebook's taskpt_steps)")
    args = ap.parse_args()
    flat = load_yaml(ROOT / "papermill_params" / "01_selective_masking" / f"{args.params}.yaml")
    exp = Experiment(from_flat(SelectiveConfig, {**flat, "out_dir": args.out, "progress": False}))
    if args.budget:
        exp = exp.budget_experiment(args.budget)
    cfg = exp.cfg
    missing = [
        (g, m) for g in cfg.genept.steps for m in cfg.taskpt.methods if not exp.store.has(exp.taskpt_stage(g, m))
    ]
    if missing:
        raise SystemExit(f"TaskPT runs not cached yet: {missing}")
    jobs = [j for j in exp.finetune_jobs() if not exp.store.has(exp.finetune_stage(j))]
    if jobs:
        raise SystemExit(f"{len(jobs)} fine-tuning runs not cached yet")
    results = exp.finetune()
    gaps = with_holm(paired_gaps(results, predictions=exp.predictions()).assign(runs="all"))
    cols = ["comparison", "n_seeds", "gap_mean", "gap_std", "ci95", "p", "p_holm", "detectable_gap", "sampling_sd"]
    print(gaps[["genept_steps", *cols]].round(3).to_string(index=False))
    print(summarize(results)[["genept_steps", "method", "n_seeds", "test_mean", "test_std"]].round(4).to_string())
    if args.save:
        results.to_csv(f"{args.save}_results.csv", index=False)
        gaps.to_csv(f"{args.save}_gaps.csv", index=False)


if __name__ == "__main__":
    main()
