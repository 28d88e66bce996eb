"""``TrainConfig.kernels``: the "fast" forward against the model's own ("hf"), per training step.

    .venv/bin/python benchmarks/bench_kernels.py            # 5 interleaved rounds of 4 steps, fp32 + bf16
    .venv/bin/python benchmarks/bench_kernels.py --quick    # 2 rounds of 2 steps

One training step (forward, backward, fused AdamW) of MiniLM, timed with the forward each setting gives
(:func:`tmlib.core.precision.kernels_context` for the attention, :class:`tmlib.tasks.cls_forward.ClsOnlyClassifier`
for a classifier under "fast"), on the shapes the notebooks train:

* ``classifier 16 x 48``: a batch of notebook 03 (batch 16, MR rows padded to their batch's longest; here
  a third of the rows are padded from 2/3 of the width);
* ``classifier 32 x 64``: notebook 01's fine-tuning / scorer batches at their widest;
* ``MLM 32 x 64``: GenePT / TaskPT (packed rows, loss at the masked positions only: ``MaskedOnlyMLM``).
  The [CLS]-only forward does not apply to MLM: "fast" is the eager attention alone there.

Every variant gets its own model and optimizer, all built before timing; rounds interleave the variants,
medians are reported with each fast / hf ratio (> 1: fast is faster), fp32 and bf16 side by side.
The numbers the two settings compute differ by float rounding only (the same dropout draws); the paired
accuracy checks of whole notebooks are in the README (01 and 03 results).

Measured 2026-11-24 23:05 (idle 2-core AMD EPYC, load 1.9, 2 torch threads, torch 2.13.0+cpu), ms per step:

    shape                      fp32 hf   fp32 fast   ratio     bf16 hf   bf16 fast   ratio
    classifier 16 x 48           307ms       273ms   1.13x       139ms       128ms   1.09x
    classifier 32 x 64           837ms       740ms   1.13x       352ms       328ms   1.07x
    MLM 32 x 64                 1039ms      1059ms   0.98x       433ms       429ms   1.01x

Whole training runs in ``make run`` gained more (notebook 03: 1.28x median over 40 runs; README).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import LABEL, add_precision_arg, autocast, load, precisions

SHAPES = {"classifier 16 x 48": ("cls", 16, 48), "classifier 32 x 64": ("cls", 32, 64), "MLM 32 x 64": ("mlm", 32, 64)}


def build(kind: str, kernels: str, b: int, n: int):
    """(step function, what it trains) for one variant; the step runs under the caller's autocast."""
    import torch

    from tmlib.core.models import load_classifier, load_mlm
    from tmlib.core.precision import kernels_context
    from tmlib.selective.mlm import MaskedOnlyMLM
    from tmlib.tasks.cls_forward import ClsOnlyClassifier

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (b, n), generator=g)
    att = torch.ones(b, n, dtype=torch.long)
    if kind == "cls":
        att[: b // 3, 2 * n // 3 :] = 0
        model = load_classifier("minilm", ["neg", "pos"], seed=0).train()
        net = ClsOnlyClassifier(model) if kernels == "fast" else model
        batch = {"input_ids": ids, "attention_mask": att, "labels": torch.randint(0, 2, (b,), generator=g)}
    else:
        model = load_mlm("minilm", seed=0).train()
        net = MaskedOnlyMLM(model)
        labels = torch.full((b, n), -100)
        pick = torch.rand(b, n, generator=g) < 0.15
        labels[pick] = ids[pick]
        batch = {"input_ids": ids, "attention_mask": att, "labels": labels}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    kernels_context(net, kernels, "cpu").__enter__()  # this model keeps the setting's attention for good

    def step(mp: str) -> None:
        with autocast(mp):
            loss = net(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_precision_arg(ap)
    args = ap.parse_args()
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, steps = (2, 2) if args.quick else (5, 4)
    mps = precisions(args)
    print(
        f"MiniLM training steps, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {rounds} rounds x {steps} steps, {load()}"
    )
    variants = {
        (shape, k): build(*SHAPES[shape][:1], k, *SHAPES[shape][1:]) for shape in SHAPES for k in ("hf", "fast")
    }
    for step in variants.values():  # untimed warm-up, every precision
        for mp in mps:
            step(mp)
    times: dict = {}
    for r in range(rounds):
        for mp in mps:
            for key, step in variants.items() if r % 2 == 0 else reversed(list(variants.items())):
                t = time.perf_counter()
                for _ in range(steps):
                    step(mp)
                times.setdefault((*key, mp), []).append((time.perf_counter() - t) / steps * 1000)
        print(f"  round {r + 1} done ({load()})", flush=True)
    med = statistics.median
    print(f"\n{'shape':<22}" + "".join(f"{LABEL[mp] + ' hf':>12}{LABEL[mp] + ' fast':>12}{'ratio':>8}" for mp in mps))
    for shape in SHAPES:
        cells = []
        for mp in mps:
            hf, fast = med(times[shape, "hf", mp]), med(times[shape, "fast", mp])
            cells.append(f"{hf:>10.0f}ms{fast:>10.0f}ms{hf / fast:>7.2f}x")
        print(f"{shape:<22}" + "".join(cells))
    print(f"(ms per step, median of {rounds} rounds; ratio = hf / fast, > 1: fast is faster; {load()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
