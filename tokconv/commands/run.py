"""``tokconv run`` (also the bare ``python -m tokconv -l 20 -m MODE`` form of the original script)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..analysis.display import STATUS_WORDS, fingerprint_block, token_repr, visible
from ..experiments import ADVERSARIAL_MODES, IterationEnd, RunConfig, RunEnd, Step, collect, prepare
from ..experiments.config import MAX_ITERATIONS, MAX_LENGTH, MIN_LENGTH, MODE_HELP
from ..models import DEFAULT_MODEL_A, DEFAULT_MODEL_B
from ..store import RunStore

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--length", type=int, default=10, help=f"number of random start tokens ({MIN_LENGTH}-{MAX_LENGTH}, default 10)")
    p.add_argument("-n", "--iterations", type=int, default=100, help=f"maximum iterations (1-{MAX_ITERATIONS}, default 100)")
    p.add_argument("-m", "--mode", default="sequential", help="; ".join(f"{m}: {h}" for m, h in MODE_HELP.items()))
    p.add_argument("--model-a", "--model", dest="model_a", default=DEFAULT_MODEL_A, help=f"first model (default {DEFAULT_MODEL_A})")
    p.add_argument("--model-b", default=None, help=f"second model, for adversarial modes (default {DEFAULT_MODEL_B})")
    p.add_argument("--seed", type=int, default=0, help="random seed of the start sequence (default 0)")
    p.add_argument("--start-text", default=None, help="start from this text instead of random tokens")
    p.add_argument("--block-after", type=int, default=3, help="block a position after it flipped this many times (default 3)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the whole run as JSON here")
    p.add_argument("--quiet", action="store_true", help="print only the outcome (and fingerprints)")
    p.add_argument("--db", default=None, help="run database (default: $TOKCONV_DB, else ~/.local/share/tokconv/runs.sqlite)")
    p.add_argument("--no-save", action="store_true", help="do not save this run in the run database")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build and validate the run settings (raises TokconvError on bad input)."""
    model_b = args.model_b
    if args.mode in ADVERSARIAL_MODES and model_b is None:
        model_b = DEFAULT_MODEL_B
    return RunConfig(
        mode=args.mode,
        model_a=args.model_a,
        model_b=model_b if args.mode in ADVERSARIAL_MODES else None,
        length=args.length,
        iterations=args.iterations,
        seed=args.seed,
        start_text=args.start_text,
        block_after=args.block_after,
    )


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # validates before any model loads
    store = None if args.no_save else RunStore(args.db)  # a bad database is reported before the run, not after
    err = sys.stderr
    exp = prepare(config, progress=lambda msg: print(msg, file=err, flush=True))
    if not args.quiet:
        print(f"mode {config.mode}, models {' vs '.join(p.label for p in exp.players)}, {len(exp.start_tokens)} tokens, seed {config.seed}")
        print(f"start: {visible(exp.start_text)!s}")
    tty = err.isatty()

    def on_record(rec) -> None:
        if isinstance(rec, Step) and not args.quiet:
            print(f"    pos {rec.position:3d}: {token_repr(rec.old_text)} -> {token_repr(rec.new_text)}  (H={rec.entropy:.2f}, p={rec.prob:.2f})")
        elif isinstance(rec, IterationEnd):
            if not args.quiet:
                print(f"iter {rec.iteration:3d} [{rec.model}] {rec.changes} change(s): {visible(rec.text)}", flush=True)
            elif tty:
                print(f"\r  iteration {rec.iteration}/{config.iterations}", end="", file=err, flush=True)
        elif isinstance(rec, RunEnd) and args.quiet and tty:
            print("\r" + " " * 40 + "\r", end="", file=err)

    result = collect(exp, exp.records(), on_record)
    words = STATUS_WORDS.get(result.status, result.status)
    period = f" with period {result.period}" if result.period else ""
    print(f"\n{words}{period} after {result.iterations} iteration(s)")
    print(f"final: {visible(result.final_text)}")
    c = result.cost
    print(f"cost: {c.forward_passes} forward passes, {c.forwarded_tokens:g} forwarded tokens, {c.wall_seconds:.1f} s")
    if config.adversarial or not args.quiet:
        print()
        print(fingerprint_block(result.fingerprints))
    if args.json:
        args.json.write_text(result.to_json(indent=1), encoding="utf-8")
        print(f"\nwrote {args.json}")
    if store is not None:
        print(f"saved as run {store.save(result)} in {store.path}")
    return 0 if result.status != "interrupted" else 130
