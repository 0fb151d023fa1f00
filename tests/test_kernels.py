"""The vectorised-exp head and attention agree with MLX's own kernels and with numpy."""

from __future__ import annotations

import numpy as np
import pytest

import tokconv  # noqa: F401  (runtime set up before mlx is imported)
from tokconv.fastpath import kernels as fastmath


def test_entropy_head_matches_numpy():
    import mlx.core as mx

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 7, 3000)) * 4).astype(np.float32)
    x[0, 0, :] = 0.0  # uniform: entropy log(V)
    x[1, 2, 5] = 80.0  # one dominant token: entropy ~0, probability ~1
    am, pr, ent, fin = (np.array(a) for a in fastmath.entropy_head(mx.array(x)))
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)
    np.testing.assert_array_equal(am, x.argmax(-1))
    np.testing.assert_allclose(pr, p.max(-1), rtol=1e-5)
    np.testing.assert_allclose(ent, ref, rtol=1e-4, atol=1e-5)
    assert ent[0, 0] == pytest.approx(np.log(3000), rel=1e-5)
    assert fin.all()


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


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("dims", [64, 32])  # 32: only the first half of each head is rotated
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_table_rope_matches_mlx_rope(traditional, dims, scale):
    import mlx.core as mx
    import mlx.nn as nn

    mx.random.seed(2)
    x = mx.random.normal((2, 3, 7, 64))
    want, got = nn.RoPE(dims, traditional, 1e5, scale), fastmath.TableRoPE(dims, traditional, 1e5, scale)
    for offset in (0, 5, 300, 1000):  # 1000 > the first table's 256 rows: the table grows
        np.testing.assert_allclose(np.array(got(x, offset=offset)), np.array(want(x, offset=offset)), atol=2e-4)


def test_use_table_rope_swaps_every_plain_rope_and_keeps_the_outputs():
    import mlx.core as mx
    import mlx.nn as nn

    from conftest import make_tiny_lm

    model = make_tiny_lm(layers=3).model
    tokens = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    before = np.array(model(tokens))
    n_layers = len(model.model.layers)
    assert fastmath.use_table_rope(model) == n_layers
    assert all(isinstance(layer.self_attn.rope, fastmath.TableRoPE) for layer in model.model.layers)
    assert not any(type(m) is nn.RoPE for _, m in model.named_modules())
    np.testing.assert_allclose(np.array(model(tokens)), before, rtol=1e-4, atol=1e-4)
