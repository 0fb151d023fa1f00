"""The run store: round trips, migration from the first schema, concurrent writers, bad files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

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


# --- one stored finished run per settings key -----------------------------------------------------


def _with_seed(result: RunResult, seed: int, status: str | None = None) -> RunResult:
    """The same run under another settings key (and optionally another status)."""
    d = result.to_dict()
    d["config"]["seed"] = d["seed"] = seed
    if status:
        d["status"] = status
    return RunResult.from_dict(d)


def test_a_finished_run_is_stored_once_per_settings_key(tmp_path, result):
    store = RunStore(tmp_path / "runs.sqlite")
    first = store.save(result)
    assert store.save(result) == first  # the stored copy's id
    assert [r.id for r in store.list()] == [first]
    other = store.save(_with_seed(result, 7))
    assert other != first and len(store.list()) == 2


def test_interrupted_runs_may_repeat_and_never_block_the_finished_one(tmp_path, result):
    store = RunStore(tmp_path / "runs.sqlite")
    cut = _with_seed(result, 3, status="interrupted")
    a, b = store.save(cut), store.save(cut)
    assert a != b
    done = store.save(_with_seed(result, 3))  # the same settings, run to the end
    assert done not in (a, b)
    assert sorted(r.status for r in store.list()) == ["interrupted", "interrupted", "oscillating"]
    assert store.latest_ids([cut.config.key()]) == {cut.config.key(): done}


def test_two_processes_saving_overlapping_runs_store_each_once(tmp_path, result):
    db, template = tmp_path / "runs.sqlite", tmp_path / "run.json"
    template.write_text(result.to_json())
    RunStore(db)
    # Both save seeds 0..29, one upwards and one downwards, so they meet in the middle at the same keys.
    code = textwrap.dedent(f"""
        import json, sys
        from tokconv.experiments import RunResult
        from tokconv.store import RunStore
        d = json.load(open({str(template)!r}))
        s = RunStore({str(db)!r})
        ids = {{}}
        seeds = range(30) if sys.argv[1] == "up" else range(29, -1, -1)
        for seed in seeds:
            d["config"]["seed"] = seed
            ids[seed] = s.save(RunResult.from_dict(d))
        print(json.dumps(ids))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, way], stdout=subprocess.PIPE, text=True) for way in ("up", "down")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    up, down = (json.loads(o) for o in outs)
    rows = RunStore(db).list()
    assert len(rows) == 30 and sorted(r.seed for r in rows) == list(range(30))
    assert up == down  # both processes were given the id of the one stored copy
    assert sorted(up.values()) == sorted(r.id for r in rows)


def test_two_overlapping_sweeps_in_two_processes_store_each_run_once(tmp_path):
    db = tmp_path / "runs.sqlite"
    RunStore(db)
    tests = str(Path(__file__).parent)
    # Seeds 0-5 and 3-8: both processes read the store's finished keys before either saves
    # (they wait for each other first), so both run seeds 3-5 and both try to save them.
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {tests!r})
        import numpy as np
        from tiny import table_lm
        from tokconv import models
        from tokconv.experiments.sweep import SweepSpec, run_sweep
        from tokconv.store import RunStore
        models.register(table_lm(np.random.default_rng(0).normal(size=(12, 12)) * 2.0, name="noisy"))
        first = int(sys.argv[1])
        Path({str(tmp_path)!r}, f"ready-{{first}}").touch()
        while len(list(Path({str(tmp_path)!r}).glob("ready-*"))) < 2:
            time.sleep(0.01)
        spec = SweepSpec(model="noisy", mode="sequential", lengths=(6,), seeds=tuple(range(first, first + 6)))
        assert len(run_sweep(spec, RunStore({str(db)!r}))) == 6
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(first)]) for first in (0, 3)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    assert sorted(r.seed for r in RunStore(db).list()) == list(range(9))


def _v2_database(path, runs: list[tuple[str, RunResult]]) -> None:
    """A schema-2 database (as tokconv 2 left them) holding ``runs`` as given, duplicates and all."""
    from tokconv.store.database import _columns

    con = sqlite3.connect(path, isolation_level=None)
    _create_v1(con)
    _v1_to_v2(con)
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    for created, r in runs:
        d = r.to_dict()
        cols = _columns(d)
        con.execute(f"INSERT INTO runs (created_at, result_json, {', '.join(cols)}) VALUES (?, ?, {', '.join('?' * len(cols))})",
                    (created, json.dumps(d), *cols.values()))
    con.close()


def test_migration_to_schema_3_keeps_the_oldest_copy_of_each_finished_run(tmp_path, result):
    path = tmp_path / "v2.sqlite"
    cut = _with_seed(result, 0, status="interrupted")
    other = _with_seed(result, 5)
    _v2_database(path, [("2026-01-01", result), ("2026-01-02", result), ("2026-01-03", other), ("2026-01-04", cut),
                        ("2026-01-05", result), ("2026-01-06", cut), ("2026-01-07", other)])
    store = RunStore(path)
    kept = {r.id: (r.created_at, r.seed, r.status) for r in store.list()}
    assert kept == {1: ("2026-01-01", 0, "oscillating"), 3: ("2026-01-03", 5, "oscillating"),
                    4: ("2026-01-04", 0, "interrupted"), 6: ("2026-01-06", 0, "interrupted")}
    assert store.save(result) == 1 and store.save(other) == 3  # the rule now holds for new saves
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION)
    with pytest.raises(sqlite3.IntegrityError):  # enforced by the database itself, not only by save()
        con = sqlite3.connect(path)
        con.execute("INSERT INTO runs (created_at, result_json, config_key, status) VALUES ('x', '{}', ?, 'converged')",
                    (result.config.key(),))


# --- imports: all or nothing, duplicates told apart -----------------------------------------------


def _export(path, runs: list[RunResult]) -> None:
    path.write_text(json.dumps({"runs": [r.to_dict() for r in runs]}))


def test_a_file_whose_third_run_is_malformed_imports_nothing(tmp_path, result):
    from tokconv.store import read_runs_json

    runs = [_with_seed(result, s) for s in range(4)]
    data = {"runs": [r.to_dict() for r in runs]}
    data["runs"][2]["fingerprints"] = "A: 3, B: 2"
    (tmp_path / "x.json").write_text(json.dumps(data))
    with pytest.raises(TokconvError) as info:
        read_runs_json(tmp_path / "x.json")
    assert info.value.problem.startswith(f"run 3 in {tmp_path / 'x.json'}: field 'fingerprints' must be an object of model")
    assert info.value.problem.endswith("got a string")
    from tokconv.cli import main

    db = tmp_path / "runs.sqlite"
    assert main(["runs", "--db", str(db), "import", str(tmp_path / "x.json")]) == 2
    assert RunStore(db).list() == []


def test_an_import_that_fails_while_writing_leaves_the_store_as_it_was(tmp_path, result):
    store = RunStore(tmp_path / "runs.sqlite")
    before = store.save(_with_seed(result, 99))
    con = sqlite3.connect(store.path)  # the database refuses the third run of the import, after two were written
    con.execute("CREATE TRIGGER no_seed_2 BEFORE INSERT ON runs WHEN NEW.seed = 2 BEGIN SELECT RAISE(ABORT, 'seed 2 refused'); END")
    con.commit()
    con.close()
    with pytest.raises(TokconvError, match="seed 2 refused"):
        store.import_runs([_with_seed(result, s) for s in range(4)])
    assert [r.id for r in store.list()] == [before]


def test_runs_already_saved_are_reported_as_duplicates_not_added(tmp_path, result, capsys):
    from tokconv.cli import main

    store = RunStore(tmp_path / "runs.sqlite")
    runs = [_with_seed(result, s) for s in range(3)]
    first = store.import_runs(runs[:2])
    assert len(first.added) == 2 and first.duplicates == ()
    again = store.import_runs([runs[1], runs[2], runs[2]])  # one saved before, one new, and the new one twice
    assert again.added == (max(first.added) + 1,)
    assert again.duplicates == (first.added[1], again.added[0])
    assert len(store.list()) == 3
    # the same settings with other steps (another model version?): the saved run is kept, and said so
    d = runs[0].to_dict()
    d["steps"] = d["steps"][:1]
    clash = store.import_runs([RunResult.from_dict(d)])
    assert (clash.added, clash.duplicates, clash.conflicts) == ((), (), (first.added[0],))
    _export(tmp_path / "x.json", runs)
    assert main(["runs", "--db", str(store.path), "import", str(tmp_path / "x.json")]) == 0
    assert "imported 0 run(s), skipped 3 already saved" in capsys.readouterr().out
    assert len(store.list()) == 3


def test_interrupted_runs_are_imported_unless_the_same_run_is_saved(tmp_path, result):
    store = RunStore(tmp_path / "runs.sqlite")
    cut = _with_seed(result, 1, status="interrupted")
    d = cut.to_dict()
    d["steps"] = d["steps"][:2]
    shorter = RunResult.from_dict(d)
    report = store.import_runs([cut, shorter, cut])
    assert len(report.added) == 2 and report.duplicates == (report.added[0],)


# --- foreign, damaged, read-only, full: told apart, always TokconvError --------------------------


def _filled(path, result, n: int = 40) -> RunStore:
    """A database of ``n`` runs spread over many pages, checkpointed into the main file."""
    store = RunStore(path)
    store.import_runs([_with_seed(result, s) for s in range(n)])
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    return store


def test_a_damaged_tokconv_database_is_refused_at_open_and_left_untouched(tmp_path, result, capsys):
    path = tmp_path / "runs.sqlite"
    _filled(path, result)
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    raw = bytearray(path.read_bytes())
    assert len(raw) > 6 * page
    raw[4 * page : 5 * page] = b"\xa5" * page  # a data page in the middle, the header untouched
    path.write_bytes(bytes(raw))
    for p in path.parent.glob("runs.sqlite-*"):
        p.unlink()
    with pytest.raises(TokconvError) as info:
        RunStore(path)
    assert f"the run database {path} is damaged" in info.value.problem
    assert "not a tokconv run database" not in info.value.problem  # not mistaken for a foreign file
    assert ".recover" in info.value.fix and "--db" in info.value.fix
    from tokconv.cli import main

    assert main(["runs", "--db", str(path), "list"]) == 2
    assert "is damaged" in capsys.readouterr().err
    assert path.read_bytes() == bytes(raw)


def test_a_damaged_database_met_after_opening_is_a_tokconv_error(tmp_path, result):
    path = tmp_path / "runs.sqlite"
    store = _filled(path, result)
    raw = bytearray(path.read_bytes())
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    raw[3 * page : len(raw)] = b"\x5a" * (len(raw) - 3 * page)
    path.write_bytes(bytes(raw))
    with pytest.raises(TokconvError, match="is damaged"):
        [store.get(r.id) for r in store.list(limit=10**6)]


def _immutable(*paths) -> bool:
    """chattr +i: the one way to make a file read-only even for root (tests run as root). False if unsupported."""
    return all(subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode == 0 for p in paths)


@pytest.fixture
def frozen(tmp_path):
    """Make paths immutable for a test, and always writable again after it."""
    done = []

    def freeze(*paths) -> None:
        done.extend(paths)
        if not _immutable(*paths):
            pytest.skip("chattr +i is not supported here")
    yield freeze
    for p in reversed(done):
        subprocess.run(["chattr", "-i", str(p)], capture_output=True)


def _check_read_only(store: RunStore, result: RunResult, n: int) -> None:
    rows = store.list()
    assert store.read_only and len(rows) == n
    assert store.get(rows[0].id).to_dict()["config"]["model_a"] == "A"
    assert result.config.key() in store.done_keys()
    for write in (lambda: store.save(_with_seed(result, 1234)), lambda: store.delete(rows[0].id),
                  lambda: store.import_runs([_with_seed(result, 4321)])):
        with pytest.raises(TokconvError) as info:
            write()
        assert "read-only" in info.value.problem and str(store.path) in info.value.problem
        assert "not a tokconv run database" not in info.value.problem
        assert "--db" in info.value.fix


def test_a_read_only_file_and_folder_can_be_read_but_not_saved_to(tmp_path, result, frozen, capsys):
    path = tmp_path / "db" / "runs.sqlite"
    path.parent.mkdir()
    _filled(path, result, n=5)
    frozen(path, path.parent)  # read-only media: neither the file nor its -wal/-shm can be written
    _check_read_only(RunStore(path), result, 5)
    from tokconv.cli import main

    assert main(["runs", "--db", str(path), "list"]) == 0
    assert main(["runs", "--db", str(path), "show", "1"]) == 0
    capsys.readouterr()
    (tmp_path / "x.json").write_text(_with_seed(result, 555).to_json())
    assert main(["runs", "--db", str(path), "import", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "the database is read-only" in err and "not a tokconv run database" not in err


def test_a_read_only_file_os_access_misses_is_found_by_sqlite(tmp_path, result, frozen, monkeypatch):
    path = tmp_path / "runs.sqlite"
    _filled(path, result, n=3)
    frozen(path)
    monkeypatch.setattr("os.access", lambda *a, **k: True)  # e.g. a network share that claims to be writable
    _check_read_only(RunStore(path), result, 3)


def test_a_store_opened_read_only_never_writes(tmp_path, result):
    path = tmp_path / "runs.sqlite"
    _filled(path, result, n=3)
    before = path.read_bytes()
    _check_read_only(RunStore(path, read_only=True), result, 3)
    assert path.read_bytes() == before
    with pytest.raises(TokconvError, match="read-only"):
        RunStore(tmp_path / "absent.sqlite", read_only=True)
    assert not (tmp_path / "absent.sqlite").exists()


def test_a_database_that_became_read_only_after_opening_says_so_on_save(tmp_path, result, frozen):
    path = tmp_path / "runs.sqlite"
    store = _filled(path, result, n=2)
    frozen(path)
    with pytest.raises(TokconvError) as info:
        store.save(_with_seed(result, 77))
    assert "read-only" in info.value.problem and "--db" in info.value.fix
    assert len(RunStore(path).list()) == 2


def test_a_full_disk_is_said_as_such(tmp_path, result):
    class SmallDisk(RunStore):
        def _connect(self):  # SQLite's own limit on the file size: it fails as on a full disk (SQLITE_FULL)
            con = super()._connect()
            con.execute(f"PRAGMA max_page_count = {con.execute('PRAGMA page_count').fetchone()[0] + 1}")
            return con

    RunStore(tmp_path / "runs.sqlite")
    store = SmallDisk(tmp_path / "runs.sqlite")
    big = _with_seed(result, 1)
    big.start_text = "x" * 200_000  # far more than one page
    with pytest.raises(TokconvError) as info:
        store.save(big)
    assert "disk is full" in info.value.problem and "free some disk space" in info.value.fix
    assert RunStore(tmp_path / "runs.sqlite").list() == []  # nothing half-saved


def test_stored_runs_of_the_first_run_file_schema_are_rewritten_in_the_current_one(tmp_path, result):
    """A store written before steps carried `finite` and spans: its runs read, and are stored as schema 2."""
    from tokconv.experiments.records import SCHEMA_VERSION as RUN_SCHEMA

    path = tmp_path / "old.sqlite"
    _v2_database(path, [("2026-01-01", result)])
    old = result.to_dict()
    old["schema_version"] = 1
    for s in old["steps"]:
        for k in ("finite", "span_start", "span_end", "inserted"):
            s.pop(k)
    old["cost"].pop("nonfinite_rows")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("UPDATE runs SET result_json = ?", (json.dumps(old),))
    con.close()
    store = RunStore(path)
    stored = json.loads(sqlite3.connect(path).execute("SELECT result_json FROM runs").fetchone()[0])
    assert stored["schema_version"] == RUN_SCHEMA == 2
    assert all(s["finite"] is True and s["span_start"] is None for s in stored["steps"])
    again = store.get(store.list()[0].id)
    assert [(s.position, s.new_token) for s in again.steps] == [(s.position, s.new_token) for s in result.steps]
