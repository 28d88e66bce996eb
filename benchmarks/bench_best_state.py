"""The best-state copy of ``fit`` (the weights kept at the best dev evaluation): every tensor of the model, or only
what trains plus the buffers (the default). Per method on MiniLM: the bytes of one copy, the resumable checkpoint's
size and the peak memory of a short training run (two dev evaluations, so two copies), each variant in its own
process; the trained weights are checked to be identical.

    .venv/bin/python benchmarks/bench_best_state.py              # mask, lora, bitfit, finetune; 40 MR sentences
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from tmlib.core.training import fit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHILD = "--child"


def child(method: str, variant: str, out: Path) -> None:
    import torch

    import tmlib.core.training as T
    from tmlib.core.models import load_classifier, load_tokenizer
    from tmlib.masking.methods import prepare_method
    from tmlib.tasks.classify import Classification
    from tmlib.tasks.data import label_names, load_task

    if variant == "full":  # the copy before: every tensor of the state dict
        T._state_for_best = lambda model: {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.set_num_threads(2)
    task = load_task("mr", max_examples=60, seed=0)
    model = load_classifier("minilm", label_names(task), seed=0)
    prep = prepare_method(method, model, seed=0)
    copy = T._state_for_best(prep.model)
    copy_bytes = sum(v.numel() * v.element_size() for v in copy.values())
    cfg = prep.train_config(T.TrainConfig(batch_size=8, epochs=2, max_length=32, progress=False, checkpoint_every=3))
    ckpt = out / f"ckpt-{method}-{variant}"
    sizes = []
    hook = lambda step, m, logs: (
        sizes.append((ckpt / "checkpoint.pt").stat().st_size) if (ckpt / "checkpoint.pt").is_file() else None
    )
    fit(
        prep.model,
        task,
        cfg,
        Classification(load_tokenizer("minilm")),
        params=prep.params,
        optimizer_cls=prep.optimizer_cls,
        checkpoint_dir=ckpt,
        on_step=[hook],
    )
    digest = hashlib.sha256()
    for k, v in sorted(prep.model.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().float().cpu().numpy().tobytes())
    print(
        json.dumps(
            {
                "method": method,
                "variant": variant,
                "copy_mb": copy_bytes / 2**20,
                "checkpoint_mb": max(sizes, default=0) / 2**20,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "weights": digest.hexdigest()[:16],
            }
        )
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["mask", "lora", "bitfit", "finetune"])
    ap.add_argument("--out", default="benchmarks/results/best_state")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in args.methods:
        for variant in ("full", "trained"):
            done = subprocess.run(
                [sys.executable, __file__, CHILD, method, variant, str(out)],
                capture_output=True,
                text=True,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )
            if done.returncode:
                print(done.stderr[-2000:])
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    import pandas as pd

    table = pd.DataFrame(rows)
    table.to_csv(out / "best_state.csv", index=False)
    for method, g in table.groupby("method", sort=False):
        full, trained = g.set_index("variant").loc["full"], g.set_index("variant").loc["trained"]
        print(
            f"{method}: copy {full.copy_mb:.1f} -> {trained.copy_mb:.1f} MB, checkpoint {full.checkpoint_mb:.1f} -> "
            f"{trained.checkpoint_mb:.1f} MB, peak RSS {full.peak_rss_mb:.0f} -> {trained.peak_rss_mb:.0f} MB, "
            f"weights {'identical' if full.weights == trained.weights else 'DIFFER'}"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        child(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    else:
        raise SystemExit(main())
