"""Issue 7.3: masked-linear overhead. Step time of mask training vs fine-tuning (and BitFit), and
inference of a masked model with the mask folded into the weights vs applied on the fly.

    .venv/bin/python benchmarks/bench_masking.py            # MiniLM-L6, batch 32 MR sentences, 10 timed steps
    .venv/bin/python benchmarks/bench_masking.py --quick    # 4 timed steps, 10 inference reps

All variants run here, one after the other, on the same batch (bs 32, padded to the longest sentence
of the batch, max 64 tokens), after 2 warm-up steps each; the median step time is reported, and the
ratios are computed within this one run. The folded and on-the-fly forward passes are checked to be
bit-identical. A torch.profiler pass over a mask-training step shows where its time goes.

Precision (issue 19, ``--precision both`` default): every row in fp32 and under bf16 autocast (training:
forward under autocast, backward and optimizer step as ``fit`` runs them), side by side; the folded vs
on-the-fly check holds in both (exact, or to 1e-2 in bf16), and the bf16 logits' largest difference
from fp32 is reported (tolerance 0.1 on logits of an untrained head).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import LABEL, add_precision_arg, autocast, load, precisions

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _time(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    add_precision_arg(ap)
    args = ap.parse_args()
    import torch

    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.masking import MaskConfig, fold_masks, to_plain
    from tmlib.masking.methods import prepare_method
    from tmlib.tasks.data import load_task

    steps, reps = (4, 10) if args.quick else (10, 30)
    tok = load_tokenizer(args.model)
    data = load_task("mr")["train"]
    batch = tok(
        list(data["text"][: args.batch_size]),
        padding=True,
        truncation=True,
        max_length=args.max_length,
        return_tensors="pt",
    )
    batch["labels"] = torch.tensor(list(data["label"][: args.batch_size]))
    print(
        f"model {args.model}, batch {tuple(batch['input_ids'].shape)}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {load()}"
    )
    mps = precisions(args)

    def step_fn(method, mp="no"):
        prep = prepare_method(
            method, load_classifier(args.model, ["neg", "pos"], seed=0), seed=0, mask_config=MaskConfig()
        )
        opt = prep.optimizer_cls(prep.params, lr=prep.lr, weight_decay=prep.weight_decay)
        model = prep.model.train()

        def run():
            with autocast(mp):
                out = model(**batch)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return prep, run

    train = {}
    for mp in mps:
        for method in ("finetune", "bitfit", "mask"):
            prep, run = step_fn(method, mp)
            train[method, mp] = _time(run, steps)
            print(
                f"train step  {method:9s} {LABEL[mp]} {train[method, mp] * 1000:8.1f} ms   "
                f"({prep.n_trainable:,} trainable, {load()})"
            )
    for mp in mps:
        print(
            f"  {LABEL[mp]}: ratio mask / finetune step time:   {train['mask', mp] / train['finetune', mp]:.2f}x; "
            f"bitfit / finetune: {train['bitfit', mp] / train['finetune', mp]:.2f}x"
        )
    if len(mps) == 2:
        print(
            "  bf16 speed-up over fp32 per step: "
            + ", ".join(f"{m} {train[m, 'no'] / train[m, 'bf16']:.2f}x" for m in ("finetune", "bitfit", "mask"))
        )

    prep, run = step_fn("mask")
    masked = prep.model.eval()
    plain = to_plain(masked).eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    infer, logits = {}, {}
    with torch.no_grad():
        for mp in mps:
            with autocast(mp):
                ref = logits[mp] = masked(**inputs).logits.float()
                infer["on the fly", mp] = _time(lambda: masked(**inputs), reps)
                fold_masks(masked)
                diff = float((masked(**inputs).logits.float() - ref).abs().max())
                assert diff == 0 or (mp != "no" and diff < 1e-2), f"folded forward differs from on-the-fly ({diff})"
                infer["folded", mp] = _time(lambda: masked(**inputs), reps)
                fold_masks(masked, False)
                infer["plain HF", mp] = _time(lambda: plain(**inputs), reps)
            print(f"  {LABEL[mp]}: folded vs on-the-fly max |logit difference| {diff:.1e}")
    for (k, mp), v in infer.items():
        print(f"inference   {k:11s} {LABEL[mp]} {v * 1000:8.1f} ms / batch")
    for mp in mps:
        print(
            f"  {LABEL[mp]}: speed-up folded vs on the fly: {infer['on the fly', mp] / infer['folded', mp]:.2f}x "
            f"(folded vs plain HF: {infer['folded', mp] / infer['plain HF', mp]:.2f}x time)"
        )
    if len(mps) == 2:
        d = float((logits["bf16"] - logits["no"]).abs().max())
        print(
            f"  bf16 vs fp32: folded inference {infer['folded', 'no'] / infer['folded', 'bf16']:.2f}x faster; "
            f"max |logit difference| {d:.1e} (tolerance 0.1)"
        )
        assert d < 0.1, "bf16 logits too far from fp32"

    from torch.profiler import ProfilerActivity, profile

    prep, run = step_fn("mask")
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print("mask-training step, top ops by self CPU time:")
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:6]:
        print(f"  {e.key:32s} {100 * e.self_cpu_time_total / total:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
