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
    (claims, mean), points = spec["layer"][0]["layer"], spec["layer"][1]
    assert [claims["mark"]["type"], mean["mark"]["type"], points["mark"]["type"]] == ["line", "line", "circle"]
    assert claims["encoding"]["color"]["field"] == "claim" and claims["encoding"]["strokeDash"]["field"] == "claim"
    assert spec["resolve"]["scale"]["color"] == "independent"  # line colors apart from run-status colors


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


# --- issue #14: one colour per model, the sweep chart's legend and colours, integer counts, upright labels ---


def _color_scale(enc: dict) -> tuple[list, list]:
    return enc["color"]["scale"]["domain"], enc["color"]["scale"]["range"]


def test_model_b_alone_is_orange_with_its_name_in_the_legend(battle):
    ins = frames.insertions_frame(battle)
    for model, color in (("A", charts.MODEL_COLORS[0]), ("B", charts.MODEL_COLORS[1])):
        spec = _spec(charts.insertions_chart(ins[ins["model"] == model], title=model))
        assert _color_scale(spec["encoding"]) == ([model], [color])


def test_every_model_chart_maps_the_model_names_to_the_two_fixed_colors(battle):
    both = (["A", "B"], list(charts.MODEL_COLORS))
    steps, flips, its = frames.steps_frame(battle), frames.flips_frame(battle), frames.iterations_frame(battle)
    assert _color_scale(_spec(charts.flip_heatmap(steps))["encoding"]) == both
    assert _color_scale(_spec(charts.flip_counts_chart(flips))["encoding"]) == both
    assert _color_scale(_spec(charts.insertions_chart(frames.insertions_frame(battle)))["encoding"]) == both
    assert _color_scale(_spec(charts.changes_chart(its))["encoding"]) == both
    only_b = steps[steps["side"] == "B"]  # a battle where only B changed anything is still colored by model
    assert _color_scale(_spec(charts.flip_heatmap(only_b, by_model=True))["encoding"]) == (["B"], [charts.MODEL_COLORS[1]])


def test_fingerprint_comparison_legend_names_the_fingerprints_not_left_and_right():
    df = compare.compare_frame({"!": 3}, {" ": 2}, ("smollm2 in battle 1", "gemma3 in battle 1"))
    domain, colors = _color_scale(_spec(charts.compare_chart(df))["encoding"])
    assert domain == ["smollm2 in battle 1", "gemma3 in battle 1"] and colors == list(charts.MODEL_COLORS)


def test_sweep_chart_gives_the_measured_trend_its_own_legend_entry_and_color(solo, battle):
    sweep = frames.sweep_frame([solo, battle, solo])
    spec = _spec(charts.sweep_chart(sweep, frames.reference_frame(sweep["length"])))
    (claims, mean), points = spec["layer"][0]["layer"], spec["layer"][1]
    assert claims["encoding"]["color"] == mean["encoding"]["color"]  # one scale, one legend for all lines
    lines = mean
    domain, colors = _color_scale(lines["encoding"])
    assert domain[0] == charts.TREND and domain[1:] == list(frames.CLAIMS)
    assert colors[0] == charts.TREND_COLOR and charts.TREND_COLOR not in colors[1:]
    assert lines["encoding"]["strokeDash"]["scale"]["range"][0] == [1, 0]  # measured: solid; claims: dashed
    assert all(d == [6, 4] for d in lines["encoding"]["strokeDash"]["scale"]["range"][1:])
    trend = [r for rows in spec["datasets"].values() for r in rows if r.get("claim") == charts.TREND]
    assert sorted((r["length"], r["iterations"]) for r in trend) == [(3, battle.iterations), (7, 2.0)]
    status_domain, status_colors = _color_scale(points["encoding"])
    assert status_domain == ["converged", "all-blocked"]
    assert status_colors == [charts.STATUS_COLORS["converged"], charts.STATUS_COLORS["all-blocked"]]


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))


def test_status_colors_are_clearly_distinct_from_each_other_and_from_the_lines():
    palette = list(charts.STATUS_COLORS.values()) + [charts.TREND_COLOR, *charts.CLAIM_COLORS, *charts.MODEL_COLORS]
    for i, a in enumerate(palette):
        for b in palette[i + 1 :]:
            distance = sum((x - y) ** 2 for x, y in zip(_rgb(a), _rgb(b))) ** 0.5
            assert distance > 60, (a, b)


def test_counts_have_whole_number_ticks_and_iteration_labels_stay_upright(solo, battle):
    sweep = frames.sweep_frame([solo, battle])
    sweep_spec = _spec(charts.sweep_chart(sweep, frames.reference_frame(sweep["length"])))
    count_axes = [
        _spec(charts.changes_chart(frames.iterations_frame(battle)))["encoding"]["y"]["axis"],
        _spec(charts.flip_counts_chart(frames.flips_frame(battle)))["encoding"]["y"]["axis"],
        _spec(charts.insertions_chart(frames.insertions_frame(battle)))["encoding"]["x"]["axis"],
        sweep_spec["layer"][0]["layer"][0]["encoding"]["y"]["axis"],
        sweep_spec["layer"][0]["layer"][1]["encoding"]["y"]["axis"],
        sweep_spec["layer"][1]["encoding"]["y"]["axis"],
    ]
    for axis in count_axes:
        assert axis["tickMinStep"] == 1 and axis["format"] == "d" and axis["tickCount"] >= 1
    label_axes = [
        _spec(charts.changes_chart(frames.iterations_frame(battle)))["encoding"]["x"]["axis"],
        _spec(charts.flip_heatmap(frames.steps_frame(battle)))["encoding"]["x"]["axis"],
        _spec(charts.flip_counts_chart(frames.flips_frame(battle)))["encoding"]["x"]["axis"],
        sweep_spec["layer"][1]["encoding"]["x"]["axis"],
    ]
    for axis in label_axes:
        assert axis["labelAngle"] == 0


# --- cross-tokenizer battles: blocked positions must exist in the sequence shown ---


def test_blocked_positions_past_the_end_of_the_shown_sequence_are_left_out(battle):
    import dataclasses

    log = list(battle.iterations_log)
    last = log[-1]
    assert len(last.pieces) == 3
    log[-1] = dataclasses.replace(last, blocked=(1, 2, 8, 9))  # 8 and 9: counted in the other model's longer tokenization
    r = dataclasses.replace(battle, iterations_log=log)
    shown, elsewhere = frames.blocked_positions(r, len(log))
    assert shown == [1, 2] and elsewhere == 2
    seq = frames.sequence_frame(r, len(log))
    assert seq.loc[seq["blocked"], "position"].tolist() == [1, 2]
    assert frames.blocked_positions(r, 0) == ([], 0)
    assert all(p < len(seq) for p in shown)


# --- plain words ---


def test_the_marks_and_entropy_units_are_explained_in_one_place():
    from tokconv.analysis import display

    for mark in ("·", "↵", "�", "space", "new line", "not complete on its own"):
        assert mark in display.MARKS_NOTE
    assert display.ENTROPY_NOTE == (
        "Entropy measures how unsure the model is: 0 means certain; 1 bit = two equally likely choices; "
        "nats use the natural log, 1 nat ≈ 1.44 bits."
    )


def test_markdown_escape_leaves_plain_names_alone_and_neutralises_formatting():
    from tokconv.analysis.display import markdown_escape

    assert markdown_escape("smollm2-135m") == "smollm2-135m"
    assert markdown_escape("qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b"
    out = markdown_escape("![](//evil.example/) **x** :red[y]\n\n# z")
    assert "![" not in out and "](" not in out and "**" not in out and ":red[" not in out and "\n" not in out
    assert out.replace("\\", "") == "![](//evil.example/) **x** :red[y]  # z"
