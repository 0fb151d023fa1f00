"""The run store inside the dashboard: one RunStore per database path and process, saving, and its problems.

Every run the dashboard makes is saved to the same database as the CLI's
(``resolve_db_path(None)``: ``$TOKCONV_DB``, else ``~/.local/share/tokconv/runs.sqlite``).
``RunStore`` opens a connection per call, so the one cached instance is safe to
share between browser sessions. A database that cannot be used (a corrupt or
foreign file) is never touched: the dashboard says so once per browser session
and keeps working without saving. A failed open is not cached, so moving the
bad file away lets saving resume without a restart.
"""

from __future__ import annotations

import logging
import sqlite3

import streamlit as st

from tokconv.errors import TokconvError
from tokconv.experiments import RunResult
from tokconv.store import RunStore, resolve_db_path

NOTICED = "store_noticed"  # session state: the database paths whose problem this session has been shown


@st.cache_resource(show_spinner=False, max_entries=8)
def _open(path: str) -> RunStore:
    """The one RunStore of a path for this process (an exception is not cached: the next call tries again)."""
    return RunStore(path)


def db_path() -> str:
    """The database path, resolved as the CLI does (read on every script run, so $TOKCONV_DB is honoured)."""
    return str(resolve_db_path(None))


def open_store() -> tuple[RunStore | None, TokconvError | None]:
    """The store, or None and the reason it cannot be used."""
    try:
        return _open(db_path()), None
    except TokconvError as exc:
        return None, exc
    except (OSError, sqlite3.Error) as exc:  # e.g. a folder that cannot be created, a read-only disk
        return None, TokconvError(
            f"the run database {db_path()} cannot be opened: {exc}",
            "choose another database with the TOKCONV_DB variable and restart the dashboard",
        )


def store() -> RunStore | None:
    """The store, or None when it cannot be used (see :func:`show_problem`)."""
    return open_store()[0]


def show_problem(*, always: bool = False) -> bool:
    """Say why runs are not saved: once per browser session, or every time with ``always``. True if shown."""
    _, error = open_store()
    if error is None:
        return False
    seen: set[str] = st.session_state.setdefault(NOTICED, set())
    if db_path() in seen and not always:
        return False
    seen.add(db_path())
    st.error(f"Runs are not being saved: {error.problem}")
    if error.fix:
        st.info(error.fix)
    st.caption("Everything else works as before meanwhile; runs are shown but not saved, and that file is not written to.")
    return True


def save(result: RunResult) -> int | None:
    """Save a run; returns its id, or None when there is no usable store or saving failed (said in the page)."""
    s = store()
    if s is None:
        return None
    try:
        return s.save(result)
    except Exception as exc:  # the file vanished or was replaced after it was opened, a full disk, ...
        logging.getLogger("tokconv.dashboard").exception("could not save a run to %s", s.path)
        forget()  # check the file again next time rather than keep writing to it
        st.warning(f"This run could not be saved to {s.path} ({type(exc).__name__}: {exc}); it is still shown here.")
        return None


def forget() -> None:
    """Drop the open store, so that the next use checks the file again."""
    _open.clear()


def where() -> str:
    """One line for the sidebar: where runs go, or that they are not saved."""
    s, _ = open_store()
    return f"Runs are saved to `{s.path}` (see History)." if s else "Runs are not saved: the run database cannot be used (see History)."
