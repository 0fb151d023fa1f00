"""tokconv.engine.native: one-sequence model calls in C on compact weights agree with MLX's calls, and
sessions use them exactly where they can."""

from __future__ import annotations

import numpy as np
import pytest

import tokconv
from conftest import make_compact_tiny_lm, make_tiny_lm
from tokconv.engine import Scorer, forward, native
from tokconv.fastpath import compact


@pytest.fixture(autouse=True)
def float32_inputs():
    """These tests hold the C call to MLX's at float32 rounding, so products keep float32 inputs:
    int16 inputs round each input to a step, which the two paths' slightly different inputs can
    land on either side of. The int16 default is held to the issue's bound in
    test_bundled_models_argmax_and_entropy_agree_with_mlx and tests/test_compact.py."""
    with compact.int16(False):
        yield


def _compact_tiny(seed: int = 0, bias: bool = False):
    return make_compact_tiny_lm(seed=seed, bias=bias)


def _mlx_logits(lm, tokens, pieces):
    """Logits of ``tokens`` (n,) through MLX (forward.call), forwarded in ``pieces`` (start, stop)."""
    import mlx.core as mx

    caches = forward.make_caches(lm)
    stream = mx.default_stream(mx.default_device())
    out = [np.array(forward.call(lm, mx.array(tokens[None, a:b].astype(np.int32)), caches, stream))[0] for a, b in pieces]
    return np.concatenate(out)


def _native_logits(nat, tokens, pieces, capacity=128):
    cache = native.NativeCache(nat, capacity)
    return np.concatenate([native.call(nat, tokens[a:b], cache, 2)[0] for a, b in pieces]), cache


def test_a_call_in_pieces_equals_one_call_bit_for_bit():
    """Rows are independent in every step of the C call, so a prefix kept in the cache gives the
    same bits as forwarding everything again, also after the cache grew and after a trim."""
    lm = _compact_tiny()
    nat = native.of(lm)
    assert nat is not None
    tokens = np.random.default_rng(0).integers(0, 320, 40)
    before = compact.stats().compact_calls
    whole, cache = _native_logits(nat, tokens, [(0, 40)])
    assert compact.stats().compact_calls - before == 3 * 7 + 1  # every product counted: 7 per layer and the head
    pieces, grown = _native_logits(nat, tokens, [(0, 11), (11, 12), (12, 30), (30, 40)], capacity=8)
    assert grown.capacity >= 40 and grown.offset == 40
    np.testing.assert_array_equal(pieces, whole)
    np.testing.assert_array_equal(grown.keys[:, :, :40], cache.keys[:, :, :40])
    np.testing.assert_array_equal(grown.values[:, :, :40], cache.values[:, :, :40])
    grown.trim(40 - 17)  # an edit at position 17: forward from there again
    again = native.call(nat, tokens[17:40], grown, 1)[0]
    np.testing.assert_array_equal(again, whole[17:])


@pytest.mark.parametrize("bias", [False, True])
def test_native_logits_agree_with_mlx_on_a_tiny_model(bias):
    lm = _compact_tiny(seed=3, bias=bias)
    nat = native.of(lm)
    assert nat is not None
    tokens = np.random.default_rng(1).integers(0, 320, 50)
    pieces = [(0, 20), (20, 21), (21, 30), (30, 50)]
    got, _ = _native_logits(nat, tokens, pieces)
    want = _mlx_logits(lm, tokens, pieces)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_sessions_take_native_calls_only_where_they_can(monkeypatch):
    lm = _compact_tiny()
    tokens = np.random.default_rng(2).integers(0, 320, (2, 12))

    def cache_of(batch, **kw):
        session = Scorer(lm).session()
        session.score(batch, **kw)
        return session._cache[0][0]

    assert isinstance(cache_of(tokens[:1]), native.NativeCache)
    assert isinstance(cache_of(tokens), forward.PastKV)  # a batch: MLX
    with compact.max_rows(0):  # float32 products asked for: MLX's
        assert isinstance(cache_of(tokens[:1]), forward.PastKV)
    monkeypatch.setenv("TOKCONV_NO_NATIVE", "1")
    assert isinstance(cache_of(tokens[:1]), forward.PastKV)
    monkeypatch.delenv("TOKCONV_NO_NATIVE")
    assert native.of(make_tiny_lm()) is None  # random float32 weights: no compact forms


def test_a_model_with_a_matrix_left_on_blas_stays_on_mlx():
    lm = _compact_tiny(seed=5)
    compact.remove(np.asarray(lm.model.model.layers[1].mlp.down_proj.weight))
    assert native.of(lm) is None


def test_session_scores_agree_with_mlx_across_edits_and_a_poisoned_position(monkeypatch):
    """A session re-scoring edits through native calls gives MLX's predictions; a NaN embedding hands
    the session (with its cache) to MLX, which then flags the same positions."""
    lm = _compact_tiny(seed=4)
    rng = np.random.default_rng(3)
    seqs = [rng.integers(0, 320, (1, 24))]
    for _ in range(6):
        nxt = seqs[-1].copy()
        nxt[0, rng.integers(0, 24)] = rng.integers(0, 320)
        seqs.append(nxt)
    poison = np.zeros((1, 24), bool)
    poison[0, 15] = True

    def scores(flag):
        monkeypatch.setenv("TOKCONV_NO_NATIVE", flag)
        session = Scorer(lm).session()
        out = [session.score(s) for s in seqs] + [session.score(seqs[-1], poison=poison)]
        return out, session._cache[0][0]

    mine, cache = scores("0")
    theirs, _ = scores("1")
    assert isinstance(cache, forward.PastKV)  # handed over at the poisoned call
    for a, b in zip(mine, theirs):
        np.testing.assert_array_equal(a.argmax, b.argmax)
        np.testing.assert_array_equal(a.finite, b.finite)
        np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5, equal_nan=True)
    assert not mine[-1].finite[0, 16:].any() and mine[-1].finite[0, :15].all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_bundled_models_argmax_and_entropy_agree_with_mlx(name, monkeypatch):
    """The issue's bound: at least 99.5% of argmax predictions equal the MLX path's on random
    sequences, with float32 inputs and with int16 inputs against MLX's float32 (BENCHMARKS.md
    records the measured agreement)."""
    lm = tokconv.load(name)
    assert native.of(lm) is not None, "the bundled models run native calls on a Linux CPU"
    rng = np.random.default_rng(7)
    seqs = rng.integers(0, lm.vocab_size, (8, 40))
    tokens = rng.integers(0, lm.vocab_size, 64)
    pieces = [(0, 20), (20, 21), (21, 30), (30, 64)]
    got, _ = _native_logits(native.of(lm), tokens, pieces)
    want = _mlx_logits(lm, tokens, pieces)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()  # Qwen: 2.6e-5 measured

    def score(flag):
        monkeypatch.setenv("TOKCONV_NO_NATIVE", flag)
        out = []
        for s in seqs:
            session = Scorer(lm).session()
            session.score(s[None, :30])
            out.append(session.score(s[None]))  # 10 more positions after a cached prefix
        return out

    mine, theirs = score("0"), score("1")
    same = np.mean([(a.argmax == b.argmax)[:, 1:].mean() for a, b in zip(mine, theirs)])
    assert same >= 0.995
    err = max(np.nanmax(np.abs(a.entropy - b.entropy)) for a, b in zip(mine, theirs))
    assert err <= 1e-2  # 4.7e-3 the largest of 4,032 Qwen positions (BENCHMARKS.md)

    with compact.int16(True):  # the default where the CPU has AVX-512 VNNI, against float32 MLX
        if not compact.int16_inputs():
            return
        fast = score("0")
    same = np.mean([(a.argmax == b.argmax)[:, 1:].mean() for a, b in zip(fast, theirs)])
    assert same >= 0.995
    err = np.concatenate([np.abs(a.entropy - b.entropy)[:, 1:].ravel() for a, b in zip(fast, theirs)])
    assert np.median(err) < 2e-3 and err.max() < 0.25  # 0.11 the largest of 4,032 SmolLM2 positions


def test_a_pool_of_rows_in_one_native_call_gives_each_row_its_own_call_bit_for_bit():
    """RowPool puts every row to forward into one C call, each from its own offset and with its own
    length; every row's scores are those of a one-row session, exactly, across edits and lengths."""
    from tokconv.engine.rows import RowPool, RowRequest

    lm = _compact_tiny(seed=6)
    rng = np.random.default_rng(4)
    texts = [rng.integers(0, 320, n) for n in (9, 14, 20, 5)]
    pool, alone = RowPool(Scorer(lm), len(texts)), [Scorer(lm).session() for _ in texts]
    assert pool._nat is not None
    before = pool.cost.forward_passes
    for turn in range(5):
        out = pool.score([RowRequest(r, t) for r, t in enumerate(texts)])
        for r, t in enumerate(texts):
            want = alone[r].score(t[None])
            for a, b in zip(out[r].arrays(), want.arrays()):
                np.testing.assert_array_equal(a, b)
        texts = [np.concatenate([t[: rng.integers(2, len(t))], rng.integers(0, 320, rng.integers(1, 5))]) for t in texts]
    assert pool.cost.forward_passes - before == 5  # one call per turn for all rows
    assert all(isinstance(c, native.NativeCache) for c in pool._native)


def test_a_poisoned_request_hands_the_pool_to_mlx_with_its_caches(monkeypatch):
    from tokconv.engine.rows import RowPool, RowRequest

    lm = _compact_tiny(seed=8)
    rng = np.random.default_rng(5)
    texts = [rng.integers(0, 320, n) for n in (12, 16)]
    poison = np.zeros(16, bool)
    poison[9] = True
    edited = texts[1].copy()
    edited[12] = (edited[12] + 1) % 320

    def run(flag):
        monkeypatch.setenv("TOKCONV_NO_NATIVE", flag)
        pool = RowPool(Scorer(lm), 2)
        pool.score([RowRequest(0, texts[0]), RowRequest(1, texts[1])])
        out = pool.score([RowRequest(0, texts[0][:10]), RowRequest(1, edited, poison=poison)])
        return pool, out

    mine, got = run("0")
    _, want = run("1")
    assert mine._nat is None and mine._keys is not None  # handed over
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.argmax, b.argmax)
        np.testing.assert_array_equal(a.finite, b.finite)
        np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5, equal_nan=True)
    assert not got[1].finite[0, 10:].any() and got[1].finite[0, :10].all()


def test_the_precision_probe_rounds_what_products_read_and_turns_off_again():
    """bench/native_calls.py's probe (what an int8 or bfloat16 kernel would change, FINDINGS.md)."""
    lm = _compact_tiny(seed=9)
    nat = native.of(lm)
    tokens = np.random.default_rng(6).integers(0, 320, 24)
    base, _ = _native_logits(nat, tokens, [(0, 24)])
    lib = native.library()
    try:
        for kind, group in ((1, 16), (1, 32), (2, 16)):
            lib.tokconv_native_set_probe(kind, group)
            rounded, _ = _native_logits(nat, tokens, [(0, 24)])
            diff = np.abs(rounded - base).max() / np.abs(base).max()
            assert 0 < diff < 0.1, (kind, group, diff)
    finally:
        lib.tokconv_native_set_probe(0, 16)
    again, _ = _native_logits(nat, tokens, [(0, 24)])
    np.testing.assert_array_equal(again, base)
