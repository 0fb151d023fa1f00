"""The CLI's error boundary and bounded work: every failure is a message and an exit code, never a
traceback or a lost run; arguments are checked before any model work; sweeps stream their grid."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from tiny import table_lm
from tokconv import models
from tokconv.cli import main
from tokconv.errors import TokconvError
from tokconv.store import RunStore, read_runs_json

PY = sys.executable


@pytest.fixture
def noisy():
    """A random bigram model registered as 'noisy', so commands load it by name in no time."""
    lm = table_lm(np.random.default_rng(0).normal(size=(12, 12)) * 2.0, name="noisy")
    models.register(lm)
    yield lm
    models.unregister(lm.spec)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "runs.sqlite"


@pytest.fixture
def no_model_work(monkeypatch):
    """Any model load fails the test: checks must refuse bad input before it."""

    def forbidden(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    import tokconv.commands.complete as complete
    import tokconv.commands.run as run_cmd
    import tokconv.experiments.lockstep as lockstep
    import tokconv.experiments.sweep as sweep

    monkeypatch.setattr(run_cmd, "prepare", forbidden)
    monkeypatch.setattr(complete, "load", forbidden)
    monkeypatch.setattr(lockstep, "load", forbidden)
    monkeypatch.setattr(lockstep, "prepare", forbidden)
    monkeypatch.setattr(sweep, "run", forbidden)


def _two_lines(err: str) -> None:
    assert "tokconv: error: " in err and "\n  fix: " in err
    assert "Traceback" not in err


# --- the boundary -----------------------------------------------------------------------------------

EXPECTED = [
    (PermissionError(errno.EACCES, "Permission denied", "/x/runs.json"), "permission denied (/x/runs.json)"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), "/tmp is a folder"),
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (sqlite3.OperationalError("database is locked"), "database is locked"),
    (sqlite3.DatabaseError("file is not a database"), "file is not a database"),
    (OverflowError("Python int too large to convert to SQLite INTEGER"), "a number is too large"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not valid UTF-8"),
    (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"), "not valid UTF-8"),
    (UnicodeEncodeError("ascii", "é", 0, 1, "ordinal not in range(128)"), "output's encoding (ascii)"),
    (json.JSONDecodeError("Expecting value", "{x", 1), "not valid JSON: Expecting value at line 1 column 2"),
    (TokconvError("the problem", "the fix"), "the problem"),
]


@pytest.mark.parametrize("exc, message", EXPECTED, ids=[type(e).__name__ for e, _ in EXPECTED])
def test_expected_failures_print_problem_and_fix_with_exit_code_2(exc, message, monkeypatch, capsys):
    import tokconv.commands.models as cmd

    def boom(args):
        raise exc

    monkeypatch.setattr(cmd, "main", boom)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    _two_lines(err)
    assert message in err


def test_unexpected_error_gives_a_log_file_with_the_traceback_and_exit_code_1(monkeypatch, capsys, tmp_path):
    import tokconv.commands.models as cmd

    monkeypatch.setenv("TOKCONV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cmd, "main", lambda args: {}["no-such-key"])
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected error: KeyError" in err
    log = next((tmp_path / "cache" / "logs").glob("tokconv-crash-*.log"))
    assert str(log) in err
    assert "Traceback" in log.read_text() and "no-such-key" in log.read_text()


def test_unexpected_error_with_an_unwritable_cache_logs_to_the_temp_folder(monkeypatch, capsys, tmp_path):
    import tokconv.commands.models as cmd

    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("TOKCONV_CACHE", str(blocker))
    monkeypatch.setattr(cmd, "main", lambda args: 1 / 0)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    path = err.split("the traceback is in ")[1].split(" (please")[0]
    assert os.path.dirname(path) != str(blocker) and "ZeroDivisionError" in open(path).read()
    os.unlink(path)


def test_ctrl_c_exits_130_and_says_how_to_resume(monkeypatch, capsys):
    import tokconv.commands.models as cmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd, "main", interrupted)
    assert main(["models"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same command again" in err and "Traceback" not in err


def test_a_closed_pipe_ends_quietly_like_a_unix_tool(db, tmp_path):
    from tiny import constant_lm, run_tiny

    store = RunStore(db)
    for _ in range(3):
        store.save(run_tiny("adversarial", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0]))
    proc = subprocess.Popen([PY, "-m", "tokconv", "runs", "list", "--db", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before tokconv writes a line: `tokconv runs list | head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


# --- arguments are checked before any model work ---------------------------------------------------

@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--seed", "-1"], "--seed -1 is out of range"),
        (["run", "--seed", str(2**63)], f"--seed {2**63} is out of range"),
        (["run", "--start-text", "caf\udce9"], "--start-text is not valid UTF-8"),
        (["complete", "--prompt", "caf\udce9"], "the prompt is not valid UTF-8"),
        (["complete", "--prompt", "hi", "--max-tokens", "0"], "--max-tokens must be between 1 and 1024"),
        (["sweep", "--seeds", "5-1"], "the seed range '5-1' runs backwards"),
        (["sweep", "--seeds", "0--2"], "include a negative seed"),
        (["sweep", "--seeds", ""], "no seeds given"),
        (["sweep", "--seeds", ","], "no seeds given"),
        (["sweep", "--lengths", ""], "no lengths given"),
        (["sweep", "--seeds", f"0-{2**63}"], "out of range"),
        (["report", "--seeds", "3-2"], "runs backwards"),
        (["report", "-l", "1"], "length 1 is out of range"),
        (["report", "-n", "0"], "iterations must be between"),
        (["runs", "list", "--mode", "bogus"], "unknown mode 'bogus'"),
        (["runs", "list", "--status", "bogus"], "unknown status 'bogus'"),
    ],
)
def test_bad_arguments_are_refused_before_any_model_loads(argv, message, capsys, no_model_work):
    assert main(argv) == 2
    err = capsys.readouterr().err
    _two_lines(err)
    assert message in err


def test_runs_filters_name_the_valid_choices(capsys):
    assert main(["runs", "list", "--status", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "converged, oscillating, all-blocked, max-iterations, interrupted" in err
    assert main(["runs", "list", "--mode", "bogus"]) == 2
    assert "sequential, single, batch, adversarial, adversarial-single" in capsys.readouterr().err


def test_output_paths_are_checked_before_the_run(tmp_path, capsys, no_model_work):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["run", "--json", str(tmp_path)], "is a folder, not a file"),
        (["run", "--json", str(tmp_path / "missing" / "run.json")], "does not exist"),
        (["run", "--json", str(a_file / "run.json")], "does not exist"),
        (["run", "--db", str(tmp_path)], "is a folder, not a database file"),
        (["run", "--db", str(a_file / "runs.sqlite")], "is a file, not a folder"),
        (["runs", "list", "--db", str(tmp_path)], "is a folder, not a database file"),
        (["runs", "export", "--output", str(tmp_path), "--db", str(tmp_path / "x.sqlite")], "is a folder"),
        (["report", "--output", str(tmp_path)], "is a folder, not a file"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        _two_lines(err)
        assert message in err, (argv, err)
    assert not (tmp_path / "missing").exists() and a_file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_json_db_and_output_paths_are_refused_before_the_run(tmp_path, capsys, no_model_work):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["run", "--json", str(ro / "run.json")]) == 2
        assert "cannot write --json" in capsys.readouterr().err
        assert main(["run", "--db", str(ro / "runs.sqlite")]) == 2
        assert "cannot be written" in capsys.readouterr().err
        assert main(["report", "--output", str(ro / "r.md")]) == 2
        assert "cannot write --output" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_a_cache_that_is_a_file_is_refused_before_a_model_loads(tmp_path, monkeypatch, capsys, no_model_work):
    blocker = tmp_path / "cache"
    blocker.write_text("x")
    monkeypatch.setenv("TOKCONV_CACHE", str(blocker))
    for argv in (["run", "--db", str(tmp_path / "r.sqlite")], ["complete", "--prompt", "hi"],
                 ["sweep", "--db", str(tmp_path / "r.sqlite")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        _two_lines(err)
        assert f"TOKCONV_CACHE ({blocker}) is a file, not a folder" in err


def test_complete_prints_nothing_on_stdout_when_the_model_fails(capsys):
    assert main(["complete", "--model", "/nonexistent/model.gguf", "--prompt", "hi"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "does not exist" in err


def test_model_b_is_ignored_for_solo_modes_with_a_note(monkeypatch, capsys, tmp_path):
    import tokconv.commands.run as run_cmd

    def stop(*a, **k):
        raise TokconvError("stopped here")

    monkeypatch.setattr(run_cmd, "prepare", stop)
    assert main(["run", "-m", "sequential", "--model-b", "gemma3-270m", "--db", str(tmp_path / "r.sqlite")]) == 2
    assert "--model-b gemma3-270m is ignored: mode 'sequential' runs one model" in capsys.readouterr().err


def test_sweep_says_model_b_is_ignored_for_solo_modes(noisy, db, capsys):
    assert main(["sweep", "--model", "noisy", "--model-b", "gemma3-270m", "--lengths", "5", "--seeds", "0", "--db", str(db)]) == 0
    err = capsys.readouterr().err
    assert "--model-b gemma3-270m is ignored: mode 'single' runs one model" in err and "vs gemma3-270m" not in err


def test_text_that_is_not_utf8_in_argv_is_refused_without_a_traceback():
    # argv bytes that are not UTF-8 reach Python as surrogate escapes
    for argv in ([b"run", b"--start-text", b"caf\xe9 au lait"], [b"complete", b"--prompt", b"\xff\xfe"]):
        proc = subprocess.run([PY.encode(), b"-m", b"tokconv", *argv], capture_output=True, timeout=120)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 2, err
        assert "is not valid UTF-8 text" in err and "Traceback" not in err
        assert proc.stdout == b""


# --- runs: options where users type them, aligned columns --------------------------------------------

def test_runs_accepts_db_after_the_action_and_aligns_the_header(db, capsys):
    from tiny import constant_lm, run_tiny

    rid = RunStore(db).save(run_tiny("adversarial", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0]))
    assert main(["runs", "list", "--db", str(db)]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    for col in ("MODE", "MODELS", "LEN", "SEED", "STATUS", "ITER"):
        value = {"MODE": "adversarial", "MODELS": "A vs B", "LEN": "3", "SEED": "0", "STATUS": "oscillating"}.get(col)
        start = header.index(col)
        if value and col not in ("LEN", "SEED"):
            assert row.index(value) == start, col  # left-aligned columns start under their heading
        elif value:
            assert header.index(col) + len(col) == row.index(f" {value} ", start - 5) + 1 + len(value), col
    for argv in (["runs", "show", str(rid), "--db", str(db)], ["runs", "export", "--db", str(db), "--output", str(db.parent / "x.json")],
                 ["runs", "delete", str(rid), "--db", str(db)]):
        assert main(argv) == 0, argv
    assert RunStore(db).list() == []


# --- runs are never lost ----------------------------------------------------------------------------

def test_a_finished_run_is_saved_before_json_and_a_failed_json_says_so(noisy, db, capsys):
    assert main(["run", "--model", "noisy", "-m", "single", "-l", "5", "--db", str(db), "--json", "/dev/full"]) == 2
    out, err = capsys.readouterr()
    _two_lines(err)
    assert "No space left on device" in err and "the run was saved as run 1" in err
    assert "saved as run 1" in out
    [row] = RunStore(db).list()
    assert row.length == 5 and row.model_a == "noisy"


def test_a_run_without_the_store_whose_json_fails_is_kept_in_a_rescue_file(noisy, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TOKCONV_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--model", "noisy", "-m", "single", "-l", "5", "--no-save", "--json", "/dev/full"]) == 2
    err = capsys.readouterr().err
    _two_lines(err)
    [rescued] = (tmp_path / "cache" / "rescued").glob("*.json")
    assert "No space left on device" in err and str(rescued) in err
    assert read_runs_json(rescued)[0].config.length == 5


def test_a_run_the_store_cannot_save_is_kept_in_a_rescue_file(noisy, db, capsys, monkeypatch, tmp_path):
    def broken(self, result):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(RunStore, "save", broken)
    monkeypatch.setenv("TOKCONV_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--model", "noisy", "-m", "single", "-l", "5", "--seed", "4", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    _two_lines(err)
    assert "could not be saved" in err and "disk I/O error" in err and "--db" in err
    [rescued] = (tmp_path / "cache" / "rescued").glob("*.json")
    assert str(rescued) in err
    [r] = read_runs_json(rescued)
    assert r.config.seed == 4 and r.config.model_a == "noisy" and r.status != "interrupted"


def test_ctrl_c_in_a_run_saves_the_partial_run_and_exits_130(noisy, db, capsys, monkeypatch):
    import tokconv.commands.run as run_cmd

    shown = {"n": 0}
    real_visible = run_cmd.visible

    def ctrl_c_at_the_second_iteration(text):
        shown["n"] += 1
        if shown["n"] == 3:  # 1: the start, 2: iteration 1, 3: iteration 2
            raise KeyboardInterrupt
        return real_visible(text)

    monkeypatch.setattr(run_cmd, "visible", ctrl_c_at_the_second_iteration)
    assert main(["run", "--model", "noisy", "-m", "single", "-l", "8", "-n", "50", "--db", str(db)]) == 130
    err = capsys.readouterr().err
    assert "interrupted after 1 iteration(s); the partial run was saved as run 1" in err and "Traceback" not in err
    [row] = RunStore(db).list()
    assert row.status == "interrupted" and row.iterations == 1


# --- sweeps: bounded, whole-grid summaries, Ctrl-C -----------------------------------------------------

HUGE_SWEEP = """
import resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a grid built whole fails here, not on the machine
from tokconv.cli import main
tracemalloc.start()
t0 = time.perf_counter()
code = main(["sweep", "--seeds", "0-100000000", "--lengths", "8"])
print(code, time.perf_counter() - t0, tracemalloc.get_traced_memory()[1])
"""


def test_a_huge_sweep_is_refused_at_once_with_flat_memory():
    proc = subprocess.run([PY, "-c", HUGE_SWEEP], capture_output=True, text=True, timeout=120)
    code, seconds, peak = proc.stdout.split()
    assert int(code) == 2
    assert float(seconds) < 1.0
    assert int(peak) < 5_000_000
    _two_lines(proc.stderr)
    assert "100,000,001 runs" in proc.stderr and "limit of 100,000" in proc.stderr
    assert "--seeds 0-99999, then --seeds 100000-199999" in proc.stderr


def test_sweep_summarises_the_whole_grid_and_counts_saved_runs(noisy, db, capsys):
    base = ["sweep", "--model", "noisy", "--mode", "single", "--lengths", "5", "--db", str(db), "-n", "20"]
    assert main([*base, "--seeds", "0-2"]) == 0
    capsys.readouterr()
    assert main([*base, "--lengths", "5,6", "--seeds", "0-3"]) == 0
    out, err = capsys.readouterr()
    table = [line.split() for line in out.splitlines() if line.split()[1].isdigit()]
    rows = {int(cells[0]): int(cells[1]) for cells in table}
    assert rows == {5: 4, 6: 4}
    assert "5 new run(s) saved" in out and "3 of the 8 were already saved" in out
    assert "resuming: 3 of 8" in err
    assert len(RunStore(db).list()) == 8


@pytest.mark.parametrize("batch", [[], ["--no-batch"]], ids=["batch", "no-batch"])
def test_ctrl_c_in_a_sweep_exits_130_and_says_what_was_saved(batch, noisy, db, capsys, monkeypatch):
    import tokconv.experiments.sweep as sweep

    calls = {"n": 0}
    real_run, real_batch = sweep.run, sweep.run_lockstep

    def run_then_ctrl_c(config, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # collect() turns a Ctrl-C inside a run into an 'interrupted' result
            r = real_run(config, **kw)
            r.status = "interrupted"
            return r
        return real_run(config, **kw)

    def batch_then_ctrl_c(configs, should_stop=None):
        for i, r in enumerate(real_batch(configs, should_stop=should_stop)):
            if i == 2:
                raise KeyboardInterrupt
            yield r

    monkeypatch.setattr(sweep, "run", run_then_ctrl_c)
    monkeypatch.setattr(sweep, "run_lockstep", batch_then_ctrl_c)
    argv = ["sweep", "--model", "noisy", "--mode", "single", "--lengths", "5", "--seeds", "0-5", "--db", str(db), *batch]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted; 2 new run(s) of this sweep were saved" in err and "run the same command again" in err
    assert "Traceback" not in err
    assert len(RunStore(db).list()) == 2
    monkeypatch.setattr(sweep, "run", real_run)
    monkeypatch.setattr(sweep, "run_lockstep", real_batch)
    assert main(argv) == 0
    assert "4 new run(s) saved" in capsys.readouterr().out


def test_a_sweep_whose_store_fails_keeps_the_run_in_a_rescue_file(noisy, db, capsys, monkeypatch, tmp_path):
    def broken(self, result):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RunStore, "save", broken)
    monkeypatch.setenv("TOKCONV_CACHE", str(tmp_path / "cache"))
    argv = ["sweep", "--model", "noisy", "--lengths", "5", "--seeds", "0-1", "--db", str(db), "--no-batch"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    _two_lines(err)
    [rescued] = (tmp_path / "cache" / "rescued").glob("*.json")
    assert str(rescued) in err and read_runs_json(rescued)[0].config.seed == 0


def test_the_fast_path_notice_is_printed_once_and_silenced_by_quiet(noisy, db, capsys, monkeypatch):
    import tokconv
    from tokconv.commands import _common

    monkeypatch.setattr(_common, "_noticed", False)
    base = ["sweep", "--model", "noisy", "--lengths", "5", "--seeds", "0", "--db", str(db)]
    assert main([*base, "--quiet"]) == 0
    assert tokconv.RUNTIME.notice() not in capsys.readouterr().err
    assert main(base) == 0
    assert capsys.readouterr().err.count(tokconv.RUNTIME.notice()) == 1
    assert main(base) == 0
    assert tokconv.RUNTIME.notice() not in capsys.readouterr().err  # once per process


def test_report_saves_its_runs_and_reuses_them(noisy, db, capsys, tmp_path):
    argv = ["report", "--model-a", "noisy", "--model-b", "noisy", "-l", "4", "--seeds", "0-1", "-n", "6",
            "--db", str(db), "--output", str(tmp_path / "r.md")]
    assert main(argv) == 0
    # 8 cells x 2 seeds; model B's solo runs have model A's settings here (the same model), so they are reused
    assert "10 new run(s) saved" in capsys.readouterr().err
    assert len(RunStore(db).list()) == 10
    first = (tmp_path / "r.md").read_text()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "0 new run(s) saved to" in err and "16 reused" in err
    assert len(RunStore(db).list()) == 10
    assert first.split("Generated by")[0] == (tmp_path / "r.md").read_text().split("Generated by")[0]
    assert main([*argv[:-4], "--no-save", "--output", str(tmp_path / "r2.md")]) == 0
    assert len(RunStore(db).list()) == 10


@pytest.mark.slow
def test_complete_keeps_the_space_before_the_continuation(capsys, smollm2):
    assert main(["complete", "--model", "smollm2-135m", "--prompt", "The capital of France is", "--max-tokens", "2", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("The capital of France is Paris.")



def test_reading_runs_from_a_database_that_does_not_exist_creates_nothing(tmp_path, capsys):
    from tokconv.cli import main

    missing = tmp_path / "none" / "runs.sqlite"
    assert main(["runs", "list", "--db", str(missing)]) == 0
    assert "there is no run database at" in capsys.readouterr().out
    assert main(["runs", "show", "1", "--db", str(missing)]) == 2
    assert "there is no run database at" in capsys.readouterr().err
    assert not missing.parent.exists()
