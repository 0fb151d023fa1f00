"""Lockstep runs of every mode: the same steps, status and final text as one-by-one runs; rows of
their own lengths re-scored from their own changes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import make_compact_tiny_lm, make_tiny_lm
from tiny import ByteTokenizer, CharTokenizer, PairTokenizer, UnicodeTokenizer
from tokconv import models
from tokconv.engine import Scorer, native
from tokconv.engine.rows import RowPool, RowRequest
from tokconv.experiments import RunConfig, SweepSpec, collect, prepare
from tokconv.experiments.lockstep import run_lockstep
from tokconv.experiments.sweep import run_sweep

MODES = ("sequential", "single", "batch", "adversarial", "adversarial-single")


def _essence(r):
    return (r.status, r.iterations, [(s.iteration, s.model_index, s.position, s.new_token) for s in r.steps],
            r.final_text)


def _llama(name, tokenizer, vocab, seed, bos_id=None):
    """A random-weight llama (predictions depend on the whole prefix) with a tokenizer of its own."""
    lm = make_tiny_lm(vocab_size=vocab, layers=2, seed=seed, bos_id=bos_id)
    return dataclasses.replace(lm, name=name, spec=name, tokenizer=tokenizer)


def _compact_llama(name, tokenizer, vocab, seed, bos_id=None):
    """:func:`_llama` on compact weights: its one-sequence calls and pools run natively (C)."""
    lm = make_compact_tiny_lm(vocab_size=vocab, layers=2, seed=seed, bos_id=bos_id)
    assert native.takes(lm, 1) is not None
    return dataclasses.replace(lm, name=name, spec=name, tokenizer=tokenizer)


def _one_by_one(config, lms):
    exp = prepare(config, lms)
    return collect(exp, exp.records())


def _configs(mode, lms, length, seeds, **cfg):
    b = lms[1].spec if mode.startswith("adversarial") else None
    return [RunConfig(mode=mode, model_a=lms[0].spec, model_b=b, length=length, seed=s, **cfg) for s in seeds]


def _assert_lockstep_equals_one_by_one(mode, lms, length, seeds, **cfg):
    configs = _configs(mode, lms, length, seeds, **cfg)
    used = lms if mode.startswith("adversarial") else lms[:1]
    batched = {r.config.seed: r for r in run_lockstep(configs, models=used)}
    assert sorted(batched) == sorted(seeds)
    for c in configs:
        alone = _one_by_one(c, used)
        assert _essence(batched[c.seed]) == _essence(alone), f"{mode}, seed {c.seed}"
        assert batched[c.seed].cost.batched_rows == len(seeds)
    return batched


@pytest.fixture(scope="module")
def letters():
    """Two models of one vocabulary (26 letters) that disagree, one with a BOS token."""
    return [_llama("la", CharTokenizer(26), 26, 1), _llama("lb", CharTokenizer(26), 26, 2, bos_id=3)]


@pytest.fixture(scope="module")
def letters_and_pairs():
    """A model of five letters and a model with one more token, for "ab": texts tokenize to different
    lengths. Both read a BOS token first: without one, a start of repeated letters has exactly tied
    predictions (attention over equal values), and float rounding, which differs between batch shapes,
    would break the tie."""
    return [_llama("la", CharTokenizer(5), 5, 1, bos_id=0), _llama("pb", PairTokenizer(6, "ab"), 6, 4, bos_id=1)]


@pytest.mark.parametrize("mode", MODES)
def test_lockstep_equals_one_by_one_in_every_mode(mode, letters):
    runs = _assert_lockstep_equals_one_by_one(mode, letters, 9, range(6), iterations=40)
    assert sum(len(r.steps) for r in runs.values()) > 6, "the models should make moves"


@pytest.mark.parametrize("mode", ["adversarial", "adversarial-single"])
def test_lockstep_equals_one_by_one_across_tokenizers(mode, letters_and_pairs):
    """The rows' token lengths differ between runs and change from turn to turn."""
    runs = _assert_lockstep_equals_one_by_one(mode, letters_and_pairs, 10, range(8), iterations=30, block_after=2)
    lengths = {len(e.tokens) for r in runs.values() for e in r.iterations_log if e.model_index == 1}
    assert len(lengths) > 1, "the pair model's token count should vary"
    assert any(s.inserted is not None for r in runs.values() for s in r.steps)


@pytest.fixture(scope="module")
def compact_letters():
    """Two models of one 32-letter vocabulary on compact weights, one with a BOS token."""
    return [_compact_llama("ca", CharTokenizer(32), 32, 1), _compact_llama("cb", CharTokenizer(32), 32, 2, bos_id=3)]


@pytest.mark.parametrize("mode", MODES)
def test_lockstep_on_native_calls_equals_one_by_one_in_every_mode(mode, compact_letters, monkeypatch):
    calls = []
    real = native.call_rows
    monkeypatch.setattr(native, "call_rows", lambda nat, rows, threads: calls.append(len(rows)) or real(nat, rows, threads))
    runs = _assert_lockstep_equals_one_by_one(mode, compact_letters, 9, range(6), iterations=40)
    assert sum(len(r.steps) for r in runs.values()) > 6, "the models should make moves"
    assert max(calls) > 1, "lockstep calls take several rows at once"


def test_lockstep_on_native_calls_across_byte_and_character_tokenizers():
    lms = [_compact_llama("ascii", UnicodeTokenizer(128), 128, 6), _compact_llama("bytes", ByteTokenizer(), 256, 5)]
    runs = _assert_lockstep_equals_one_by_one("adversarial-single", lms, 8, range(4), iterations=24)
    assert any(s.model_index == 1 for r in runs.values() for s in r.steps)


def test_lockstep_across_byte_and_character_tokenizers():
    """An ASCII model against a byte model: the byte model's favourite moves often leave a
    character incomplete and are passed over for its next best."""
    lms = [_llama("ascii", UnicodeTokenizer(128), 128, 6), _llama("bytes", ByteTokenizer(), 256, 5)]
    runs = _assert_lockstep_equals_one_by_one("adversarial-single", lms, 8, range(4), iterations=24)
    assert any(s.model_index == 1 for r in runs.values() for s in r.steps)


def test_lockstep_with_shared_ids_and_nan_embeddings_beyond_a_vocabulary():
    """--share ids --oov nan: model B reads NaN embeddings at A's ids beyond its vocabulary."""
    lms = [_llama("big", CharTokenizer(40), 40, 7), _llama("small", CharTokenizer(20), 20, 8)]
    runs = _assert_lockstep_equals_one_by_one("adversarial-single", lms, 8, range(4), iterations=20, share="ids", oov="nan")
    assert any(r.cost.nonfinite_rows for r in runs.values())


def test_a_sweep_of_a_battle_runs_in_lockstep_and_equals_no_batch(letters_and_pairs, tmp_path):
    for lm in letters_and_pairs:
        models.register(lm)
    try:
        spec = SweepSpec(model="la", model_b="pb", mode="adversarial-single", lengths=(6, 9), seeds=range(5), iterations=30)
        batched = run_sweep(spec, max_batch=4)
        alone = run_sweep(spec, batch=False)
    finally:
        for lm in letters_and_pairs:
            models.unregister(lm.spec)
    key = lambda r: (r.config.length, r.config.seed)  # noqa: E731
    assert sorted(map(key, batched)) == sorted(map(key, alone))
    assert {r.cost.batched_rows for r in batched} == {4, 1}  # per length: 4 seeds in lockstep, then 1 alone
    one = {key(r): r for r in alone}
    for r in batched:
        assert _essence(r) == _essence(one[key(r)])


def _assert_rows_match(got, want):
    np.testing.assert_array_equal(got.argmax, want.argmax)
    np.testing.assert_allclose(got.entropy, want.entropy, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bos_id", [None, 5])
def test_pool_rows_of_their_own_lengths_match_one_row_sessions(bos_id):
    """Random edits, insertions, deletions and ``upto`` in rows of different lengths: each row's
    scores are those of a one-row ScoringSession given the same calls."""
    lm = make_tiny_lm(bos_id=bos_id)
    rng = np.random.default_rng(3)
    rows = [list(rng.integers(0, lm.vocab_size, size=n)) for n in (5, 12, 9, 16)]
    pool, sessions = RowPool(Scorer(lm), len(rows)), [Scorer(lm).session() for _ in rows]
    for call in range(10):
        asked = sorted(rng.choice(len(rows), size=rng.integers(1, len(rows) + 1), replace=False))
        requests = []
        for r in asked:
            ids = rows[r]
            what = rng.integers(0, 3)
            at = int(rng.integers(0, len(ids)))
            if what == 0:
                ids[at] = int(rng.integers(0, lm.vocab_size))
            elif what == 1 and len(ids) < 20:
                ids.insert(at, int(rng.integers(0, lm.vocab_size)))
            elif len(ids) > 3:
                del ids[at]
            upto = None if rng.random() < 0.5 else int(rng.integers(1, len(ids)))
            requests.append(RowRequest(int(r), np.array(ids), upto))
        for req, got in zip(requests, pool.score(requests)):
            want = sessions[req.row].score(np.array([req.tokens]), upto=req.upto)
            _assert_rows_match(got, want)


def test_pool_forwards_each_row_from_its_own_change_and_pads_only_at_the_end():
    lm = make_tiny_lm()
    pool = RowPool(Scorer(lm), 3, call_cost=0)  # free calls: every row its own group
    a, b, c = (np.arange(n) % lm.vocab_size for n in (10, 20, 6))
    pool.score([RowRequest(0, a), RowRequest(1, b), RowRequest(2, c)])
    assert pool.cost.forwarded_tokens == 9 + 19 + 5
    before = pool.cost.forwarded_tokens
    b2 = np.concatenate([b[:15], [1, 2, 3]])  # re-tokenized: the first 15 tokens kept, a shorter tail
    out = pool.score([RowRequest(1, b2), RowRequest(2, c)])  # row 2 unchanged: nothing forwarded
    # the first change is at position 15: predictions up to 15 stand; inputs 15..16 predict 16..17
    assert pool.cost.forwarded_tokens - before == 2
    assert pool.row_cost(1).forwarded_tokens == 19 + 2 and pool.row_cost(0).forwarded_tokens == 9
    _assert_rows_match(out[0], Scorer(lm).score(b2[None]))


def test_a_group_split_by_the_logits_budget_forwards_each_piece_from_its_own_start(monkeypatch):
    from tokconv.engine import streams

    lm = make_tiny_lm()
    monkeypatch.setattr(streams, "LOGITS_BUDGET_BYTES", 1)  # one row per call
    pool = RowPool(Scorer(lm), 2, call_cost=10_000)  # calls so dear that the plan makes one group
    a, b = np.arange(12) % lm.vocab_size, (np.arange(12) + 3) % lm.vocab_size
    pool.score([RowRequest(0, a), RowRequest(1, b)])
    before = pool.cost.forwarded_tokens
    a[2], b[9] = (a[2] + 1) % lm.vocab_size, (b[9] + 1) % lm.vocab_size
    out = pool.score([RowRequest(0, a), RowRequest(1, b)])
    assert pool.cost.forwarded_tokens - before == (11 - 2) + (11 - 9)  # not twice 11 - 2
    _assert_rows_match(out[1], Scorer(lm).score(b[None]))


@pytest.mark.slow
def test_lockstep_battle_of_smollm2_and_qwen_equals_one_by_one(smollm2):
    """The default battle across tokenizers, on the real bundled models."""
    import tokconv

    qwen = tokconv.load("qwen2.5-coder-0.5b")
    lms = [smollm2, qwen]
    runs = _assert_lockstep_equals_one_by_one("adversarial-single", lms, 12, range(3), iterations=40)
    assert {s.model_index for r in runs.values() for s in r.steps} == {0, 1}
