"""tokconv.forward: the compiled functional step agrees with mlx-lm's own cached forward."""

from __future__ import annotations

import numpy as np
import pytest

import tokconv  # noqa: F401  (runtime set up before mlx is imported)
from conftest import make_tiny_lm
from tokconv.engine import forward


def _stream():
    import mlx.core as mx

    return mx.default_stream(mx.default_device())


def _mlx_lm_logits(lm, tokens, split: int):
    """Logits for tokens[:, split:] after a prefix forward, with mlx-lm's own KV cache."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(lm.model)
    lm.model(mx.array(tokens[:, :split]), cache=cache)
    return np.array(lm.model(mx.array(tokens[:, split:]), cache=cache))


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_prefix_then_suffix_matches_mlx_lm_cache(monkeypatch, compiled):
    import mlx.core as mx

    monkeypatch.setenv("TOKCONV_NO_COMPILE", "0" if compiled == "1" else "1")
    lm = make_tiny_lm(layers=3)
    tokens = np.random.default_rng(0).integers(0, lm.vocab_size, (2, 11))
    caches = forward.make_caches(lm)
    assert all(isinstance(c, forward.PastKV) for c in caches)
    forward.call(lm, mx.array(tokens[:, :6]), caches, _stream())
    assert caches[0].offset == 6 and caches[0].keys.shape[2] == 6
    got = np.array(forward.call(lm, mx.array(tokens[:, 6:]), caches, _stream()))
    np.testing.assert_allclose(got, _mlx_lm_logits(lm, tokens, 6), rtol=1e-4, atol=1e-4)
    assert caches[-1].offset == 11


def test_trim_forgets_the_tail_and_a_re_forward_agrees():
    import mlx.core as mx

    lm = make_tiny_lm(layers=2)
    tokens = np.random.default_rng(1).integers(0, lm.vocab_size, (1, 9))
    caches = forward.make_caches(lm)
    forward.call(lm, mx.array(tokens), caches, _stream())
    for c in caches:
        assert c.is_trimmable() and c.trim(5) == 5 and c.offset == 4
    got = np.array(forward.call(lm, mx.array(tokens[:, 4:]), caches, _stream()))
    np.testing.assert_allclose(got, _mlx_lm_logits(lm, tokens, 4), rtol=1e-4, atol=1e-4)
    for c in caches:
        c.trim(99)
    assert caches[0].offset == 0 and caches[0].keys is None


def test_window_mask_hides_keys_older_than_the_window():
    from mlx_lm.models.base import create_causal_mask

    past = forward.PastKV()
    past.offset = 6
    assert past.make_mask(3) == "causal" and past.make_mask(1) is None
    assert past.make_mask(3, window_size=16) == "causal"  # the window does not bind yet
    got = np.array(past.make_mask(3, window_size=4))
    assert got.shape == (3, 9)
    np.testing.assert_array_equal(got, np.array(create_causal_mask(3, 6, window_size=4)))
    assert got[2].sum() == 4 and not got[2, :5].any()  # query 8 sees keys 5..8 only


def test_compiled_steps_are_rebuilt_after_max_traces(monkeypatch):
    import mlx.core as mx

    monkeypatch.setenv("TOKCONV_NO_COMPILE", "0")
    monkeypatch.setattr(forward, "MAX_TRACES", 2)
    lm = make_tiny_lm(layers=1)
    fns = []
    for n in (3, 4, 4, 5):
        caches = forward.make_caches(lm)
        mx.eval(forward.call(lm, mx.array(np.zeros((1, n), np.int64)), caches, _stream()))
        fn, seen = forward._of(lm).steps[str(_stream())]
        fns.append(fn)
        assert len(seen) <= 2
    assert fns[0] is fns[1] is fns[2] and fns[3] is not fns[2]  # the third shape starts a new function


def test_models_with_other_caches_keep_mlx_lm_caches(monkeypatch):
    from mlx_lm.models.cache import ArraysCache

    lm = make_tiny_lm(layers=2)
    monkeypatch.setattr(lm.model, "make_cache", lambda: [ArraysCache(1) for _ in range(2)], raising=False)
    assert not forward.functional(lm)
    assert all(isinstance(c, ArraysCache) for c in forward.make_caches(lm))


def test_compiled_steps_are_kept_for_a_few_streams_only(monkeypatch):
    import mlx.core as mx

    monkeypatch.setenv("TOKCONV_NO_COMPILE", "0")
    monkeypatch.setattr(forward, "MAX_STREAMS", 2)
    lm = make_tiny_lm(layers=1)
    streams = [mx.new_stream(mx.cpu) for _ in range(3)]
    tokens = mx.array(np.zeros((1, 3), np.int64))
    for s in streams:
        mx.eval(forward.call(lm, tokens, forward.make_caches(lm), s))
    assert list(forward._of(lm).steps) == [str(streams[1]), str(streams[2])]  # the first stream's function went
