"""The CPU scoring head (C where gcc builds it, else numpy; in place, over threads) against a
float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

import tokconv  # noqa: F401  (runtime set up before mlx is imported)
from tokconv.engine import head
from tokconv.fastpath import kernels as fastmath


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return x.argmax(-1), p.max(-1), -(p * np.log(np.clip(p, 1e-300, None))).sum(-1)


def logits(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x[0, 0, :] = 0.0  # uniform: entropy log(V), probability 1/V
    x[-1, -1, 7] = 90.0  # one dominant token: entropy ~0, probability ~1
    return x


def test_the_c_head_is_built_here():
    # CI and this machine have gcc: the C loop, not the numpy fallback, is what scoring runs.
    assert head._c_head() is not None


# the C head; numpy with its default chunks; numpy with 3 rows per chunk
@pytest.mark.parametrize("impl,chunk_bytes", [("c", head.CHUNK_BYTES), ("numpy", head.CHUNK_BYTES),
                                              ("numpy", 3 * 4 * 1000 + 8)])
def test_predict_matches_float64_reference_across_chunks_and_arrays(monkeypatch, impl, chunk_bytes):
    import mlx.core as mx

    monkeypatch.setattr(head, "CHUNK_BYTES", chunk_bytes)
    if impl == "numpy":
        monkeypatch.setattr(head, "_c_head", lambda: None)
    xs = [logits((3, 5, 1000), 0), logits((1, 7, 1000), 1)]  # 15 + 7 rows: uneven shares per core
    got = head.predict([mx.array(x) for x in xs])
    for x, (am, pr, en, fin) in zip(xs, got):
        ram, rpr, ren = reference(x)
        assert am.shape == pr.shape == en.shape == x.shape[:2]
        assert am.dtype == np.int64 and pr.dtype == en.dtype == np.float32
        np.testing.assert_array_equal(am, ram)
        np.testing.assert_allclose(pr, rpr, rtol=1e-5)
        np.testing.assert_allclose(en, ren, rtol=1e-4, atol=2e-5)
        assert fin.dtype == np.bool_ and fin.all()
    assert got[0][2][0, 0] == pytest.approx(np.log(1000), rel=1e-6)
    assert got[1][1][-1, -1] == pytest.approx(1.0) and got[1][2][-1, -1] < 1e-6


def test_predict_agrees_with_the_mlx_head_and_takes_half_precision():
    import mlx.core as mx

    x = logits((2, 4, 3000), 3)
    am, pr, en, _ = head.predict([mx.array(x).astype(mx.float16)])[0]
    ram, rpr, ren, _ = (np.array(a) for a in fastmath.entropy_head(mx.array(x).astype(mx.float16)))
    np.testing.assert_array_equal(am, ram)
    np.testing.assert_allclose(en, ren, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(pr, rpr, rtol=1e-3)


def test_predict_leaves_the_logits_unchanged():
    import mlx.core as mx

    x = logits((2, 3, 500), 4)
    arr = mx.array(x)
    head.predict([arr])
    np.testing.assert_array_equal(np.array(arr), x)


def test_c_and_numpy_heads_agree_on_real_vocabulary_sized_rows_and_ties():
    x = logits((1, 6, 49152), 5).reshape(6, 49152)
    x[2, [10, 40000]] = x[2].max() + 1.0  # two equal maxima: the first one is the argmax
    x[3, -1] = x[3].max() + 0.5  # the maximum in the last entry
    outs = []
    for fn in (head.entropy_rows, head.entropy_rows_numpy):
        out = (np.empty(6, np.int64), np.empty(6, np.float32), np.empty(6, np.float32), np.empty(6, np.bool_))
        fn(x, *out)
        outs.append(out)
    ram, rpr, ren = reference(x)
    for am, pr, en, _ in outs:
        np.testing.assert_array_equal(am, ram)
        np.testing.assert_allclose(pr, rpr, rtol=1e-5)
        np.testing.assert_allclose(en, ren, rtol=1e-5, atol=1e-5)
    assert outs[0][0][2] == 10 and outs[0][0][3] == 49151
    # the C head's block-wise double sums: within 1e-6 of float64 where numpy's float32 sums are not always
    np.testing.assert_allclose(outs[0][2], ren, rtol=0, atol=2e-6)


@pytest.mark.parametrize("impl", ["c", "numpy", "mlx"])
def test_rows_with_nan_or_inf_are_flagged_and_predict_id_0(monkeypatch, impl):
    """The numerics audit: a row holding NaN or an infinity is flagged, and its argmax is 0, as an
    unchecked argmax gives; finite rows around it are untouched."""
    import mlx.core as mx

    x = logits((1, 6, 2000), 6).reshape(6, 2000)
    x[1, 77] = np.nan
    x[2, :] = np.nan
    x[3, 5] = np.inf
    x[4, 9] = -np.inf
    ram, rpr, ren = reference(np.delete(x, [1, 2, 3, 4], axis=0))
    if impl == "mlx":
        am, pr, en, fin = (np.array(a) for a in fastmath.entropy_head(mx.array(x)))
    else:
        if impl == "numpy":
            monkeypatch.setattr(head, "_c_head", lambda: None)
        am, pr, en, fin = head.predict([mx.array(x[None])])[0]
        am, pr, en, fin = am[0], pr[0], en[0], fin[0]
    assert fin.tolist() == [True, False, False, False, False, True]
    assert am[1:5].tolist() == [0, 0, 0, 0]
    np.testing.assert_array_equal(am[[0, 5]], ram)
    np.testing.assert_allclose(en[[0, 5]], ren, rtol=1e-4, atol=2e-5)
