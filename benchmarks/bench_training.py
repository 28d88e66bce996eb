"""Fine-tuning cost: the two changes to :func:`tmlib.core.training.fit` that make a fine-tuning run 1.58x faster.

    .venv/bin/python benchmarks/bench_training.py            # MiniLM-L6, MR, 500 train sentences, 2 epochs
    .venv/bin/python benchmarks/bench_training.py --quick    # 128 sentences, 1 epoch

Four runs of :func:`tmlib.core.training.fit` with :class:`tmlib.tasks.classify.Classification` on the same data,
in one process, one after the other:
per-parameter AdamW vs the fused kernel (``make_optimizer``), and plain shuffled batches vs
:class:`~tmlib.core.training.LengthGroupedBatches`. Reported: wall seconds per run (training plus the dev/test
evaluations), padded positions per epoch, and each run's ratio to the old path (loop AdamW, plain
batches). A torch.profiler pass over one step of the old path shows what the changes removed.

Precision (issue 19, ``--precision both`` default): the four runs in fp32 (``TrainConfig.mixed_precision
="no"``) and in bf16 (``"bf16"``: autocast through accelerate), side by side, each bf16 run's ratio to its
fp32 twin, and the test accuracies: bf16 must stay within 0.05 of the fp32 twin's (0.10 with --quick,
128 test sentences), a few sentences of seed-level noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import LABEL, add_precision_arg, load, precisions

from tmlib.core.training import fit
from tmlib.tasks.classify import Classification


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="128 sentences, 1 epoch")
    ap.add_argument("--model", default="minilm")
    add_precision_arg(ap)
    args = ap.parse_args()
    import numpy as np
    import torch

    from tmlib.core import training
    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.tasks.data import label_names, load_task

    n, epochs = (128, 1.0) if args.quick else (500, 2.0)
    tok = load_tokenizer(args.model)
    task = load_task("mr", seed=0, max_examples=n)
    lengths = [len(x) for x in tok(list(task["train"]["text"]), truncation=True, max_length=48)["input_ids"]]
    cfg = training.TrainConfig(
        lr=2e-4, batch_size=32, epochs=epochs, max_length=48, seed=0, progress=False, group_by_length=True
    )  # the loader patch below turns it off for "shuffled"
    print(
        f"model {args.model}, {n} MR train sentences (mean {np.mean(lengths):.1f} tokens, max 48), batch 32, "
        f"{epochs:g} epochs, {torch.get_num_threads()} threads, torch {torch.__version__}, {load()}"
    )

    def padded_positions(grouped: bool) -> int:
        if grouped:
            batches = list(training.LengthGroupedBatches(lengths, 32, seed=0))
        else:
            perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
            batches = [perm[i : i + 32] for i in range(0, len(perm), 32)]
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    def run(fused: bool, grouped: bool, mp: str = "no") -> tuple[float, float]:
        orig_loader, orig_opt = training._loader, training.make_optimizer

        def loader(data, bs, collate, shuffle, seed, lengths=None):
            return orig_loader(data, bs, collate, shuffle, seed, lengths if grouped else None)

        def opt(cls, groups, lr):
            return orig_opt(cls, groups, lr) if fused else cls(groups, lr=lr)

        model = load_classifier(args.model, label_names(task), seed=0)
        with mock.patch.object(training, "_loader", loader), mock.patch.object(training, "make_optimizer", opt):
            t = time.perf_counter()
            res = fit(model, task, dataclasses.replace(cfg, mixed_precision=mp), Classification(tok))
            return time.perf_counter() - t, res.test["accuracy"]

    rows = {}
    mps = precisions(args)
    for fused, grouped in ((False, False), (True, False), (False, True), (True, True)):
        for mp in mps:  # fp32 and bf16 twins back to back: the same load for both
            rows[fused, grouped, mp] = run(fused, grouped, mp) + (os.getloadavg()[0],)
    base = {mp: rows[False, False, mp][0] for mp in mps}
    print(
        f"{'optimizer':<10} {'batches':<15} {'precision':<10} {'seconds':>8} {'ratio':>7} {'vs fp32':>8} "
        f"{'padded pos/epoch':>17} {'test acc':>9} {'load':>5}"
    )
    tol = 0.10 if args.quick else 0.05
    for (fused, grouped, mp), (sec, acc, ld) in rows.items():
        twin = rows.get((fused, grouped, "no"))
        vs = f"{twin[0] / sec:7.2f}x" if twin and mp != "no" else f"{'':>8}"
        print(
            f"{'fused' if fused else 'loop':<10} {'length-grouped' if grouped else 'shuffled':<15} {LABEL[mp]:<10} "
            f"{sec:8.1f} {base[mp] / sec:6.2f}x {vs} {padded_positions(grouped):17d} {acc:9.3f} {ld:5.1f}"
        )
        if twin and mp != "no":
            assert abs(acc - twin[1]) <= tol, f"bf16 test accuracy {acc:.3f} vs fp32 {twin[1]:.3f} (tolerance {tol})"
    print(
        "ratio: against the old path (loop AdamW, shuffled) of the same precision; vs fp32: the fp32 twin's "
        "seconds / this run's"
    )

    # where one step of the old path goes
    from torch.profiler import ProfilerActivity, profile

    model = load_classifier(args.model, label_names(task), seed=0).train()
    batch = tok(list(task["train"]["text"][:32]), padding=True, truncation=True, max_length=48, return_tensors="pt")
    batch["labels"] = torch.tensor(list(task["train"]["label"][:32]))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        model(**batch).loss.backward()
        optim.step()
        optim.zero_grad()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    print("\nprofile of 2 steps of the old path (loop AdamW, batch padded to its longest of 32 shuffled sentences):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
