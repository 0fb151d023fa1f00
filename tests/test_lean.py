"""tokconv.engine.lean: one shapeless trace (per segment of layers) serves every call, bit for bit equal
to the per-shape traces."""

from __future__ import annotations

import numpy as np
import pytest

import tokconv  # noqa: F401  (runtime set up before mlx is imported)
from conftest import add_qkv_biases, make_tiny_lm
from tokconv.engine import forward, lean

# (cached positions, new tokens): one token, a few, one call past the compact kernel's row limit
SHAPES = [(1, 1), (3, 2), (11, 9), (19, 1), (2, 27), (7, 60), (40, 5)]


def _stream():
    import mlx.core as mx

    return mx.default_stream(mx.default_device())


def _call(lm, prefix, tokens, shapeless: bool, monkeypatch):
    """Logits and caches of ``tokens`` after ``prefix``, with shapeless calls on or off."""
    import mlx.core as mx

    monkeypatch.setenv("TOKCONV_NO_SHAPELESS", "0" if shapeless else "1")
    caches = forward.make_caches(lm)
    if prefix.shape[1]:
        mx.eval(forward.call(lm, mx.array(prefix), caches, _stream()))
    logits = forward.call(lm, mx.array(tokens), caches, _stream())
    mx.eval(logits, [(c.keys, c.values) for c in caches])
    return np.array(logits), [(np.array(c.keys), np.array(c.values)) for c in caches]


def _lean_tiny(bias: bool = False, seed: int = 0, layers: int = 2):
    """A tiny llama with tokconv's table RoPE and attention, as prepare_model leaves a real one."""
    from tokconv.fastpath import kernels

    kernels.install()
    lm = make_tiny_lm(vocab_size=80, layers=layers, seed=seed)
    if bias:
        add_qkv_biases(lm.model)
    assert kernels.use_table_rope(lm.model) == layers
    return lm


def _assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    for (ka, va), (kb, vb) in zip(a[1], b[1]):
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(va, vb)


def test_tiny_llama_shapeless_calls_equal_per_shape_calls_with_one_trace(monkeypatch):
    lm = _lean_tiny()
    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 80, (1, cached)), rng.integers(0, 80, (1, n))) for cached, n in SHAPES]
    monkeypatch.setenv("TOKCONV_NO_SHAPELESS", "0")
    assert all(lean.takes(lm, tokens, prefix.shape[1]) is not None for prefix, tokens in cases)
    got = [_call(lm, prefix, tokens, True, monkeypatch) for prefix, tokens in cases]
    assert lean._of(lm).traces == 1  # every shape above, from one trace
    _, seen = forward._of(lm).steps[str(_stream())]
    assert {offset for _, offset in seen} == {0}  # per-shape traces only for the prefixes (empty cache)
    for (prefix, tokens), g in zip(cases, got):
        _assert_same(g, _call(lm, prefix, tokens, False, monkeypatch))


def test_segments_cover_every_layer_once_in_order():
    for n in range(1, 65):
        segments = lean._segments(n)
        assert [a for a, _ in segments] == [0] + [b for _, b in segments[:-1]]  # contiguous
        assert segments[-1][1] == n
        assert all(b - a <= lean.SEGMENT_LAYERS + lean.SEGMENT_LAYERS // 2 for a, b in segments)
        assert len(segments) == 1 or all(b - a >= lean.SEGMENT_LAYERS // 2 for a, b in segments)


def test_a_deep_model_runs_in_segments_with_the_per_shape_bits(monkeypatch):
    lm = _lean_tiny(seed=6, layers=2 * lean.SEGMENT_LAYERS + 1)
    assert len(lean._of(lm).segments) == 2  # the one-layer tail joins the last segment
    rng = np.random.default_rng(6)
    cases = [(rng.integers(0, 80, (1, cached)), rng.integers(0, 80, (1, n))) for cached, n in SHAPES]
    got = [_call(lm, prefix, tokens, True, monkeypatch) for prefix, tokens in cases]
    assert lean._of(lm).traces == 1  # one trace of the segments served every shape
    for (prefix, tokens), g in zip(cases, got):
        _assert_same(g, _call(lm, prefix, tokens, False, monkeypatch))


def test_a_one_token_shape_that_comes_back_stays_shapeless_with_the_same_bits(monkeypatch):
    lm = _lean_tiny(seed=5)
    rng = np.random.default_rng(5)
    prefix, token = rng.integers(0, 80, (1, 6)), rng.integers(0, 80, (1, 1))
    got = [_call(lm, prefix, token, True, monkeypatch) for _ in range(3)]
    _, seen = forward._of(lm).steps[str(_stream())]
    assert {offset for _, offset in seen} == {0}  # traced per shape: only the prefixes (empty cache)
    assert lean._of(lm).traces == 1  # the shapeless step served the token every time
    for g in got[1:]:
        _assert_same(g, got[0])
    _assert_same(got[0], _call(lm, prefix, token, False, monkeypatch))


def test_per_shape_traces_still_serve_what_the_shapeless_step_does_not(monkeypatch):
    import mlx.core as mx

    monkeypatch.setenv("TOKCONV_NO_SHAPELESS", "0")
    lm = _lean_tiny(seed=1)
    one, two = np.zeros((1, 4), np.int64), np.zeros((2, 4), np.int64)
    assert lean.takes(lm, one, 0) is None  # an empty cache
    assert lean.takes(lm, two, 3) is None  # two rows
    assert lean.takes(lm, one, 3) is not None
    caches = forward.make_caches(lm)
    mx.eval(forward.call(lm, mx.array(two), caches, _stream()))
    mx.eval(forward.call(lm, mx.array(two), caches, _stream()))
    _, seen = forward._of(lm).steps[str(_stream())]
    assert seen == {((2, 4), 0), ((2, 4), 4)}  # both calls traced their own shape
    monkeypatch.setenv("TOKCONV_NO_SHAPELESS", "1")
    assert lean.takes(lm, one, 3) is None


def test_biased_projections_go_shapeless_only_on_compact_products(monkeypatch):
    lm = _lean_tiny(bias=True, seed=2)
    assert lean._of(lm).biased
    assert lean.takes(lm, np.zeros((1, 3)), 2) is None  # no compact weights: BLAS adds the bias its own way
    rng = np.random.default_rng(2)
    prefix, tokens = rng.integers(0, 80, (1, 5)), rng.integers(0, 80, (1, 3))
    # the arithmetic itself, on BLAS
    monkeypatch.setattr(lean, "takes", lambda lm, tokens, offset: lean._of(lm) if offset > 0 else None)
    got = _call(lm, prefix, tokens, True, monkeypatch)
    assert lean._of(lm).traces == 1  # the shapeless step made these logits
    monkeypatch.undo()
    want = _call(lm, prefix, tokens, False, monkeypatch)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_other_layers_are_left_to_mlx_lm():
    import mlx.core as mx

    from tokconv.fastpath import kernels

    kernels.install()
    assert lean._of(make_tiny_lm(seed=3)) is None  # mlx's own RoPE, not the table one
    lm = _lean_tiny(seed=4)
    assert lean._build(lm) is not None
    lm.model.args.layer_types = ["sliding_attention", "full_attention"]
    assert lean._build(lm) is None
    lm = _lean_tiny(seed=4)
    lm.model.set_dtype(mx.bfloat16)
    assert lean._build(lm) is None  # mlx-lm's arithmetic in bfloat16 is not what the float32 tables give


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_bundled_models_shapeless_calls_equal_per_shape_calls(name, monkeypatch):
    from tokconv.fastpath import compact
    from tokconv.models import load

    lm = load(name)
    assert lean._of(lm) is not None
    traces = lean._of(lm).traces
    rng = np.random.default_rng(5)
    served = 0
    for cached, n in SHAPES:
        prefix, tokens = rng.integers(0, lm.vocab_size, (1, cached)), rng.integers(0, lm.vocab_size, (1, n))
        monkeypatch.setenv("TOKCONV_NO_SHAPELESS", "0")
        served += (lean.takes(lm, tokens, cached) is not None)
        _assert_same(_call(lm, prefix, tokens, True, monkeypatch), _call(lm, prefix, tokens, False, monkeypatch))
    # Qwen's biased projections past the compact limit keep their per-shape trace
    limit = compact.current_max_rows()
    assert served == sum(1 for _, n in SHAPES if not lean._of(lm).biased or n <= limit)
    assert lean._of(lm).traces - traces <= 1  # at most this thread's stream traced, once
