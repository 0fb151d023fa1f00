"""Each mode's mechanics on tiny models where the right answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from tiny import constant_lm, successor_lm, table_lm
from tiny import experiment as _experiment
from tiny import run_tiny as _run
from tokconv.experiments import modes
from tokconv.experiments.experiment import collect, fingerprints
from tokconv.experiments import IterationEnd, RunConfig, RunEnd, RunResult, Step


def test_sequential_solo_reaches_the_fixed_point_in_two_iterations():
    r = _run("sequential", [successor_lm()], [2, 0, 0, 5, 1, 1, 3])
    assert r.status == "converged" and r.iterations == 2
    assert r.iterations_log[-1].tokens == (2, 3, 4, 5, 0, 1, 2)  # counting on from the kept first token
    assert r.iterations_log[0].changes == 4 and r.iterations_log[1].changes == 0


def test_position_zero_keeps_its_token():
    r = _run("sequential", [constant_lm(1)], [4, 4, 4])
    assert r.iterations_log[-1].tokens == (4, 1, 1)
    assert all(s.position > 0 for s in r.steps)


def test_batch_solo_converges_one_position_per_iteration_on_a_chain():
    # Jacobi updates fix the first wrong position each iteration, in a chain model
    r = _run("batch", [successor_lm()], [0, 5, 5, 5])
    assert r.status == "converged"
    assert r.iterations_log[-1].tokens == (0, 1, 2, 3)
    assert r.iterations == 4  # 3 updating iterations + one that finds nothing to change


def test_batch_on_a_causal_model_settles_within_length_iterations():
    # Jacobi updates on a causal model are triangular: after iteration k positions 1..k are final,
    # so batch mode cannot oscillate solo; it converges in at most L iterations (+1 to confirm).
    table = np.zeros((2, 2))
    table[0, 1] = table[1, 0] = 5.0  # after a comes b, after b comes a
    r = _run("batch", [table_lm(table)], [0, 0, 1, 0, 0, 0])
    assert r.status == "converged"
    assert r.iterations_log[-1].tokens == (0, 1, 0, 1, 0, 1)
    assert r.iterations <= 6


def test_adversarial_sequential_finds_the_forced_two_cycle():
    a, b = constant_lm(1, name="A"), constant_lm(2, name="B")
    r = _run("adversarial", [a, b], [0, 0, 0, 0, 0])
    assert r.status == "oscillating" and r.period == 2
    assert r.iterations == 3  # A, B, A: A's state with B to move is seen again
    assert r.fingerprints == {"A": {"b": 8}, "B": {"c": 4}}


def test_adversarial_sequential_with_agreeing_models_converges():
    a, b = constant_lm(1, name="A"), constant_lm(1, name="B")
    r = _run("adversarial", [a, b], [0, 3, 3])
    assert r.status == "converged" and r.iterations == 3  # A changes; then B and A both change nothing: a quiet round
    assert r.iterations_log[-1].tokens == (0, 1, 1)


def test_single_blocks_a_position_after_it_flips_block_after_times():
    a, b = constant_lm(1, name="A"), constant_lm(2, name="B")
    r = _run("adversarial-single", [a, b], [0, 0, 0], block_after=3)
    assert r.status == "all-blocked"
    flips = {}
    for s in r.steps:
        flips[s.position] = flips.get(s.position, 0) + 1
    assert flips == {1: 3, 2: 3}  # every position flipped exactly 3 times, then stayed
    # alternate turns: A, B, A, ...
    assert [s.model for s in r.steps[:4]] == ["A", "B", "A", "B"]


def test_single_picks_the_highest_entropy_mismatch_and_breaks_ties_low():
    # after token 0 the model is unsure (flat-ish); after token 3 it is sure.
    table = np.full((4, 4), 0.0)
    table[0] = [0.0, 0.5, 0.4, 0.3]  # high entropy, argmax 1
    table[3] = [0.0, 0.0, 8.0, 0.0]  # low entropy, argmax 2
    table[1] = [0.0, 0.5, 0.4, 0.3]
    table[2] = [0.0, 0.5, 0.4, 0.3]
    lm = table_lm(table)
    exp = _experiment("single", [lm], [3, 3, 0, 0, 3])
    recs = list(exp.records())
    first = next(r for r in recs if isinstance(r, Step))
    # mismatches: pos1 (after 3 -> 2, low H), pos2 (after 3? no: after token at 1) ...; highest entropy wins, lowest first
    scores, pos = modes.now(modes.mismatches(exp.players[0], [3, 3, 0, 0, 3]))
    best = max(pos, key=lambda i: (scores.entropy[0, i], -i))
    assert first.position == best
    assert isinstance(recs[-1], RunEnd) and recs[-1].status in ("converged", "all-blocked")


def test_single_solo_converges_to_the_same_fixed_point_as_sequential():
    start = [2, 0, 0, 5, 1, 1, 3]
    r = _run("single", [successor_lm()], start)
    assert r.status == "converged"
    assert r.iterations_log[-1].tokens == (2, 3, 4, 5, 0, 1, 2)
    assert r.iterations == len(r.steps) + 1


def test_max_iterations_is_reported():
    a, b = constant_lm(1, name="A"), constant_lm(2, name="B")
    r = _run("adversarial-single", [a, b], [0] * 10, iterations=4)
    assert r.status == "max-iterations" and r.iterations == 4 and len(r.steps) == 4


def test_should_stop_interrupts_between_iterations():
    exp = _experiment("adversarial", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0] * 5, iterations=50)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 1

    r = collect(exp, exp.records(stop))
    assert r.status == "interrupted" and r.iterations == 1


def test_fingerprints_count_insertions_per_model():
    steps = [Step(1, "A", 0, 1, 0, 1, "a", "!", 1.0, 0.5), Step(2, "A", 0, 2, 0, 1, "a", "!", 1.0, 0.5), Step(3, "B", 1, 1, 1, 2, "!", " ", 1.0, 0.5)]
    assert fingerprints(steps, ["A", "B"]) == {"A": {"!": 2}, "B": {" ": 1}}


def test_result_json_round_trip():
    r = _run("adversarial", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0])
    again = RunResult.from_json(r.to_json())
    assert again.to_dict() == r.to_dict()
    d = r.to_dict()
    for key in ["schema_version", "mode", "models", "length", "seed", "status", "iterations", "final_text", "steps", "fingerprints", "cost"]:
        assert key in d
    assert set(d["steps"][0]) >= {"iteration", "model", "position", "old_token", "new_token", "entropy"}


def test_a_foreign_schema_version_is_refused():
    from tokconv.errors import TokconvError

    with pytest.raises(TokconvError, match="schema version"):
        RunResult.from_json('{"schema_version": 99}')


def test_a_capped_text_is_never_cut_inside_a_character():
    """Across tokenizers each model keeps at most its token count of the start text; where that cut
    falls inside a character's byte tokens, it falls before the character (no U+FFFD leaks)."""
    from tiny import ByteTokenizer, UnicodeTokenizer, table_lm
    from tokconv.experiments.modes import Player, State

    uni = table_lm(np.zeros((300, 300)), "uni", UnicodeTokenizer(300))
    byt = table_lm(np.zeros((256, 256)), "bytes", ByteTokenizer())
    players = [Player(uni, 0, "uni"), Player(byt, 1, "bytes")]
    state = State(players, [ord(c) for c in "abcd"], shared_ids=False)  # the byte model's cap: 4 tokens
    state.update(players[0], [ord(c) for c in "abcé"])  # 5 bytes now: a cut at 4 splits the é
    ids = state.ids_for(players[1])
    assert byt.decode(ids) == "abc"
    state.update(players[0], [ord(c) for c in "abcd"])  # fits again: nothing cut
    assert byt.decode(state.ids_for(players[1])) == "abcd"
