"""The dashboard driven headless through Streamlit's AppTest: every page, real small runs, errors, the run store.

Models and finished runs are cached per process, so later tests reuse what earlier ones loaded. Tests of
the run store point TOKCONV_DB at a database of their own (the dashboard opens one store per path).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny import constant_lm, run_tiny, successor_lm, table_lm

from tokconv import models
from tokconv.experiments import modes
from tokconv.experiments.experiment import Experiment, collect
from tokconv.store import export_bytes, runs_from_json
from tokconv.experiments import RunConfig
from tokconv.store import RunStore

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
CHARTS = "vega_lite_chart"  # what AppTest calls an st.altair_chart in Streamlit 1.67


def _app(page: str | None = None, **query: str):
    at = streamlit_testing.AppTest.from_file(APP, default_timeout=300)
    at.query_params.update(query)
    at.run()  # the frame registers the pages; only then does switch_page find them through st.navigation
    if page:
        at.switch_page(page).run()
    return at


def _ok(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


@pytest.fixture
def db(monkeypatch, tmp_path) -> Path:
    """A run database of this test's own, where the dashboard saves (as TOKCONV_DB)."""
    path = tmp_path / "runs.sqlite"
    monkeypatch.setenv("TOKCONV_DB", str(path))
    return path


@pytest.fixture
def tiny_model():
    """A random bigram model registered under a spec name: pages run it when it is typed in as 'other…'."""
    lm = table_lm(np.random.default_rng(0).normal(size=(12, 12)) * 2.0, name="tiny-noisy")
    models.register(lm)
    yield lm
    models.unregister(lm.spec)


def _solo_tiny(at, seed: int):
    """A Solo run of the tiny model (a seed of the test's own, so that no cached run is reused)."""
    at.switch_page("pages/solo.py").run()
    at.selectbox(key="model").set_value("other…").run()
    at.text_input(key="model_other").input("tiny-noisy").run()
    at.selectbox(key="mode").set_value("single").run()
    at.number_input(key="length").set_value(5)
    at.number_input(key="seed").set_value(seed)
    at.button(key="solo_run").click().run()
    _ok(at)
    return at


def test_home_explains_the_experiment_and_runs_the_example():
    at = _app()
    _ok(at)
    body = " ".join(_texts(at.markdown))
    for word in ("Convergence", "Oscillation", "Blocking", "Fingerprint", "collapsed to `!`"):
        assert word in body
    at.button(key="home_run").click().run()
    _ok(at)
    assert any(t.startswith("Converged after") for t in _texts(at.subheader))
    assert at.slider(key=next(s.key for s in at.slider)).value >= 1  # the scrubber, at the final iteration


def test_solo_run_shows_status_chips_scrubber_and_charts():
    at = _app("pages/solo.py")
    _ok(at)
    at.number_input(key="length").set_value(6)
    at.number_input(key="iterations").set_value(5)
    at.button(key="solo_run").click().run()
    _ok(at)
    assert "Converged after 2 iterations." in _texts(at.subheader)
    assert len(at.get(CHARTS)) >= 4  # heatmap, flips per position, insertions, changes per iteration
    chips = [m for m in _texts(at.markdown) if "position 1:" in m]
    assert chips and "rgba(" in chips[-1]  # token chips with theme-neutral translucent colors
    labels = [b.label for b in at.get("download_button")]
    assert "Download the whole run (JSON)" in labels and "Data (CSV)" in labels
    scrub = at.slider[0]
    scrub.set_value(0).run()
    _ok(at)
    assert "The start sequence." in _texts(at.caption)
    # the same settings later show the stored run without running again
    at.number_input(key="seed").set_value(0).run()
    assert "Converged after 2 iterations." in _texts(at.subheader)


def test_url_query_parameters_fill_in_the_settings():
    at = _app("pages/solo.py", mode="single", length="5", seed="7", iterations="40")
    _ok(at)
    assert at.selectbox(key="mode").value == "single"
    assert at.number_input(key="length").value == 5
    assert at.number_input(key="seed").value == 7
    assert at.number_input(key="iterations").value == 40


def test_an_unknown_model_shows_the_problem_and_the_fix():
    at = _app("pages/solo.py")
    at.selectbox(key="model").set_value("other…").run()
    at.text_input(key="model_other").input("no-such-model").run()
    at.button(key="solo_run").click().run()
    _ok(at)
    assert "unknown model 'no-such-model'" in _texts(at.error)[0]
    assert "smollm2-135m" in _texts(at.info)[0]  # the fix names the bundled models
    assert not at.get(CHARTS)


def test_other_model_with_nothing_typed_is_an_error_not_a_crash():
    at = _app("pages/battle.py")
    at.selectbox(key="model_b").set_value("other…").run()
    at.button(key="battle_run").click().run()
    _ok(at)
    assert "no model is typed in" in _texts(at.error)[0]


def test_a_run_cut_short_is_shown_as_interrupted_and_saved_so(db):
    # What the engine keeps while a run streams; a rerun (Cancel, Stop or any widget change) ends it there.
    lm = constant_lm(1, name="A")
    config = RunConfig(mode="single", model_a="smollm2-135m", length=4, seed=12345)
    players = [modes.Player(lm, 0, "A")]
    exp = Experiment(config, players, modes.State(players, [0, 0, 0, 0], True), [0, 0, 0, 0], "aaaa")
    records = []
    for rec in exp.records():
        records.append(rec)
        if len(records) == 4:  # step, iteration end, step, iteration end: cut after two iterations
            break
    at = _app("pages/solo.py")
    at.session_state["partial_run"] = {
        "config": config, "origin": "solo", "labels": ["A"], "start_text": "aaaa", "start_tokens": [0, 0, 0, 0], "records": records,
    }
    at.run()
    _ok(at)
    assert "Interrupted after 2 iterations; below is how far it got." in _texts(at.subheader)
    [row] = RunStore(db).list()  # saved whole, once, with its status
    assert (row.status, row.seed, row.iterations) == ("interrupted", 12345, 2)
    at.switch_page("pages/fingerprints.py").run()
    _ok(at)
    assert "Run something first" in _texts(at.info)[0]  # one interrupted solo run: only one fingerprint


def test_fingerprints_of_uploaded_runs_are_compared():
    # A always inserts 'b', B always 'c': disjoint fingerprints, 1 bit apart, no overlap
    lms = [constant_lm(1, name="A"), constant_lm(2, name="B")]
    config = RunConfig(mode="adversarial-single", model_a="A", model_b="B", length=3)
    players = [modes.Player(lm, i, lm.name) for i, lm in enumerate(lms)]
    exp = Experiment(config, players, modes.State(players, [0, 0, 0], True), [0, 0, 0], "aaa")
    battle = collect(exp, exp.records())
    at = _app("pages/fingerprints.py")
    at.file_uploader(key="fp_upload").set_value(
        [("battle.json", battle.to_json().encode(), "application/json"), ("broken.json", b"{not json", "application/json")]
    ).run()
    _ok(at)
    assert "this is not a JSON run file" in _texts(at.error)[0]  # the broken file is reported, the good one used
    assert at.selectbox(key="fp_left").value == "A in battle.json"
    assert at.selectbox(key="fp_right").value == "B in battle.json"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Jensen-Shannon divergence"] == "1.00 bits" and metrics["Overlap"] == "0%"
    assert any("almost completely different" in m for m in _texts(at.markdown))
    assert len(at.get(CHARTS)) == 1


def _battle(at, model_b: str, mode: str, length: int, iterations: int):
    at.switch_page("pages/battle.py").run()
    at.selectbox(key="model_b").set_value(model_b).run()
    at.selectbox(key="battle_mode").set_value(mode).run()
    at.number_input(key="length").set_value(length)
    at.number_input(key="iterations").set_value(iterations)
    at.button(key="battle_run").click().run()
    _ok(at)
    return at


def test_battle_smollm2_vs_gemma_and_the_fingerprint_comparison():
    at = _battle(_app(), "gemma3-270m", "adversarial", 6, 4)
    status = _texts(at.subheader)[-1]
    assert status.startswith(("Oscillating", "Converged", "Stopped at the iteration limit"))
    assert {m.label for m in at.metric} >= {"Iterations", "Oscillation period"}
    heat = at.get(CHARTS)[0].spec if hasattr(at.get(CHARTS)[0], "spec") else None
    assert len(at.get(CHARTS)) >= 3
    if heat:
        assert '"model"' in str(heat)
    assert any("changed by" in m for m in _texts(at.markdown))  # the chip legend names both models
    at.switch_page("pages/fingerprints.py").run()
    _ok(at)
    labels = {m.label for m in at.metric}
    assert {"Jensen-Shannon divergence", "Overlap"} <= labels
    assert at.selectbox(key="fp_left").value.startswith("smollm2-135m in adversarial")
    assert at.selectbox(key="fp_right").value.startswith("gemma3-270m in adversarial")
    assert any("Jensen-Shannon divergence" in m for m in _texts(at.markdown))
    assert len(at.get(CHARTS)) == 1


@pytest.mark.slow
def test_battle_smollm2_vs_qwen_adversarial_single():
    at = _battle(_app(), "qwen2.5-coder-0.5b", "adversarial-single", 6, 6)
    assert _texts(at.subheader)[-1].startswith(("Converged", "Oscillating", "Blocked", "Stopped at the iteration limit"))
    assert len(at.get(CHARTS)) >= 4  # heatmap, flips, the two fingerprints side by side, changes per iteration
    assert {m.label for m in at.metric} >= {"Changes by smollm2-135m", "Changes by qwen2.5-coder-0.5b"}


def test_sweep_runs_a_tiny_grid_with_reference_lines():
    at = _app("pages/sweep.py")
    _ok(at)
    at.multiselect(key="sweep_lengths").set_value([4])
    at.number_input(key="sweep_seeds").set_value(2)
    at.number_input(key="sweep_iterations").set_value(5)
    at.button(key="sweep_run").click().run()
    _ok(at)
    assert "2 run(s): sequential · smollm2-135m" in _texts(at.subheader)
    assert at.metric[0].label == "Converged"
    charts = at.get(CHARTS)
    assert len(charts) == 1
    spec = charts[0].proto.spec
    assert spec.count('"mark"') == 3 and '"strokeDash"' in spec and '"claim"' in spec  # claims (dashed), mean line, runs


def test_every_run_made_in_the_dashboard_is_saved(db, tiny_model):
    at = _solo_tiny(_app(), seed=101)
    [row] = RunStore(db).list()
    assert (row.mode, row.model_a, row.length, row.seed) == ("single", "tiny-noisy", 5, 101)
    assert row.status != "interrupted"
    assert at.status[0].label.endswith(f"Saved as run #{row.id}.")
    assert any(c.startswith("Runs are saved to") and str(db) in c for c in _texts(at.sidebar.caption))


def _saved_runs(db: Path) -> tuple[int, int]:
    """A solo run and a battle of the tiny models, saved beforehand: their ids."""
    store = RunStore(db)
    solo = store.save(run_tiny("sequential", [successor_lm()], [1, 1, 1]))
    battle = store.save(run_tiny("adversarial-single", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0]))
    return solo, battle


def test_history_lists_filters_opens_and_compares_saved_runs(db):
    solo, battle = _saved_runs(db)
    at = _app("pages/history.py")
    _ok(at)
    assert list(at.dataframe[0].value["run"]) == [battle, solo]  # newest first
    # the newest run opens by default, a battle in the Battle view; the comparison starts with its two sides
    assert at.selectbox(key="hist_open").value == battle
    assert {"Iterations", "Oscillation period", "Changes by A", "Changes by B"} <= {m.label for m in at.metric}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Jensen-Shannon divergence"] == "1.00 bits" and metrics["Overlap"] == "0%"
    at.selectbox(key="hist_open").set_value(solo).run()
    _ok(at)
    assert "Converged after 2 iterations." in _texts(at.subheader)
    assert "Changes by A" not in {m.label for m in at.metric}  # the Solo view
    # a group on the left: the battle's A plus the solo run, against the battle's B
    at.multiselect(key="hist_left").set_value([f"{battle}:0", f"{solo}:0"]).run()
    _ok(at)
    assert "2 fingerprints added up" in _texts(at.caption)
    at.selectbox(key="hist_mode").set_value("sequential").run()
    _ok(at)
    assert list(at.dataframe[0].value["run"]) == [solo]
    at.selectbox(key="hist_mode").set_value(None).run()
    at.selectbox(key="hist_status").set_value("all-blocked").run()
    assert list(at.dataframe[0].value["run"]) == [battle]


def test_history_exports_and_deletes_selected_runs(db):
    solo, battle = _saved_runs(db)
    at = _app("pages/history.py")
    at.button(key="hist_all").click().run()
    _ok(at)
    assert at.multiselect(key="hist_selected").value == [battle, solo]
    assert {"JSON", "CSV", "Parquet"} <= {b.label for b in at.get("download_button")}
    # what the buttons download: tokconv.exporting's files of the selected runs
    store = RunStore(db)
    runs = {i: store.get(i) for i in (battle, solo)}
    assert [r.to_dict() for r in runs_from_json(export_bytes(runs, "json"), "export")] == [r.to_dict() for r in runs.values()]
    steps = pd.read_parquet(io.BytesIO(export_bytes(runs, "parquet")))
    assert len(steps) == sum(len(r.steps) for r in runs.values())
    # delete the battle: nothing happens before the box is ticked
    at.multiselect(key="hist_selected").set_value([battle]).run()
    assert at.button(key="hist_delete").disabled
    at.checkbox(key=f"hist_confirm_{battle}").check().run()
    at.button(key="hist_delete").click().run()
    _ok(at)
    assert f"Deleted 1 run(s): #{battle}." in _texts(at.success)
    assert [r.id for r in store.list()] == [solo]
    assert list(at.dataframe[0].value["run"]) == [solo]
    assert at.multiselect(key="hist_selected").value == []


def test_history_imports_a_json_file_and_refuses_a_bad_one(db, tmp_path):
    elsewhere = RunStore(tmp_path / "elsewhere.sqlite")
    ids = [elsewhere.save(run_tiny("sequential", [successor_lm()], [s, s, s], seed=s)) for s in (1, 2)]  # 2 settings keys
    exported = export_bytes({i: elsewhere.get(i) for i in ids}, "json")
    at = _app("pages/history.py")
    _ok(at)
    assert "No saved runs yet" in _texts(at.info)[0]
    at.file_uploader(key="hist_import").set_value([
        ("runs.json", exported, "application/json"),
        ("notes.json", json.dumps({"hello": "world"}).encode(), "application/json"),
    ]).run()
    _ok(at)
    assert any(t.startswith("Imported 2 run(s) from runs.json as #") for t in _texts(at.success))
    assert "notes.json: this is not a tokconv run file: expected a run" in _texts(at.error)[0]
    assert len(at.dataframe[0].value) == 2
    at.run()  # a later script run imports nothing again
    assert len(RunStore(db).list()) == 2 and not at.success


def test_a_corrupt_database_is_reported_once_and_left_untouched(db, tiny_model):
    garbage = b"these are not the runs you are looking for\n" * 100
    db.write_bytes(garbage)
    at = _app()
    _ok(at)
    assert "Runs are not being saved" in _texts(at.error)[0] and "is not a tokconv run database" in _texts(at.error)[0]
    assert "move that file away" in _texts(at.info)[0]
    assert any(c.startswith("Runs are not saved") for c in _texts(at.sidebar.caption))
    _solo_tiny(at, seed=202)  # the dashboard works as before, without saving
    assert at.subheader and not at.error  # the problem was said once, not on every page
    at.switch_page("pages/history.py").run()
    _ok(at)
    assert "is not a tokconv run database" in _texts(at.error)[0]  # History says why it has nothing
    assert not at.dataframe
    assert db.read_bytes() == garbage


def test_sweep_saves_its_runs_and_a_second_identical_sweep_skips_them(db, tiny_model):
    at = _app("pages/sweep.py")
    at.selectbox(key="sweep_mode").set_value("single").run()
    at.selectbox(key="sweep_model").set_value("other…").run()
    at.text_input(key="sweep_model_other").input("tiny-noisy").run()
    at.multiselect(key="sweep_lengths").set_value([4, 6])
    at.number_input(key="sweep_seeds").set_value(2)
    at.number_input(key="sweep_iterations").set_value(40)
    at.button(key="sweep_run").click().run()
    _ok(at)
    store = RunStore(db)
    rows = store.list()
    assert sorted((r.length, r.seed) for r in rows) == [(4, 0), (4, 1), (6, 0), (6, 1)]
    assert all(store.get(r.id).cost.batched_rows == 2 for r in rows)  # single-mode runs of one length, batched
    bar = at.get("progress")[0]
    assert bar.value == 100 and bar.text == "All 4 run(s) done."
    assert "4 run(s): single · tiny-noisy" in _texts(at.subheader)
    at.button(key="sweep_run").click().run()
    _ok(at)
    assert "4 run(s) already saved, skipped." in _texts(at.info)
    assert len(store.list()) == 4
    assert "4 run(s): single · tiny-noisy" in _texts(at.subheader)  # the chart shows the saved runs
    assert len(at.get(CHARTS)) == 1


# --- sharing and state (#14) and injection (#15) ---------------------------------------------------------


def _warnings(at) -> list[str]:
    return _texts(at.warning)


@pytest.mark.parametrize(("query", "said", "key", "value"), [
    ({"length": "abc"}, "The link's length=abc is not a number from 2 to 512; using 8.", "length", 8),
    ({"length": "9999"}, "The link's length=9999 is not a number from 2 to 512; using 8.", "length", 8),
    ({"iterations": "0"}, "The link's iterations=0 is not a number from 1 to 10000; using 100.", "iterations", 100),
    ({"mode": "fast"}, "The link's mode=fast is not one of sequential, single, batch; using sequential.", "mode", "sequential"),
])
def test_a_link_value_that_cannot_be_used_is_reset_and_said(query, said, key, value):
    at = _app("pages/solo.py", **query)
    _ok(at)
    assert said in _warnings(at)
    widget = at.selectbox(key=key) if key == "mode" else at.number_input(key=key)
    assert widget.value == value
    assert not at.button(key="solo_run").disabled
    at.run()  # said once, not on every script run
    assert said not in _warnings(at)


def test_a_number_out_of_range_switches_run_off_with_the_reason(db):
    at = _app("pages/solo.py")
    at.number_input(key="length").set_value(9999).run()
    _ok(at)
    assert "Length (tokens) must be a whole number from 2 to 512." in _texts(at.error)
    run = at.button(key="solo_run")
    assert run.disabled and "Length (tokens) must be a whole number from 2 to 512." in run.help
    assert "Run is off until the settings marked in red are in range." in _texts(at.caption)
    assert not RunStore(db).list() and not at.status
    at.number_input(key="length").set_value(12).run()
    assert not at.button(key="solo_run").disabled and not at.error


def _saved_solo(db: Path) -> tuple[int, str]:
    """A finished sequential run of the successor model saved beforehand (as another server would): its id and the URL of its settings.

    The model 'succ' is not registered in this process: the page cannot run it, only open the saved run."""
    result = run_tiny("sequential", [successor_lm()], [1, 1, 1])
    return RunStore(db).save(result), result.config.key()


def test_the_saved_run_of_the_settings_is_shown_without_pressing_run(db):
    rid, _ = _saved_solo(db)
    at = _app("pages/solo.py", model="other…", model_other="succ", length="3")
    _ok(at)
    assert "Converged after 2 iterations." in _texts(at.subheader)
    assert any(c.startswith(f"Saved run #{rid}:") for c in _texts(at.caption))
    assert at.query_params["run"] == str(rid)
    at.button(key="solo_run").click().run()  # Run opens the saved run: nothing runs (succ is not even loadable), nothing is added
    _ok(at)
    assert "Converged after 2 iterations." in _texts(at.subheader) and not at.error
    assert [r.id for r in RunStore(db).list()] == [rid]


def test_a_link_with_a_run_id_opens_that_run_with_its_settings(db):
    rid, _ = _saved_solo(db)
    at = _app("pages/solo.py", run=str(rid))
    _ok(at)
    assert "Converged after 2 iterations." in _texts(at.subheader)
    assert at.text_input(key="model_other").value == "succ" and at.number_input(key="length").value == 3
    assert any(c.startswith(f"Saved run #{rid}:") for c in _texts(at.caption))
    # a battle's id on the Solo page, and an id that is not there, are said and dropped
    battle = RunStore(db).save(run_tiny("adversarial-single", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0]))
    at = _app("pages/solo.py", run=str(battle))
    assert f"Run #{battle} from the link is a battle: open it on the Battle page or in History." in _warnings(at)
    at = _app("pages/battle.py", run=str(battle))
    _ok(at)
    assert {"Changes by A", "Changes by B"} <= {m.label for m in at.metric}
    assert at.query_params["run"] == str(battle)
    at = _app("pages/solo.py", run="999")
    assert any(w.startswith("The link's run=999 is not a run in this run database") for w in _warnings(at))


def test_history_puts_the_opened_run_in_the_link_and_opens_a_linked_one(db):
    solo, battle = _saved_runs(db)
    at = _app("pages/history.py", run=str(solo))
    _ok(at)
    assert at.selectbox(key="hist_open").value == solo
    assert "Converged after 2 iterations." in _texts(at.subheader)
    at.selectbox(key="hist_open").set_value(battle).run()
    assert at.query_params["run"] == str(battle)
    at = _app("pages/history.py", run="12345")
    assert "The link's run=12345 is not among the saved runs listed here; showing the newest run instead." in _warnings(at)
    assert at.selectbox(key="hist_open").value == battle and at.query_params["run"] == str(battle)


def test_leaving_the_page_mid_run_is_said_before_and_after(db):
    lm = constant_lm(1, name="A")
    config = RunConfig(mode="single", model_a="smollm2-135m", length=4, seed=54321)
    players = [modes.Player(lm, 0, "A")]
    exp = Experiment(config, players, modes.State(players, [0, 0, 0, 0], True), [0, 0, 0, 0], "aaaa")
    records = list(exp.records())[:2]  # cut after one iteration
    at = _app("pages/solo.py")
    at.session_state["partial_run"] = {
        "config": config, "origin": "solo", "labels": ["A"], "start_text": "aaaa", "start_tokens": [0, 0, 0, 0], "records": records,
    }
    at.switch_page("pages/history.py").run()  # the run was cut by opening another page
    _ok(at)
    at.switch_page("pages/solo.py").run()
    at.selectbox(key="mode").set_value("single").run()
    at.number_input(key="length").set_value(4)
    at.number_input(key="seed").set_value(54321).run()
    _ok(at)
    assert "Interrupted after 1 iteration; below is how far it got." in _texts(at.subheader)
    assert any(w.startswith("This run was interrupted: you opened another page while it was running, so it stopped after 1 iteration.")
               for w in _warnings(at)), _warnings(at)


def test_a_live_run_shows_progress_time_left_and_the_leaving_warning(db, tiny_model):
    at = _solo_tiny(_app(), seed=303)
    bar = at.get("progress")[0]
    assert bar.value == 100 and bar.text.startswith("Done: ")
    from ui.running import Progress, expected_iterations

    assert expected_iterations(RunConfig(mode="single", length=20), 20) == 50
    assert expected_iterations(RunConfig(mode="adversarial-single", model_b="x", length=20), 20) == 60
    assert expected_iterations(RunConfig(mode="sequential", length=20), 20) == 2
    assert expected_iterations(RunConfig(mode="single", length=200, iterations=30), 200) == 30

    class Bar:
        def progress(self, value, text):
            self.value, self.text = value, text

    p = Progress(Bar(), RunConfig(mode="single", length=4), 4)  # ~10 iterations
    p.t0 -= 6.0  # 3 iterations took 6 s
    p.update(3)
    assert p.bar.text == "Iteration 4 of about 10 (at most 100) · about 14 s left" and p.bar.value == pytest.approx(0.3)
    seq = Progress(Bar(), RunConfig(mode="sequential", length=4), 4)
    seq.update(1, position=1)  # half way through the first pass
    assert seq.bar.value == pytest.approx(0.25)


def test_the_cancel_caption_says_leaving_the_page_cancels(monkeypatch, db, tiny_model):
    import ui.running as running_mod

    seen = []
    real = running_mod.load_models

    def spy(specs, say, *rest):
        seen.append(True)
        return real(specs, say, *rest)

    monkeypatch.setattr(running_mod, "load_models", spy)
    at = _solo_tiny(_app(), seed=404)
    assert seen
    # the caption is drawn while the run goes and removed after: check the source of the box instead
    import inspect

    assert "Leaving this page cancels the run" in inspect.getsource(running_mod._stream)


INJECTION = "![](//evil.example/x.png) <img src=//evil.example/y.png> :red[x]"


def _live_markup(text: str) -> bool:
    """Whether markdown text holds an image or an HTML tag that is not backslash-escaped.

    Token chips and legends are one-line HTML blocks (markdown is not parsed inside them): there only
    an unescaped tag would be live."""
    if text.startswith("<div") and "\n\n" not in text:
        return "<img" in text
    return bool(re.search(r"(?<!\\)!(?<!\\)\[|(?<!\\)<img", text))


class _AsciiTokenizer:
    """One token per ASCII character, so that any start text (markdown included) can be run by a tiny model."""

    vocab_size = 128
    all_special_ids: list[int] = []

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text if ord(c) < 128]

    def decode(self, ids) -> str:
        return "".join(chr(int(i)) for i in ids)

    def get_vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(32, 127)}


@pytest.fixture
def ascii_model():
    """A random bigram model over ASCII characters, registered as 'tiny-ascii'."""
    lm = table_lm(np.random.default_rng(1).normal(size=(128, 128)), name="tiny-ascii")
    lm = dataclasses.replace(lm, tokenizer=_AsciiTokenizer())
    models.register(lm)
    yield lm
    models.unregister(lm.spec)


def test_user_text_in_labels_and_messages_is_plain_text(db, ascii_model):
    at = _app("pages/solo.py", model="other…", model_other="tiny-ascii", mode="single", iterations="3", start_text=INJECTION)
    at.button(key="solo_run").click().run()
    _ok(at)
    assert at.status[0].label.startswith("Finished: ")
    from ui.running import running_label

    label = running_label(RunConfig(mode="single", model_a="tiny-ascii", start_text=INJECTION))
    assert "evil.example" in label and not _live_markup(label)  # st.status labels are markdown: escaped
    shown = _texts(at.caption) + _texts(at.markdown) + _texts(at.subheader) + _texts(at.warning)
    assert any(INJECTION in t for t in _texts(at.code))  # the start text is shown as code, as typed
    for text in shown:
        assert not _live_markup(text), text
    # a typed model name that is markdown is quoted in the error as text
    at = _app("pages/solo.py", model="other…", model_other=INJECTION)
    at.button(key="solo_run").click().run()
    _ok(at)
    assert any("evil.example" in t for t in _texts(at.error))
    for text in _texts(at.error) + _texts(at.info):
        assert not _live_markup(text), text
    # imported runs whose model names are markdown: History's labels and captions
    store = RunStore(db)
    evil = run_tiny("adversarial-single", [constant_lm(1, name=INJECTION), constant_lm(2, name="B")], [0, 0, 0])
    store.save(evil)
    at = _app("pages/history.py")
    _ok(at)
    shown = _texts(at.caption) + _texts(at.markdown) + _texts(at.info) + [m.label for m in at.metric]
    assert any("evil" in t for t in shown)
    for text in shown:
        assert not _live_markup(text), text


def test_a_file_that_is_not_a_model_is_not_echoed(tmp_path):
    secret = tmp_path / "notes.txt"
    secret.write_text("TOP-SECRET password=hunter2\n")
    at = _app("pages/solo.py", model="other…", model_other=str(secret))
    at.button(key="solo_run").click().run()
    _ok(at)
    said = " ".join(_texts(at.error) + _texts(at.info))
    assert "not a GGUF file" in said
    assert "TOP" not in said and "hunter2" not in said


def test_plain_words_in_model_help_and_the_sidebar():
    from ui.controls import MODEL_HELP

    assert "SmolLM2, 135 million parameters, Llama family" in MODEL_HELP
    assert "GGUF" not in MODEL_HELP and "Q4" not in MODEL_HELP
    at = _app()
    import tokconv

    assert tokconv.RUNTIME.notice() not in _texts(at.sidebar.caption)[:1]
    assert [e.label for e in at.sidebar.expander] == ["About this machine"]


def test_a_battle_can_share_ids_and_feed_nan_and_says_so(db):
    """More settings on Battle: share ids and feed NaN beyond the vocabulary; the result says it was an
    emulation and flags the moves made from broken numbers."""
    import dataclasses

    from conftest import make_tiny_lm
    from tiny import CharTokenizer, constant_lm

    big = constant_lm(9, vocab=12, name="app-big")
    small = dataclasses.replace(make_tiny_lm(vocab_size=6), name="app-small", spec="app-small", tokenizer=CharTokenizer(6))
    for lm in (big, small):
        models.register(lm)
    try:
        at = _app("pages/battle.py")
        for key, spec in (("model_a", "app-big"), ("model_b", "app-small")):
            at.selectbox(key=key).set_value("other…").run()
            at.text_input(key=f"{key}_other").input(spec).run()
        at.selectbox(key="share").set_value("ids").run()
        at.selectbox(key="oov").set_value("nan").run()
        at.number_input(key="length").set_value(5)
        at.number_input(key="seed").set_value(3)
        at.button(key="battle_run").click().run()
        _ok(at)
        warnings = " ".join(_texts(at.warning))
        assert "broken numbers" in warnings
        assert any("emulation" in c for c in _texts(at.caption))
        saved = RunStore(db).list()
        assert len(saved) == 1 and RunStore(db).get(saved[0].id).config.oov == "nan"
    finally:
        for lm in (big, small):
            models.unregister(lm.spec)


def test_a_sweep_link_shows_the_saved_runs_of_its_grid_without_pressing_run(db, tiny_model):
    """A new session (a shared link, a restarted server) opens the sweep's chart from the run database."""
    from tokconv.experiments import SweepSpec
    from tokconv.experiments.sweep import run_sweep

    run_sweep(SweepSpec(model="tiny-noisy", mode="single", lengths=(4, 6), seeds=(0, 1), iterations=40), RunStore(db))
    at = _app("pages/sweep.py", sweep_mode="single", sweep_model="other…", sweep_model_other="tiny-noisy",
              sweep_lengths=["4", "6"], sweep_seeds="3", sweep_iterations="40")
    _ok(at)
    assert "4 run(s): single · tiny-noisy" in _texts(at.subheader)
    assert len(at.get(CHARTS)) == 1
    assert any("4 of the 6 run(s) of these settings are saved already" in c for c in _texts(at.caption))
    assert len(RunStore(db).list()) == 4  # nothing was run
