"""What bf16 test evaluation changes: notebook 03's saved solutions (a `make run` folder) evaluated on their held-out
pool in fp32 and under bf16 autocast, the same models, sentences and batches; per solution the accuracy difference
and the share of predictions that flip, and mask − fine-tune recomputed both ways.

    .venv/bin/python benchmarks/bench_eval_precision.py runs/default/03_masking_vs_finetuning

Writes ``benchmarks/results/eval_precision.csv``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    import yaml

    from tmlib.core.config import from_flat
    from tmlib.core.precision import kernels_context
    from tmlib.core.stats import paired_gap_table
    from tmlib.experiments.masking import Experiment, MaskingConfig
    from tmlib.tasks.classify import evaluate_classifier

    run = Path(argv[0] if argv else "runs/default/03_masking_vs_finetuning")
    if not (run / "solutions").is_dir():
        print(f"skipped: {run} has no solutions; run `make run` (or the suite's notebook 03) first")
        return 0
    params = yaml.safe_load((HERE.parent / "papermill_params/03_masking_vs_finetuning/default.yaml").read_text())
    exp = Experiment(from_flat(MaskingConfig, {**params, "out_dir": str(run), "progress": False}))
    rows = []
    for recipe in exp.plan.solutions:
        model = exp.solution(recipe).model
        batches = exp.inputs(recipe.task).test_batches(recipe.max_length)
        labels = np.asarray(exp.inputs(recipe.task).data["test"]["label"])
        out = {}
        for mp in ("no", "bf16"):
            start = time.perf_counter()
            with kernels_context(model, recipe.kernels, "cpu"):
                m = evaluate_classifier(model, batches, kernels=recipe.kernels, predictions=True, mixed_precision=mp)
            out[mp] = (m, time.perf_counter() - start)
        p32, p16 = out["no"][0]["predictions"], out["bf16"][0]["predictions"]
        rows.append(
            {
                "task": recipe.task,
                "method": recipe.method,
                "seed": recipe.seed,
                "n": len(labels),
                "acc_fp32": float((p32 == labels).mean()),
                "acc_bf16": float((p16 == labels).mean()),
                "flipped": float((p32 != p16).mean()),
                "s_fp32": out["no"][1],
                "s_bf16": out["bf16"][1],
            }
        )
    df = pd.DataFrame(rows)
    df["diff_pts"] = 100 * (df.acc_bf16 - df.acc_fp32)
    (HERE / "results").mkdir(exist_ok=True)
    df.to_csv(HERE / "results" / "eval_precision.csv", index=False)
    print(
        f"{len(df)} solutions; bf16 - fp32 accuracy: mean {df.diff_pts.mean():+.3f}, min {df.diff_pts.min():+.3f}, "
        f"max {df.diff_pts.max():+.3f} points; predictions flipped: mean {100 * df.flipped.mean():.2f}%, max "
        f"{100 * df.flipped.max():.2f}%; evaluation seconds fp32 {df.s_fp32.sum():.0f}, bf16 {df.s_bf16.sum():.0f} "
        f"({df.s_fp32.sum() / df.s_bf16.sum():.2f}x)"
    )
    for col in ("acc_fp32", "acc_bf16"):
        g = paired_gap_table(
            df, by=["task"], method_col="method", value_col=col, pairs=[("mask", "finetune")], scale=100
        )
        for r in g.itertuples():
            print(f"{col}: {r.task} mask - fine-tune {r.gap_mean:+.2f} ± {r.ci95:.2f} (p = {r.p:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
