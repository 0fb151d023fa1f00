"""The command line: the original's form, clear messages and exit code 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tokconv.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-l", "1"], "length 1 is out of range"),
        (["-l", "513"], "length 513 is out of range"),
        (["-n", "0"], "iterations must be between"),
        (["-m", "sideways"], "unknown mode 'sideways'"),
        (["run", "-m", "adversarial", "--model-b", ""], "needs two models"),
        (["run", "--model-a", "no-such-model"], "unknown model 'no-such-model'"),
        (["run", "--block-after", "0"], "block-after must be at least 1"),
        (["complete", "--model", "/nonexistent/model.gguf", "--prompt", "hi"], "does not exist"),
    ],
)
def test_bad_input_gets_a_message_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "fix:" in err
    assert "Traceback" not in err


def test_no_traceback_from_the_real_entry_point():
    proc = subprocess.run([sys.executable, "-m", "tokconv", "-l", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "length 0 is out of range" in proc.stderr and "Traceback" not in proc.stderr


def test_models_lists_the_catalog(capsys):
    assert main(["models", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"]
    assert all(r["installed"] for r in rows)
    assert {r["family"] for r in rows} == {"Llama", "Qwen", "Gemma"}


@pytest.mark.slow
def test_start_text_longer_than_the_limit_is_refused(capsys, smollm2):
    assert main(["run", "--start-text", "word " * 600]) == 2
    assert "more than the maximum of 512" in capsys.readouterr().err


@pytest.mark.slow
def test_original_form_runs_sequential_and_writes_json(tmp_path, capsys, smollm2):
    out = tmp_path / "run.json"
    assert main(["-l", "8", "-m", "sequential", "--seed", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "converged after 2 iteration(s)" in text
    assert "MODEL FINGERPRINTS" in text
    data = json.loads(out.read_text())
    assert data["mode"] == "sequential" and data["status"] == "converged" and data["length"] == 8


def test_runs_export_and_import_round_trip(tmp_path, capsys):
    from tiny import constant_lm, run_tiny
    from tokconv.store import RunStore

    db = tmp_path / "runs.sqlite"
    store = RunStore(db)
    r = run_tiny("adversarial", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0])
    rid = store.save(r)
    assert main(["runs", "--db", str(db), "list"]) == 0
    assert "oscillating" in capsys.readouterr().out
    for fmt in ("json", "csv", "parquet"):
        assert main(["runs", "--db", str(db), "export", str(rid), "--format", fmt, "--output", str(tmp_path / f"x.{fmt}")]) == 0
    import pandas as pd

    steps = pd.read_parquet(tmp_path / "x.parquet")
    assert len(steps) == len(r.steps) and set(steps["model"]) == {"A", "B"}
    assert len(pd.read_csv(tmp_path / "x.csv")) == len(r.steps)
    other = tmp_path / "other.sqlite"
    assert main(["runs", "--db", str(other), "import", str(tmp_path / "x.json")]) == 0
    [row] = RunStore(other).list()
    assert RunStore(other).get(row.id).to_dict() == r.to_dict()
    assert main(["runs", "--db", str(other), "delete", str(row.id)]) == 0
    assert main(["runs", "--db", str(other), "show", str(row.id)]) == 2


def test_runs_on_a_corrupt_database_say_so(tmp_path, capsys):
    db = tmp_path / "runs.sqlite"
    db.write_text("garbage")
    assert main(["runs", "--db", str(db), "list"]) == 2
    assert "not a tokconv run database" in capsys.readouterr().err
    assert db.read_text() == "garbage"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "--lengths", "8,x"], "cannot read lengths"),
        (["sweep", "--seeds", "a-b"], "cannot read seeds"),
        (["sweep", "--lengths", "1"], "length 1 is out of range"),
        (["sweep", "--mode", "adversarial"], "needs two models"),
    ],
)
def test_sweep_bad_input(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
