"""Where a suite run's seconds went: every notebook's stage build times from its progress.log, grouped by kind of
stage (the part of the stage name before the first '/' or '_g', e.g. solutions, evaluations, finetune, taskpt).

    .venv/bin/python benchmarks/suite_seconds.py runs/default

Prints per notebook the wall seconds (suite_timing.csv), the seconds inside stage builds per kind (nested builds,
such as an lr grid's selection asking for an extension run, are counted once, in the inner stage), and what is
left: loading cached stages, tables, figures, process start-up.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

BUILT = re.compile(r"^\S+ (?P<name>\S+): built in (?P<s>[0-9.]+) s$")


def kind(name: str) -> str:
    if "/lr-grid/" in name:  # solutions/<task>/lr-grid/<method>/lr=<lr> (and <task>/lr-grid/<method>, one stage)
        return "lr grid (selection)" if name.endswith("/selection") else "lr grid"
    if re.fullmatch(r"[\w.-]+/(finetune|bitfit|mask|lora)-s\d+", name):  # <task>/<method>-s<seed> (older layout)
        return "training"
    head = re.split(r"[/]|_g\d", name)[0]
    return {"solutions": "training", "evaluations": "test evaluation"}.get(head, head)


def breakdown(run: Path) -> pd.DataFrame:
    rows = []
    for log in sorted(run.glob("[0-9][0-9]_*/progress.log")):
        for line in log.read_text().splitlines():
            m = BUILT.match(line.strip())
            if m:
                rows.append({"notebook": log.parent.name, "kind": kind(m["name"]), "seconds": float(m["s"])})
    df = pd.DataFrame(rows, columns=["notebook", "kind", "seconds"])
    # a selection stage's build time includes the extension runs it asked for: count those once
    return df[df.kind != "lr grid (selection)"].groupby(["notebook", "kind"], as_index=False)["seconds"].sum()


def main(argv: list[str]) -> int:
    run = Path(argv[0] if argv else "runs/default")
    table = breakdown(run)
    timing = pd.read_csv(run / "suite_timing.csv") if (run / "suite_timing.csv").is_file() else None
    for nb, d in table.groupby("notebook"):
        wall = None if timing is None else timing.loc[timing.notebook == f"{nb}.ipynb", "seconds"]
        wall = float(wall.iloc[0]) if wall is not None and len(wall) else float("nan")
        print(f"{nb}: wall {wall:.0f} s, inside stage builds {d.seconds.sum():.0f} s")
        for r in d.sort_values("seconds", ascending=False).itertuples():
            print(f"    {r.kind:<22} {r.seconds:7.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
