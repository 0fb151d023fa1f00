"""Frame and chart builders, and fingerprint comparison, on tiny runs whose outcome is known by construction."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from tiny import constant_lm, successor_lm

from tokconv.analysis import charts, compare, frames
from tokconv.experiments import modes
from tokconv.experiments.experiment import Experiment, collect
from tokconv.experiments import RunConfig, RunResult


def _run(mode, lms, start, **cfg) -> RunResult:
    config = RunConfig(mode=mode, model_a=lms[0].spec, model_b=lms[1].spec if len(lms) > 1 else None, length=len(start), **cfg)
    players = [modes.Player(lm, i, lm.name) for i, lm in enumerate(lms)]
    state = modes.State(players, start, shared_ids=True)
    exp = Experiment(config, players, state, list(start), state.text)
    return collect(exp, exp.records())


@pytest.fixture(scope="module")
def solo() -> RunResult:
    # successor model from 'caafbbd': iteration 1 rewrites it to 'cdefabc' (positions 3 and 5 already fit), iteration 2 agrees
    return _run("sequential", [successor_lm()], [2, 0, 0, 5, 1, 1, 3])


@pytest.fixture(scope="module")
def battle() -> RunResult:
    # A always says 'b', B always says 'c': they fight over positions 1 and 2 until both are blocked
    return _run("adversarial-single", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0], block_after=3)


def _spec(chart) -> dict:
    return chart.to_dict()


def _rows(spec: dict) -> list[dict]:
    return next(iter(spec["datasets"].values()))


def test_steps_frame_has_one_row_per_replacement(solo):
    df = frames.steps_frame(solo)
    assert len(df) == len(solo.steps) == 4
    assert df["iteration"].tolist() == [1, 1, 1, 1]
    assert df["position"].tolist() == [1, 2, 4, 6]
    assert df["new"].tolist() == ["'d'", "'e'", "'a'", "'c'"]  # quoted like the original's fingerprints


def test_frames_accept_the_json_dict_form(solo):
    assert frames.steps_frame(solo.to_dict()).equals(frames.steps_frame(solo))


def test_sequence_frame_marks_what_each_iteration_changed(solo):
    start = frames.sequence_frame(solo, 0)
    assert "".join(start["text"]) == "caafbbd" and not start["changed"].any()
    first = frames.sequence_frame(solo, 1)
    assert "".join(first["text"]) == "cdefabc"
    assert first.loc[first["changed"], "position"].tolist() == [1, 2, 4, 6]
    assert first.loc[1, "old_text"] == "a" and first.loc[1, "side"] == "A"
    assert not frames.sequence_frame(solo, 2)["changed"].any()  # the confirming pass changes nothing


def test_chip_label_makes_whitespace_visible():
    assert frames.chip_label(" a\n") == "·a↵"
    assert frames.chip_label("") == "∅"


def test_flips_and_insertions_frames_of_a_battle(battle):
    flips = frames.flips_frame(battle)
    assert flips.groupby("position")["flips"].sum().to_dict() == {1: 3, 2: 3}
    ins = frames.insertions_frame(battle)
    assert set(ins["model"]) == {"A", "B"}
    assert ins.groupby("model")["share"].sum().round(6).to_dict() == {"A": 1.0, "B": 1.0}
    assert ins.set_index("model").loc["A", "token"] == "'b'"


def test_iterations_frame_lists_who_acted(battle):
    it = frames.iterations_frame(battle)
    assert it["iteration"].tolist() == list(range(1, battle.iterations + 1))
    assert it["side"].tolist()[:4] == ["A", "B", "A", "B"]
    assert it["blocked"].iloc[-1] == 2


def test_heatmap_is_rect_marks_colored_by_model_in_a_battle(battle):
    spec = _spec(charts.flip_heatmap(frames.steps_frame(battle)))
    assert spec["mark"]["type"] == "rect"
    enc = spec["encoding"]
    assert enc["x"]["field"] == "iteration" and enc["y"]["field"] == "position"
    assert enc["color"]["field"] == "model"
    assert enc["color"]["scale"]["domain"] == ["A", "B"]
    assert enc["color"]["scale"]["range"] == list(charts.MODEL_COLORS)
    assert {t["field"] for t in enc["tooltip"]} >= {"old", "new", "entropy"}
    assert len(_rows(spec)) == len(battle.steps)


def test_heatmap_of_a_solo_run_is_colored_by_entropy_and_can_show_every_position(solo):
    spec = _spec(charts.flip_heatmap(frames.steps_frame(solo)))
    assert spec["encoding"]["color"]["field"] == "entropy"
    assert "scale" not in spec["encoding"]["y"]
    spec = _spec(charts.flip_heatmap(frames.steps_frame(solo), positions=7, iterations=2))
    assert spec["encoding"]["y"]["scale"]["domain"] == list(range(7))
    assert spec["encoding"]["x"]["scale"]["domain"] == [1, 2]  # the confirming pass shows, empty


def test_flip_counts_and_changes_charts_are_bars(battle):
    flips = _spec(charts.flip_counts_chart(frames.flips_frame(battle)))
    assert flips["mark"]["type"] == "bar" and flips["encoding"]["y"]["aggregate"] == "sum"
    changes = _spec(charts.changes_chart(frames.iterations_frame(battle)))
    assert changes["mark"]["type"] == "bar" and changes["encoding"]["y"]["field"] == "changes"


def test_insertions_chart_keeps_the_top_tokens_per_model(battle):
    spec = _spec(charts.insertions_chart(frames.insertions_frame(battle), top=1))
    assert spec["mark"]["type"] == "bar"
    assert spec["encoding"]["y"]["sort"] == "-x"
    assert sorted((r["model"], r["token"]) for r in _rows(spec)) == [("A", "'b'"), ("B", "'c'")]


def test_sweep_chart_layers_runs_means_and_the_original_claims(solo, battle):
    sweep = frames.sweep_frame([solo, battle.to_dict()])
    assert sweep[["length", "status", "iterations"]].values.tolist() == [[7, "converged", 2], [3, "all-blocked", battle.iterations]]
    ref = frames.reference_frame(sweep["length"])
    assert set(ref["claim"]) == set(frames.CLAIMS)
    assert ref.query("length == 7")["iterations"].tolist() == [2.0, 17.5, 21.0]
    spec = _spec(charts.sweep_chart(sweep, ref))
    assert [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]] == [
        "line",
        "line",
        "circle",
    ]
    claims = spec["layer"][0]
    assert claims["mark"]["strokeDash"] == [6, 4] and claims["encoding"]["color"]["field"] == "claim"
    assert spec["resolve"]["scale"]["color"] == "independent"  # claim colors apart from run-status colors


def test_sweep_summary_gives_rates_per_length(solo, battle):
    summary = frames.sweep_summary(frames.sweep_frame([solo, solo, battle]))
    row = summary.set_index("length").loc[7]
    assert row["runs"] == 2 and row["converged_rate"] == 1.0 and row["oscillating_rate"] == 0.0
    assert frames.sweep_summary(frames.sweep_frame([])).empty


def test_js_divergence_is_zero_for_identical_shares():
    assert compare.js_divergence({"!": 2, " ": 6}, {"!": 1, " ": 3}) == pytest.approx(0.0, abs=1e-12)


def test_js_divergence_of_disjoint_fingerprints_is_one_bit_or_ln2():
    assert compare.js_divergence({"!": 43}, {" ": 27, "-": 5}) == pytest.approx(1.0)
    assert compare.js_divergence({"!": 43}, {" ": 27}, base=math.e) == pytest.approx(math.log(2))


def test_js_divergence_is_symmetric_and_bounded():
    p, q = {"a": 5, "b": 1, "c": 2}, {"a": 1, "d": 4}
    d = compare.js_divergence(p, q)
    assert d == pytest.approx(compare.js_divergence(q, p))
    assert 0.0 < d < 1.0


def test_js_divergence_is_nan_when_a_side_is_empty():
    assert math.isnan(compare.js_divergence({}, {"a": 1}))
    assert "nothing to compare" in compare.describe(math.nan, 0.0)


def test_overlap_is_the_shared_share_of_insertions():
    assert compare.overlap({"!": 3, ",": 1}, {"!": 1}) == pytest.approx(0.75)
    assert compare.overlap({"a": 1}, {"b": 1}) == 0.0
    assert compare.shared_tokens({"a": 1, "b": 5, "c": 1}, {"b": 1, "a": 9}) == ["a", "b"]


def test_compare_frame_and_chart_cover_the_union_of_tokens():
    df = compare.compare_frame({"!": 3, " ": 1}, {" ": 2, "的": 2}, ("solo", "battle"))
    assert len(df) == 6 and set(df["side"]) == {"solo", "battle"}
    assert df.query("side == 'battle' and text == '!'")["share"].item() == 0.0
    spec = _spec(charts.compare_chart(df))
    assert spec["mark"]["type"] == "bar" and spec["encoding"]["yOffset"]["field"] == "side"
    assert compare.compare_frame({"a": 3, "b": 1}, {"c": 1}, top=2)["text"].unique().tolist() == ["c", "a"]


def test_describe_reads_the_numbers_in_words():
    assert "nearly the same" in compare.describe(0.02, 0.95)
    assert "almost completely different" in compare.describe(1.0, 0.0)


def test_the_library_never_imports_streamlit():
    code = "import sys, tokconv.analysis.charts, tokconv.analysis.frames, tokconv.analysis.compare; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
