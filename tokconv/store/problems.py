"""What can go wrong with a run database, told apart and said as TokconvErrors.

A *foreign* file (not SQLite, or another program's tables), a *damaged* tokconv
database, a *read-only* one, a full disk, a lock held too long: each gets its own
message naming the file and a fix. The store turns every sqlite3.Error and
OSError into one of these at its boundary, so callers only ever see TokconvError.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from ..errors import TokconvError

OTHER_DB = "choose another database with --db PATH or the TOKCONV_DB variable"


def foreign(path: Path, why: str) -> TokconvError:
    """Not a tokconv database at all: never written to."""
    return TokconvError(
        f"{path} is not a tokconv run database ({why}); it was left untouched",
        f"move that file away, or {OTHER_DB}",
    )


def damaged(path: Path, detail: str) -> TokconvError:
    """A tokconv (or unidentifiable SQLite) database whose pages are damaged."""
    return TokconvError(
        f"the run database {path} is damaged (SQLite says: {detail}); it was left untouched",
        f"restore it from a backup, or salvage what is readable with `sqlite3 {path} .recover | sqlite3 recovered.sqlite`"
        f" and use that; meanwhile {OTHER_DB}",
    )


def read_only(path: Path, action: str = "save runs to") -> TokconvError:
    """A database that can be read but not written (file, folder or disk read-only)."""
    return TokconvError(
        f"cannot {action} {path}: the database is read-only (the file, its folder or the disk cannot be written); "
        "its runs can still be listed, shown and exported",
        f"{OTHER_DB} (a writable one), or make the file and its folder writable",
    )


def disk_full(path: Path, action: str) -> TokconvError:
    return TokconvError(
        f"cannot {action} {path}: the disk is full (nothing was half-written)",
        "free some disk space and try again, or use a database on another disk (--db PATH or the TOKCONV_DB variable)",
    )


def kind(exc: sqlite3.Error) -> str:
    """What an sqlite3 error means: 'full', 'read-only', 'damaged', 'busy', 'cannot-open' or 'other'."""
    name = getattr(exc, "sqlite_errorname", "") or ""  # Python 3.11+; the message is the fallback
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "full"
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return "read-only"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return "damaged"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return "busy"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "cannot-open"
    return "other"


def from_sqlite(path: Path, action: str, exc: sqlite3.Error) -> TokconvError:
    """The TokconvError for an sqlite3 error met while doing ``action`` ('save a run to')."""
    what = kind(exc)
    if what == "full":
        return disk_full(path, action)
    if what == "read-only":
        return read_only(path, action)
    if what == "damaged":
        return damaged(path, str(exc))
    if what == "busy":
        return TokconvError(
            f"cannot {action} {path}: another program kept the database locked for over 30 seconds",
            "wait for the other tokconv (a sweep, the dashboard) to finish its write, then try again",
        )
    if what == "cannot-open":
        return TokconvError(
            f"cannot open the run database {path} (SQLite says: {exc})",
            f"check that the file and its folder exist and can be read, or {OTHER_DB}",
        )
    return TokconvError(f"cannot {action} {path} (SQLite says: {exc})", f"check the file, or {OTHER_DB}")


def from_os(path: Path, action: str, exc: OSError) -> TokconvError:
    """The TokconvError for an OSError (a folder that cannot be made, a full disk, no permission)."""
    if exc.errno == errno.ENOSPC:
        return disk_full(path, action)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return read_only(path, action)
    return TokconvError(f"cannot {action} {path} ({exc.strerror or exc})", f"check the path, or {OTHER_DB}")
