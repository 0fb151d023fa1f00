"""The run store: round trips, migration from the first schema, concurrent writers, bad files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from tiny import constant_lm, run_tiny, successor_lm
from tokconv.errors import TokconvError
from tokconv.experiments import RunResult
from tokconv.store import RunStore, resolve_db_path
from tokconv.store.database import SCHEMA_VERSION, _create_v1, _v1_to_v2


@pytest.fixture
def result() -> RunResult:
    return run_tiny("adversarial", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0, 0])


def test_a_saved_run_comes_back_identical(tmp_path, result):
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.save(result)
    assert store.get(rid).to_dict() == result.to_dict()
    [row] = store.list()
    assert (row.id, row.mode, row.model_a, row.model_b, row.status) == (rid, "adversarial", "A", "B", "oscillating")


def test_list_filters_and_delete(tmp_path, result):
    store = RunStore(tmp_path / "runs.sqlite")
    solo = run_tiny("sequential", [successor_lm()], [1, 1, 1])
    a, b = store.save(result), store.save(solo)
    assert [r.id for r in store.list(mode="sequential")] == [b]
    assert [r.id for r in store.list(model="B")] == [a]
    assert [r.id for r in store.list(status="oscillating")] == [a]
    assert store.list(since="2999-01-01") == []
    store.delete(a)
    assert [r.id for r in store.list()] == [b]
    with pytest.raises(TokconvError, match=f"no run with id {a}"):
        store.get(a)


def test_a_first_schema_database_is_migrated_and_backfilled(tmp_path, result):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path, isolation_level=None)
    _create_v1(con)
    con.execute("INSERT INTO runs (created_at, result_json) VALUES ('2026-01-01T00:00:00', ?)", (result.to_json(),))
    con.close()
    store = RunStore(path)
    [row] = store.list(mode="adversarial")
    assert row.status == "oscillating" and row.model_b == "B"
    assert result.config.key() in store.done_keys()
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION)  # migrated through every step to the current schema


def test_a_corrupt_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "runs.sqlite"
    path.write_bytes(b"this is not a database at all" * 10)
    before = path.read_bytes()
    with pytest.raises(TokconvError, match="not a tokconv run database") as info:
        RunStore(path)
    assert "--db" in info.value.fix
    assert path.read_bytes() == before


def test_another_programs_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(TokconvError, match="another program's tables"):
        RunStore(path)


def test_db_path_resolution_prefers_flag_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKCONV_DB", str(tmp_path / "env.sqlite"))
    assert resolve_db_path(tmp_path / "flag.sqlite") == tmp_path / "flag.sqlite"
    assert resolve_db_path(None) == tmp_path / "env.sqlite"


def test_two_writer_processes_lose_norun_tiny(tmp_path, result):
    db, template = tmp_path / "runs.sqlite", tmp_path / "run.json"
    template.write_text(result.to_json())
    RunStore(db)
    code = textwrap.dedent(f"""
        import json, sys
        from tokconv.experiments import RunResult
        from tokconv.store import RunStore
        d = json.load(open({str(template)!r}))
        s = RunStore({str(db)!r})
        for i in range(60):  # 60 different runs each (a finished run is stored once per settings key)
            d["config"]["seed"] = int(sys.argv[1]) * 1000 + i
            s.save(RunResult.from_dict(d))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in range(2)]
    reader = RunStore(db)
    seen = [len(reader.list()) for _ in range(5)]  # a reader alongside the writers
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(reader.list()) == 120
    assert seen == sorted(seen)


def test_an_interrupted_run_is_saved_whole_as_interrupted(tmp_path):
    from tiny import experiment
    from tokconv.experiments.experiment import collect

    exp = experiment("adversarial", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0] * 5, iterations=50)
    r = collect(exp, exp.records(lambda: True))
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.save(r)
    assert store.get(rid).status == "interrupted"
    assert r.config.key() not in store.done_keys()
