"""tokconv.fastpath.packing: MKL's packed weights answer libmlx's cblas_sgemm, equal to the plain GEMM."""

from __future__ import annotations

import ctypes
import gc

import numpy as np
import pytest

import tokconv  # noqa: F401  (runtime set up before mlx is imported)
from conftest import make_tiny_lm
from tokconv import fastpath
from tokconv.fastpath import blas, packing

pytestmark = pytest.mark.skipif(not packing.available(),
                                reason="packed weights need Linux x86-64 with MKL on an Intel CPU and gcc")


def _sgemm(a: np.ndarray, w: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """a @ w.T through the process's global cblas_sgemm, the one libmlx calls."""
    m, k = a.shape
    n = w.shape[0]
    c = np.full((m, n), np.nan, np.float32)
    f = ctypes.c_float
    ctypes.CDLL(None).cblas_sgemm(101, 111, 112, m, n, k, f(alpha), ctypes.c_void_p(a.ctypes.data), k,
                                  ctypes.c_void_p(w.ctypes.data), k, f(0.0), ctypes.c_void_p(c.ctypes.data), n)
    return c


def _packed_calls() -> int:
    return packing.stats().packed_calls


def test_global_sgemm_is_the_interposer():
    assert "mkl_pack" in blas.sgemm_provider()
    assert "packed weights" in fastpath.setup().notice()


def test_registered_weight_uses_its_pack_only_where_it_may():
    import mlx.core as mx

    rng = np.random.default_rng(0)
    w = mx.array(rng.standard_normal((96, 80)).astype(np.float32))
    held: list = []
    packing._add(packing.library(), w, held)
    assert len(held) == 1
    view = np.asarray(w)
    a = rng.standard_normal((7, 80)).astype(np.float32)
    want = a.astype(np.float64) @ view.T.astype(np.float64)
    try:
        before = _packed_calls()
        got = _sgemm(a, view)
        assert _packed_calls() == before + 1
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        # not from the pack: alpha other than 1, more rows than the limit, the same address with
        # fewer rows of weight (a slice), a single row (plain MKL is faster there)
        for call in (lambda: _sgemm(a, view, alpha=2.0),
                     lambda: _sgemm(rng.standard_normal((packing.row_limit() + 1, 80)).astype(np.float32), view),
                     lambda: _sgemm(a, view[:48]), lambda: _sgemm(a[:1], view)):
            before = _packed_calls()
            call()
            assert _packed_calls() == before
        np.testing.assert_allclose(_sgemm(a, view, alpha=2.0), 2 * want, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(_sgemm(a, view[:48]), want[:, :48], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(_sgemm(a[:1], view), want[:1], rtol=1e-5, atol=1e-4)
        with packing.max_rows(0):
            before = _packed_calls()
            np.testing.assert_allclose(_sgemm(a, view), want, rtol=1e-5, atol=1e-4)
            assert _packed_calls() == before
        copy = view.copy()  # same values elsewhere: never mistaken for the registered weight
        before = _packed_calls()
        _sgemm(a, copy)
        assert _packed_calls() == before
    finally:
        packing._release(packing.library(), held)
    before = _packed_calls()
    np.testing.assert_allclose(_sgemm(a, view), want, rtol=1e-5, atol=1e-4)
    assert _packed_calls() == before  # removed: plain MKL again


def test_model_scores_the_same_with_and_without_packs():
    from tokconv.engine import Scorer

    lm = make_tiny_lm(vocab_size=300, layers=2)
    n = packing.pack_model(lm.model)
    # 2 layers x (q, k, v, o, gate, up, down) + the tied embedding as output layer
    assert n == 2 * 7 + 1
    tokens = np.random.default_rng(1).integers(0, 300, (1, 12))
    before = _packed_calls()
    packed = Scorer(lm).score(tokens)
    assert _packed_calls() >= before + n  # every weight's product came from its pack
    with packing.max_rows(0):
        plain = Scorer(lm).score(tokens)
    np.testing.assert_array_equal(packed.argmax, plain.argmax)
    np.testing.assert_allclose(packed.prob, plain.prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(packed.entropy, plain.entropy, rtol=1e-5, atol=1e-5)


def test_packs_go_with_the_model():
    lm = make_tiny_lm(vocab_size=300, layers=3)
    reserved = packing.stats().reserved_bytes
    assert packing.pack_model(lm.model) == 3 * 7 + 1
    assert packing.stats().reserved_bytes > reserved
    del lm
    gc.collect()
    assert packing.stats().reserved_bytes == reserved


def test_untied_output_layer_packs_lm_head_not_the_embedding():
    import mlx.core as mx
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=50,
                           tie_word_embeddings=False)
    model = llama.Model(args)
    model.set_dtype(mx.float32)
    weights = packing.matmul_weights(model)
    assert any(w is model.lm_head.weight for w in weights)
    assert not any(w is model.model.embed_tokens.weight for w in weights)


def test_a_fully_compact_model_is_packed_before_its_first_long_call_only():
    """Packs wait while every product runs on compact weights; the first product too long for them
    makes the packs first, and scores the same as the plain GEMM."""
    import mlx.nn as nn

    from tokconv.engine import Scorer
    from tokconv.fastpath import compact, startup

    if not compact.active():
        pytest.skip("compact weights are off here: packs are made at load")
    lm = make_tiny_lm(vocab_size=320, layers=2)
    nn.quantize(lm.model, group_size=32, bits=4)  # weights on an 8-bit grid, as from a GGUF file
    report = startup.prepare_model(lm.model)
    assert report is not None and report.compact == report.matrices
    assert packing.deferred(lm.model)
    limit = compact.current_max_rows()
    rng = np.random.default_rng(2)
    reserved = packing.stats().reserved_bytes
    Scorer(lm).score(rng.integers(0, 320, (1, limit)))  # limit rows: compact, no packs yet
    assert packing.deferred(lm.model) and packing.stats().reserved_bytes == reserved
    tokens = rng.integers(0, 320, (1, limit + 8))
    before = _packed_calls()
    packed = Scorer(lm).score(tokens)
    assert not packing.deferred(lm.model)
    assert packing.stats().reserved_bytes > reserved and _packed_calls() > before
    with packing.max_rows(0):
        plain = Scorer(lm).score(tokens)
    np.testing.assert_array_equal(packed.argmax, plain.argmax)
    np.testing.assert_allclose(packed.entropy, plain.entropy, rtol=1e-5, atol=1e-5)
    del lm
    gc.collect()
    assert packing.stats().reserved_bytes == reserved
