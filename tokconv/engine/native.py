"""One-sequence model calls in C (``_native.c``): llama and qwen2 layers between compact-weight products.

A short call through MLX pays for rebuilding and dispatching its graph whatever its row count
(BENCHMARKS.md); experiments are made of short calls. Where a model has the layers
:mod:`.lean` writes (mlx-lm's ``llama`` and ``qwen2``: SmolLM2, Qwen2.5) and every matrix has a
compact form (:mod:`tokconv.fastpath.compact`: models from GGUF files on a Linux CPU), a
one-sequence session runs each call as one C function instead: the products by the same compact
kernel on the same weights, the norms, RoPE, attention and SwiGLU as plain loops in another
summation order. Logits therefore agree with the MLX path to float32 rounding
(``tests/test_native.py`` states the bounds), not bit for bit; the keys and values live in a
:class:`NativeCache` of numpy arrays. :func:`call_rows` takes several sequences in one call (a
lockstep pool, :mod:`.rows`), each row's results exactly those of its own call.

``TOKCONV_NO_NATIVE=1`` turns it off (every call goes through MLX, :mod:`.forward` and :mod:`.lean`).
Hand-written because no library runs these layers on compact 8-bit weights from numpy buffers;
llama.cpp does the like for its own formats, behind its own model loader.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .. import fastpath
from ..fastpath import compact, kernels, lazy
from ..fastpath.build import built, cpu_flags
from ..models import LoadedModel
from . import lean
from .forward import PastKV

_SOURCE = Path(__file__).with_name("_native.c")
# tokconv_native_rows's answers
FAILED = {1: "a matrix has no compact form", 2: "the key/value cache is too short", 3: "out of memory"}


class _Layer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in
                ("norm1", "norm2", "q", "k", "v", "o", "gate", "up", "down", "bq", "bk", "bv")] + [
        ("eps1", ctypes.c_float), ("eps2", ctypes.c_float)]


class _Model(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("layers", "hidden", "heads", "kv_heads", "head_dim", "inter", "vocab")] + [
        ("eps", ctypes.c_float), ("scale", ctypes.c_float), ("embed", ctypes.c_void_p), ("head", ctypes.c_void_p),
        ("norm", ctypes.c_void_p), ("layer", ctypes.POINTER(_Layer)), ("gemm", ctypes.c_void_p)]


@dataclass(frozen=True)
class Native:
    """One model as the C call reads it: the descriptor and the arrays it points into."""

    model: _Model
    layers: Any  # the _Layer array the descriptor points to
    held: tuple  # numpy views of the weights (they keep the MLX arrays, hence the memory, alive)
    n_layers: int
    kv_heads: int
    head_dim: int
    vocab: int
    rope: tuple  # dims, base, scale


_lib: ctypes.CDLL | None = None
_tried = False
_lock = threading.Lock()
_state: "weakref.WeakKeyDictionary[LoadedModel, Native | None]" = weakref.WeakKeyDictionary()


def enabled() -> bool:
    """False when the user turned native calls off (``TOKCONV_NO_NATIVE=1``)."""
    return os.environ.get("TOKCONV_NO_NATIVE") != "1"


def library() -> ctypes.CDLL | None:
    """The C call, built on first use; None where it cannot be (no gcc, compact weights off)."""
    global _lib, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if compact.library() is None:
            return None
        args = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-lm"]
        if platform.machine() in ("x86_64", "AMD64"):
            args.insert(2, "-mprefer-vector-width=512")
        try:
            lib = ctypes.CDLL(str(built(_SOURCE, args, cpu_flags())))
        except OSError:
            return None
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.tokconv_native_rows.argtypes = [p, i, p, p, p, p, p, p, p, p, p, i]
        lib.tokconv_native_check.argtypes = [p]
        lib.tokconv_native_set_probe.argtypes = [i, i]  # bench/native_calls.py only
        _lib = lib
        return lib


def _view(a: Any, transposed: bool = False) -> np.ndarray:
    """The C-contiguous float32 memory of an evaluated MLX array (zero-copy on CPU); ``transposed``:
    of a transposed view (the lean form keeps ``W.T``), whose memory is ``W``'s."""
    mx.eval(a)
    view = np.asarray(a).T if transposed else np.asarray(a)
    if view.dtype != np.float32 or not view.flags.c_contiguous:
        raise ValueError("not C-contiguous float32")
    return view


def _build(lm: LoadedModel) -> Native | None:
    """The descriptor of ``lm`` from its lean form (:mod:`.lean` checked the architecture and holds
    every array the layers read), or None where the C call cannot serve it."""
    lib = library()
    form = lean._of(lm) if lib is not None else None
    if form is None or lm.compact is None or not lm.compact.complete or fastpath.setup().device != "cpu":
        return None
    held: list[np.ndarray] = []

    def ptr(a: Any, transposed: bool = False, weight: Any = None) -> int | None:
        """The address the C call reads ``a`` at; ``weight``: the module weight ``a`` was made from,
        whose file view (fastpath.lazy) stands in where the weight was left in its file."""
        if a is None:
            return None
        v = lazy.file_view(lm.model, weight) if weight is not None else None
        v = _view(a, transposed) if v is None else v
        held.append(v)
        return v.ctypes.data

    inner = lm.model.model  # lean checked the architecture: mlx-lm's llama or qwen2
    try:
        layers = (_Layer * len(form.layers))()
        for slot, layer, module in zip(layers, form.layers, inner.layers):
            at, mlp = module.self_attn, module.mlp
            weights = {"q": at.q_proj, "k": at.k_proj, "v": at.v_proj, "o": at.o_proj, "gate": mlp.gate_proj,
                       "up": mlp.up_proj, "down": mlp.down_proj}
            for name, linear in weights.items():
                setattr(slot, name, ptr(getattr(layer, name), transposed=True, weight=linear.weight))
            slot.bq, slot.bk, slot.bv = ptr(layer.bq), ptr(layer.bk), ptr(layer.bv)
            slot.norm1, slot.norm2, slot.eps1, slot.eps2 = ptr(layer.norm1), ptr(layer.norm2), layer.eps1, layer.eps2
        tied = bool(getattr(lm.model.args, "tie_word_embeddings", False))  # as lean decided
        head = ptr(form.head, transposed=True, weight=(inner.embed_tokens if tied else lm.model.lm_head).weight)
        vocab, hidden = held[-1].shape
        model = _Model(len(form.layers), hidden, form.heads, form.kv_heads, form.head_dim, form.layers[0].gate.shape[1],
                       vocab, form.eps, form.scale, ptr(form.embed, weight=inner.embed_tokens.weight), head, ptr(form.norm),
                       layers, ctypes.cast(compact.library().tokconv_compact_gemm, ctypes.c_void_p).value)
    except ValueError:
        return None
    if lib.tokconv_native_check(ctypes.byref(model)) != 0:
        return None  # a matrix without a compact form: MLX serves this model
    return Native(model, layers, tuple(held), len(form.layers), form.kv_heads, form.head_dim, vocab, form.rope)


def of(lm: LoadedModel) -> Native | None:
    """The C form of ``lm`` where native calls serve it, else None (built once per model)."""
    if not enabled():
        return None
    with _lock:
        if lm in _state:
            return _state[lm]
    nat = _build(lm)
    with _lock:
        return _state.setdefault(lm, nat)


def takes(lm: LoadedModel, batch: int) -> Native | None:
    """The C form for a new session of ``batch`` sequences of ``lm``, or None (then MLX serves it):
    one sequence, native calls on, and compact products on (``TOKCONV_COMPACT_MAX_ROWS=0`` or
    :func:`tokconv.fastpath.compact.max_rows` at 0 mean float32 products: MLX's). A session's calls
    all run on compact weights, also a first call longer than the compact row limit."""
    if batch != 1 or compact.current_max_rows() < 1:
        return None
    return of(lm)


class NativeCache:
    """The keys and values of one sequence for :func:`call`: (layers, kv_heads, capacity, head_dim)
    each, positions below ``offset`` valid. Speaks the cache protocol sessions use (``offset``,
    ``is_trimmable``, ``trim``)."""

    def __init__(self, nat: Native, capacity: int = 128) -> None:
        self.nat, self.offset = nat, 0
        self.keys = np.empty((nat.n_layers, nat.kv_heads, capacity, nat.head_dim), np.float32)
        self.values = np.empty_like(self.keys)

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def reserve(self, length: int) -> None:
        """Room for ``length`` positions (doubling, keeping what is cached)."""
        if length <= self.capacity:
            return
        cap = max(length, 2 * self.capacity)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = np.empty(old.shape[:2] + (cap,) + old.shape[3:], np.float32)
            new[:, :, : self.offset] = old[:, :, : self.offset]
            setattr(self, name, new)

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        """Forget the last ``n`` positions."""
        n = min(self.offset, n)
        self.offset -= n
        return n

    def past(self) -> list:
        """The same keys and values as one :class:`.forward.PastKV` per layer (for an MLX call)."""
        if self.offset == 0:
            return [PastKV() for _ in range(self.nat.n_layers)]
        return [PastKV(mx.array(self.keys[layer, None, :, : self.offset]), mx.array(self.values[layer, None, :, : self.offset]))
                for layer in range(self.nat.n_layers)]


def call(nat: Native, tokens: np.ndarray, cache: NativeCache, threads: int) -> np.ndarray:
    """Logits (1, n, V) float32 for ``tokens`` (n,) after what ``cache`` holds; the cache takes the
    new keys and values. Raises RuntimeError where the C call fails (FAILED)."""
    return call_rows(nat, [(tokens, cache)], threads)[None]


def call_rows(nat: Native, rows: list[tuple[np.ndarray, NativeCache]], threads: int) -> np.ndarray:
    """Logits (sum of n, V) float32 for several sequences at once: each (tokens (n,), its cache) as in
    :func:`call`, the rows' logits one after the other. The products read the weights once for all
    rows; every row's results are those of its own :func:`call`, bit for bit."""
    ids = [np.ascontiguousarray(t.reshape(-1), dtype=np.int32) for t, _ in rows]
    for t, (_, cache) in zip(ids, rows):
        cache.reserve(cache.offset + t.size)
    cos, sin = (np.asarray(t) for t in kernels.rope_tables(*nat.rope, max(c.offset + t.size for t, (_, c) in zip(ids, rows))))
    logits = np.empty((sum(t.size for t in ids), nat.vocab), np.float32)

    def arr(kind, values):
        return (kind * len(values))(*values)

    p = ctypes.c_void_p
    caches = [c for _, c in rows]
    rc = _lib.tokconv_native_rows(
        ctypes.byref(nat.model), len(rows), arr(p, [t.ctypes.data for t in ids]), arr(ctypes.c_int, [t.size for t in ids]),
        arr(ctypes.c_int, [c.offset for c in caches]), arr(p, [c.keys.ctypes.data for c in caches]),
        arr(p, [c.values.ctypes.data for c in caches]), arr(ctypes.c_int, [c.capacity for c in caches]),
        cos.ctypes.data, sin.ctypes.data, logits.ctypes.data, threads)
    if rc != 0:
        raise RuntimeError(f"native model call failed: {FAILED.get(rc, f'code {rc}')}")
    for t, c in zip(ids, caches):
        c.offset += t.size
    return logits
