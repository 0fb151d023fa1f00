"""``tokconv sweep``: a grid of lengths x seeds for one mode, saved to the run store as runs finish."""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict

from ..errors import TokconvError
from ..experiments import SweepSpec
from ..experiments.sweep import run_sweep
from ..models import DEFAULT_MODEL_A
from ..store import RunStore
from .report import parse_seeds


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32)."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise TokconvError(f"cannot read {what} '{text}'", f"write {what} as a comma-separated list like 8,16,32") from None
    if not values:
        raise TokconvError(f"no {what} given", f"write {what} like 8,16,32")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL_A, help=f"model (default {DEFAULT_MODEL_A})")
    p.add_argument("--model-b", default=None, help="second model, for adversarial modes")
    p.add_argument("-m", "--mode", default="single", help="convergence mode (default single)")
    p.add_argument("--lengths", default="8,16", help="start lengths, comma-separated (default 8,16)")
    p.add_argument("--seeds", default="0-7", help="seeds, a range 0-63 or a list 1,2,5 (default 0-7)")
    p.add_argument("-n", "--iterations", type=int, default=100, help="maximum iterations per run (default 100)")
    p.add_argument("--block-after", type=int, default=3, help="block a position after this many flips (default 3)")
    p.add_argument("--db", default=None, help="run database (default: $TOKCONV_DB, else ~/.local/share/tokconv/runs.sqlite)")
    p.add_argument("--no-batch", action="store_true", help="run one at a time instead of batching single-mode runs")


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def main(args: argparse.Namespace) -> int:
    spec = SweepSpec(
        model=args.model, model_b=args.model_b, mode=args.mode, lengths=parse_ints(args.lengths, "lengths"),
        seeds=tuple(parse_seeds(args.seeds)), iterations=args.iterations, block_after=args.block_after,
    )
    spec.configs()  # validate everything before loading models
    store = RunStore(args.db)
    print(f"sweep: {args.mode} on {args.model}{' vs ' + args.model_b if args.model_b else ''}, "
          f"lengths {list(spec.lengths)}, {len(spec.seeds)} seeds -> {store.path}", file=sys.stderr)

    def progress(p) -> None:
        if p.last is None:
            if p.skipped:
                print(f"resuming: {p.skipped} of {p.total} runs already in the store", file=sys.stderr)
            return
        r = p.last
        print(f"[{p.done}/{p.total}] L={r.config.length} seed={r.config.seed}: {r.status} after {r.iterations} "
              f"| elapsed {_fmt(p.elapsed)}, about {_fmt(p.eta_seconds)} left", file=sys.stderr, flush=True)

    results = run_sweep(spec, store, batch=not args.no_batch, on_progress=progress)
    by_len: dict[int, list] = defaultdict(list)
    for r in results:
        by_len[r.config.length].append(r)
    print("length  runs  mean iterations  iterations/n  statuses")
    for L in sorted(by_len):
        rs = by_len[L]
        mean = sum(r.iterations for r in rs) / len(rs)
        st = ", ".join(f"{k} {v}" for k, v in Counter(r.status for r in rs).items())
        print(f"{L:6d}  {len(rs):4d}  {mean:15.1f}  {mean / L:12.2f}  {st}")
    print(f"{len(results)} new run(s) saved to {store.path}")
    return 0
