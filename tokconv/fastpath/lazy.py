"""Float32 weights left in their file until MLX reads them.

A model served by native calls (:mod:`tokconv.engine.native`) multiplies its matrices from their
compact forms only; the float32 values of those matrices, and of the embedding, whose few rows a
call reads are taken from a memory map of the file (:mod:`.filemap`). Loading them into MLX's
own buffers was most of a fresh process's load (2.5 GB for Qwen2.5-0.5B) and of its memory. So
:func:`tokconv.fastpath.prepare_model` leaves those arrays unevaluated (mlx-lm loads lazily), and
:func:`materialize` loads them before the first call that goes through MLX (batches of sequences,
NaN embeddings, ``TOKCONV_NO_NATIVE=1``), registering their compact forms under MLX's buffers too
(the interposer in front of the BLAS knows a matrix by its address).

Only where the loaded array is exactly the file's bytes: float32 in the file, float32 asked for,
the shape unchanged (``TOKCONV_EAGER_WEIGHTS=1`` loads every weight at load time, as before).
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import compact, filemap


def enabled() -> bool:
    """False when the user asked for every weight in memory at load (``TOKCONV_EAGER_WEIGHTS=1``)."""
    return os.environ.get("TOKCONV_EAGER_WEIGHTS") != "1"


@dataclass
class _Waiting:
    model: weakref.ref
    arrays: dict[int, tuple[Any, Any, np.ndarray]]  # id(array) -> (its module, the MLX array, its file view)
    lock: threading.Lock = field(default_factory=threading.Lock)


_models: dict[int, _Waiting] = {}  # by id(model): an MLX module is a dict, it cannot be a key itself
_lock = threading.Lock()

# mlx-lm's sanitize only drops tensors of these (a rotary table, a tied head): the loaded values
# are the file's bytes. Others may rewrite values in place (gemma3 shifts its norms).
ARCHITECTURES = ("llama", "qwen2")


def file_tensors(model: Any, folder: Path | None) -> dict[str, np.ndarray]:
    """The float32 views of ``folder``'s weights files (:func:`.filemap.float32_tensors`) where
    ``model``'s weights may stay there, else an empty dict."""
    args = getattr(model, "args", None)
    if folder is None or not enabled() or not compact.active() or getattr(args, "model_type", None) not in ARCHITECTURES:
        return {}
    return filemap.float32_tensors(folder)


def keep(model: Any, matrices: list[tuple[Any, np.ndarray]], files: dict[str, np.ndarray]) -> list[tuple[Any, np.ndarray]]:
    """Record that ``matrices`` ((MLX array, file view) pairs of ``model``: :func:`.compact.waiting`)
    stay unevaluated, and with them the embedding where ``files`` hold it (a native call reads a few
    of its rows). Returns every pair left unevaluated."""
    views = {id(a): (a, v) for a, v in matrices}
    inner = getattr(model, "model", None)
    embed = getattr(getattr(inner, "embed_tokens", None), "weight", None)
    view = files.get("model.embed_tokens.weight")
    if embed is not None and view is not None and view.shape == tuple(embed.shape):
        views.setdefault(id(embed), (embed, view))
    waiting = {}
    for _, module in model.named_modules():
        weight = module.get("weight") if isinstance(module, dict) else None
        if weight is not None and id(weight) in views and views[id(weight)][0] is weight:
            waiting[id(weight)] = (module, weight, views[id(weight)][1])
    if waiting:
        with _lock:
            _models[id(model)] = _Waiting(weakref.ref(model), waiting)
        weakref.finalize(model, _forget, id(model))
    return [(a, v) for _, a, v in waiting.values()]


def _forget(key: int) -> None:
    with _lock:
        _models.pop(key, None)


def _entry(model: Any) -> _Waiting | None:
    with _lock:
        entry = _models.get(id(model))
    return entry if entry is not None and entry.model() is model else None


def waiting(model: Any) -> bool:
    """Whether some of ``model``'s weights are still only in their file."""
    return _entry(model) is not None


def file_view(model: Any, array: Any) -> np.ndarray | None:
    """The file view standing in for ``array`` (a weight of ``model`` still in its file), or None."""
    entry = _entry(model)
    found = entry.arrays.get(id(array)) if entry is not None else None
    return found[2] if found is not None and found[1] is array else None


def materialize(model: Any) -> bool:
    """Give ``model`` its waiting weights in MLX's memory and register their compact forms there,
    before MLX multiplies them (idempotent, thread-safe). True when weights were replaced: arrays
    made from the old ones (transposed views) must be made again.

    The new arrays are copies of the file views, not evaluations of the lazy ones: those belong to
    the stream of the thread that loaded the model, and MLX evaluates nothing of another thread's
    stream (model calls run on a thread of their own)."""
    entry = _entry(model)
    if entry is None:
        return False
    import mlx.core as mx  # not at import: this module loads during setup, before MLX may

    with entry.lock:
        if _entry(model) is not entry:
            return False  # another thread did it meanwhile
        new = {}
        for key, (module, old, view) in entry.arrays.items():
            new[key] = mx.array(view)
            module["weight"] = new[key]
        mx.eval(list(new.values()))
        compact.alias(model, new)
        _forget(id(model))
    return True
