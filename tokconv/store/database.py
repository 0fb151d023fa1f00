"""The run store: every run saved in a local SQLite database (WAL mode), with migrations.

A run is saved in one transaction, whole or not at all. A file that is not a
tokconv database (corrupt, or another program's) is refused with a clear message
and never overwritten. Several writers (browser sessions, a CLI sweep) may share
one database: WAL mode and a busy timeout serialise them without lost rows.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import TokconvError
from ..paths import default_db_path
from ..experiments import RunConfig, RunResult

SCHEMA_VERSION = 2
APP_ID = "tokconv"


def resolve_db_path(path: str | Path | None = None) -> Path:
    """The database path: the given one, else the default resolution (same for CLI and app)."""
    return Path(path).expanduser() if path else default_db_path()


# Migrations: index i upgrades schema version i to i + 1. Version 1 kept only the JSON;
# version 2 adds searchable columns, backfilled from each run's JSON.
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


MIGRATIONS = [_v1_to_v2]


def _columns(d: dict[str, Any]) -> dict[str, Any]:
    cfg = d["config"]
    return {
        "mode": d["mode"], "model_a": cfg["model_a"], "model_b": cfg.get("model_b"), "length": d["length"], "seed": d["seed"],
        "status": d["status"], "iterations": d["iterations"], "config_key": RunConfig(**cfg).key(),
        "tokconv_version": d.get("versions", {}).get("tokconv"),
    }


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
    """A SQLite database of runs."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = resolve_db_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_foreign()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 30000")
        return con

    def _refuse(self, why: str) -> TokconvError:
        return TokconvError(
            f"{self.path} is not a tokconv run database ({why}); it was left untouched",
            "move that file away, or choose another database with --db PATH or the TOKCONV_DB variable",
        )

    def _check_foreign(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise self._refuse("it is not an SQLite file, or it is corrupt")
        try:
            con = self._connect()
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                app = con.execute("SELECT value FROM meta WHERE key = 'app'").fetchone() if "meta" in tables else None
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise self._refuse(f"SQLite says: {exc}") from exc
        if tables and (app is None or app[0] != APP_ID):
            raise self._refuse("it holds another program's tables")

    def _migrate(self) -> None:
        con = self._connect()
        try:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("BEGIN IMMEDIATE")  # one migrator at a time
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "meta" not in tables:
                    _create_v1(con)
                version = int(con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
                if version > SCHEMA_VERSION:
                    raise TokconvError(
                        f"{self.path} was written by a newer tokconv (schema {version}; this one reads up to {SCHEMA_VERSION})",
                        "upgrade tokconv, or use another database with --db PATH",
                    )
                for step in MIGRATIONS[version - 1 :]:
                    step(con)
                con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise self._refuse(f"SQLite says: {exc}") from exc
        finally:
            con.close()

    def save(self, result: RunResult) -> int:
        """Save a finished (or interrupted) run in one transaction; returns its id."""
        d = result.to_dict()
        cols = _columns(d)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        con = self._connect()
        try:
            with con:
                cur = con.execute(
                    f"INSERT INTO runs (created_at, result_json, {', '.join(cols)}) VALUES (?, ?, {', '.join('?' * len(cols))})",
                    (now, json.dumps(d, ensure_ascii=False), *cols.values()),
                )
            return int(cur.lastrowid)
        finally:
            con.close()

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
        con = self._connect()
        try:
            return [RunRow(*r) for r in con.execute(sql, (*args, limit))]
        finally:
            con.close()

    def get(self, run_id: int) -> RunResult:
        """The full saved run."""
        con = self._connect()
        try:
            row = con.execute("SELECT result_json FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        finally:
            con.close()
        if row is None:
            raise TokconvError(f"there is no run with id {run_id} in {self.path}", "list the saved runs with `tokconv runs list`")
        return RunResult.from_json(row[0])

    def delete(self, run_id: int) -> None:
        """Delete one run (an error if it does not exist)."""
        con = self._connect()
        try:
            with con:
                n = con.execute("DELETE FROM runs WHERE id = ?", (int(run_id),)).rowcount
        finally:
            con.close()
        if n == 0:
            raise TokconvError(f"there is no run with id {run_id} in {self.path}", "list the saved runs with `tokconv runs list`")

    def done_keys(self) -> set[str]:
        """Config keys of runs that finished (not interrupted): a resumed sweep skips these."""
        con = self._connect()
        try:
            return {r[0] for r in con.execute("SELECT config_key FROM runs WHERE status != 'interrupted'")}
        finally:
            con.close()

    def latest_ids(self, keys: Iterable[str]) -> dict[str, int]:
        """For each config key that has a finished run, the id of the newest one (a sweep shows skipped runs with this)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, int] = {}
        con = self._connect()
        try:
            for k in range(0, len(keys), 500):  # stay under SQLite's limit on bound parameters
                chunk = keys[k : k + 500]
                sql = (f"SELECT config_key, MAX(id) FROM runs WHERE status != 'interrupted' "
                       f"AND config_key IN ({', '.join('?' * len(chunk))}) GROUP BY config_key")
                found.update({key: int(rid) for key, rid in con.execute(sql, chunk)})
        finally:
            con.close()
        return found

    def import_runs(self, results: Iterable[RunResult]) -> list[int]:
        """Save runs exported elsewhere; returns their new ids."""
        return [self.save(r) for r in results]
