"""Shared fixtures: a tiny random-weight model for mechanics, real bundled models for behaviour."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never touch the user's cache unless asked: a shared per-run cache keeps
# converted models across test files (conversion takes seconds to a minute).
os.environ.setdefault("TOKCONV_CACHE", str(Path(tempfile.gettempdir()) / "tokconv-test-cache"))

# ...and never the user's run database.
os.environ.setdefault("TOKCONV_DB", str(Path(tempfile.mkdtemp(prefix="tokconv-test-db-")) / "runs.sqlite"))

import tokconv  # noqa: E402  (sets up the runtime before mlx is imported)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: uses a real bundled model and takes a while")


def make_tiny_lm(vocab_size: int = 64, layers: int = 2, seed: int = 0, bos_id: int | None = None):
    """A random-weight llama model wrapped as a LoadedModel (no tokenizer)."""
    import mlx.core as mx
    from mlx_lm.models import llama

    from tokconv.models import LoadedModel

    mx.random.seed(seed)
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=32,
        num_hidden_layers=layers,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=vocab_size,
        tie_word_embeddings=True,
    )
    model = llama.Model(args)
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    return LoadedModel(
        name="tiny",
        spec="tiny",
        path=Path("."),
        model=model,
        tokenizer=None,
        architecture="llama",
        family="Test",
        vocab_size=vocab_size,
        bos_id=bos_id,
        load_seconds=0.0,
        converted=False,
    )


def add_qkv_biases(model) -> None:
    """Give every layer's q, k and v projections random biases, as Qwen2's have."""
    import mlx.core as mx
    import mlx.nn as nn

    for layer in model.model.layers:
        for name in ("q_proj", "k_proj", "v_proj"):
            old = getattr(layer.self_attn, name)
            new = nn.Linear(old.weight.shape[1], old.weight.shape[0], bias=True)
            new.weight = old.weight
            new.bias = mx.random.normal(new.bias.shape)
            setattr(layer.self_attn, name, new)
    mx.eval(model.parameters())


def make_compact_tiny_lm(vocab_size: int = 320, layers: int = 3, seed: int = 0, bos_id: int | None = None,
                         bias: bool = False):
    """A tiny llama whose weights lie on an 8-bit grid (as from a GGUF file), prepared as a load
    would: every matrix has a compact form, so one-sequence calls run natively
    (tokconv.engine.native). ``vocab_size`` a multiple of 16. Skips where compact weights are off."""
    import dataclasses

    import mlx.nn as nn

    from tokconv.fastpath import compact, startup

    if not compact.active():
        pytest.skip("compact weights are off here")
    lm = make_tiny_lm(vocab_size=vocab_size, layers=layers, seed=seed, bos_id=bos_id)
    if bias:
        add_qkv_biases(lm.model)
    nn.quantize(lm.model, group_size=32, bits=4)
    report = startup.prepare_model(lm.model)
    assert report is not None and report.complete
    return dataclasses.replace(lm, compact=report)


@pytest.fixture
def tiny_lm():
    return make_tiny_lm()


@pytest.fixture(scope="session")
def smollm2():
    return tokconv.load("smollm2-135m")
