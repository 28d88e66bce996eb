"""MLM training step: vocabulary projection at masked positions only vs at every position (HF).

    .venv/bin/python benchmarks/bench_mlm.py            # scratch:mini and scratch:small, batch 16 x 128 tokens,
                                                        # 5 steps each
    .venv/bin/python benchmarks/bench_mlm.py --quick    # batch 8, 3 steps each
    .venv/bin/python benchmarks/bench_mlm.py --profile
    .venv/bin/python benchmarks/bench_mlm.py --precision no     # fp32 only

Precision (issue 19): each variant runs in fp32 and under bf16 autocast (forward under autocast, backward
and AdamW as usual, as ``fit`` does with ``mixed_precision="bf16"``), all four alternating step by step.
Full and masked-only heads must agree to 1e-4 in fp32 (they compute the same loss); bf16 changes the
loss by its rounding: reported, and checked within 2% of the fp32 loss.

One step = forward + backward + AdamW update, random 15% masking, packed BBC sentences of 128 tokens.
The two variants alternate step by step on the same batches (fair under a shared, noisy CPU); the
median step time is reported, and the losses of the two are checked equal.

Profile (torch.profiler, full head, scratch:mini, batch 8 x 128, 1 thread, shared 2-core CPU,
2026-11-23): aten::mm + addmm 62% of self CPU time (the largest by far is the vocabulary projection,
1,024 positions x 256 x 30,522, forward and its two backward matmuls), log-softmax forward + backward
over 30,522 logits per position 14%, fill_/copy_ of the huge logit and gradient tensors 10%.
Gathering the ~15% masked positions before the head removes ~85% of all three. What remains is the
encoder (4 layers), the tied embedding's dense gradient (30,522 x 256) and the AdamW update; for this
model FLOPs alone bound the gain at ~2.6x (head/encoder FLOP ratio V / (12 h L) = 2.5), the measured
gain is a bit higher because the softmax and the big buffers are memory-bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import LABEL, add_precision_arg, autocast, load, precisions

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", nargs="+", default=["scratch:mini", "scratch:small"])
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: 1 if the CPU is oversubscribed, else default)"
    )
    add_precision_arg(ap)
    args = ap.parse_args()
    import torch

    from tmlib.core.runtime import adapt_threads

    torch.set_num_threads(args.threads) if args.threads else adapt_threads()

    from tmlib.core.models import load_mlm, load_tokenizer
    from tmlib.selective.collators import PlainMLMCollator
    from tmlib.selective.mlm import _ListData, pack_corpus
    from tmlib.tasks.data import load_corpus

    batch = args.batch or (8 if args.quick else 16)
    steps = args.steps or (3 if args.quick else 5)
    tok = load_tokenizer("minilm")
    packed = pack_corpus(list(load_corpus("bbc", max_sentences=4000)["text"]), tok, args.length)
    rows = _ListData(packed).rows
    col = PlainMLMCollator(tok, seed=0)
    batches = [col(rows[i * batch : (i + 1) * batch]) for i in range(steps + 1)]
    for name in args.model:
        _bench(name, load_mlm(name, seed=0), batches, batch, steps, args)


def flop_bound(config, masked_fraction: float = 0.15) -> float:
    """Speed-up bound from matmul FLOPs alone: (encoder + head at every position) / (encoder + head at the
    masked positions), per token, counting weights only (the head: transform h^2 + projection h V)."""
    h, L, inter, V = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    encoder = L * (4 * h * h + 2 * h * inter)
    head = h * h + h * V
    return (encoder + head) / (encoder + masked_fraction * head)


def _bench(model_name, model, batches, batch, steps, args) -> None:
    import torch

    from tmlib.core.training import make_optimizer
    from tmlib.selective.mlm import MaskedOnlyMLM

    opt = make_optimizer(torch.optim.AdamW, [{"params": list(model.parameters())}], 1e-4)  # what fit uses
    full, fast = "full head (HF)", "masked positions only"
    heads = {full: MaskedOnlyMLM(model, masked_only=False), fast: MaskedOnlyMLM(model, masked_only=True)}
    mps = precisions(args)
    variants = [(h, mp) for mp in mps for h in heads]
    times = {k: [] for k in variants}
    fb = {k: [] for k in variants}
    loss = {}
    with torch.no_grad():
        for h, mp in variants:
            with autocast(mp):
                loss[h, mp] = heads[h].eval()(**batches[0]).loss.item()
    model.train()
    for b in batches:
        for h, mp in variants:
            t = time.perf_counter()
            with autocast(mp):
                out = heads[h](**b)
            out.loss.backward()
            fb[h, mp].append(time.perf_counter() - t)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times[h, mp].append(time.perf_counter() - t)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}  # first step = warm-up
    med_fb = {k: statistics.median(v[1:]) for k, v in fb.items()}
    n_tok = int(batches[1]["attention_mask"].sum())
    print(
        f"MLM step, {model_name}, batch {batch} x {args.length} tokens ({n_tok} real), {steps} steps each, "
        f"torch threads {torch.get_num_threads()}, {load()}"
    )
    print(f"{'variant':<26}{'precision':>10}{'s/step':>10}{'fwd+bwd s':>11}{'tokens/s':>12}{'eval loss':>11}")
    for k, v in med.items():
        print(f"{k[0]:<26}{LABEL[k[1]]:>10}{v:>10.3f}{med_fb[k]:>11.3f}{n_tok / v:>12.0f}{loss[k]:>11.4f}")
    for mp in mps:
        d = abs(loss[full, mp] - loss[fast, mp])
        print(
            f"{LABEL[mp]}: speed-up {med[full, mp] / med[fast, mp]:.2f}x per step (incl. AdamW), "
            f"{med_fb[full, mp] / med_fb[fast, mp]:.2f}x forward+backward;   |loss diff| (eval, same batch): {d:.2e}"
        )
        assert d < (1e-4 if mp == "no" else 2e-2 * loss[full, "no" if "no" in mps else mp]), (
            "the two heads' losses differ"
        )
    if len(mps) == 2:
        rel = abs(loss[fast, "bf16"] - loss[fast, "no"]) / loss[fast, "no"]
        print(
            f"bf16 vs fp32: {med[fast, 'no'] / med[fast, 'bf16']:.2f}x per step (masked only), "
            f"{med[full, 'no'] / med[full, 'bf16']:.2f}x (full head); loss differs by {rel:.2%} (tolerance 2%)"
        )
        assert rel < 0.02, "bf16 changes the MLM loss by more than 2%"
    bound = flop_bound(model.config, float((batches[1]["labels"] != -100).float().mean()))
    mp = mps[0]
    print(
        f"matmul-FLOP bound for this model at this batch's masked share: {bound:.2f}x; "
        f"measured fwd+bwd ({LABEL[mp]}) is {med_fb[full, mp] / med_fb[fast, mp] / bound:.0%} of it\n"
    )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            heads[full](**batches[1]).loss.backward()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
