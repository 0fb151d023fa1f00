"""One model call as a compiled step: (tokens, cached keys/values) -> (logits, keys/values).

mlx-lm's caches update their arrays in place, which ``mx.compile`` cannot replay. A
:class:`PastKV` instead speaks the same protocol functionally: ``update_and_fetch``
returns the old keys and values with the new ones appended, and :func:`call` hands them
in and out of a compiled function, so the whole forward (every layer, the attention and
the head's logits) is traced once per input shape and replayed from C++ (no Python graph
building; fused elementwise kernels); a new shape costs one trace.

A ``PastKV`` keeps a layer's full history, also for sliding-window layers (Gemma 3): the
window is enforced by the attention mask instead of by a rotating buffer.
Models whose caches are not plain or rotating KV caches keep mlx-lm's own caches
(:func:`make_caches` decides), called uncompiled.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache

from ..errors import TokconvError
from ..fastpath import compact, lazy, packing
from ..models import LoadedModel
from . import lean
from .streams import on_call_thread

# Distinct input shapes one compiled function may collect traces for before it is rebuilt
# (each trace keeps its graph; long sweeps see many shapes).
MAX_TRACES = 128
# Streams with a compiled function kept per model: CPU streams are per thread, and the dashboard
# runs every script run in a new thread, so old threads' functions (and traces) must go.
MAX_STREAMS = 8


@dataclass
class _ModelState:
    """This module's state for one loaded model: whether PastKV caches fit, and compiled steps per stream."""

    functional: bool | None = None
    steps: dict = field(default_factory=dict)


_state: "weakref.WeakKeyDictionary[LoadedModel, _ModelState]" = weakref.WeakKeyDictionary()
_state_lock = threading.Lock()


def _of(lm: LoadedModel) -> _ModelState:
    with _state_lock:
        st = _state.get(lm)
        if st is None:
            st = _state[lm] = _ModelState()
        return st


class PastKV:
    """One layer's cached keys and values (B, heads, offset, head_dim), updated functionally."""

    def __init__(self, keys: Any = None, values: Any = None) -> None:
        self.keys, self.values = keys, values
        self.offset = 0 if keys is None else int(keys.shape[2])

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        if self.keys is not None:
            keys = mx.concatenate([self.keys, keys], axis=2)
            values = mx.concatenate([self.values, values], axis=2)
        self.keys, self.values, self.offset = keys, values, int(keys.shape[2])
        return keys, values

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None) -> Any:
        """mlx-lm's mask for ``N`` new queries after ``offset`` cached keys (called before the update)."""
        if window_size is not None and self.offset + N > window_size:
            return create_causal_mask(N, self.offset, window_size=window_size)
        if N == 1:
            return None
        return create_causal_mask(N, self.offset) if return_array else "causal"

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        """Forget the last ``n`` positions."""
        n = min(self.offset, n)
        self.offset -= n
        if self.offset == 0:
            self.keys = self.values = None
        else:
            self.keys, self.values = self.keys[:, :, : self.offset], self.values[:, :, : self.offset]
        return n


def functional(lm: LoadedModel) -> bool:
    """True when every layer of ``lm`` can use a :class:`PastKV` (plain or sliding-window KV caches)."""
    st = _of(lm)
    if st.functional is None:
        st.functional = all(type(c) in (KVCache, RotatingKVCache) for c in make_prompt_cache(lm.model))
    return st.functional


def make_caches(lm: LoadedModel) -> list:
    """Empty caches for ``lm``, one per layer: :class:`PastKV` where possible, else mlx-lm's."""
    if functional(lm):
        return [PastKV() for _ in lm.model.layers]
    return make_prompt_cache(lm.model)


def _step(model: Any, n_layers: int):
    def step(tokens, past):
        caches = [PastKV(k, v) for k, v in past] if past else [PastKV() for _ in range(n_layers)]
        logits = model(tokens, cache=caches)
        return logits, [(c.keys, c.values) for c in caches]

    return step


def _compiled(lm: LoadedModel, stream: Any, signature: tuple) -> Any:
    """The compiled step for ``stream`` (a trace records its ops' stream, so one function per
    stream), rebuilt after :data:`MAX_TRACES` distinct shapes to free old traces."""
    table = _of(lm).steps
    key = str(stream)
    fn, seen = table.get(key, (None, set()))
    if fn is None or (signature not in seen and len(seen) >= MAX_TRACES):
        fn, seen = mx.compile(_step(lm.model, len(lm.model.layers))), set()
        table.pop(key, None)
        while len(table) >= MAX_STREAMS:  # the least recently built goes
            table.pop(next(iter(table)))
        table[key] = (fn, seen)
    seen.add(signature)
    return fn


def ready(lm: LoadedModel) -> None:
    """Load the weights ``lm`` left in its file (:mod:`tokconv.fastpath.lazy`) before MLX multiplies
    them: a caller that runs ``lm.model`` itself calls this first. On the model-call thread, where
    native calls build their state from the lean form too, so that none sees it half replaced."""
    if lazy.waiting(lm.model):
        on_call_thread(_materialize, lm)


def _materialize(lm: LoadedModel) -> None:
    if lazy.materialize(lm.model):
        lean.forget(lm)  # its transposes were of the arrays just replaced


def _packs_ready(lm: LoadedModel, tokens: Any) -> None:
    """Load the model's waiting weights, and make its MKL packs before its first product too long
    for the compact kernel."""
    ready(lm)
    if packing.deferred(lm.model) and tokens.shape[0] * tokens.shape[1] > compact.current_max_rows():
        packing.ensure(lm.model)


def call(lm: LoadedModel, tokens: Any, caches: list, stream: Any) -> Any:
    """Logits (B, n, V) for ``tokens`` (B, n) after what ``caches`` hold; the caches take the new
    keys and values. Runs on ``stream``; compiled unless ``TOKCONV_NO_COMPILE=1``."""
    _packs_ready(lm, tokens)
    with mx.stream(stream):
        # mlx-lm's own caches mutate in place: uncompiled. PastKV works uncompiled too.
        if not isinstance(caches[0], PastKV) or os.environ.get("TOKCONV_NO_COMPILE") == "1":
            return lm.model(tokens, cache=caches)
        past = [(c.keys, c.values) for c in caches] if caches[0].keys is not None else []
        shapeless = lean.takes(lm, tokens, caches[0].offset)
        if shapeless is not None:  # one trace for every shape (llama, qwen2)
            logits, kv = lean.call(shapeless, tokens, past, stream)
        else:
            fn = _compiled(lm, stream, (tuple(tokens.shape), caches[0].offset))
            logits, kv = fn(tokens, past)
    for c, (k, v) in zip(caches, kv):
        c.keys, c.values, c.offset = k, v, int(k.shape[2])
    return logits


def call_poisoned(lm: LoadedModel, tokens: Any, caches: list, stream: Any, poison: Any) -> Any:
    """:func:`call` with a NaN embedding at the positions where ``poison`` (B, n) is True.

    An emulation of undefined behaviour: an unchecked embedding gather past the table's end
    returns unrelated memory, NaN among it. Uncompiled (it is never a hot path); needs a model
    whose ``__call__`` takes ``input_embeddings`` and whose inner model has ``embed_tokens``
    (mlx-lm's llama, qwen2 and gemma3 do).
    """
    _packs_ready(lm, tokens)
    inner = getattr(lm.model, "model", None)
    embed = getattr(inner, "embed_tokens", None)
    if embed is None:
        raise TokconvError(f"{lm.name}: this model cannot take a NaN embedding (no embed_tokens)",
                           "use another out-of-vocabulary policy than nan, or a llama, qwen2 or gemma3 model")
    with mx.stream(stream):
        h = embed(tokens)
        h = mx.where(mx.array(poison)[..., None], mx.array(float("nan"), h.dtype), h)
        return lm.model(tokens, cache=caches, input_embeddings=h)
