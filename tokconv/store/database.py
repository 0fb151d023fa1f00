"""The run store: every run saved in a local SQLite database (WAL mode), with migrations.

A run is saved in one transaction, whole or not at all, and a finished run is
stored once per settings key (a unique index enforces it, so two processes that
finish the same run keep one copy). An import is one transaction: all or nothing.
A file that is not a tokconv database (another program's, or not SQLite) or a
damaged one is refused with a clear message and never written to; a read-only
one can still be read. Several writers (browser sessions, a CLI sweep) may share
one database: WAL mode and a busy timeout serialise them without lost rows.
Every sqlite3 or OS error leaves this module as a TokconvError (see :mod:`.problems`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote

from ..errors import TokconvError
from ..experiments import RunConfig, RunResult
from ..experiments.records import SCHEMA_VERSION as RESULT_SCHEMA_VERSION
from ..paths import default_db_path
from . import problems

SCHEMA_VERSION = 4
APP_ID = "tokconv"
SQLITE_MAGIC = b"SQLite format 3\x00"


def resolve_db_path(path: str | Path | None = None) -> Path:
    """The database path: the given one, else the default resolution (same for CLI and app)."""
    return Path(path).expanduser() if path else default_db_path()


# Migrations: index i upgrades schema version i + 1 to i + 2. Version 1 kept only the JSON;
# version 2 adds searchable columns, backfilled from each run's JSON; version 3 keeps one
# finished run per settings key; version 4 stores every run in the run file schema 2.
def _create_v1(con: sqlite3.Connection) -> None:
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('app', ?), ('schema_version', '1')", (APP_ID,))
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, result_json TEXT NOT NULL)")


def _v1_to_v2(con: sqlite3.Connection) -> None:
    for col, typ in [("mode", "TEXT"), ("model_a", "TEXT"), ("model_b", "TEXT"), ("length", "INTEGER"), ("seed", "INTEGER"),
                     ("status", "TEXT"), ("iterations", "INTEGER"), ("config_key", "TEXT"), ("tokconv_version", "TEXT")]:
        con.execute(f"ALTER TABLE runs ADD COLUMN {col} {typ}")
    for rid, text in con.execute("SELECT id, result_json FROM runs").fetchall():
        cols = _columns(json.loads(text))
        con.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?", (*cols.values(), rid))
    con.execute("CREATE INDEX runs_lookup ON runs (mode, model_a, model_b, length, status)")
    con.execute("CREATE INDEX runs_config ON runs (config_key)")


def _v2_to_v3(con: sqlite3.Connection) -> None:
    # Older stores could hold the same finished run several times (two writers, re-imports):
    # keep the oldest copy, whose id users have seen first, then let SQLite enforce one per key.
    # Interrupted runs are partial and may repeat, so the index leaves them out.
    con.execute("DELETE FROM runs WHERE status != 'interrupted' AND id NOT IN "
                "(SELECT MIN(id) FROM runs WHERE status != 'interrupted' GROUP BY config_key)")
    con.execute("CREATE UNIQUE INDEX runs_one_finished ON runs (config_key) WHERE status != 'interrupted'")


def _v3_to_v4(con: sqlite3.Connection) -> None:
    # Run files of schema 1 read as schema 2 (new step and cost fields at their defaults);
    # rewriting them once keeps every stored run in the form this tokconv writes.
    for rid, text in con.execute("SELECT id, result_json FROM runs").fetchall():
        d = json.loads(text)
        if d.get("schema_version") == RESULT_SCHEMA_VERSION:
            continue
        try:
            new = RunResult.from_dict(d).to_dict()
        except TokconvError:
            continue  # a run this tokconv cannot read stays as it is; `runs show` names its problem
        con.execute("UPDATE runs SET result_json = ? WHERE id = ?", (json.dumps(new, ensure_ascii=False), rid))


MIGRATIONS = [_v1_to_v2, _v2_to_v3, _v3_to_v4]
# Read-only stores are not migrated: versions from this one on have every column queries use.
OLDEST_READABLE = 2


def _columns(d: dict[str, Any]) -> dict[str, Any]:
    cfg = d["config"]
    return {
        "mode": d["mode"], "model_a": cfg["model_a"], "model_b": cfg.get("model_b"), "length": d["length"], "seed": d["seed"],
        "status": d["status"], "iterations": d["iterations"], "config_key": RunConfig(**cfg).key(),
        "tokconv_version": d.get("versions", {}).get("tokconv"),
    }


@dataclass(frozen=True)
class ImportReport:
    """What an import did: ids of the runs added, and ids of stored runs that made others redundant."""

    added: tuple[int, ...]  # new ids, in file order
    duplicates: tuple[int, ...]  # stored runs equal to an imported one (same settings key and steps): not added again
    conflicts: tuple[int, ...] = ()  # stored finished runs with the same settings but other steps: kept, the import skipped

    def summary(self) -> str:
        """'imported 2 run(s), skipped 1 already saved' (and the conflicts, if any)."""
        text = f"imported {len(self.added)} run(s), skipped {len(self.duplicates)} already saved"
        if self.conflicts:
            text += (f", skipped {len(self.conflicts)} whose settings match a saved run with other results "
                     f"(kept the saved one{'s' if len(self.conflicts) > 1 else ''}: {', '.join(f'#{i}' for i in self.conflicts)})")
        return text


def _rollback(con: sqlite3.Connection) -> None:
    # SQLite has already rolled back after some errors (a full disk, I/O errors): a second
    # ROLLBACK would fail and hide the error that matters.
    if con.in_transaction:
        con.execute("ROLLBACK")


@dataclass(frozen=True)
class RunRow:
    """One saved run's summary (the full result is loaded on demand)."""

    id: int
    created_at: str
    mode: str
    model_a: str
    model_b: str | None
    length: int
    seed: int
    status: str
    iterations: int


class RunStore:
    """A SQLite database of runs.

    ``read_only`` opens it for reading only; a database that cannot be written (file,
    folder or disk) is opened that way by itself, and saving to it says so.
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False) -> None:
        self.path = resolve_db_path(path)
        self.read_only = read_only
        with self._guard("open"):
            if not self.read_only and not self.path.exists():
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise problems.from_os(self.path, "create the run database", exc) from exc
            if not self.read_only and not self._writable():
                self.read_only = True
            self._check_file()
            if self.read_only and not (self.path.exists() and self.path.stat().st_size):
                raise problems.read_only(self.path, "create the run database")
            if not self.read_only:
                try:
                    self._migrate()
                    return
                except sqlite3.OperationalError as exc:  # a read-only file that os.access did not see as one
                    if problems.kind(exc) != "read-only":
                        raise
                    self.read_only = True
            self._check_readable()

    # -- opening ---------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return self._connect_ro()
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 30000")
        return con

    def _connect_ro(self) -> sqlite3.Connection:
        """A connection that cannot write, even to a file or folder we could write."""
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        try:
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return con
        except sqlite3.OperationalError as exc:
            con.close()
            if problems.kind(exc) != "cannot-open":
                raise
            # A WAL database on read-only media whose -shm file cannot be made: read it as immutable.
            return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30.0, isolation_level=None)

    def _writable(self) -> bool:
        """Whether the file and its folder (where SQLite keeps its -wal and -shm files) can be written."""
        folder_ok = os.access(self.path.parent, os.W_OK)
        return folder_ok and (not self.path.exists() or os.access(self.path, os.W_OK))

    def _check_file(self) -> None:
        """Refuse a file that is not a tokconv database, or a damaged one, before anything writes to it."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as f:
            if f.read(16) != SQLITE_MAGIC:
                raise problems.foreign(self.path, "it is not an SQLite file, or it is corrupt")
        # A read-write connection when we may write: read-only ones cannot recover a WAL file that
        # another process is checkpointing. Nothing here writes either way.
        con = self._connect()
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            app = con.execute("SELECT value FROM meta WHERE key = 'app'").fetchone() if "meta" in tables else None
            if tables and (app is None or app[0] != APP_ID):
                raise problems.foreign(self.path, "it holds another program's tables")
            # The header can be fine while data pages are not; find out now, not halfway through a save.
            check = [r[0] for r in con.execute("PRAGMA quick_check(5)")]
            if check != ["ok"]:
                raise problems.damaged(self.path, "; ".join(check))
        except sqlite3.DatabaseError as exc:
            if "file is not a database" in str(exc):
                raise problems.foreign(self.path, f"SQLite says: {exc}") from exc
            if problems.kind(exc) == "damaged":
                raise problems.damaged(self.path, str(exc)) from exc
            raise  # busy, cannot open, ...: said as such by the guard
        finally:
            con.close()

    def _version(self, con: sqlite3.Connection) -> int | None:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            return None
        version = int(con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise TokconvError(
                f"{self.path} was written by a newer tokconv (schema {version}; this one reads up to {SCHEMA_VERSION})",
                "upgrade tokconv, or use another database with --db PATH",
            )
        return version

    def _check_readable(self) -> None:
        """A read-only store is not migrated: it must already have the columns queries use."""
        con = self._connect()
        try:
            version = self._version(con)
        finally:
            con.close()
        if version is None or version < OLDEST_READABLE:
            raise TokconvError(
                f"{self.path} is read-only and was written by an older tokconv: it must be upgraded, which writes to it",
                "copy it somewhere writable and open the copy with --db PATH (it is upgraded on first use)",
            )

    def _migrate(self) -> None:
        con = self._connect()
        try:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("BEGIN IMMEDIATE")  # one migrator at a time
            try:
                version = self._version(con)
                if version is None:
                    _create_v1(con)
                    version = 1
                for step in MIGRATIONS[version - 1 :]:
                    step(con)
                con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        finally:
            con.close()

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn sqlite3 and OS errors met while doing ``action`` into TokconvErrors naming this file."""
        try:
            yield
        except TokconvError:
            raise
        except sqlite3.Error as exc:
            raise problems.from_sqlite(self.path, action, exc) from exc
        except OSError as exc:
            raise problems.from_os(self.path, action, exc) from exc

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._guard(action):
            con = self._connect()
            try:
                yield con
            finally:
                con.close()

    @contextmanager
    def _writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole, or rolled back whole."""
        if self.read_only:
            raise problems.read_only(self.path, action)
        with self._reading(action) as con:  # the same connection and error handling, plus the transaction
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise

    # -- writing ---------------------------------------------------------------------------------

    @staticmethod
    def _row(result: RunResult) -> tuple[dict[str, Any], dict[str, Any]]:
        d = result.to_dict()
        return d, _columns(d)

    @staticmethod
    def _insert(con: sqlite3.Connection, d: dict[str, Any], cols: dict[str, Any]) -> int:
        """Insert a run unless its finished twin is stored; the id of the stored copy either way."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        cur = con.execute(
            f"INSERT OR IGNORE INTO runs (created_at, result_json, {', '.join(cols)}) VALUES (?, ?, {', '.join('?' * len(cols))})",
            (now, json.dumps(d, ensure_ascii=False), *cols.values()),
        )
        if cur.rowcount == 1:
            return int(cur.lastrowid)
        row = con.execute("SELECT id FROM runs WHERE config_key = ? AND status != 'interrupted'", (cols["config_key"],)).fetchone()
        return int(row[0])

    def save(self, result: RunResult) -> int:
        """Save a finished (or interrupted) run in one transaction; returns its id.

        A finished run whose settings key is already stored is not stored again: the
        stored copy's id is returned (runs are deterministic per settings key)."""
        d, cols = self._row(result)
        with self._writing("save a run to") as con:
            return self._insert(con, d, cols)

    def import_runs(self, results: Iterable[RunResult]) -> ImportReport:
        """Save runs exported elsewhere, all in one transaction (all or nothing).

        A run already stored (same settings key and the same steps) is not added again,
        nor a finished run whose settings key is stored with other steps: the report tells
        new ids from those."""
        rows = [self._row(r) for r in results]  # everything is turned into rows before the first write
        added: list[int] = []
        duplicates: list[int] = []
        conflicts: list[int] = []
        with self._writing("import runs into") as con:
            for d, cols in rows:
                interrupted = cols["status"] == "interrupted"
                stored = con.execute(
                    "SELECT id, result_json FROM runs WHERE config_key = ? AND (status = 'interrupted') = ? ORDER BY id",
                    (cols["config_key"], interrupted),
                ).fetchall()
                steps = json.dumps(d["steps"])
                same = [rid for rid, text in stored if json.dumps(json.loads(text)["steps"]) == steps]
                if same:
                    duplicates.append(int(same[0]))
                elif stored and not interrupted:
                    conflicts.append(int(stored[0][0]))
                else:
                    added.append(self._insert(con, d, cols))
        return ImportReport(tuple(added), tuple(duplicates), tuple(conflicts))

    def delete(self, run_id: int) -> None:
        """Delete one run (an error if it does not exist)."""
        with self._writing("delete a run from") as con:
            n = con.execute("DELETE FROM runs WHERE id = ?", (int(run_id),)).rowcount
        if n == 0:
            raise TokconvError(f"there is no run with id {run_id} in {self.path}", "list the saved runs with `tokconv runs list`")

    # -- reading ---------------------------------------------------------------------------------

    def list(self, *, mode: str | None = None, model: str | None = None, length: int | None = None,
             status: str | None = None, since: str | None = None, limit: int = 1000) -> list[RunRow]:
        """Saved runs, newest first, filtered by mode, model (either side), length, status, date (ISO, inclusive)."""
        where, args = [], []
        for col, val in (("mode", mode), ("length", length), ("status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if model:
            where.append("(model_a = ? OR model_b = ?)")
            args += [model, model]
        if since:
            where.append("created_at >= ?")
            args.append(since)
        sql = ("SELECT id, created_at, mode, model_a, model_b, length, seed, status, iterations FROM runs"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
        with self._reading("list the runs in") as con:
            return [RunRow(*r) for r in con.execute(sql, (*args, limit))]

    def get(self, run_id: int) -> RunResult:
        """The full saved run."""
        with self._reading("read a run from") as con:
            row = con.execute("SELECT result_json FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise TokconvError(f"there is no run with id {run_id} in {self.path}", "list the saved runs with `tokconv runs list`")
        try:
            return RunResult.from_json(row[0])
        except TokconvError as exc:  # damage inside a record that SQLite's page checks cannot see
            raise TokconvError(f"run {run_id} in {self.path} cannot be read: {exc.problem}",
                               f"delete it with `tokconv runs delete {run_id}`, or restore the database from a backup") from exc

    def done_keys(self) -> set[str]:
        """Config keys of runs that finished (not interrupted): a resumed sweep skips these."""
        with self._reading("read") as con:
            return {r[0] for r in con.execute("SELECT config_key FROM runs WHERE status != 'interrupted'")}

    def latest_ids(self, keys: Iterable[str]) -> dict[str, int]:
        """For each config key that has a finished run, the id of the stored one (a sweep shows skipped runs with this)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, int] = {}
        with self._reading("read") as con:
            for k in range(0, len(keys), 500):  # stay under SQLite's limit on bound parameters
                chunk = keys[k : k + 500]
                sql = (f"SELECT config_key, MAX(id) FROM runs WHERE status != 'interrupted' "
                       f"AND config_key IN ({', '.join('?' * len(chunk))}) GROUP BY config_key")
                found.update({key: int(rid) for key, rid in con.execute(sql, chunk)})
        return found
