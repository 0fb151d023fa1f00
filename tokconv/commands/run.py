"""``tokconv run`` (also the bare ``python -m tokconv -l 20 -m MODE`` form of the original script)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..analysis.display import STATUS_WORDS, fingerprint_block, token_repr, visible
from ..experiments import ADVERSARIAL_MODES, IterationEnd, RunConfig, RunEnd, RunResult, Step, collect, prepare
from ..experiments.config import DTYPES, MAX_ITERATIONS, MAX_LENGTH, MIN_LENGTH, MODE_HELP, OOV, SHARE
from ..models import DEFAULT_MODEL_A, DEFAULT_MODEL_B
from ..errors import TokconvError
from ..store import RunStore
from ._common import (DB_HELP, check_cache, check_db, check_output_file, check_seed, check_text, rescue,
                      runtime_notice, save_or_rescue)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--length", type=int, default=10, help=f"number of random start tokens ({MIN_LENGTH}-{MAX_LENGTH}, default 10)")
    p.add_argument("-n", "--iterations", type=int, default=100, help=f"maximum iterations (1-{MAX_ITERATIONS}, default 100)")
    p.add_argument("-m", "--mode", default="sequential", help="; ".join(f"{m}: {h}" for m, h in MODE_HELP.items()))
    p.add_argument("--model-a", "--model", dest="model_a", default=DEFAULT_MODEL_A, help=f"first model (default {DEFAULT_MODEL_A})")
    p.add_argument("--model-b", default=None, help=f"second model, for adversarial modes (default {DEFAULT_MODEL_B}); "
                   "solo modes use one model and ignore it, with a note on stderr")
    p.add_argument("--seed", type=int, default=0, help="random seed of the start sequence (default 0)")
    p.add_argument("--start-text", default=None, help="start from this text instead of random tokens")
    p.add_argument("--block-after", type=int, default=3, help="block a position after it flipped this many times (default 3)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the whole run as JSON here")
    p.add_argument("--quiet", action="store_true", help="print only the outcome (and fingerprints); no fast-path notice")
    p.add_argument("--db", default=None, metavar="PATH", help=DB_HELP)
    p.add_argument("--no-save", action="store_true", help="do not save this run in the run database")
    p.add_argument("--share", choices=list(SHARE), default="text",
                   help="two models with different vocabularies share: " + "; ".join(f"{k}: {v}" for k, v in SHARE.items()))
    p.add_argument("--oov", choices=list(OOV), default="error",
                   help="with --share ids, an id beyond a model's vocabulary: " + "; ".join(f"{k}: {v}" for k, v in OOV.items()))
    p.add_argument("--dtype", choices=list(DTYPES), default="auto",
                   help="precision of weights and activations (default auto: float32 on a CPU, the model's own on a GPU); "
                        "float16 and bfloat16 show what half precision does, and are several times slower on a CPU")


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
        share=args.share,
        oov=args.oov,
        dtype=args.dtype,
    )


def check_args(args: argparse.Namespace) -> RunConfig:
    """Every check that can fail, before any model loads: settings, seed, text, output paths, cache."""
    check_seed(args.seed)
    check_text(args.start_text, "--start-text")
    config = config_from_args(args)
    check_output_file(args.json, "--json")
    if not args.no_save:
        check_db(args.db, writing=True)
    check_cache()
    return config


def save_first(result: RunResult, store: RunStore | None, json_path: Path | None) -> int | None:
    """Save the run before anything is printed: a finished run is never lost to a failed output step.

    If the store fails the run is kept in a rescue file (and in --json if asked) and the error is raised.
    """
    if store is None:
        return None
    try:
        return save_or_rescue(store, result)
    except TokconvError:
        if json_path:
            json_path.write_text(result.to_json(indent=1), encoding="utf-8")
        raise


def write_json(result: RunResult, json_path: Path, rid: int | None, store: RunStore | None) -> None:
    """Write --json after saving; a failure says where the run is kept."""
    try:
        json_path.write_text(result.to_json(indent=1), encoding="utf-8")
    except OSError as exc:
        if rid is None:  # --no-save: this file was the only copy, so keep the run elsewhere
            kept = rescue([result])
            raise TokconvError(f"--json {json_path} could not be written: {exc.strerror or exc}; the run was kept in {kept}",
                               "pick another --json path next time; the kept file works with `tokconv runs import`") from exc
        raise TokconvError(f"the run was saved as run {rid}, but --json {json_path} could not be written: {exc.strerror or exc}",
                           f"export it with `tokconv runs export {rid} --db {store.path} --output PATH`") from exc
    print(f"\nwrote {json_path}")


def main(args: argparse.Namespace) -> int:
    config = check_args(args)  # validates before any model loads
    store = None if args.no_save else RunStore(args.db)  # a bad database is reported before the run, not after
    err = sys.stderr
    if args.model_b and not config.adversarial:
        print(f"tokconv: note: --model-b {args.model_b} is ignored: mode '{config.mode}' runs one model", file=err)
    runtime_notice(args.quiet)
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
    rid = save_first(result, store, args.json)
    words = STATUS_WORDS.get(result.status, result.status)
    period = f" with period {result.period}" if result.period else ""
    print(f"\n{words}{period} after {result.iterations} iteration(s)")
    print(f"final: {visible(result.final_text)}")
    c = result.cost
    print(f"cost: {c.forward_passes} forward passes, {c.forwarded_tokens:g} forwarded tokens, {c.wall_seconds:.1f} s")
    if config.adversarial or not args.quiet:
        print()
        print(fingerprint_block(result.fingerprints))
    if rid is not None:
        print(f"saved as run {rid} in {store.path}")
    if args.json:
        write_json(result, args.json, rid, store)
    if result.status == "interrupted":
        kept = f"the partial run was saved as run {rid}" if rid is not None else "nothing was saved (--no-save)"
        print(f"tokconv: interrupted after {result.iterations} iteration(s); {kept}", file=err)
        print("  resume: run the same command again to start the run over", file=err)
        return 130
    return 0
