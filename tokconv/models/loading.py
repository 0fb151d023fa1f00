"""Load a model spec (see :mod:`.resolve`) into an MLX model and tokenizer, once per process.

GGUF files are converted once into a standard mlx-lm folder in the cache; later
loads read that folder. Loaded models are shared by every caller in the process
(the dashboard serves many browser sessions from one process), so loading is
guarded by locks and each model carries an ``RLock`` for its forward passes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_lm.utils import load_config, load_model, load_tokenizer

from .. import fastpath
from ..errors import ModelNotFound, TokconvError
from ..paths import models_dir
from .resolve import ProgressFn, resolve
from .tokenizer_cache import load_cached_tokenizer


@dataclass(eq=False)  # identity, not field equality: engine state is kept per loaded model
class LoadedModel:
    """A model ready for scoring: the MLX module, its tokenizer and what we know about it."""

    name: str
    spec: str
    path: Path
    model: Any  # mlx.nn.Module
    tokenizer: Any  # mlx_lm TokenizerWrapper
    architecture: str
    family: str
    vocab_size: int
    bos_id: int | None  # prepended to every scored sequence when the tokenizer adds one
    load_seconds: float
    converted: bool  # whether this load had to convert a GGUF first
    dtype: str = "auto"  # the precision asked for (tokconv.fastpath.startup.DTYPES); auto: the device's best
    compact: Any = None  # tokconv.fastpath.compact.CompactReport: matrices answered from compact weights
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without any BOS token (tokconv adds BOS itself when scoring)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return self.tokenizer.decode(list(ids))

    def token_text(self, token_id: int) -> str:
        """Text of one token id."""
        return self.tokenizer.decode([int(token_id)])


_registry: dict[str, LoadedModel] = {}
_registry_lock = threading.RLock()
_spec_locks: dict[str, threading.RLock] = {}


def _bos_id(tokenizer: Any) -> int | None:
    """The BOS id when the tokenizer prepends one to plain text (Gemma), else None (SmolLM2, Qwen)."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    bos = getattr(hf, "bos_token_id", None)
    if bos is None:
        return None
    probe = hf.encode("a", add_special_tokens=True)
    return int(bos) if probe and probe[0] == bos else None


def _own_folder(path: Path) -> Path | None:
    """``path`` when tokconv converted it (its caches may live there), else None (a user's folder)."""
    return path if path.parent == models_dir() else None


def _load_tokenizer(path: Path, eos_token_ids: Any) -> Any:
    """The tokenizer as ``mlx_lm.load`` loads it, from a pickle beside tokconv's own conversions."""
    if _own_folder(path) is not None:
        return load_cached_tokenizer(path, eos_token_ids)
    return load_tokenizer(path, eos_token_ids=eos_token_ids)


def registry_key(spec: str, dtype: str = "auto") -> str:
    """How a loaded model is held (and listed by :func:`loaded_specs`): its spec, plus ``@dtype`` unless auto."""
    spec = spec.strip()
    return spec if dtype == "auto" else f"{spec}@{dtype}"


def load(spec: str, progress: ProgressFn | None = None, dtype: str = "auto") -> LoadedModel:
    """Load a model once per process (per precision) and return the shared instance (thread-safe).

    ``dtype`` (auto, float32, float16, bfloat16): see :func:`tokconv.fastpath.prepare_model`."""
    spec = spec.strip()
    key = registry_key(spec, dtype)
    with _registry_lock:
        if key in _registry:
            return _registry[key]
        spec_lock = _spec_locks.setdefault(key, threading.RLock())
    with spec_lock:  # one loader per spec; other specs load in parallel
        with _registry_lock:
            if key in _registry:
                return _registry[key]
        fastpath.setup()
        t0 = time.perf_counter()
        path, facts, converted = resolve(spec, progress)
        if progress:
            progress(f"Loading {facts['name']} into memory")
        try:
            # mlx_lm.load of a local folder, in its two steps; lazy: prepare_model decides what to read
            model, config = load_model(path, lazy=True)
            tokenizer = _load_tokenizer(path, config.get("eos_token_id"))
        except TokconvError:
            raise
        except Exception as exc:
            raise ModelNotFound(
                f"mlx-lm could not load the model folder {path}: {exc}",
                "if tokconv made this folder, delete it to convert again; otherwise check it was made by mlx_lm.convert",
            ) from exc
        # fp32 weights, kernels, compact weights (kept beside tokconv's own conversions), packs on Linux CPU
        try:
            compact = fastpath.prepare_model(model, dtype, _own_folder(path))
        except (RuntimeError, OSError) as exc:  # the weights are read here (loaded lazily above)
            raise ModelNotFound(
                f"could not read the weights in {path}: {exc}",
                "if tokconv made this folder, delete it to convert again; otherwise check it was made by mlx_lm.convert",
            ) from exc
        vocab_size = int(model.args.vocab_size) if hasattr(model, "args") else len(tokenizer.vocab)
        loaded = LoadedModel(
            name=facts["name"],
            spec=spec,
            path=path,
            model=model,
            tokenizer=tokenizer,
            architecture=facts["architecture"],
            family=facts["family"],
            vocab_size=vocab_size,
            bos_id=_bos_id(tokenizer),
            load_seconds=time.perf_counter() - t0,
            converted=converted,
            dtype=dtype,
            compact=compact,
        )
        with _registry_lock:
            _registry[key] = loaded
        return loaded


def loaded_specs() -> list[str]:
    """Specs currently held in memory."""
    with _registry_lock:
        return list(_registry)


def register(lm: LoadedModel) -> None:
    """Make a model built in code (a test model, a model loaded elsewhere) loadable under its spec."""
    with _registry_lock:
        _registry[registry_key(lm.spec, lm.dtype)] = lm


def unregister(spec: str) -> None:
    """Forget the model held under ``spec`` (the next :func:`load` loads it again)."""
    with _registry_lock:
        _registry.pop(spec, None)


def load_vocabulary(spec: str, progress: ProgressFn | None = None) -> LoadedModel:
    """A model's tokenizer and vocabulary size without its weights (``model`` is None), for questions
    about the vocabulary alone: seconds instead of a full load. The full model when it is loaded already."""
    spec = spec.strip()
    with _registry_lock:
        if spec in _registry:
            return _registry[spec]
    t0 = time.perf_counter()
    path, facts, converted = resolve(spec, progress)
    try:
        config = load_config(path)
        tokenizer = _load_tokenizer(path, config.get("eos_token_id"))  # as load() does: one pickle for both
    except Exception as exc:  # a folder mlx-lm cannot read: one message for every cause
        raise ModelNotFound(f"could not read the tokenizer in {path}: {exc}",
                            "if tokconv made this folder, delete it to convert again") from exc
    size = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size") or len(tokenizer.vocab)
    return LoadedModel(name=facts["name"], spec=spec, path=path, model=None, tokenizer=tokenizer,
                       architecture=facts["architecture"], family=facts["family"], vocab_size=int(size),
                       bos_id=_bos_id(tokenizer), load_seconds=time.perf_counter() - t0, converted=converted)
