"""Notebook 04's Bezier curve (mask <-> fine-tune): training precision and kernels, speed and a paired check.

    .venv/bin/python benchmarks/bench_curve.py                      # seeds 0-4, runs/default/03 solutions
    .venv/bin/python benchmarks/bench_curve.py --quick              # seeds 0-1, 20 steps
    .venv/bin/python benchmarks/bench_curve.py --precision no       # the two fp32 variants only

For every seed (the curve's seed draws its ``t`` and batch order; seed 0 is the notebook's) the curve is
trained three ways on the same data, interleaved: ``fp32 hf`` (the model's own forward: what notebook 04
ran before ``LandscapeConfig.curve_mixed_precision``), ``fp32 fast`` (``kernels="fast"``: eager attention +
the ``[CLS]``-only last layer) and ``bf16 fast`` (bf16 autocast). Every curve is then evaluated the
notebook's way (fp32, 11 points, 200 dev + 200 test sentences), and the script prints, per variant, the
median training seconds and the ratio to ``fp32 hf``, and the paired gaps (seed by seed) of what notebook
04 reports about the curve: the largest accuracy drop below the endpoints, the mean accuracy on [0, 1]
and the highest loss on [0, 1], per split, with a paired t test. Writes ``benchmarks/results/curve.csv``
(one row per seed, variant and split; ``--quick``: ``curve_quick.csv``, so a quick run never overwrites the
full one, which is committed).

Uses notebook 03's saved solutions (``--reuse``; run ``tmlib suite --params default --only 03`` first).

Measured 2026-11-25 01:48 (idle 2-core AMD EPYC, load 1.9-2.1, 2 torch threads, torch 2.13.0+cpu; seeds 0-4,
150 steps, batch 32, 3,200 MR training sentences; notebook 03's `default` solutions; the committed
``benchmarks/results/curve.csv``):

    variant      train seconds (median)   vs fp32 hf   what notebook 04 reports, bf16 - fp32 fast (5 seeds)
    fp32 hf              71.1                1.00x
    fp32 fast            68.0                1.05x     (identical to fp32 hf: every drop, mean, loss to 1e-4)
    bf16 fast            35.0                2.04x     max drop: identical on every seed and split (0.0 / 0.5);
                                                       mean accuracy on [0, 1]: test -0.05 (0 to -0.09), dev
                                                       -0.03 (+0.09 to -0.09) points = 0-2 of the 2,200
                                                       (sentence, point) predictions per split; loss peak
                                                       +0.0005 nats (at most +0.0013); final train loss +0.0005

An earlier run (00:39, same code) gave the same accuracies and losses to the last digit and 70.0 / 69.6 / 37.5 s
(1.05x, 1.85x). So notebook 04 trains its curve in bf16 (``LandscapeConfig.curve_mixed_precision``, default
``"bf16"``) and keeps evaluating in fp32 (``mixed_precision: "no"``: bf16 evaluation moves accuracies by up to 1
point, benchmarks/bench_landscape.py). Without dropout (the curve trains in eval mode) the ``[CLS]``-only forward
saves little here: one layer's positions of six, and the backward of the 5 others is unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import add_precision_arg, load, median, precisions

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {"fp32 hf": ("no", "hf"), "fp32 fast": ("no", "fast"), "bf16 fast": ("bf16", "fast")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reuse", default="runs/default/03_masking_vs_finetuning", help="notebook 03's out_dir")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=None, help="curve steps (default: LandscapeConfig's)")
    ap.add_argument(
        "--out", default=None, help="CSV to write (default results/curve.csv; --quick: results/curve_quick.csv)"
    )
    ap.add_argument("--quick", action="store_true", help="seeds 0 and 1, 20 steps")
    add_precision_arg(ap)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps = args.seeds[:2], args.steps or 20
    args.out = args.out or str(Path(__file__).parent / "results" / ("curve_quick.csv" if args.quick else "curve.csv"))
    variants = {k: v for k, v in VARIANTS.items() if v[0] in precisions(args) or v[0] == "no"}

    import numpy as np
    import pandas as pd
    import torch

    from tmlib.core.stats import gap_sentence, paired_gap_table
    from tmlib.experiments import landscape as L
    from tmlib.masking.landscape import bezier_path, path_summary, train_bezier

    root = Path(__file__).resolve().parent.parent
    if not (root / args.reuse).is_dir():
        print(
            f"skipped: {args.reuse} not found; run `.venv/bin/python -m tmlib suite --params default --only 03` first"
        )
        return 0
    cfg = L.LandscapeConfig(reuse_runs=args.reuse, progress=False, out_dir="/tmp/bench_curve")
    steps = args.steps or cfg.curve_steps
    exp = L.Experiment(cfg)
    data, tok = exp.inputs()
    sols = exp.solutions()
    batches = exp.batches(sols)
    train = L.curve_train_batches(cfg, data, tok)
    a, b = f"mask-s{cfg.seeds[0]}", f"finetune-s{cfg.seeds[0]}"
    ts = [float(t) for t in np.round(np.linspace(0, 1, cfg.curve_points), 6)]
    print(
        f"curve {a} <-> {b}, {steps} steps at lr {cfg.curve_lr}, batch {cfg.batch_size}, {len(train)} batches; "
        f"evaluation fp32 at {len(ts)} points; torch threads {torch.get_num_threads()}"
    )
    for mp, kernels in variants.values():  # warm-up (first-call allocations, oneDNN kernels), not timed
        train_bezier(
            sols.template,
            sols.states[a],
            sols.states[b],
            train[:1],
            steps=2,
            lr=cfg.curve_lr,
            mixed_precision=mp,
            kernels=kernels,
            progress=False,
        )
    rows = []
    for seed in args.seeds:
        for name, (mp, kernels) in variants.items():
            t0 = time.perf_counter()
            curve = train_bezier(
                sols.template,
                sols.states[a],
                sols.states[b],
                train,
                steps=steps,
                lr=cfg.curve_lr,
                seed=seed,
                mixed_precision=mp,
                kernels=kernels,
                progress=False,
            )
            secs = time.perf_counter() - t0
            along = bezier_path(
                sols.template,
                sols.states[a],
                curve.theta,
                sols.states[b],
                {"dev": batches["dev"], "test": batches["test"]},
                ts,
                evaluate=L._evaluate(cfg),
                progress=False,
            )
            for split in ("dev", "test"):
                acc = path_summary(along, split)
                loss = along[(along.split == split)].loss
                rows.append(
                    {
                        "seed": seed,
                        "variant": name,
                        "split": split,
                        "train_seconds": secs,
                        "final_train_loss": float(curve.log.loss.tail(10).mean()),
                        "max_drop_pts": 100 * acc["max_drop"],
                        "mean_acc_pts": 100 * acc["mean_accuracy_on_0_1"],
                        "max_loss": float(loss.max()),
                        "load": os.getloadavg()[0],
                    }
                )
            print(
                f"seed {seed} {name:>10}: {secs:6.1f} s train, test drop {rows[-1]['max_drop_pts']:.2f} pts, "
                f"test mean {rows[-1]['mean_acc_pts']:.2f}, test max loss {rows[-1]['max_loss']:.3f} ({load()})",
                flush=True,
            )
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    base = df[df.split == "dev"].groupby("variant").train_seconds
    print(f"\ntraining seconds (median over {len(args.seeds)} seeds) and speed vs fp32 hf:")
    per_seed = df[df.split == "dev"].pivot(index="seed", columns="variant", values="train_seconds")
    for name in variants:
        print(f"  {name:>10}: {base.median()[name]:6.1f} s  {median(per_seed['fp32 hf'] / per_seed[name]):.2f}x")
    print("\npaired gaps (seed by seed; bf16 fast - fp32 fast, fp32 fast - fp32 hf):")
    for metric, unit in (("max_drop_pts", "points"), ("mean_acc_pts", "points"), ("max_loss", "nats")):
        table = paired_gap_table(
            df,
            by="split",
            method_col="variant",
            value_col=metric,
            pairs=[p for p in (("bf16 fast", "fp32 fast"), ("fp32 fast", "fp32 hf")) if p[0] in variants],
        )
        for _, r in table.iterrows():
            text = (
                gap_sentence(r, unit=unit)
                if unit == "points"
                # losses: 3 decimals
                else f"{r['comparison']} = {r['gap_mean']:+.4f} ± {r['ci95']:.4f} {unit} "
                f"(p = {r['p']:.2f}, {r['n_seeds']} seeds)"
            )
            print(f"  {metric:>12} {r['split']:>4}: {text}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
