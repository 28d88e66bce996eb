"""Test-set evaluation speed: sentences per second, the way a solution was evaluated before against tmlib's
evaluation path, on the same models and sentences, interleaved in one run.

    .venv/bin/python benchmarks/bench_eval.py             # MR held-out pool (3,600 sentences), 3 models
    .venv/bin/python benchmarks/bench_eval.py --quick     # 600 sentences, 2 models

* ``plain``: what re-evaluating a saved model costs with the model's own forward: tokenise the sentences per
  model, batches of 64 in file order (padding to the batch's longest), fp32, SDPA attention.
* ``tmlib``: :func:`tmlib.masking.solutions.evaluation_stage`'s path: the test set tokenised once per task and padded in
  length-sorted batches (:class:`tmlib.tasks.classify.EvalBatches`), eager attention and the [CLS]-only last layer
  (``kernels="fast"``), fp32; timed with the tokenising, which notebook 03 does once per task, not per model.
* ``tmlib bf16``: the same under bf16 autocast (for information; notebook 03 evaluates in fp32).

Both give the same accuracy up to float rounding (checked: predictions agree on >= 99.9% of sentences).
Results: ``benchmarks/results/eval.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent


def plain_eval(model, tok, texts, labels, max_length=64, batch_size=64) -> tuple[float, np.ndarray]:
    preds = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(
                texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            preds.append(model(**enc).logits.argmax(-1))
    p = torch.cat(preds).numpy()
    return float((p == np.asarray(labels)).mean()), p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--precision", default="both", help="accepted for run_all.py; fp32 always, bf16 with 'both'")
    args = ap.parse_args()
    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.core.precision import kernels_context
    from tmlib.tasks.classify import EvalBatches, encode, evaluate_classifier
    from tmlib.tasks.data import TaskRecipe

    data = TaskRecipe("mr", max_train=200, max_dev=200, max_test=600 if args.quick else 0, test_pool="heldout").load()
    test = data["test"]
    texts, labels = list(test["text"]), list(test["label"])
    tok = load_tokenizer("minilm")
    models = [load_classifier("minilm", ["negative", "positive"], seed=s).eval() for s in range(2 if args.quick else 3)]
    print(
        f"{len(texts)} MR held-out sentences, max length 64, {len(models)} models, "
        f"torch threads {torch.get_num_threads()}"
    )
    variants = ["plain", "tmlib"] + (["tmlib bf16"] if args.precision == "both" else [])
    rows = []
    for rep, model in enumerate(models):
        for v in variants:
            start = time.perf_counter()
            if v == "plain":
                acc, pred = plain_eval(model, tok, texts, labels)
            else:
                batches = EvalBatches(encode(test, tok, 64), tok, batch_size=64)  # once per task in notebook 03
                with kernels_context(model, "fast", "cpu"):
                    m = evaluate_classifier(
                        model,
                        batches,
                        kernels="fast",
                        predictions=True,
                        mixed_precision="bf16" if "bf16" in v else "no",
                    )
                acc, pred = m["accuracy"], m["predictions"]
            sec = time.perf_counter() - start
            rows.append(
                {
                    "model": rep,
                    "variant": v,
                    "seconds": sec,
                    "sentences_per_s": len(texts) / sec,
                    "accuracy": acc,
                    "pred": pred,
                }
            )
    df = pd.DataFrame(rows)
    ref = {r.model: r.pred for r in df[df.variant == "plain"].itertuples()}
    df["agree_with_plain"] = [float((r.pred == ref[r.model]).mean()) for r in df.itertuples()]
    df = df.drop(columns="pred")
    out = HERE / "results" / ("eval_quick.csv" if args.quick else "eval.csv")
    df.to_csv(out, index=False)
    s = df.groupby("variant", sort=False).agg(
        sentences_per_s=("sentences_per_s", "median"), seconds=("seconds", "median"), agree=("agree_with_plain", "min")
    )
    s["speedup_vs_plain"] = s.sentences_per_s / s.loc["plain", "sentences_per_s"]
    print(s.round(3).to_string())
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
