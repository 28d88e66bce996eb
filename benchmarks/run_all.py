"""Run every benchmark in this folder, one after another, and collect what they print.

    .venv/bin/python benchmarks/run_all.py            # full sizes
    .venv/bin/python benchmarks/run_all.py --quick    # small sizes, a few minutes
    .venv/bin/python benchmarks/run_all.py --only importance trainer_peer --precision bf16

Each ``bench_*.py`` measures its own ratio within one run (both variants on the same machine, same
load), so ratios are comparable across machines even where absolute times are not. Every script reports
fp32 and bf16 side by side (``--precision both``, their default; ``--precision`` here is passed on).
``bench_trainer_peer.py`` is the measured peer: ``transformers.Trainer`` against ``tmlib.core.training`` on the
same fine-tuning run (issue 19). The outputs are
written to ``benchmarks/results/<name>.txt``; the suite's wall time and peak memory per notebook
(issue 7.5) come from ``runs/<params>/suite_timing.csv``, written by ``make run``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names, e.g. importance mlm")
    ap.add_argument("--params", default="default", help="suite run whose timing to show (runs/<params>)")
    ap.add_argument(
        "--precision",
        choices=["both", "no", "bf16"],
        default=None,
        help="passed on to every script (default: theirs, both)",
    )
    args = ap.parse_args()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    import torch

    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}"
    )
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if args.only and name not in args.only:
            continue
        cmd = (
            [sys.executable, str(script)]
            + (["--quick"] if args.quick else [])
            + (["--precision", args.precision] if args.precision else [])
        )
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
        text = proc.stdout + (f"\n[stderr]\n{proc.stderr[-3000:]}" if proc.returncode else "")
        print(text.rstrip())
        print(f"--- {name}: {time.perf_counter() - start:.0f} s, exit {proc.returncode}")
        (out / f"{name}.txt").write_text(text)
        if proc.returncode:
            failed.append(name)
    timing = HERE.parent / "runs" / args.params / "suite_timing.csv"
    print(f"\n=== suite wall time and peak memory ({timing})")
    print(timing.read_text() if timing.is_file() else f"not measured yet: run `make run PARAMS={args.params}` first")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
