"""Precision as a run option: weights and activations in float16 or bfloat16, next to float32."""

from __future__ import annotations

import numpy as np
import pytest

import tokconv
from conftest import make_tiny_lm
from tokconv import fastpath
from tokconv.engine import Scorer
from tokconv.errors import TokconvError
from tokconv.experiments import RunConfig


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_models_score_close_to_float32(dtype):
    import mlx.core as mx

    ref, half = make_tiny_lm(seed=3), make_tiny_lm(seed=3)
    fastpath.prepare_model(half.model, dtype)
    assert all(p.dtype == getattr(mx, dtype) for _, p in _params(half.model))
    tokens = np.random.default_rng(0).integers(0, ref.vocab_size, size=(2, 12))
    a, b = Scorer(ref).score(tokens), Scorer(half).score(tokens)
    assert (a.argmax == b.argmax).mean() >= 0.8
    np.testing.assert_allclose(a.entropy[:, 1:], b.entropy[:, 1:], atol=0.1)
    assert b.finite.all()


def _params(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def test_an_unknown_precision_is_refused():
    with pytest.raises(TokconvError, match="unknown precision"):
        RunConfig(dtype="float8")


@pytest.mark.slow
def test_a_run_in_bfloat16_uses_its_own_copy_of_the_model():
    r = tokconv.run(RunConfig(mode="sequential", model_a="smollm2-135m", length=6, iterations=4, dtype="bfloat16"))
    assert r.status in ("converged", "max-iterations") and r.config.dtype == "bfloat16"
    half, full = tokconv.load("smollm2-135m", dtype="bfloat16"), tokconv.load("smollm2-135m")
    assert half is not full and half.dtype == "bfloat16"
