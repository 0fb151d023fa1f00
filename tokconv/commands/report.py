"""``tokconv report``: rerun the original experiments over many seeds and write a markdown report.

Each run is saved to the run store as it finishes, and a run already saved with the same
settings is read back instead of run again: a stopped report resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..analysis.report import ReportSpec, report
from ..errors import TokconvError
from ..experiments import RunConfig, RunResult, run
from ..models import DEFAULT_MODEL_A, DEFAULT_MODEL_B
from ..store import RunStore
from ._common import (DB_HELP, add_quiet_option, check_cache, check_db, check_output_file, parse_seeds, runtime_notice,
                      save_or_rescue)

__all__ = ["add_arguments", "main", "parse_seeds"]

MAX_REPORT_SEEDS = 10_000  # eight runs per seed: already days of work


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-a", default=DEFAULT_MODEL_A, help=f"first model (default {DEFAULT_MODEL_A})")
    p.add_argument("--model-b", default=DEFAULT_MODEL_B, help=f"second model (default {DEFAULT_MODEL_B})")
    p.add_argument("-l", "--length", type=int, default=20, help="start length in tokens (default 20)")
    p.add_argument("--seeds", default="0-7", help="seeds, as a range 0-7 or a list 1,2,5 (default 0-7)")
    p.add_argument("-n", "--iterations", type=int, default=100, help="maximum iterations per run (default 100)")
    p.add_argument("--output", type=Path, default=Path("FINDINGS-measured.md"), help="markdown file to write")
    p.add_argument("--db", default=None, metavar="PATH", help=DB_HELP)
    p.add_argument("--no-save", action="store_true", help="neither save the runs nor reuse saved ones")
    add_quiet_option(p)


class SavingRunner:
    """Runs one config for the report: reuses a run saved with the same settings, else runs and saves it."""

    def __init__(self, store: RunStore | None) -> None:
        self.store = store
        self.saved = self.reused = 0

    def __call__(self, config: RunConfig) -> RunResult:
        if self.store is not None and (ids := self.store.latest_ids([config.key()])):
            self.reused += 1
            return self.store.get(next(iter(ids.values())))
        result = run(config)
        if result.status == "interrupted":
            raise KeyboardInterrupt  # collect() caught a Ctrl-C inside the run: stop the report, keep what is saved
        if self.store is not None:
            save_or_rescue(self.store, result)
            self.saved += 1
        return result


def main(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    if len(seeds) > MAX_REPORT_SEEDS:
        raise TokconvError(f"{len(seeds):,} seeds is more than a report takes ({MAX_REPORT_SEEDS:,})", "use fewer seeds, e.g. 0-63")
    for mode, b in (("adversarial", args.model_b), ("single", None)):  # every setting, before any model loads
        RunConfig(mode=mode, model_a=args.model_a, model_b=b, length=args.length, iterations=args.iterations, seed=seeds[-1])
    check_output_file(args.output, "--output")
    if not args.no_save:
        check_db(args.db, writing=True)
    check_cache()
    store = None if args.no_save else RunStore(args.db)
    runtime_notice(args.quiet)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    runner = SavingRunner(store)
    spec = ReportSpec(args.model_a, args.model_b, args.length, list(seeds), args.iterations)
    try:
        text, _ = report(spec, progress=say, runner=runner)
    except KeyboardInterrupt:
        kept = f"{runner.saved} run(s) of this report were saved to {store.path}" if store else "nothing was saved (--no-save)"
        say(f"\ntokconv: interrupted; {kept}")
        say("  resume: run the same command again; saved runs are reused, not rerun")
        return 130
    if store is not None:
        say(f"{runner.saved} new run(s) saved to {store.path}, {runner.reused} reused from earlier")
    print(text)  # stdout first: if the file cannot be written, the report is still there
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        where = "the runs are saved: rerun the same command to write the report without running them again" if store else "pick another --output"
        raise TokconvError(f"cannot write the report to {args.output}: {exc.strerror or exc}", where) from exc
    say(f"wrote {args.output}")
    return 0
