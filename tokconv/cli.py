"""The ``tokconv`` command line: picks a subcommand module and turns errors into messages.

Each subcommand lives in ``tokconv/commands/<name>.py`` with ``add_arguments``
and ``main(args)``; this file only dispatches. Without a subcommand the
original script's form works: ``python -m tokconv -l 20 -m sequential``.

The error boundary (:func:`handle_error`) is the one place that turns a failure into
an exit code, so no command prints a traceback:

- a problem the user can fix (:class:`TokconvError`, a file or disk error, a broken
  database, a number or text that does not fit) prints ``tokconv: error: PROBLEM``
  and ``  fix: FIX`` and exits 2;
- Ctrl-C exits 130 (commands that save as they go say what was saved first);
- a closed pipe (``tokconv runs list | head -1``) exits 141 quietly, as Unix tools do;
- anything else is a bug: one line on stderr, the traceback in a log file, exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import importlib
import json
import os
import sqlite3
import sys
import tempfile
import traceback
from pathlib import Path

from .errors import TokconvError


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

exit codes: 0 done; 2 a problem you can fix (the message says how); 1 a bug (a log file
holds the traceback); 130 interrupted (what was saved is kept: rerun the same command);
141 the output pipe was closed (e.g. tokconv runs list | head -1).
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
    """Run the CLI; returns the exit code (0 ok, 1 failed, 2 bad input, 130 interrupted, 141 closed pipe)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # the original script's form: python -m tokconv -l 20 -m sequential
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        module = importlib.import_module(f"tokconv.commands.{args.command}")
        code = int(module.main(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, inside the boundary, not at interpreter exit
        return code
    except BaseException as exc:  # noqa: BLE001  (the one place that turns every failure into a message)
        return handle_error(exc, argv)


def _say(problem: str, fix: str = "") -> None:
    print(f"tokconv: error: {problem}", file=sys.stderr)
    if fix:
        print(f"  fix: {fix}", file=sys.stderr)


def _os_error(exc: OSError) -> tuple[str, str]:
    """Problem and fix for a file or disk error, in words (the errno picks the advice)."""
    where = f" ({exc.filename})" if exc.filename else ""
    what = exc.strerror or str(exc) or type(exc).__name__
    fixes = {
        errno.ENOSPC: ("the disk is full" + where, "free some disk space, or write to another disk (--json PATH, --db PATH, --output PATH, TOKCONV_CACHE)"),
        errno.EDQUOT: ("the disk quota is used up" + where, "free some space, or write to another disk"),
        errno.EACCES: (f"permission denied{where}", "choose a path you can write to, or fix the permissions"),
        errno.EPERM: (f"operation not permitted{where}", "choose a path you can write to, or fix the permissions"),
        errno.EROFS: (f"the file system is read-only{where}", "choose a path on a writable disk"),
        errno.EISDIR: (f"{exc.filename or 'the path'} is a folder, not a file", "give a file path, e.g. FOLDER/name.json"),
        errno.ENOTDIR: (f"a part of {exc.filename or 'the path'} is a file, not a folder", "check the path"),
        errno.ENOENT: (f"no such file or folder{where}", "check the path, or create the folder first"),
    }
    return fixes.get(exc.errno, (f"{what}{where}", "check the path and the disk, then try again"))


def _crash_log(exc: BaseException, argv: list[str]) -> Path | None:
    """Write the traceback to a log file (tokconv's cache, else the temp folder); returns its path."""
    from .paths import cache_dir
    from .version import __version__

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (f"tokconv {__version__}, Python {sys.version.split()[0]}\nargv: {argv!r}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"tokconv-crash-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8", errors="backslashreplace")
            return path
        except OSError:
            continue  # an unwritable cache must not hide the real error
    return None


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into a closed pipe is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (tests capture it): nothing will be flushed into the pipe


def handle_error(exc: BaseException, argv: list[str] | None = None) -> int:
    """Report ``exc`` the way the CLI promises and return the exit code (see the module docstring)."""
    if isinstance(exc, SystemExit):
        raise exc  # argparse's own --help and usage errors
    if isinstance(exc, BrokenPipeError):
        _quiet_stdout()
        return 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away
    if isinstance(exc, KeyboardInterrupt):
        print("\ntokconv: interrupted; nothing more was saved", file=sys.stderr)
        print("  resume: run the same command again", file=sys.stderr)
        return 130
    if isinstance(exc, TokconvError):
        _say(exc.problem, exc.fix)
    elif isinstance(exc, OSError):
        _say(*_os_error(exc))
    elif isinstance(exc, sqlite3.Error):
        _say(f"the run database failed: {exc}",
             "check that the database and its folder are writable and the disk has space, or use another one with --db PATH")
    elif isinstance(exc, json.JSONDecodeError):
        _say(f"a file is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
             "pick a file written by `tokconv runs export` or `tokconv run --json`")
    elif isinstance(exc, UnicodeDecodeError):
        _say(f"some text is not valid UTF-8 ({exc.reason} at byte {exc.start})", "save the file as UTF-8, or check the argument's encoding")
    elif isinstance(exc, UnicodeEncodeError):
        if "surrogate" in str(exc.reason):
            _say("an argument is not valid UTF-8 text", "check the terminal's encoding, or retype the text")
        else:
            _say(f"cannot print this text in the output's encoding ({exc.encoding})",
                 "use a UTF-8 locale (LANG=C.UTF-8) or set PYTHONIOENCODING=utf-8")
    elif isinstance(exc, OverflowError):
        _say(f"a number is too large ({exc})", "use smaller numbers: seeds, ids and counts must be below 2**63")
    elif isinstance(exc, MemoryError):
        _say("out of memory", "run fewer or shorter runs at a time, or a smaller model")
    else:
        log = _crash_log(exc, argv or [])
        print(f"tokconv: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        where = f"the traceback is in {log}" if log else "the traceback could not be written to a log file"
        print(f"  this is a bug in tokconv; {where} (please attach it to a bug report)", file=sys.stderr)
        return 1
    return 2


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
