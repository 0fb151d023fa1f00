"""One shared character axis for models with different tokenizers: spans, the shared block budget, no U+FFFD."""

from __future__ import annotations

import numpy as np

from tiny import ByteTokenizer, PairTokenizer, UnicodeTokenizer, constant_lm, experiment, table_lm
from tokconv.experiments.experiment import collect
from tokconv.experiments.records import IterationEnd, Step
from tokconv.experiments.textaxis import Edit, FlipCounts, edit_between, token_spans


def _run(mode, lms, start, **cfg):
    exp = experiment(mode, lms, start, **cfg)
    assert not exp.state.shared_ids  # different vocabularies: the text axis
    return collect(exp, exp.records())


def _texts_around_steps(result):
    """(text before, step, text after) for each step, from the iteration log."""
    before, out = result.start_text, []
    log = iter(result.iterations_log)
    pending = []
    for rec in result.steps:
        pending.append(rec)
    by_iter = {}
    for s in result.steps:
        by_iter.setdefault(s.iteration, []).append(s)
    for end in result.iterations_log:
        for s in by_iter.get(end.iteration, []):
            out.append((before, s, end.text))
        before = end.text
    return out


def test_token_spans_of_letters_pairs_and_bytes():
    letters = constant_lm(0, name="l")
    assert token_spans(letters, [0, 1, 2]) == [(0, 1), (1, 2), (2, 3)]
    pairs = table_lm(np.zeros((7, 7)), "p", PairTokenizer(7))
    assert token_spans(pairs, [2, 6, 3]) == [(0, 1), (1, 3), (3, 4)]  # "c", "ab", "d"
    raw = table_lm(np.zeros((256, 256)), "b", ByteTokenizer())
    ids = list("aéb".encode())  # a, 0xC3, 0xA9, b: the two bytes of é share its one character
    assert token_spans(raw, ids) == [(0, 1), (1, 2), (1, 2), (2, 3)]


def test_flip_counts_follow_the_edit_rule():
    counts = FlipCounts(5)
    counts.apply(Edit(1, 3, "xyz"))  # two characters become three, each with count 1
    assert counts.counts == [0, 1, 1, 1, 0, 0]
    counts.apply(Edit(2, 4, "q"))  # inherits the highest it replaces, plus one
    assert counts.counts == [0, 1, 2, 0, 0]
    counts.apply(Edit(2, 3, ""))  # a deletion: the next character carries the count
    assert counts.counts == [0, 1, 3, 0]
    assert counts.blocked(2, 3, 3) and not counts.blocked(0, 2, 3)
    assert edit_between("hello", "hallo", (1, 2)) == Edit(1, 2, "a")
    assert edit_between("the cat", "the cart", (4, 7)) == Edit(4, 7, "cart")


def test_one_block_budget_per_place_for_both_models():
    """One character per token: the shared rule is the per-position rule, so each place flips at
    most 3 times in all (not 3 times per model), and the fight ends after 3 x 3 moves."""
    a = constant_lm(0, name="A")  # always 'a'
    b = table_lm(constant_lm(1).model.table.__array__(), "B", UnicodeTokenizer(6))  # 'b' (id 1 is chr(1)...)
    # B's vocabulary is the letters under other ids: predict 'b' = chr(98)
    table = np.zeros((128, 128))
    table[:, 98] = 5.0
    b = table_lm(table, "B", UnicodeTokenizer(128))
    r = _run("adversarial-single", [a, b], [2, 2, 2, 2], iterations=100, block_after=3)
    assert len(r.steps) == 9
    assert r.status == "all-blocked"
    per_place = {}
    for s in r.steps:
        per_place[s.span_start] = per_place.get(s.span_start, 0) + 1
        assert s.span_end == s.span_start + 1 and s.inserted in ("a", "b")
    assert per_place == {1: 3, 2: 3, 3: 3}


def test_spans_replay_the_shared_text_and_no_place_flips_past_the_budget():
    """A letter model against a model with a pair token: every step's span and inserted text turn
    the text before it into the text after it, and no character passes block_after."""
    rng = np.random.default_rng(3)
    a = table_lm(rng.normal(size=(6, 6)) * 3, "A")
    b = table_lm(rng.normal(size=(7, 7)) * 3, "B", PairTokenizer(7))
    r = _run("adversarial-single", [a, b], [0, 1, 2, 3, 0, 1, 4, 5], iterations=200, block_after=2)
    assert r.steps, "the models should disagree somewhere"
    counts = FlipCounts(len(r.start_text))
    for before, s, after in _texts_around_steps(r):
        edit = Edit(s.span_start, s.span_end, s.inserted)
        assert edit.apply(before)[: len(after)] == after[: len(edit.apply(before))]
        assert not counts.blocked(edit.start, edit.end, 2), f"step at a blocked place: {s}"
        counts.truncate(len(before))
        counts.apply(edit)
        counts.truncate(len(after))
        assert max(counts.counts, default=0) <= 2


def test_a_byte_piece_never_leaves_a_character_incomplete():
    """A byte model that wants a lone continuation byte after 'a' has no valid move there; after
    0xA9 its move 'b' is fine. No U+FFFD ever enters the text or a fingerprint."""
    table = np.zeros((256, 256))
    table[:, 0xA9] = 6.0  # after anything: a continuation byte (a broken character)...
    table[0xA9, :] = 0.0
    table[0xA9, ord("b")] = 6.0  # ...except after 0xA9: 'b'
    bytes_lm = table_lm(table, "bytes", ByteTokenizer())
    letters = np.zeros((256, 256))
    letters[:, ord("c")] = 5.0
    uni = table_lm(letters, "uni", UnicodeTokenizer(256))
    start = list("aéaa".encode())
    r = _run("adversarial-single", [bytes_lm, uni], start, iterations=60, block_after=3)
    assert "\ufffd" not in r.final_text
    assert all("\ufffd" not in e.text for e in r.iterations_log)
    assert all("\ufffd" not in (s.inserted or "") for s in r.steps)
    assert "\ufffd" not in "".join(r.fingerprints["bytes"])
    mine = [s for s in r.steps if s.model == "bytes"]
    assert mine and all(s.inserted == "b" for s in mine)


def test_charts_of_a_cross_tokenizer_run_use_the_character_axis():
    from tokconv.analysis import charts, frames
    from tokconv.store import steps_table

    a = constant_lm(0, name="A")
    table = np.zeros((128, 128))
    table[:, 98] = 5.0
    r = _run("adversarial-single", [a, table_lm(table, "B", UnicodeTokenizer(128))], [2, 2, 2, 2], block_after=3)
    steps, flips = frames.steps_frame(r), frames.flips_frame(r)
    assert frames.on_characters(r) and steps.attrs["axis"] == flips.attrs["axis"] == "character"
    assert sorted(flips.groupby("position")["flips"].sum().to_dict().items()) == [(1, 3), (2, 3), (3, 3)]
    heat = charts.flip_heatmap(steps, positions=frames.places(r)).to_dict()
    assert heat["encoding"]["y"]["title"] == "character of the shared text"
    table_rows = steps_table({1: r})
    assert table_rows["span_start"].notna().all() and set(table_rows["inserted"]) == {"a", "b"}
