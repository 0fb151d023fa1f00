"""Per-row re-scoring: same predictions as scoring from scratch, fewer tokens, groups chosen well."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_tiny_lm
from tokconv.engine import rows as rowscoring
from tokconv.engine.rows import RowSession, plan_groups
from tokconv.engine import Scorer


def _assert_same(a, b):
    np.testing.assert_array_equal(a.argmax, b.argmax)
    np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.prob, b.prob, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bos_id", [None, 7])
def test_row_rescoring_matches_scoring_from_scratch(bos_id):
    lm = make_tiny_lm(bos_id=bos_id)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, lm.vocab_size, size=(6, 14))
    session = RowSession(Scorer(lm))
    _assert_same(session.score(tokens), Scorer(lm).score(tokens))
    for _ in range(8):  # random edits at different positions in different rows; some rows untouched
        for r in rng.choice(6, size=rng.integers(1, 5), replace=False):
            tokens[r, rng.integers(0, 14)] = rng.integers(0, lm.vocab_size)
        _assert_same(session.score(tokens), Scorer(lm).score(tokens))


def test_only_changed_rows_are_forwarded_from_their_change():
    lm = make_tiny_lm()
    tokens = np.random.default_rng(2).integers(0, lm.vocab_size, size=(4, 20))
    session = RowSession(Scorer(lm), call_cost=0)  # no call overhead: every row its own group
    session.score(tokens)
    assert session.cost.forwarded_tokens == 4 * 19
    before = session.cost.forwarded_tokens
    tokens[1, 15] = (tokens[1, 15] + 1) % lm.vocab_size
    tokens[3, 5] = (tokens[3, 5] + 1) % lm.vocab_size
    session.score(tokens)
    # row 1 forwards inputs 15..18 (4), row 3 inputs 5..18 (14); rows 0 and 2 nothing
    assert session.cost.forwarded_tokens - before == 4 + 14
    before = session.cost.forwarded_tokens
    session.score(tokens)  # nothing changed
    assert session.cost.forwarded_tokens == before


def test_group_plan_trades_calls_against_recomputed_tokens():
    starts = np.array([10, 0, 11, 1, 12])
    # free calls: every row alone
    assert sorted(len(g) for g in plan_groups(starts, 20, call_cost=0)) == [1] * 5
    # calls cost more than any recomputation: one group
    assert [len(g) for g in plan_groups(starts, 20, call_cost=1000)] == [5]
    # in between: the early rows and the late rows form two groups
    groups = plan_groups(starts, 20, call_cost=20)
    assert sorted(sorted(starts[g].tolist()) for g in groups) == [[0, 1], [10, 11, 12]]


def test_real_model_rows_match_independent_sessions(smollm2):
    """SmolLM2: per-row batched re-scoring gives the argmax of one-by-one scoring after edits."""
    from tokconv.models.vocab import random_tokens

    tokens = np.array([random_tokens(smollm2, 12, seed) for seed in range(4)])
    assert rowscoring.supported(smollm2, 12)
    session = RowSession(Scorer(smollm2))
    session.score(tokens)
    tokens[0, 3], tokens[2, 9] = tokens[1, 3], tokens[3, 9]
    got = session.score(tokens)
    for r in range(4):
        ref = Scorer(smollm2).score(tokens[r : r + 1])
        np.testing.assert_array_equal(got.argmax[r], ref.argmax[0])
        np.testing.assert_allclose(got.entropy[r], ref.entropy[0], rtol=2e-3, atol=2e-3)


def test_calls_split_by_rows_when_logits_would_pass_the_memory_budget(monkeypatch):
    """A tiny budget forces one row per model call; predictions are unchanged, calls multiply."""
    from tokconv.engine import streams as scoring

    lm = make_tiny_lm(bos_id=3)
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, lm.vocab_size, size=(5, 10))
    want = Scorer(lm).score(tokens)
    monkeypatch.setattr(scoring, "LOGITS_BUDGET_BYTES", 1)
    assert scoring.max_rows(10, lm.vocab_size) == 1
    shared = Scorer(lm).session()
    _assert_same(shared.score(tokens), want)
    assert len(shared._groups) == 5  # one KV cache per row, run in waves of one per stream
    rows = RowSession(Scorer(lm))
    _assert_same(rows.score(tokens), want)
    assert rows.cost.forward_passes == 5
    tokens[2, 4] = (tokens[2, 4] + 1) % lm.vocab_size
    tokens[0, 7] = (tokens[0, 7] + 1) % lm.vocab_size
    _assert_same(rows.score(tokens), Scorer(lm).score(tokens))
    _assert_same(shared.score(tokens), Scorer(lm).score(tokens))


def test_calls_short_enough_for_the_compact_kernel_run_alone_and_long_ones_share_the_streams(monkeypatch):
    """The compact kernel spreads a short call over every core itself: such calls get a wave each;
    calls long enough for BLAS are paired over the two streams. Every job is scheduled once."""
    lm = make_tiny_lm()
    pool = rowscoring.RowPool(Scorer(lm), 8)
    inputs = np.zeros(21, np.int64)
    # four rows from the start (80 tokens: BLAS), two rows near the end (2 tokens each: compact)
    jobs = [rowscoring._Job(r, inputs, None, 0, 20) for r in range(4)]
    jobs += [rowscoring._Job(4, inputs, None, 18, 20), rowscoring._Job(5, inputs, None, 19, 20)]
    monkeypatch.setattr(rowscoring, "n_streams", lambda: 2)

    def scheduled(limit):
        monkeypatch.setattr(rowscoring.compact, "current_max_rows", lambda: limit)
        waves = pool._schedule(jobs)
        assert sorted(j.row for wave in waves for part, *_ in wave for j in part) == list(range(6))
        return waves

    waves = scheduled(10)
    for wave in waves:
        tokens = [len(part) * (hi - lo) for part, lo, hi, _ in wave]
        if min(tokens) <= 10:
            assert len(wave) == 1  # a short call runs alone, with every core
        assert len({id(stream) for *_, stream in wave}) == len(wave)  # one call per stream
    long_waves = [w for w in waves if min(len(p) * (hi - lo) for p, lo, hi, _ in w) > 10]
    assert long_waves and max(len(w) for w in long_waves) == 2  # the long group, split over both streams
    # compact weights off (limit 0): every call is BLAS's, and the waves pair calls as before
    assert max(len(w) for w in scheduled(0)) == 2
