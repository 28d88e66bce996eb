"""Command line: ``python -m tmlib <verb>``.

    python -m tmlib assets fetch [--force]     download, verify and unpack the offline assets
    python -m tmlib assets verify              re-hash the unpacked assets
    python -m tmlib assets list                what each asset is and where it lives
    python -m tmlib suite --params default --out runs/default [--only 01 03]
                                               run the notebooks with papermill
"""
from __future__ import annotations

import argparse
import sys

from . import assets


def _assets(args) -> int:
    if args.action == "fetch":
        for name in (args.names or list(assets.ASSETS)):
            path = assets.fetch(name, force=args.force)
            print(f"{name:10s} ok  {path}")
    elif args.action == "verify":
        bad = [n for n in (args.names or list(assets.ASSETS)) if not assets.verify(n)]
        for n in args.names or list(assets.ASSETS):
            print(f"{n:10s} {'CORRUPT/MISSING' if n in bad else 'ok'}")
        if bad:
            print("fix: python -m tmlib assets fetch --force " + " ".join(bad), file=sys.stderr)
            return 1
    else:
        for name, a in assets.ASSETS.items():
            print(f"{name:10s} {a.package}=={a.version:8s} {a.description}\n{'':10s} {assets.cache_dir() / name}")
    return 0


def _suite(args) -> int:
    from .suite import run_suite

    run_suite(args.params, args.out, only=args.only, kernel=args.kernel)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    pa = sub.add_parser("assets", help="offline assets (registry packages)")
    pa.add_argument("action", choices=["fetch", "verify", "list"])
    pa.add_argument("names", nargs="*", help=f"subset of {', '.join(assets.ASSETS)}")
    pa.add_argument("--force", action="store_true", help="download and unpack again")
    pa.set_defaults(func=_assets)
    ps = sub.add_parser("suite", help="execute the notebooks with a papermill parameter set")
    ps.add_argument("--params", default="default", help="parameter set name (papermill_params/<notebook>/<name>.yaml)")
    ps.add_argument("--out", default=None, help="output directory (default runs/<params>)")
    ps.add_argument("--only", nargs="*", default=None, help="notebook name prefixes to run, e.g. 01 03")
    ps.add_argument("--kernel", default=None, help="Jupyter kernel name (default: this Python)")
    ps.set_defaults(func=_suite)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (assets.AssetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
