"""Attribution speed: batched leave-one-out occlusion (all occluded variants of several sentences in one
forward pass) vs the naive loop (one forward pass of batch 1 per occluded variant), plus the cost per
sentence of gradient x input and integrated gradients, on MR dev sentences.

    .venv/bin/python benchmarks/bench_attribution.py            # 48 sentences, minilm
    .venv/bin/python benchmarks/bench_attribution.py --quick    # 12 sentences

Both occlusion variants must give the same scores (checked, atol 1e-5). Speed does not depend on the
classifier's weights, so an untrained head is used.

Measured 2026-11-23 (--quick, 12 sentences / 290 WordPieces, minilm, shared 2-core CPU at load ~6, so
absolute times are slow; the ratio is within one run): naive occlusion 182 s, batched 15.1 s (12.1x,
max |difference| 6e-8); grad x input 2.9 s; integrated gradients (16 steps) 40.5 s.

Precision (issue 19, ``--precision both`` default): every row in fp32 and under bf16 autocast, side by
side. Batched and naive occlusion must agree to 1e-5 in fp32 and 2e-2 in bf16 (the batch shapes differ,
so the rounding does); bf16 vs fp32 scores are compared for every method and reported (occlusion
checked within 5e-2, probability differences; the gradient methods' relative difference is printed).
``--quick`` times the naive loop on 4 sentences only (sentences/s compare), the rest on 12.
"""

from __future__ import annotations

import argparse
import os
import time

from _common import LABEL, add_precision_arg, autocast, load, precisions

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def naive_occlusion(model, tok, texts, max_length):
    import numpy as np
    import torch

    out = []
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
            p = torch.softmax(model(input_ids=torch.tensor([ids])).logits, -1)[0]
            c = int(p.argmax())
            scores = []
            for i in range(1, len(ids) - 1):
                q = torch.softmax(model(input_ids=torch.tensor([ids[:i] + ids[i + 1 :]])).logits, -1)[0, c]
                scores.append(float(p[c] - q))
            out.append(np.asarray(scores))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="MR dev sentences")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-length", type=int, default=64)
    add_precision_arg(ap)
    args = ap.parse_args()
    import numpy as np

    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.importance.attribution import grad_x_input, integrated_gradients, occlusion
    from tmlib.tasks.data import load_task

    n = args.n or (12 if args.quick else 48)
    tok = load_tokenizer("minilm")
    model = load_classifier(args.model, ["negative", "positive"], seed=0).eval()
    texts = list(load_task("mr")["dev"]["text"][:n])
    n_tok = sum(len(tok.tokenize(t)[: args.max_length - 2]) for t in texts)
    n_naive = 4 if args.quick else n
    occlusion(model, tok, texts[:2], max_length=args.max_length)  # warm-up
    mps = precisions(args)
    rows, scores, speedup, worst = [], {}, {}, {}
    for mp in mps:
        with autocast(mp):
            t = time.perf_counter()
            fast = occlusion(model, tok, texts, max_length=args.max_length)
            t_fast = time.perf_counter() - t
            t = time.perf_counter()
            slow = naive_occlusion(model, tok, texts[:n_naive], args.max_length)
            t_slow = time.perf_counter() - t
        worst[mp] = max(float(np.abs(a.scores - b).max()) for a, b in zip(fast, slow))
        tol = 1e-5 if mp == "no" else 2e-2
        assert worst[mp] < tol, f"batched and naive occlusion differ by {worst[mp]} ({LABEL[mp]})"
        rows.append((f"occlusion, naive (batch 1 per variant), {n_naive} sent.", mp, t_slow, n_naive))
        rows.append(("occlusion, batched", mp, t_fast, n))
        speedup[mp] = (t_slow / n_naive) / (t_fast / n)
        scores["occlusion", mp] = fast
        for name, fn, kw in (
            ("grad x input", grad_x_input, {}),
            ("integrated gradients, 16 steps", integrated_gradients, {"n_steps": 16}),
        ):
            with autocast(mp):
                t = time.perf_counter()
                scores[name, mp] = fn(model, tok, texts, max_length=args.max_length, **kw)
                rows.append((name, mp, time.perf_counter() - t, n))
    print(f"{n} MR dev sentences, {n_tok} WordPieces, model {args.model}, max_length {args.max_length}, {load()}")
    for name, mp, sec, k in rows:
        print(f"  {name:<46} {LABEL[mp]} {sec:7.2f} s  {k / sec:7.1f} sentences/s")
    for mp in mps:
        print(
            f"  {LABEL[mp]}: batched occlusion speed-up over naive: {speedup[mp]:.1f}x per sentence "
            f"(max |difference| {worst[mp]:.1e})"
        )
    if len(mps) == 2:
        sec = {(name, mp): s_ for name, mp, s_, _ in rows}
        for name in ("occlusion", "grad x input", "integrated gradients, 16 steps"):
            a, b = scores[name, "no"], scores[name, "bf16"]
            d = max(float(np.abs(x.scores - y.scores).max()) for x, y in zip(a, b))
            rel = d / max(max(float(np.abs(x.scores).max()) for x in a), 1e-12)
            key = "occlusion, batched" if name == "occlusion" else name
            print(
                f"  bf16 vs fp32, {name}: {sec[key, 'no'] / sec[key, 'bf16']:.2f}x faster, max |score difference| "
                f"{d:.1e} ({rel:.1%} of the largest |score|)"
            )
            if name == "occlusion":
                assert d < 5e-2, "bf16 occlusion scores too far from fp32"


if __name__ == "__main__":
    main()
