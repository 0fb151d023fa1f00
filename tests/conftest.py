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


@pytest.fixture
def tiny_lm():
    return make_tiny_lm()


@pytest.fixture(scope="session")
def smollm2():
    return tokconv.load("smollm2-135m")
