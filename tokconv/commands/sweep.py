"""``tokconv sweep``: a grid of lengths x seeds for one mode, saved to the run store as runs finish."""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable

from ..errors import TokconvError
from ..experiments import RunResult, SweepSpec
from ..experiments.config import ADVERSARIAL_MODES, MAX_SWEEP_RUNS
from ..experiments.sweep import SweepProgress, iter_sweep
from ..models import DEFAULT_MODEL_A
from ..store import RunStore
from ._common import DB_HELP, add_quiet_option, check_cache, check_db, parse_seeds, runtime_notice, save_or_rescue


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32)."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise TokconvError(f"cannot read {what} '{text}'", f"write {what} as a comma-separated list like 8,16,32") from None
    if not values:
        raise TokconvError(f"no {what} given", f"write {what} like 8,16,32")
    return tuple(dict.fromkeys(values))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL_A, help=f"model (default {DEFAULT_MODEL_A})")
    p.add_argument("--model-b", default=None, help="second model, for adversarial modes (solo modes ignore it, with a note)")
    p.add_argument("-m", "--mode", default="single", help="convergence mode (default single)")
    p.add_argument("--lengths", default="8,16", help="start lengths, comma-separated (default 8,16)")
    p.add_argument("--seeds", default="0-7", help="seeds, a range 0-63 or a list 1,2,5 (default 0-7); "
                   f"a sweep holds at most {MAX_SWEEP_RUNS:,} runs (lengths x seeds): split bigger grids")
    p.add_argument("-n", "--iterations", type=int, default=100, help="maximum iterations per run (default 100)")
    p.add_argument("--block-after", type=int, default=3, help="block a position after this many flips (default 3)")
    p.add_argument("--db", default=None, metavar="PATH", help=DB_HELP)
    p.add_argument("--no-batch", action="store_true", help="run one at a time instead of in lockstep batches of one mode and length")
    add_quiet_option(p)


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


@dataclass
class Summary:
    """Per start length: how many runs, their iterations and outcomes (no run is kept in memory)."""

    runs: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    iterations: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    statuses: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, r: RunResult) -> None:
        L = r.config.length
        self.runs[L] += 1
        self.iterations[L] += r.iterations
        self.statuses[L][r.status] += 1

    def lines(self) -> list[str]:
        out = ["length  runs  mean iterations  iterations/n  statuses"]
        for L in sorted(self.runs):
            n, mean = self.runs[L], self.iterations[L] / self.runs[L]
            st = ", ".join(f"{k} {v}" for k, v in self.statuses[L].items())
            out.append(f"{L:6d}  {n:4d}  {mean:15.1f}  {mean / L:12.2f}  {st}")
        return out


def add_saved(summary: Summary, spec: SweepSpec, store: RunStore, new: set[str]) -> int:
    """Add the grid's runs saved before this sweep (the newest run of each settings key); returns how many."""
    count = 0
    keys: Iterable[str] = (k for k in (c.key() for c in spec.iter_configs()) if k not in new)
    while chunk := list(islice(keys, 500)):
        for rid in store.latest_ids(chunk).values():
            summary.add(store.get(rid))
            count += 1
    return count


class RescuingStore:
    """The store as a sweep's sink, except that a failed save keeps the run in a rescue file and says where."""

    def __init__(self, store: RunStore) -> None:
        self.store, self.path = store, store.path

    def done_keys(self) -> set[str]:
        return self.store.done_keys()

    def save(self, result: RunResult) -> int:
        return save_or_rescue(self.store, result)


def main(args: argparse.Namespace) -> int:
    spec = SweepSpec(
        model=args.model, model_b=args.model_b, mode=args.mode, lengths=parse_ints(args.lengths, "lengths"),
        seeds=parse_seeds(args.seeds), iterations=args.iterations, block_after=args.block_after,
    )
    spec.validate()  # the whole grid, in time and memory independent of its size, before any model loads
    check_db(args.db, writing=True)
    check_cache()
    store = RunStore(args.db)
    err = sys.stderr
    two = args.mode in ADVERSARIAL_MODES
    if args.model_b and not two:
        print(f"tokconv: note: --model-b {args.model_b} is ignored: mode '{args.mode}' runs one model", file=err)
    print(f"sweep: {args.mode} on {args.model}{' vs ' + args.model_b if two else ''}, "
          f"lengths {list(spec.lengths)}, {len(spec.seeds)} seeds, {spec.size} runs -> {store.path}", file=err, flush=True)
    runtime_notice(args.quiet)
    skipped = 0

    def progress(p: SweepProgress) -> None:
        nonlocal skipped
        if p.last is None:
            skipped = p.skipped
            if p.skipped:
                print(f"resuming: {p.skipped} of {p.total} runs already in the store", file=err, flush=True)
            return
        r = p.last
        print(f"[{p.done}/{p.total}] L={r.config.length} seed={r.config.seed}: {r.status} after {r.iterations} "
              f"| elapsed {_fmt(p.elapsed)}, about {_fmt(p.eta_seconds)} left", file=err, flush=True)

    summary, new = Summary(), set()
    try:
        for r in iter_sweep(spec, RescuingStore(store), batch=not args.no_batch, on_progress=progress):
            summary.add(r)
            new.add(r.config.key())
    except KeyboardInterrupt:
        print(f"\ntokconv: interrupted; {len(new)} new run(s) of this sweep were saved to {store.path}"
              f" ({skipped} were saved before), {spec.size - len(new) - skipped} left", file=err)
        print("  resume: run the same command again; saved runs are skipped", file=err)
        return 130
    before = add_saved(summary, spec, store, new)
    print("\n".join(summary.lines()))
    print(f"{len(new)} new run(s) saved to {store.path}; {before} of the {spec.size} were already saved")
    return 0
