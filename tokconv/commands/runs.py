"""``tokconv runs list|show|delete|export|import``: the saved runs."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ..errors import TokconvError
from ..experiments.config import MODES
from ..store import RunStore, export_runs, read_runs_json, resolve_db_path
from ._common import add_db_option, check_db, check_output_file

STATUSES = ("converged", "oscillating", "all-blocked", "max-iterations", "interrupted")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_option(p)
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list saved runs, newest first")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls.add_argument("--mode", default=None, help=f"only this mode: {', '.join(MODES)}")
    ls.add_argument("--model", default=None, help="runs where this model took part")
    ls.add_argument("--status", default=None, help=f"only this outcome: {', '.join(STATUSES)}")
    show = sub.add_parser("show", help="print one run as JSON")
    show.add_argument("id", type=int)
    rm = sub.add_parser("delete", help="delete one run")
    rm.add_argument("id", type=int)
    ex = sub.add_parser("export", help="export runs (all, or the ids given) as json, csv or parquet")
    ex.add_argument("ids", type=int, nargs="*")
    ex.add_argument("--format", choices=["json", "csv", "parquet"], default="json")
    ex.add_argument("--output", type=Path, required=True)
    im = sub.add_parser("import", help="import runs from a JSON file exported by tokconv")
    im.add_argument("path", type=Path)
    for action in (ls, show, rm, ex, im):
        add_db_option(action, inherited=True)  # `tokconv runs list --db PATH` works as well as `runs --db PATH list`


def check_filters(args: argparse.Namespace) -> None:
    """Refuse a --mode or --status that no run can have (rather than listing nothing)."""
    if args.mode is not None and args.mode not in MODES:
        raise TokconvError(f"unknown mode '{args.mode}'", f"use one of: {', '.join(MODES)}")
    if args.status is not None and args.status not in STATUSES:
        raise TokconvError(f"unknown status '{args.status}'", f"use one of: {', '.join(STATUSES)}")


def main(args: argparse.Namespace) -> int:
    if args.action == "list":
        check_filters(args)
    elif args.action == "export":
        check_output_file(args.output, "--output")
    check_db(args.db)
    path = resolve_db_path(args.db)
    if args.action != "import" and not path.exists():  # reading creates nothing: no database, no runs
        if args.action == "list":
            print("[]" if args.format == "json" else f"(no saved runs: there is no run database at {path} yet)")
            return 0
        raise TokconvError(f"there is no run database at {path}",
                           "run an experiment first (every run is saved), or name the database with --db PATH")
    store = RunStore(args.db)
    if args.action == "list":
        rows = store.list(mode=args.mode, model=args.model, status=args.status)
        if args.format == "json":
            print(json.dumps([asdict(r) for r in rows], indent=1))
            return 0
        # CREATED is 25 wide: ISO timestamps with a UTC offset, e.g. 2026-11-30T12:00:00+00:00.
        print(f"{'ID':>5}  {'CREATED':25}  {'MODE':18}  {'MODELS':42}  {'LEN':>4}  {'SEED':>4}  {'STATUS':14}  ITER")
        for r in rows:
            models = r.model_a + (f" vs {r.model_b}" if r.model_b else "")
            print(f"{r.id:5d}  {r.created_at:25}  {r.mode:18}  {models:42}  {r.length:4d}  {r.seed:4d}  {r.status:14}  {r.iterations}")
        if not rows:
            print(f"(no saved runs in {store.path})")
    elif args.action == "show":
        print(store.get(args.id).to_json(indent=1))
    elif args.action == "delete":
        store.delete(args.id)
        print(f"deleted run {args.id}")
    elif args.action == "export":
        ids = args.ids or [r.id for r in store.list(limit=10**9)]
        if not ids:
            raise TokconvError(f"there are no runs to export in {store.path}", "run an experiment or a sweep first")
        export_runs({i: store.get(i) for i in ids}, args.format, args.output)
        print(f"exported {len(ids)} run(s) to {args.output}")
    elif args.action == "import":
        report = store.import_runs(read_runs_json(args.path))  # every run checked first; one transaction
        print(report.summary() + (f"; new id(s): {', '.join(map(str, report.added))}" if report.added else ""))
    return 0
