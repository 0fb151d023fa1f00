"""What several commands share: the --db option, checks of arguments before any model work, the
fast-path notice, and saving a finished run so that it is never lost.

Every check raises :class:`TokconvError` (problem and fix); the CLI's boundary prints it and exits 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .. import fastpath
from ..errors import TokconvError
from ..experiments.config import MAX_SEED, MAX_SWEEP_RUNS
from ..paths import cache_dir
from ..store import resolve_db_path

if TYPE_CHECKING:
    from ..experiments import RunResult
    from ..store import RunStore

DB_HELP = "run database (default: $TOKCONV_DB, else ~/.local/share/tokconv/runs.sqlite)"


def add_db_option(parser: argparse.ArgumentParser, *, inherited: bool = False) -> None:
    """Add --db. ``inherited``: a sub-action's copy, which leaves the parent's value alone unless given."""
    parser.add_argument("--db", default=argparse.SUPPRESS if inherited else None, metavar="PATH", help=DB_HELP)


def add_quiet_option(parser: argparse.ArgumentParser, help_text: str = "print less: no fast-path notice on stderr") -> None:
    parser.add_argument("--quiet", action="store_true", help=help_text)


def check_seed(seed: int, what: str = "--seed") -> None:
    """Seeds are 0 .. 2**63-1: numpy refuses negatives and the run store keeps 64-bit integers."""
    if not 0 <= seed <= MAX_SEED:
        raise TokconvError(f"{what} {seed} is out of range", f"use a seed between 0 and {MAX_SEED} (2**63-1)")


def check_text(text: str | None, what: str) -> None:
    """Refuse text that is not valid UTF-8 (bytes that came through argv as surrogate escapes)."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TokconvError(f"{what} is not valid UTF-8 text", "check the terminal's encoding (a UTF-8 locale), or retype the text") from None


SEEDS_FIX = "write seeds as a range like 0-7 or a list like 1,2,5 (seeds are 0 or more)"


def parse_seeds(text: str) -> Sequence[int]:
    """'0-7' -> range(0, 8); '1,2,5' or '0-3,9' -> (1, 2, 5) or (0, 1, 2, 3, 9). A lone range stays a range
    (no list of 10**8 ints for a typo); a list is at most MAX_SWEEP_RUNS seeds."""
    parts: list[range] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if m := re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", item):
            lo, hi = int(m[1]), int(m[2])
        elif re.fullmatch(r"-?\d+", item):
            lo = hi = int(item)
        else:
            raise TokconvError(f"cannot read seeds '{text}'", SEEDS_FIX)
        if lo < 0 or hi < 0:
            raise TokconvError(f"seeds '{item}' include a negative seed", SEEDS_FIX)
        if hi < lo:
            raise TokconvError(f"the seed range '{item}' runs backwards", f"write the smaller seed first: {hi}-{lo}")
        check_seed(hi, "seed")
        parts.append(range(lo, hi + 1))
    if not parts:
        raise TokconvError(f"no seeds given in '{text}'", SEEDS_FIX)
    if len(parts) == 1:
        return parts[0]
    if sum(len(p) for p in parts) > MAX_SWEEP_RUNS:
        raise TokconvError(f"more than {MAX_SWEEP_RUNS:,} seeds in '{text}'", "split the seeds over several commands")
    return tuple(dict.fromkeys(chain(*parts)))  # in the order given, each once


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output_file(path: Path | None, what: str) -> None:
    """Make sure ``path`` can be written as a file, before any work; leaves no trace behind."""
    if path is None:
        return
    if path.is_dir():
        raise TokconvError(f"{what} {path} is a folder, not a file", f"give a file path, e.g. {path / 'run.json'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise TokconvError(f"{what} {path}: the folder {parent} does not exist", f"create it first (mkdir -p {parent}) or pick another path")
    try:
        if path.exists():
            with open(path, "ab"):  # opening to append changes nothing, yet fails where writing would
                pass
        else:
            with open(path, "xb"):
                pass
            path.unlink()
    except OSError as exc:
        raise TokconvError(f"cannot write {what} {path}: {_why(exc)}", "choose a path you can write to") from None


def check_db(db: str | None, *, writing: bool = False) -> Path:
    """The run database's path, checked: not a folder, and its folder can hold it.

    ``writing``: the command will save runs, so the file (or, for a new one, the folder that will
    hold it) must be writable.
    """
    path = resolve_db_path(db)
    source = "--db" if db else ("TOKCONV_DB" if os.environ.get("TOKCONV_DB") else "the run database")
    if path.is_dir():
        raise TokconvError(f"{source} {path} is a folder, not a database file", f"give a file path, e.g. --db {path / 'runs.sqlite'}")
    existing = next(f for f in (path, *path.parents) if f.exists())  # the root always exists
    if existing != path and not existing.is_dir():
        raise TokconvError(f"{source} {path}: {existing} is a file, not a folder", "choose another database with --db PATH")
    if writing and not os.access(existing, os.W_OK):
        raise TokconvError(f"{source} {path} cannot be written ({existing} is read-only)",
                           "choose a database you can write to with --db PATH, or run with --no-save --json PATH")
    return path


def check_cache() -> Path:
    """The cache folder (converted models live there) must be a writable folder, before a model loads."""
    path = cache_dir()
    name = f"TOKCONV_CACHE ({path})" if os.environ.get("TOKCONV_CACHE") else f"the cache folder {path}"
    fix = "point TOKCONV_CACHE at a writable folder, e.g. export TOKCONV_CACHE=~/.cache/tokconv"
    if path.exists() and not path.is_dir():
        raise TokconvError(f"{name} is a file, not a folder", fix)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".tokconv-probe-"):
            pass
    except OSError as exc:
        raise TokconvError(f"cannot write to {name}: {_why(exc)}", fix) from None
    return path


_noticed = False


def runtime_notice(quiet: bool) -> None:
    """Print the one-line fast-path notice on stderr, once per process (commands that load models call this)."""
    global _noticed
    if quiet or _noticed:
        return
    _noticed = True
    print(fastpath.setup().notice(), file=sys.stderr, flush=True)


def rescue(results: list[RunResult], label: str = "run") -> Path:
    """Write runs that could not be saved to a JSON file ``tokconv runs import`` reads; returns its path."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = json.dumps({"runs": [r.to_dict() for r in results]}, ensure_ascii=False, indent=1)
    last: OSError | None = None
    for folder in (cache_dir() / "rescued", Path(tempfile.gettempdir()), Path.cwd()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"tokconv-{label}-{stamp}-{os.getpid()}.json"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError as exc:
            last = exc  # try the next place: the run matters more than where it lands
    raise TokconvError(f"the run could not be saved nor written anywhere ({last})", "free some disk space and run it again")


def save_or_rescue(store: RunStore, result: RunResult) -> int:
    """Save ``result`` in ``store``; if the store fails, keep the run in a rescue file and say where."""
    import sqlite3

    try:
        return store.save(result)
    except (sqlite3.Error, OSError, TokconvError) as exc:
        reason = exc.problem if isinstance(exc, TokconvError) else f"{type(exc).__name__}: {exc}"
        path = rescue([result])
        raise TokconvError(
            f"the run finished but could not be saved in {store.path} ({reason}); it was kept in {path}",
            f"import it later with `tokconv runs import {path} --db OTHER.sqlite`; next time use --db elsewhere, or --no-save --json PATH",
        ) from exc
