"""Issue 7.4: interpolation points evaluated per second, naive vs tmlib.landscape.

    .venv/bin/python benchmarks/bench_landscape.py            # MiniLM, 400 MR dev sentences, 8 points
    .venv/bin/python benchmarks/bench_landscape.py --quick    # 128 sentences, 4 points

naive: per point, deep-copy the model, build the interpolated state dict, load it, re-tokenise the
       dev texts and evaluate them in dataset order (batches padded to their longest sentence).
ours:  ``tmlib.landscape.linear_path``: one scratch model written in place with ``torch.lerp``,
       tokenised, padded, length-sorted batches built once (``EvalBatches``) and reused.
Both run here, one after the other, on the same data and gammas; the script checks that they agree
(same accuracy, same loss to 1e-4) and prints points/s and the ratio, plus where ours spends its time.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
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
                enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                                return_tensors="pt")
                y = torch.tensor(labels[i:i + batch_size])
                out = model(**enc, labels=y)
                loss_sum += out.loss.item() * len(y)
                correct += (out.logits.argmax(-1) == y).sum().item()
        rows.append((g, loss_sum / len(texts), correct / len(texts)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="128 sentences, 4 points")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--examples", type=int, default=None, help="dev sentences (default 400, quick 128)")
    ap.add_argument("--points", type=int, default=None, help="gammas per path (default 8, quick 4)")
    args = ap.parse_args()
    import numpy as np
    import torch

    from tmlib.data import label_names, load_task
    from tmlib.landscape import linear_path
    from tmlib.models import load_classifier, load_tokenizer
    from tmlib.training import EvalBatches, encode

    n = args.examples or (128 if args.quick else 400)
    k = args.points or (4 if args.quick else 8)
    batch_size, max_length = 64, 128
    dd = load_task("mr", seed=0)
    dev = dd["dev"].select(range(min(n, len(dd["dev"]))))
    tok = load_tokenizer(args.model)
    names = label_names(dd)
    a = load_classifier(args.model, names, seed=0)
    b = load_classifier(args.model, names, seed=1)
    with torch.no_grad():  # make B a different solution everywhere, not only in the head
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sa, sb = a.state_dict(), b.state_dict()
    gammas = np.linspace(-0.2, 1.2, k).tolist()
    texts, labels = list(dev["text"]), list(dev["label"])
    print(f"model {args.model}, {len(texts)} MR dev sentences, {k} points, batch {batch_size}, "
          f"{torch.get_num_threads()} torch threads")

    t0 = time.perf_counter()
    ref = naive_path(a, sa, sb, texts, labels, tok, gammas, batch_size, max_length)
    t_naive = time.perf_counter() - t0

    t0 = time.perf_counter()
    batches = EvalBatches(encode(dev, tok, max_length), tok, batch_size=batch_size)
    t_tok = time.perf_counter() - t0
    t1 = time.perf_counter()
    df = linear_path(a, sa, sb, batches, gammas, progress=False)
    t_path = time.perf_counter() - t1
    t_ours = t_tok + t_path

    # where our time goes: weights written vs forward passes
    from tmlib.landscape import _Scratch
    scratch = _Scratch(a, None, sa)
    t0 = time.perf_counter()
    for g in gammas:
        scratch.load(lambda key, t, g=g: torch.lerp(sa[key], sb[key], g, out=t) if t.is_floating_point() else None)
    t_lerp = time.perf_counter() - t0

    ok = all(abs(r[1] - l) < 1e-4 and r[2] == acc for r, l, acc in zip(ref, df.loss, df.accuracy))
    pad_naive = sum(len(tok(texts[i:i + batch_size], padding=True)["input_ids"][0]) * len(texts[i:i + batch_size])
                    for i in range(0, len(texts), batch_size))
    pad_ours = sum(b_["input_ids"].numel() for b_ in batches.batches)
    print(f"naive: {k / t_naive:6.2f} points/s ({t_naive:.1f} s)")
    print(f"ours : {k / t_ours:6.2f} points/s ({t_ours:.1f} s: tokenise once {t_tok:.2f} s, "
          f"{k} points {t_path:.1f} s of which writing weights {t_lerp:.2f} s)")
    print(f"token positions per pass: naive {pad_naive}, ours {pad_ours} (length-sorted batches: "
          f"{pad_naive / pad_ours:.2f}x fewer)")
    print(f"ratio ours/naive: {t_naive / t_ours:.2f}x   results agree: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
