"""Hand a loaded model's matmul weights to MKL's packed GEMM (``_mkl_pack.c``).

On Linux CPU with MKL, the fast-path setup (:mod:`.blas`) puts a small interposer in front of MKL's
``cblas_sgemm``. This module registers each float32 weight that MLX multiplies as ``x @ W.T``
(every ``nn.Linear``, and the embedding when the output layer is tied to it); matmuls with few
rows then run from a copy that MKL packed once. The registry keeps each weight array alive, so its
memory cannot be reused by another array while its pack is in use, and drops the packs when the
model is garbage-collected. Results are MKL's own GEMM in another blocking order: equal to the
plain call up to float32 rounding.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import compact, threads
from .build import built, setting

_SOURCE = Path(__file__).with_name("_mkl_pack.c")
_lib: ctypes.CDLL | None = None  # set by load_in_front_of during the fast-path setup


def load_in_front_of(mkl_path: str, load_mkl: Callable[[], object]) -> None:
    """Load the interposer into the global scope, then MKL (``load_mkl``), then point the one at
    the other. Off with ``TOKCONV_NO_PACK=1`` and ``TOKCONV_NO_COMPACT=1`` together (it carries
    both), and where gcc cannot build it (MKL still loads)."""
    global _lib
    lib = None
    if packs_enabled() or compact.enabled():
        try:  # first in the global scope: libmlx binds the first cblas_sgemm found there
            lib = ctypes.CDLL(str(built(_SOURCE, ["-ldl", "-lpthread"])), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            lib = None  # plain MKL: correct, only slower for short inputs
    load_mkl()
    if lib is None:
        return
    lib.tokconv_pack_add.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.tokconv_pack_remove.argtypes = [ctypes.c_void_p]
    lib.tokconv_pack_init.argtypes = [ctypes.c_char_p]
    if lib.tokconv_pack_init(mkl_path.encode()) == 0:
        lib.tokconv_pack_set_max_rows(row_limit() if packs_enabled() else 0)
        _lib = lib


def packs_enabled() -> bool:
    """False when the user turned MKL's packed weights off (``TOKCONV_NO_PACK=1``)."""
    return os.environ.get("TOKCONV_NO_PACK") != "1"


def row_limit() -> int:
    """Most rows a matmul may have to use packed weights: ``TOKCONV_PACK_MAX_ROWS``, default 1024.

    Chosen from ``bench/pack_curve.py`` and whole scoring calls (BENCHMARKS.md): packs win up to
    about a thousand rows and lose beyond; one row always goes plain."""
    try:
        return max(0, int(os.environ.get("TOKCONV_PACK_MAX_ROWS", "1024")))
    except ValueError:
        return 1024


def loaded() -> bool:
    """Whether the interposer is in place."""
    return _lib is not None


def library() -> ctypes.CDLL | None:
    """The interposer, or None where it is off (or the fast-path setup has not run)."""
    return _lib


@dataclass(frozen=True)
class PackStats:
    """Process-wide counters of the interposer."""

    calls: int  # cblas_sgemm calls since the process started
    packed_calls: int  # of which answered from a pack
    reserved_bytes: int  # address space reserved for packs (MKL writes about the weights' size)


def available() -> bool:
    """True where the interposer is loaded (Linux CPU, MKL, gcc, not ``TOKCONV_NO_PACK=1``)."""
    return library() is not None


def stats() -> PackStats | None:
    """The interposer's counters, or None where it is off."""
    lib = library()
    if lib is None:
        return None
    out = (ctypes.c_longlong * 3)()
    lib.tokconv_pack_stats(out)
    return PackStats(int(out[0]), int(out[1]), int(out[2]))


@contextmanager
def max_rows(rows: int) -> Iterator[None]:
    """Inside the block, matmuls with at most ``rows`` rows use the packs (0: none do); for
    side-by-side measurements and tests. Process-wide, like the BLAS thread count."""
    lib = library()
    with setting(lib and lib.tokconv_pack_get_max_rows, lib and lib.tokconv_pack_set_max_rows, rows):
        yield


def matmul_weights(model: Any) -> list[Any]:
    """The 2-D weights that ``model`` multiplies as ``x @ W.T``: its Linear layers, and the
    embedding when there is no separate ``lm_head`` (mlx-lm's tied output layer)."""
    return [w for _, w in named_matmul_weights(model)]


def named_matmul_weights(model: Any) -> list[tuple[str, Any]]:
    """:func:`matmul_weights` with the name of each weight's module."""
    import mlx.nn as nn  # not at import: this module loads during setup, before MLX may

    modules = model.named_modules()
    weights = [(name, m.weight) for name, m in modules if isinstance(m, nn.Linear)]
    if not any(name.rsplit(".", 1)[-1] == "lm_head" for name, _ in modules):
        weights += [(name, m.weight) for name, m in modules if isinstance(m, nn.Embedding)]
    return weights


# Models whose packs wait for their first long product (every matmul weight has a compact form,
# which answers the short ones): packing Qwen2.5-0.5B took two of its six seconds of loading and
# doubled its memory, for runs whose calls may all be short.
# By id: an MLX module is a dict, so it cannot be a key itself; a finalizer drops the entry.
_deferred: dict[int, Any] = {}
_deferred_lock = threading.RLock()  # re-entrant: a finalizer may run while it is held


def defer(model: Any) -> None:
    """Pack ``model`` on the first :func:`ensure` instead of now (where packs are on at all)."""
    lib = library()
    if lib is None or lib.tokconv_pack_get_max_rows() == 0:
        return
    with _deferred_lock:
        _deferred[id(model)] = weakref.ref(model)
    weakref.finalize(model, _forget, id(model))


def _forget(key: int) -> None:
    with _deferred_lock:
        _deferred.pop(key, None)


def deferred(model: Any) -> bool:
    """Whether ``model``'s packs are still waiting for its first long product."""
    ref = _deferred.get(id(model))
    return ref is not None and ref() is model


def ensure(model: Any) -> None:
    """Pack ``model`` now if its packs were deferred: before its first product longer than the
    compact kernel takes. Leaves the BLAS thread count as it found it."""
    if not deferred(model):
        return
    # The compute lock first (model calls hold it), then the table's: a second caller waits until
    # the packs are made instead of multiplying without them meanwhile.
    with threads.kept(), _deferred_lock:
        if _deferred.get(id(model)) is None:
            return  # another thread packed it meanwhile
        pack_model(model)
        _deferred.pop(id(model), None)


def pack_model(model: Any) -> int:
    """Register ``model``'s float32 matmul weights; returns how many were packed (0 where off)."""
    lib = library()
    if lib is None or lib.tokconv_pack_get_max_rows() == 0:  # no call would use a pack
        return 0
    held: list[tuple[int, Any]] = []
    # MKL lays a pack out for the threads it is made with: one made on 1 thread ran 2-thread
    # calls at 1-thread speed. compute(1) gives the most threads any call will use.
    with threads.compute(1):
        for w in matmul_weights(model):
            _add(lib, w, held)
    if held:
        weakref.finalize(model, _release, lib, held)
    return len(held)


def _add(lib: ctypes.CDLL, w: Any, held: list[tuple[int, Any]]) -> None:
    import mlx.core as mx  # not at import: this module loads during setup, before MLX may

    if w.dtype != mx.float32 or w.ndim != 2:
        return  # quantized or half-precision layers never reach cblas_sgemm
    mx.eval(w)
    view = np.asarray(w)  # zero-copy: the address MLX hands to cblas_sgemm
    if not view.flags.c_contiguous:
        return
    address = view.ctypes.data
    if lib.tokconv_pack_add(address, w.shape[0], w.shape[1]) == 0:  # the library locks its table
        held.append((address, w))


def _release(lib: ctypes.CDLL, held: list[tuple[int, Any]]) -> None:
    """Drop the packs before the weights they were made from can be freed."""
    for address, _ in held:
        lib.tokconv_pack_remove(address)
    held.clear()
