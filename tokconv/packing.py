"""Hand a loaded model's matmul weights to MKL's packed GEMM (``_mkl_pack.c``).

On Linux CPU with MKL, :func:`tokconv.runtime.setup` puts a small interposer in front of MKL's
``cblas_sgemm``. This module registers each float32 weight that MLX multiplies as ``x @ W.T``
(every ``nn.Linear``, and the embedding when the output layer is tied to it); matmuls with few
rows then run from a copy that MKL packed once. The registry keeps each weight array alive, so its
memory cannot be reused by another array while its pack is in use, and drops the packs when the
model is garbage-collected. Results are MKL's own GEMM in another blocking order: equal to the
plain call up to float32 rounding.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tokconv import runtime

_max_rows = runtime.pack_max_rows()


@dataclass(frozen=True)
class PackStats:
    """Process-wide counters of the interposer."""

    calls: int  # cblas_sgemm calls since the process started
    packed_calls: int  # of which answered from a pack
    reserved_bytes: int  # address space reserved for packs (MKL writes about the weights' size)


def available() -> bool:
    """True where the interposer is loaded (Linux CPU, MKL, gcc, not ``TOKCONV_NO_PACK=1``)."""
    return runtime.packer() is not None


def stats() -> PackStats | None:
    """The interposer's counters, or None where it is off."""
    lib = runtime.packer()
    if lib is None:
        return None
    out = (ctypes.c_longlong * 3)()
    lib.tokconv_pack_stats(out)
    return PackStats(int(out[0]), int(out[1]), int(out[2]))


@contextmanager
def max_rows(rows: int) -> Iterator[None]:
    """Inside the block, matmuls with at most ``rows`` rows use the packs (0: none do); for
    side-by-side measurements and tests. Process-wide, like the BLAS thread count."""
    global _max_rows
    lib = runtime.packer()
    if lib is None:
        yield
        return
    before = _max_rows
    lib.tokconv_pack_set_max_rows(rows)
    _max_rows = rows
    try:
        yield
    finally:
        lib.tokconv_pack_set_max_rows(before)
        _max_rows = before


def matmul_weights(model: Any) -> list[Any]:
    """The 2-D weights that ``model`` multiplies as ``x @ W.T``: its Linear layers, and the
    embedding when there is no separate ``lm_head`` (mlx-lm's tied output layer)."""
    import mlx.nn as nn

    modules = model.named_modules()
    weights = [m.weight for _, m in modules if isinstance(m, nn.Linear)]
    if not any(name.rsplit(".", 1)[-1] == "lm_head" for name, _ in modules):
        weights += [m.weight for _, m in modules if isinstance(m, nn.Embedding)]
    return weights


def pack_model(model: Any) -> int:
    """Register ``model``'s float32 matmul weights; returns how many were packed (0 where off)."""
    lib = runtime.packer()
    if lib is None or _max_rows == 0:  # TOKCONV_PACK_MAX_ROWS=0: no call would use a pack
        return 0
    held: list[tuple[int, Any]] = []
    # MKL lays a pack out for the threads it is made with: one made on 1 thread ran 2-thread
    # calls at 1-thread speed. compute(1) gives the most threads any call will use.
    with runtime.compute(1):
        for w in matmul_weights(model):
            _add(lib, w, held)
    if held:
        weakref.finalize(model, _release, lib, held)
    return len(held)


def _add(lib: ctypes.CDLL, w: Any, held: list[tuple[int, Any]]) -> None:
    import mlx.core as mx
    import numpy as np

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
