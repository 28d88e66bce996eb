"""Issue 7.4: interpolation points evaluated per second, naive vs tmlib.masking.landscape.

    .venv/bin/python benchmarks/bench_landscape.py            # MiniLM, 400 and 64 MR dev sentences, 6 points
    .venv/bin/python benchmarks/bench_landscape.py --quick    # 128 and 32 sentences, 3 points

naive: per point, deep-copy the model, build the interpolated state dict, load it, re-tokenise the
       dev texts and evaluate them in dataset order (batches padded to their longest sentence).
ours:  ``tmlib.masking.landscape.linear_path``: one scratch model written in place with ``torch.lerp``,
       tokenised, padded, length-sorted batches built once (``EvalBatches``) and reused.
Both run here, interleaved, on the same data and gammas; the script checks that they agree (same
accuracy, same loss to 1e-4) and prints points/s and the ratio, plus where ours spends its time.
Forward passes dominate both, so the ratio is largest for small evaluation sets (plane points).

Precision (issue 19, ``--precision both`` default): each size is measured in fp32 and under bf16 autocast
(both variants inside it), side by side. Agreement of naive and ours: fp32 loss to 1e-4 and the same
accuracy; bf16 (batch shapes differ, so rounding does) loss to 1e-2 and accuracy within 1%. The bf16
path's largest loss / accuracy difference from the fp32 path is reported too.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import LABEL, add_precision_arg, autocast, load, precisions

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def naive_path(template, sa, sb, texts, labels, tokenizer, gammas, batch_size, max_length):
    import torch

    rows = []
    for g in gammas:
        model = copy.deepcopy(template)
        model.load_state_dict({k: ((1 - g) * v + g * sb[k]) if v.is_floating_point() else v for k, v in sa.items()})
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(
                    texts[i : i + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
                )
                y = torch.tensor(labels[i : i + batch_size])
                out = model(**enc, labels=y)
                loss_sum += out.loss.item() * len(y)
                correct += (out.logits.argmax(-1) == y).sum().item()
        rows.append((g, loss_sum / len(texts), correct / len(texts)))
    return rows


def measure(a, sa, sb, dev, tok, gammas, batch_size, max_length, mp="no"):
    """One size: naive and ours, interleaved (naive, ours, ours, naive) so load changes hit both alike."""
    import torch

    from tmlib.masking.landscape import _Scratch, linear_path
    from tmlib.tasks.classify import EvalBatches, encode

    texts, labels = list(dev["text"]), list(dev["label"])
    t = {"naive": 0.0, "ours": 0.0, "tok": 0.0}
    for who in ("naive", "ours", "ours", "naive"):
        t0 = time.perf_counter()
        if who == "naive":
            with autocast(mp):
                ref = naive_path(a, sa, sb, texts, labels, tok, gammas, batch_size, max_length)
        else:
            batches = EvalBatches(encode(dev, tok, max_length), tok, batch_size=batch_size)
            t["tok"] += time.perf_counter() - t0
            with autocast(mp):
                df = linear_path(a, sa, sb, batches, gammas, progress=False)
        t[who] += time.perf_counter() - t0
    scratch = _Scratch(a, None, sa)
    t0 = time.perf_counter()
    for g in gammas:
        scratch.load(lambda key, x, g=g: torch.lerp(sa[key], sb[key], g, out=x) if x.is_floating_point() else None)
    t_lerp = time.perf_counter() - t0
    tol_loss, tol_acc = (1e-4, 0.0) if mp == "no" else (1e-2, 0.01)
    ok = all(
        abs(r[1] - loss) <= tol_loss and abs(r[2] - acc) <= tol_acc for r, loss, acc in zip(ref, df.loss, df.accuracy)
    )
    pad_naive = sum(
        len(tok(texts[i : i + batch_size], padding=True)["input_ids"][0]) * len(texts[i : i + batch_size])
        for i in range(0, len(texts), batch_size)
    )
    pad_ours = sum(b_["input_ids"].numel() for b_ in batches.batches)
    k = 2 * len(gammas)
    print(
        f"  {LABEL[mp]} ({load()}) naive: {k / t['naive']:6.2f} points/s   ours: {k / t['ours']:6.2f} points/s   "
        f"ratio ours/naive {t['naive'] / t['ours']:.2f}x   results agree: {ok}"
    )
    print(
        f"  ours per point: tokenise once {t['tok'] / 2:.2f} s per path, "
        f"writing weights {t_lerp / len(gammas):.3f} s, "
        f"the rest is forward passes; token positions per pass: naive {pad_naive}, ours {pad_ours} "
        f"({pad_naive / pad_ours:.2f}x fewer, length-sorted batches)"
    )
    return ok, t["ours"], df


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sets, 3 points")
    ap.add_argument("--model", default="minilm")
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=None,
        help="dev sentences per point (default 400 = a path split, 64 = a plane point; quick 128 32)",
    )
    ap.add_argument("--points", type=int, default=None, help="gammas per path (default 6, quick 3)")
    add_precision_arg(ap)
    args = ap.parse_args()
    import numpy as np
    import torch

    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.tasks.data import label_names, load_task

    sizes = args.sizes or ([128, 32] if args.quick else [400, 64])
    k = args.points or (3 if args.quick else 6)
    batch_size, max_length = 64, 64
    dd = load_task("mr", seed=0)
    tok = load_tokenizer(args.model)
    names = label_names(dd)
    a = load_classifier(args.model, names, seed=0)
    b = load_classifier(args.model, names, seed=1)
    with torch.no_grad():  # make B a different solution everywhere, not only in the head
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sa, sb = a.state_dict(), b.state_dict()
    gammas = np.linspace(-0.2, 1.2, k).tolist()
    print(
        f"model {args.model}, MR dev sentences, {k} points x 2 runs per variant (interleaved), batch {batch_size}, "
        f"max_length {max_length}, {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}"
    )
    ok = True
    for n in sizes:
        print(f"{n} sentences per point:")
        res = {}
        for mp in precisions(args):
            res[mp] = measure(
                a, sa, sb, dd["dev"].select(range(min(n, len(dd["dev"])))), tok, gammas, batch_size, max_length, mp
            )
            ok &= res[mp][0]
        if len(res) == 2:
            f, h = res["no"][2], res["bf16"][2]
            print(
                f"  bf16 vs fp32 (ours): {res['no'][1] / res['bf16'][1]:.2f}x faster; largest |loss difference| "
                f"{float((f.loss - h.loss).abs().max()):.1e}, |accuracy difference| "
                f"{float((f.accuracy - h.accuracy).abs().max()):.3f}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
