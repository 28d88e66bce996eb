"""Buffer-method token importance: batched (all candidate buffers of a step in one forward pass) vs the
plain reference (one forward pass of batch 1 per token), sentences/s on MR sentences.

    .venv/bin/python benchmarks/bench_importance.py            # 64 sentences, scorers minilm and scratch:mini
    .venv/bin/python benchmarks/bench_importance.py --quick    # 16 sentences
    .venv/bin/python benchmarks/bench_importance.py --model minilm --profile

Scorers: ``minilm`` (the default pipeline's scorer: 6 layers, hidden 384) and ``scratch:mini`` (4 layers,
hidden 256); speed does not depend on the weights. ``only_correct=False`` so every sentence is walked (the
same work in both variants). Both variants must give identical labels; the script checks it.

Beside the times it counts the token positions each variant computes (padding included) and converts
them to GFLOP/s (forward, weights only), next to this CPU's rate on a 1024 x 1024 GEMM measured in the
same run. The "ceiling" is the speed-up the batched variant would reach running at that GEMM rate: the
reference's own efficiency bounds what batching can win. The batched variant computes the same candidate
rows (plus a little padding), so no reordering of the work can beat that ceiling; only skipping
candidates would, and the method needs every one of them.

Profile (torch.profiler, reference variant, 16 sentences, 1 thread, shared 2-core CPU, 2026-11-23):
aten::addmm is 71% of self CPU time, 2,236 calls at ~0.45 ms each although every call is tiny
(~15 tokens x 256 by 256 x 256, ~2 MFLOP): the cost is per call (BLAS dispatch and packing for tiny
matrices, plus ~5,700 transpose/as_strided/view ops of the module stack), not arithmetic. The batched
variant makes the same number of calls per STEP for all sentences of a batch, so that per-call cost
is paid once per step instead of once per token; what remains is real matmul work on padded rows.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="MR sentences")
    ap.add_argument("--model", nargs="+", default=["minilm", "scratch:mini"],
                    help="scorers (minilm = the default pipeline's scorer)")
    ap.add_argument("--batch", type=int, default=64, help="sentences walked together (batched variant)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: 1 if the CPU is oversubscribed, else default)")
    args = ap.parse_args()
    import torch

    from tmlib.runtime import adapt_threads

    torch.set_num_threads(args.threads) if args.threads else adapt_threads()

    from tmlib.data import load_task
    from tmlib.importance.buffer import BufferConfig, buffer_importance, buffer_importance_reference
    from tmlib.models import load_classifier, load_tokenizer

    n = args.n or (16 if args.quick else 64)
    tok = load_tokenizer("minilm")
    ds = load_task("mr")["dev"]
    texts, labels = list(ds["text"][:n]), list(ds["label"][:n])
    peak = _matmul_peak()
    print(f"this CPU's fp32 matmul rate (1024 x 1024 GEMM, {torch.get_num_threads()} threads): {peak:.0f} GFLOP/s\n")
    for name in args.model:
        _bench(name, load_classifier(name, ["negative", "positive"], seed=0).eval(), tok, texts, labels, peak, args)


def _matmul_peak(size: int = 1024, reps: int = 20) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size ** 3 * reps / (time.perf_counter() - t) / 1e9


class _Positions:
    """Counts the token positions (padding included) a model's forward passes compute."""

    def __init__(self, model):
        self.n = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.n += int(kwargs["input_ids"].numel())


def _bench(name, model, tok, texts, labels, peak, args) -> None:
    import torch

    from tmlib.importance.buffer import BufferConfig, buffer_importance, buffer_importance_reference

    n = len(texts)
    emb = model.get_input_embeddings().weight.numel()
    flops_per_position = 2 * (sum(p.numel() for p in model.parameters()) - emb)   # weights only, forward
    cfg = BufferConfig(only_correct=False, sentence_batch=args.batch, progress=False, max_length=64)
    n_tok = sum(len(tok.tokenize(t)[:62]) for t in texts)
    buffer_importance(model, tok, texts[:4], labels[:4], cfg)  # warm-up
    count = _Positions(model)
    with torch.inference_mode():
        t = time.perf_counter()
        count.n = 0
        fast = buffer_importance(model, tok, texts, labels, cfg)
        t_fast, pos_fast = time.perf_counter() - t, count.n
        t = time.perf_counter()
        count.n = 0
        ref = buffer_importance_reference(model, tok, texts, labels, cfg)
        t_ref, pos_ref = time.perf_counter() - t, count.n
    same = all(f.important.tolist() == r.important.tolist() for f, r in zip(fast, ref))
    rows = [("reference (1 pass / token)", t_ref, pos_ref), ("batched (1 pass / step)", t_fast, pos_fast)]
    print(f"buffer importance, {name}, {n} MR sentences ({n_tok} WordPieces), torch threads {torch.get_num_threads()}")
    print(f"{'variant':<30}{'seconds':>10}{'sent/s':>10}{'positions':>11}{'GFLOP/s':>9}")
    for label, sec, pos in rows:
        print(f"{label:<30}{sec:>10.2f}{n / sec:>10.1f}{pos:>11d}{flops_per_position * pos / sec / 1e9:>9.1f}")
    ref_rate = flops_per_position * pos_ref / t_ref / 1e9
    print(f"speed-up: {t_ref / t_fast:.1f}x   identical labels: {same}   ceiling at this CPU's matmul rate: "
          f"{peak / ref_rate * pos_ref / pos_fast:.1f}x (the reference already runs at {ref_rate / peak:.0%} of it)\n")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
            buffer_importance_reference(model, tok, texts[:4], labels[:4], cfg)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
