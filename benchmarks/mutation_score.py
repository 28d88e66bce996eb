"""The mutation score of the core modules, per module, from a finished ``mutmut run`` (``make mutation``).

mutmut ([tool.mutmut] in pyproject.toml) changes one operator, constant or argument of a function at a time and runs
the selected fast unit tests that call that function: a mutant the tests fail on is *killed*, one they pass is a
*survivor*, one that runs past its time limit (an endless loop) is a *timeout* and counts as detected. A survivor
that cannot change any result (``float("NAN")`` for ``float("nan")``) is *equivalent*: it is listed with its reason
in ``benchmarks/mutation_equivalent.tsv`` and left out of the score's denominator.

    score = (killed + timeout) / (mutants - equivalent)

Reads ``mutants/**/*.py.meta`` (mutmut's results), writes ``benchmarks/results/mutation.csv`` (one row per module)
and prints the table, then every survivor that is not listed as equivalent (``mutmut show <name>`` prints its diff).
Exit status 1 when a module scores below ``--min-score`` (default 0.9).

    .venv/bin/python benchmarks/mutation_score.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.tsv"
OUT = ROOT / "benchmarks" / "results" / "mutation.csv"

# mutmut's exit codes (mutmut.stats.status_by_exit_code, 3.8): what the tests did with a mutant
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout"}
STATUS |= {24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def modules() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]


def equivalent() -> dict[str, str]:
    """mutant name -> why it cannot change a result (tab separated; ``#`` comments)."""
    out = {}
    for line in EQUIVALENT.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, why = line.partition("\t")
            out[name.strip()] = why.strip()
    return out


def results(module: str) -> dict[str, str]:
    meta = ROOT / "mutants" / f"{module}.meta"
    if not meta.is_file():
        raise SystemExit(f"no mutmut results for {module} ({meta} is missing); run make mutation first")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: STATUS.get(code, "suspicious") for name, code in codes.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--min-score", type=float, default=0.9)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    equiv = equivalent()
    rows, open_survivors, stale = [], [], []
    for module in modules():
        status = results(module)
        eq = {n for n, s in status.items() if n in equiv and s == "survived"}
        stale += [n for n, s in status.items() if n in equiv and s in ("killed", "timeout")]
        count = {k: sum(1 for n, s in status.items() if s == k and n not in eq) for k in set(status.values())}
        mutants = len(status)
        detected = count.get("killed", 0) + count.get("timeout", 0)
        rows.append(
            {
                "module": module,
                "mutants": mutants,
                "killed": count.get("killed", 0),
                "timeout": count.get("timeout", 0),
                "survived": count.get("survived", 0),
                "no_tests": count.get("no tests", 0),
                "suspicious": count.get("suspicious", 0),
                "not_checked": count.get("not checked", 0),
                "equivalent": len(eq),
                "score": round(detected / max(mutants - len(eq), 1), 4),
            }
        )
        open_survivors += [f"{n} ({s})" for n, s in status.items() if s not in ("killed", "timeout") and n not in eq]
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    print(f"\nwritten: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    if open_survivors:
        print(f"\n{len(open_survivors)} mutants neither detected nor listed as equivalent:")
        print("\n".join(f"  {s}" for s in open_survivors))
    if stale:
        print(f"\nlisted as equivalent but not surviving any more (remove from {EQUIVALENT.name}): {', '.join(stale)}")
    low = table[table.score < args.min_score]
    if not low.empty:
        print(f"\nbelow {args.min_score:.0%}: {', '.join(low.module)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
