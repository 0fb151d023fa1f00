"""The scoring primitive: alignment, suffix re-scoring, cost counting, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_tiny_lm
from tokconv.errors import InvalidTokens
from tokconv.engine import Scorer


def _full_logits_argmax(lm, tokens):
    """Argmax and entropy straight from the model's logits, with no cache: the plain definition."""
    import mlx.core as mx

    x = np.asarray(tokens)
    if lm.bos_id is not None:
        x = np.concatenate([np.full((x.shape[0], 1), lm.bos_id), x], axis=1)
    logits = np.array(lm.model(mx.array(x.astype(np.int32))).astype(mx.float32))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ent = -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)
    return logits.argmax(-1), p.max(-1), ent


@pytest.mark.parametrize("bos_id", [None, 5])
def test_predictions_align_with_the_positions_they_predict(bos_id):
    lm = make_tiny_lm(bos_id=bos_id)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, lm.vocab_size, size=(3, 12))
    s = Scorer(lm).score(tokens)
    am, pr, en = _full_logits_argmax(lm, tokens)
    if bos_id is None:
        # logits at index i predict token i + 1; position 0 has no prediction
        assert (s.argmax[:, 0] == -1).all() and np.isnan(s.entropy[:, 0]).all()
        np.testing.assert_array_equal(s.argmax[:, 1:], am[:, :-1])
        np.testing.assert_allclose(s.entropy[:, 1:], en[:, :-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.prob[:, 1:], pr[:, :-1], rtol=1e-4)
    else:
        # with BOS in front, logits at BOS predict position 0
        np.testing.assert_array_equal(s.argmax, am[:, :-1])
        np.testing.assert_allclose(s.entropy, en[:, :-1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bos_id", [None, 7])
def test_suffix_rescoring_matches_full_forward(bos_id):
    lm = make_tiny_lm(bos_id=bos_id)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, lm.vocab_size, size=(2, 16))
    session = Scorer(lm).session()
    session.score(tokens)
    for pos in [9, 3, 15, 0, 8]:
        tokens = tokens.copy()
        tokens[rng.integers(0, 2), pos] = rng.integers(0, lm.vocab_size)
        cached = session.score(tokens)
        fresh = Scorer(lm).score(tokens)
        np.testing.assert_array_equal(cached.argmax, fresh.argmax)
        np.testing.assert_allclose(cached.entropy, fresh.entropy, rtol=1e-4, atol=1e-5)


def test_a_change_forwards_only_the_suffix():
    lm = make_tiny_lm()
    tokens = np.arange(20)[None, :] % lm.vocab_size
    session = Scorer(lm).session()
    session.score(tokens)
    assert session.cost.forwarded_tokens == 19  # the last token predicts nothing inside the sequence
    tokens = tokens.copy()
    tokens[0, 15] = 1
    session.score(tokens)
    # positions 16..19 need the logits at inputs 15..18
    assert session.cost.forwarded_tokens == 19 + 4
    assert session.cost.forward_passes == 2
    session.score(tokens)  # nothing changed: nothing forwarded
    assert session.cost.forward_passes == 2


def test_left_to_right_pass_costs_linear_tokens():
    """Walking a sequence with `upto` forwards each token once: O(L), not O(L^2)."""
    lm = make_tiny_lm()
    rng = np.random.default_rng(2)
    L = 40
    tokens = rng.integers(0, lm.vocab_size, size=(1, L))
    session = Scorer(lm).session()
    for i in range(1, L):
        s = session.score(tokens, upto=i)
        if s.argmax[0, i] != tokens[0, i]:
            tokens = tokens.copy()
            tokens[0, i] = s.argmax[0, i]
    assert session.cost.forwarded_tokens <= L
    # and the walk reached the sequential fixed point: every position agrees with a fresh scoring
    fresh = Scorer(lm).score(tokens)
    np.testing.assert_array_equal(fresh.argmax[0, 1:], tokens[0, 1:])


def test_upto_leaves_later_positions_unscored():
    lm = make_tiny_lm()
    s = Scorer(lm).session().score(np.arange(10), upto=4)
    assert (s.argmax[0, 1:5] >= 0).all()
    assert (s.argmax[0, 5:] == -1).all() and np.isnan(s.entropy[0, 5:]).all()


@pytest.mark.parametrize(
    "tokens, message",
    [
        ([], "empty"),
        ([[1, 2, 64]], "outside this model's vocabulary"),
        ([[-1, 2]], "outside this model's vocabulary"),
        ([[1.5, 2.0]], "integers"),
    ],
)
def test_bad_tokens_get_a_clear_message(tiny_lm, tokens, message):
    with pytest.raises(InvalidTokens, match=message):
        Scorer(tiny_lm).score(tokens)


def test_too_long_sequence_is_refused(tiny_lm):
    with pytest.raises(InvalidTokens, match="limit of 8"):
        Scorer(tiny_lm, max_length=8).score(np.zeros((1, 9), np.int64))


def test_batched_scoring_works_from_several_threads():
    """The dashboard scores from one thread per browser session; MLX streams are per thread."""
    import threading

    lm = make_tiny_lm()
    tokens = np.random.default_rng(3).integers(0, lm.vocab_size, size=(4, 10))
    expected = Scorer(lm).score(tokens).argmax
    results, errors = [], []

    def work():
        try:
            results.append(Scorer(lm).score(tokens).argmax)
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


@pytest.mark.parametrize("bos_id", [None, 7])
def test_a_new_length_keeps_the_cached_common_prefix(bos_id):
    """A re-encoded text (other length, same start) re-forwards only what follows the common prefix,
    and predicts exactly what scoring from scratch predicts."""
    lm = make_tiny_lm(bos_id=bos_id)
    rng = np.random.default_rng(8)
    base = rng.integers(0, lm.vocab_size, size=(1, 14))
    session = Scorer(lm).session()
    session.score(base)
    for tokens in (base[:, :11],  # shorter: a prefix
                   np.concatenate([base[:, :9], rng.integers(0, lm.vocab_size, size=(1, 7))], axis=1),  # longer, edited at 9
                   np.concatenate([base[:, :5], [[3, 4]]], axis=1)):  # shorter, edited at 5
        before = session.cost.forwarded_tokens
        cached = session.score(tokens)
        fresh = Scorer(lm).score(tokens)
        np.testing.assert_array_equal(cached.argmax, fresh.argmax)
        np.testing.assert_allclose(cached.entropy, fresh.entropy, rtol=1e-4, atol=1e-5)
        forwarded = session.cost.forwarded_tokens - before
        assert forwarded < tokens.shape[1] - 1 + (bos_id is not None)  # less than a fresh forward


def test_calls_from_many_threads_run_on_one_thread_and_keep_their_traces():
    """The dashboard runs each script run in a new thread; model calls still share one thread, its
    streams and its compiled traces, and give the same scores as calls from the main thread."""
    import threading

    from tokconv.engine import forward
    from tokconv.engine.streams import on_call_thread

    lm = make_tiny_lm(vocab_size=96, bos_id=3)
    tokens = np.random.default_rng(4).integers(0, 96, (1, 10))
    want = Scorer(lm).score(tokens)
    got, seen = [], []

    def score() -> None:
        got.append(Scorer(lm).score(tokens))
        seen.append(on_call_thread(threading.get_ident))

    for _ in range(3):
        t = threading.Thread(target=score)
        t.start()
        t.join()
    assert len(set(seen)) == 1 and seen[0] != threading.get_ident()
    steps = forward._of(lm).steps
    assert len(steps) == 1  # one compiled function: every call ran on the same stream
    assert len(next(iter(steps.values()))[1]) == 1  # and the one input shape was traced once
    for g in got:
        np.testing.assert_array_equal(g.argmax, want.argmax)
        np.testing.assert_array_equal(g.entropy, want.entropy)


def test_an_error_on_the_call_thread_is_raised_in_the_caller():
    from tokconv.engine.streams import on_call_thread

    def fail() -> None:
        raise InvalidTokens("broken", "fix it")

    with pytest.raises(InvalidTokens, match="broken"):
        on_call_thread(fail)
    assert on_call_thread(lambda: on_call_thread(lambda: 7)) == 7  # a call from the call thread runs inline
