"""Run files on the way in: every field checked and named, foreign JSON told apart, bad files refused one by one."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from tiny import constant_lm, run_tiny
from tokconv.errors import TokconvError
from tokconv.experiments import RunResult
from tokconv.store import RunStore, export_bytes, read_runs_json, runs_from_json


@pytest.fixture(scope="module")
def run() -> dict:
    """The JSON form of a small battle (two fingerprints, steps, an iteration log)."""
    return run_tiny("adversarial", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0, 0]).to_dict()


def _problem(d) -> str:
    with pytest.raises(TokconvError) as info:
        RunResult.from_dict(d)
    return info.value.problem


def test_a_valid_run_file_round_trips_unchanged(run):
    assert RunResult.from_dict(copy.deepcopy(run)).to_dict() == run


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(fingerprints="A: 3"), "field 'fingerprints' must be an object of model -> {token: count}, got a string"),
    (lambda d: d["fingerprints"].update(A=[1, 2]), """field 'fingerprints["A"]' must be an object of token -> count, got a list"""),
    (lambda d: d["fingerprints"]["B"].update(c="3"), """field 'fingerprints["B"]["c"]' must be an integer, got a string"""),
    (lambda d: d["steps"][1].update(entropy="high"), "field 'steps[1].entropy' must be a number, got a string"),
    (lambda d: d["steps"][0].update(position=1.5), "field 'steps[0].position' must be an integer, got a number"),
    (lambda d: d["steps"][0].pop("new_token"), "field 'steps[0].new_token' is missing"),
    (lambda d: d["iteration_log"][0]["tokens"].append(True), "field 'iteration_log[0].tokens[4]' must be an integer, got a boolean (true/false)"),
    (lambda d: d["iteration_log"][0].update(pieces="abcd"), "field 'iteration_log[0].pieces' must be a list of strings, got a string"),
    (lambda d: d["config"].update(seed="7"), "field 'config.seed' must be an integer, got a string"),
    (lambda d: d["config"].update(model_b=3), "field 'config.model_b' must be a string or null, got an integer"),
    (lambda d: d["config"].update(mode="sideways"), "field 'config' holds settings that cannot run: unknown mode 'sideways'"),
    (lambda d: d.update(config=None), "field 'config' must be an object, got null"),
    (lambda d: d["cost"].update(seconds=None), "field 'cost.seconds' must be a number, got null"),
    (lambda d: d.update(cost=[]), "field 'cost' must be an object, got a list"),
    (lambda d: d.update(start_tokens=[0, "1"]), "field 'start_tokens[1]' must be an integer, got a string"),
    (lambda d: d.update(period="2"), "field 'period' must be an integer or null, got a string"),
    (lambda d: d.update(versions={"tokconv": 1}), """field 'versions["tokconv"]' must be a string, got an integer"""),
    (lambda d: d.pop("steps"), "field 'steps' is missing"),
    (lambda d: d.update(status=0), "field 'status' must be a string, got an integer"),
])
def test_every_bad_field_is_named(run, change, message):
    d = copy.deepcopy(run)
    change(d)
    assert _problem(d) == message


def test_json_that_is_not_a_run_file_says_what_was_expected(run):
    for foreign in ({"hello": "world"}, {}, {"name": "x", "version": 2}):
        problem = _problem(foreign)
        assert problem.startswith("this is not a tokconv run file: expected a run")
        assert "schema version" not in problem and "upgrade" not in problem
    assert "got an object with the keys 'hello'" in _problem({"hello": "world"})
    assert _problem([1, 2]) == "this is not a tokconv run: expected a JSON object with a run's fields, got a list"
    no_version = {k: v for k, v in run.items() if k != "schema_version"}
    assert "no 'schema_version' field" in _problem(no_version)
    from tokconv.experiments.records import SCHEMA_VERSION

    newer = {**run, "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(TokconvError) as info:
        RunResult.from_dict(newer)
    assert (f"schema version {SCHEMA_VERSION + 1}; this tokconv reads version {SCHEMA_VERSION}" in info.value.problem
            and "upgrade tokconv" in info.value.fix)


def test_file_errors_name_the_file_and_the_run(tmp_path, run):
    bad = copy.deepcopy(run)
    bad["steps"][0]["prob"] = "0.5"
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"runs": [run, bad]}))
    with pytest.raises(TokconvError, match=r"^run 2 in .*x\.json: field 'steps\[0\]\.prob' must be a number, got a string"):
        read_runs_json(path)
    path.write_text(json.dumps(bad))
    with pytest.raises(TokconvError, match=r"x\.json: field 'steps\[0\]\.prob'"):
        read_runs_json(path)
    for text, said in (('{"runs": 3}', "field 'runs' must be a list of runs, got an integer"),
                       ('"runs"', "is not a tokconv run file: expected a run"),
                       ("[1, 2", "this is not a JSON run file"),
                       ('{"notes": []}', "x.json: this is not a tokconv run file")):
        with pytest.raises(TokconvError, match=said.replace("[", r"\[").replace("(", r"\(")):
            runs_from_json(text, str(path))


# --- the dashboard: a bad file is refused with its field, the good ones beside it are used ------------

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def _app(page: str):
    at = streamlit_testing.AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(page).run()
    return at


def test_fingerprints_page_refuses_a_bad_file_by_field_and_uses_the_good_one(run):
    bad = copy.deepcopy(run)
    bad["fingerprints"] = "A: 3"
    at = _app("pages/fingerprints.py")
    at.file_uploader(key="fp_upload").set_value([
        ("bad.json", json.dumps(bad).encode(), "application/json"),
        ("battle.json", json.dumps(run).encode(), "application/json"),
    ]).run()
    assert not at.exception, [e.value for e in at.exception]
    # st.error reads markdown, so the page escapes the message; what the reader sees is the message itself
    shown = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]
    assert shown == ["bad.json: field 'fingerprints' must be an object of model -> {token: count}, got a string"]
    assert (at.selectbox(key="fp_left").value, at.selectbox(key="fp_right").value) == ("A in battle.json", "B in battle.json")


def test_history_import_refuses_a_bad_file_whole_and_keeps_the_good_ones(monkeypatch, tmp_path, run):
    db = tmp_path / "runs.sqlite"
    monkeypatch.setenv("TOKCONV_DB", str(db))
    runs = [RunResult.from_dict({**run, "config": {**run["config"], "seed": s}}) for s in range(4)]
    good = export_bytes(dict(enumerate(runs[:2])), "json")
    third_bad = json.loads(export_bytes(dict(enumerate(runs[1:])), "json"))
    third_bad["runs"][2]["iteration_log"][0]["changes"] = "two"
    at = _app("pages/history.py")
    at.file_uploader(key="hist_import").set_value([
        ("good.json", good, "application/json"),
        ("bad.json", json.dumps(third_bad).encode(), "application/json"),
    ]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(t.startswith("Imported 2 run(s) from good.json as #") for t in (e.value for e in at.success))
    assert "run 3 in bad.json: field 'iteration_log[0].changes' must be an integer, got a string" in at.error[0].value
    assert sorted(r.seed for r in RunStore(db).list()) == [0, 1]  # nothing of bad.json, not even its two good runs
    # the same good runs again, under another name: skipped as already saved
    at.file_uploader(key="hist_import").set_value([("again.json", good, "application/json")]).run()
    assert "Imported 0 run(s) from again.json, skipped 2 already saved." in [e.value for e in at.success]
    assert len(RunStore(db).list()) == 2
