"""Power of notebook 01's comparisons: how the per-seed sd of selective - random (and random - GenePT only) falls
with the fine-tuning set size, and the design (size, seeds) that detects a 1.0-point gap, with its cost here.

    .venv/bin/python benchmarks/power_selective.py --sizes 400 1600 3200 --seeds 6 5 3

Notebook 01's ``default`` pipeline (GenePT, importance, TaskPT; built once, in ``--out``), then at the smallest
GenePT budget, for each size, every seed fine-tunes the GenePT-only, selective and random checkpoints on that many
MR training sentences (the same dev rows; tested on every MR sentence train and dev leave out). Writes, after each
size, ``benchmarks/results/power_selective_runs.csv`` (one row per run), ``power_selective_gaps.csv`` (paired gaps
per size, with the test-sampling term) and ``power_selective.csv`` (size x seeds -> detectable gap, minutes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import yaml

from tmlib.core.config import from_flat
from tmlib.core.stats import power_table, seeds_needed
from tmlib.experiments.selective import Experiment, FinetuneJob, SelectiveConfig, paired_gaps

SEEDS = [13, 43, 83, 0, 1, 2, 3, 4, 5, 6, 7, 8]  # the official three first
DESIGN_SEEDS = [3, 5, 10, 20, 40, 70, 100]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/power/01_selective_masking")
    ap.add_argument("--sizes", type=int, nargs="+", default=[400, 1600, 3200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[6, 5, 3], help="seeds per size, same order")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--params", help="a notebook-01 parameter file (default: the default set)")
    args = ap.parse_args()
    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    params = yaml.safe_load(Path(args.params).read_text()) if args.params else {}
    params = {k: v for k, v in params.items() if k != "out_dir"}
    base = Experiment(from_flat(SelectiveConfig, {**params, "out_dir": args.out}))
    g = min(base.cfg.genept.steps)
    selected = {m: base.get(base.taskpt_stage(g, m)).selected for m in base.cfg.taskpt.methods}
    fixed = time.perf_counter() - start  # pre-training and importance: paid once whatever the design
    rows, preds = [], {}
    for size, n_seeds in zip(args.sizes, args.seeds):
        flat = {**params, "out_dir": args.out, "finetune_max_train": size}
        exp = Experiment(from_flat(SelectiveConfig, flat))
        for seed in SEEDS[:n_seeds]:
            for method in ("genept", *exp.cfg.taskpt.methods):
                job = FinetuneJob(g, method, 0 if method == "genept" else selected[method], seed, final=True)
                clf = exp.get(exp.finetune_stage(job))
                m = clf.metrics
                rows.append(
                    {
                        "size": size,
                        "genept_steps": g,
                        "method": method,
                        "taskpt_steps": job.taskpt_steps,
                        "seed": seed,
                        "final": True,
                        "dev_accuracy": m["dev_accuracy"],
                        "test_accuracy": m["test_accuracy"],
                        "test_n": m["test_n"],
                        "seconds": m["seconds"],
                    }
                )
                preds[(size, method, seed)] = clf.predictions
        runs = pd.DataFrame(rows)
        runs.to_csv(res_dir / "power_selective_runs.csv", index=False)
        gaps = pd.concat(
            [
                paired_gaps(r, predictions={(g, m, s): p for (z, m, s), p in preds.items() if z == size}).assign(
                    size=size
                )
                for size, r in runs.groupby("size")
            ]
        )
        gaps.to_csv(res_dir / "power_selective_gaps.csv", index=False)
        sel = gaps[gaps["comparison"] == "selective - random"].set_index("size")
        per_seed = runs.groupby("size")["seconds"].sum() / runs.groupby("size")["seed"].nunique()
        table = power_table(sel["gap_std"].to_dict(), DESIGN_SEEDS, per_seed.to_dict(), fixed_seconds=fixed)
        table["seeds_for_1pt"] = table["setting"].map({z: seeds_needed(s, 1.0) for z, s in sel["gap_std"].items()})
        table.rename(columns={"setting": "size"}).to_csv(res_dir / "power_selective.csv", index=False)
        print(
            gaps[["size", "comparison", "n_seeds", "gap_mean", "gap_std", "p", "sampling_sd", "test_n"]].to_string(
                index=False
            ),
            flush=True,
        )
    print(f"fixed (pre-training + importance) {fixed:.0f} s; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
