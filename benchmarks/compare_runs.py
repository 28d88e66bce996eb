"""Compare two run folders file by file: every CSV and JSON under both, except the columns and keys that hold
seconds, memory, timestamps, commits or absolute paths (they differ between any two runs).

    .venv/bin/python benchmarks/compare_runs.py runs/before runs/after [--only 03 04]

Prints one line per file (same / differs, with the first differing cells) and exits 1 if any differ.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

VOLATILE = re.compile(
    r"(seconds|_s$|^s$|time|created|finished|commit|peak|rss|memory_mb|path|source|dir$|sources"
    r"|ms_per)",
    re.I,
)
SKIP_PARTS = {".locks", ".work", "solutions", "cache", "lr-grid"}  # artifacts are compared through the tables
SCHEDULE_FILES = ("suite_timing.csv", "suite_history.csv", "suite_events.csv")  # when things ran, not what they gave


def _volatile(name: str) -> bool:
    return bool(VOLATILE.search(str(name)))


def _clean_json(obj):
    if isinstance(obj, dict):
        return {k: _clean_json(v) for k, v in obj.items() if not _volatile(k)}
    if isinstance(obj, list):
        return [_clean_json(v) for v in obj]
    return obj


def compare_file(a: Path, b: Path) -> str | None:
    """None when equal (volatile fields excluded), else a short description of the difference."""
    if a.suffix == ".csv":
        fa, fb = pd.read_csv(a), pd.read_csv(b)
        keep = [c for c in fa.columns if not _volatile(c)]
        if [c for c in fb.columns if not _volatile(c)] != keep:
            return f"columns differ: {sorted(set(fa.columns) ^ set(fb.columns))}"
        fa, fb = fa[keep], fb[keep]
        if "metric" in keep:  # a long table (metric, value): its timing rows are volatile too
            fa, fb = (f[~f["metric"].astype(str).map(_volatile)].reset_index(drop=True) for f in (fa, fb))
        if fa.shape != fb.shape:
            return f"shape {fa.shape} vs {fb.shape}"
        diff = ~((fa == fb) | (fa.isna() & fb.isna()))
        if diff.values.any():
            r, c = next(zip(*diff.values.nonzero()))
            return (
                f"{int(diff.values.sum())} cells differ, first: row {r} {keep[c]}: {fa.iat[r, c]!r} vs {fb.iat[r, c]!r}"
            )
        return None
    ja, jb = (_clean_json(json.loads(p.read_text())) for p in (a, b))
    return None if ja == jb else "JSON differs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 03 04")
    args = ap.parse_args(argv)
    a, b = Path(args.a), Path(args.b)
    bad = 0
    for f in sorted(a.rglob("*")):
        rel = f.relative_to(a)
        if f.suffix not in (".csv", ".json") or SKIP_PARTS & set(rel.parts):
            continue
        if args.only and not any(rel.parts[0].startswith(o) for o in args.only):
            continue
        if rel.name in SCHEDULE_FILES:
            continue
        other = b / rel
        if not other.is_file():
            print(f"MISSING {rel}")
            bad += 1
            continue
        why = compare_file(f, other)
        print(f"{'same   ' if why is None else 'DIFFERS'} {rel}" + ("" if why is None else f": {why}"))
        bad += why is not None
    print(f"{bad} file(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
