"""The ``tokconv`` command line: picks a subcommand module and turns errors into messages.

Each subcommand lives in ``tokconv/commands/<name>.py`` with ``add_arguments``
and ``main(args)``; this file only dispatches. Without a subcommand the
original script's form works: ``python -m tokconv -l 20 -m sequential``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "run": "run one convergence experiment (the original script's -l/-m/-n form works without 'run')",
    "report": "rerun the original experiments over many seeds and write a markdown report",
    "sweep": "run many seeds and lengths of one mode, saved to the run store (resumes when stopped)",
    "runs": "list, show, delete, export or import saved runs",
    "models": "list the bundled models and whether they are installed and converted",
    "complete": "print a model's greedy continuation of a prompt (a quick check that a model works)",
    "vocab": "compare two models' vocabularies id by id (what sharing token ids between them would mean)",
}

EPILOG = """examples:
  tokconv run -l 20 -m sequential
  python -m tokconv -l 20 -m adversarial-single --model-a smollm2-135m --model-b qwen2.5-coder-0.5b
  tokconv sweep --model smollm2-135m --mode single --lengths 8,16,32 --seeds 0-63
  tokconv runs list
  tokconv runs export --format csv --output runs.csv
  tokconv models
  tokconv complete --model smollm2-135m --prompt "The capital of France is" --max-tokens 8
  tokconv vocab smollm2-135m qwen2.5-coder-0.5b
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokconv",
        description="Watch language models converge on token sequences, and fight.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"tokconv.commands.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failed, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # the original script's form: python -m tokconv -l 20 -m sequential
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .errors import TokconvError

    module = importlib.import_module(f"tokconv.commands.{args.command}")
    try:
        return int(module.main(args) or 0)
    except TokconvError as exc:
        print(f"tokconv: error: {exc.problem}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokconv: interrupted", file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
