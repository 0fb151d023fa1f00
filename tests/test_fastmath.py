"""The vectorised-exp head and attention agree with MLX's own kernels and with numpy."""

from __future__ import annotations

import numpy as np
import pytest

import tokconv  # noqa: F401  (runtime set up before mlx is imported)
from tokconv import fastmath


def test_entropy_head_matches_numpy():
    import mlx.core as mx

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 7, 3000)) * 4).astype(np.float32)
    x[0, 0, :] = 0.0  # uniform: entropy log(V)
    x[1, 2, 5] = 80.0  # one dominant token: entropy ~0, probability ~1
    am, pr, ent = (np.array(a) for a in fastmath.entropy_head(mx.array(x)))
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)
    np.testing.assert_array_equal(am, x.argmax(-1))
    np.testing.assert_allclose(pr, p.max(-1), rtol=1e-5)
    np.testing.assert_allclose(ent, ref, rtol=1e-4, atol=1e-5)
    assert ent[0, 0] == pytest.approx(np.log(3000), rel=1e-5)


@pytest.mark.parametrize("mask", ["causal", "bool", "additive", None])
def test_attention_matches_mlx_fused_attention(mask):
    import mlx.core as mx

    mx.random.seed(1)
    q = mx.random.normal((2, 9, 5, 16))  # 9 query heads share 3 key/value heads
    k = mx.random.normal((2, 3, 12, 16))  # 12 keys: 7 cached + the 5 new ones
    v = mx.random.normal((2, 3, 12, 16))
    m = {"causal": "causal", None: None}.get(mask)
    if mask == "bool":
        m = mx.random.uniform(shape=(5, 12)) > 0.3
    elif mask == "additive":
        m = mx.random.normal((1, 1, 5, 12))
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=m)
    got = fastmath.attention(q, k, v, None, 0.25, m)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-4, atol=1e-5)
