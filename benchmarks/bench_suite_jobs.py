"""Why `tmlib suite` runs two notebooks at once (``--jobs 2``) with ``OMP_WAIT_POLICY=PASSIVE``.

A MiniLM fine-tuning step (fp32 and bf16 autocast, fused AdamW, 32 x 48 tokens, as in notebooks 01 and 03) timed
in separate processes, in one run:

* one process, torch's default threads (2 here), alone;
* one process, 1 thread, alone;
* two processes side by side, 2 threads each, OpenMP's default waiting (threads spin);
* the same with ``OMP_WAIT_POLICY=PASSIVE`` (what the suite sets for its notebook processes);

and prints each variant's ms per step and the throughput (steps per second over all processes)
relative to one process alone.

    .venv/bin/python benchmarks/bench_suite_jobs.py            # 30 steps per process
    .venv/bin/python benchmarks/bench_suite_jobs.py --quick    # 8 steps

Measured 2026-11-24, 20:47 (idle 2-core AMD EPYC, load 1.8-3.1, torch 2.13.0+cpu), ms per step:

    variant                                   fp32           bf16
    1 process, default threads (2)            563  1.00x     313  1.00x
    1 process, 1 thread                      1020  0.55x     561  0.56x
    2 processes, 2 threads, OpenMP spins     2351  0.48x    1204  0.51x
    2 processes, 2 threads, PASSIVE          1058  1.06x     600  1.07x

Without PASSIVE two processes halve the throughput; with it they gain what 2 threads leave on the table:
little on this step at that moment (2 threads 1.8x faster than 1). The whole suite, a mix of training,
evaluation, tokenisation and Python work, gained 1.25x (`make run`, README "Performance").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import LABEL, add_precision_arg, load, precisions

STEP = r"""
import sys, time, torch
threads, steps, bf16 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "bf16"
if threads:
    torch.set_num_threads(threads)
from tmlib.core.models import load_classifier
m = load_classifier("minilm", ["a", "b"], seed=0)
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
g = torch.Generator().manual_seed(0)
x, y = torch.randint(1000, 5000, (32, 48), generator=g), torch.randint(0, 2, (32,), generator=g)
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = m(input_ids=x, labels=y).loss
    loss.backward(); opt.step(); opt.zero_grad()
for _ in range(3):
    step()
print("READY", flush=True)
sys.stdin.readline()              # start together
t = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - t) / steps * 1000, flush=True)
"""


def _run(n_proc: int, threads: int, steps: int, passive: bool, mp: str) -> list[float]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    env.pop("OMP_WAIT_POLICY", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STEP, str(threads), str(steps), mp],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for _ in range(n_proc)
    ]
    for p in procs:  # wait until every process has loaded and warmed up
        while p.stdout.readline().strip() != "READY":
            pass
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    add_precision_arg(ap)
    args = ap.parse_args()
    steps = args.steps or (8 if args.quick else 20)
    variants = [
        ("1 process, default threads", 1, 0, False),
        ("1 process, 1 thread", 1, 1, False),
        ("2 processes, default threads, OpenMP spins", 2, 0, False),
        ("2 processes, default threads, PASSIVE", 2, 0, True),
    ]
    for mp in precisions(args):
        print(
            f"MiniLM training step ({LABEL[mp]}, 32 x 48 tokens), {steps} steps per process, {os.cpu_count()} CPUs, "
            f"{load()}"
        )
        print(f"{'variant':<46}{'ms / step':>14}{'throughput':>12}")
        base = None
        for name, n_proc, threads, passive in variants:
            ms = _run(n_proc, threads, steps, passive, mp)
            rate = sum(1000.0 / m for m in ms)
            base = base or rate
            print(f"{name:<46}{' / '.join(f'{m:.0f}' for m in ms):>14}{rate / base:>11.2f}x")
            time.sleep(1)
        print(f"after: {load()}\n")


if __name__ == "__main__":
    main()
