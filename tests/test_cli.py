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
