"""CPU threads for model calls: cores, BLAS threads per call, and CPU streams per thread.

:func:`compute` is a no-op until :func:`enable` is called by :func:`tokconv.fastpath.setup`
(Linux CPU with an optimized BLAS), so this module never runs the setup itself.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import compact

_SET_THREADS = ("MKL_Set_Num_Threads", "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                "openblas_set_num_threads")
_GET_THREADS = ("MKL_Get_Max_Threads", "scipy_openblas_get_num_threads", "scipy_openblas_get_num_threads64_",
                "openblas_get_num_threads")

_thread_streams = threading.local()  # MLX streams belong to the thread that made them
_compute_lock = threading.RLock()
_blas_threads_now = 0
_enabled = False  # set by setup(): a CPU with an optimized BLAS whose thread count we steer


def enable() -> None:
    """Let :func:`compute` steer the BLAS thread count (called once by the fast-path setup)."""
    global _enabled
    _enabled = True


def cpu_streams(n: int) -> list[Any]:
    """``n`` CPU streams, created once per calling thread and reused: each runs MLX's non-BLAS ops
    on its own thread. MLX refuses a stream made in another thread (the dashboard runs each
    browser session's script in its own thread), hence one set per thread."""
    import mlx.core as mx  # not at import: the fast-path setup must run before MLX loads

    streams = getattr(_thread_streams, "streams", None)
    if streams is None:
        streams = _thread_streams.streams = []
    while len(streams) < n:
        streams.append(mx.new_stream(mx.cpu))
    return streams[:n]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def fixed_blas_threads() -> int | None:
    """The BLAS thread count the user fixed by environment, else None (tokconv chooses per call)."""
    for name in ("TOKCONV_BLAS_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        raw = os.environ.get(name, "")
        if raw.isdigit() and int(raw) > 0:
            return int(raw)
    return None


@contextmanager
def compute(streams: int = 1) -> Iterator[int]:
    """Hold this process's CPU for one model call that runs ``streams`` CPU streams at once.

    Yields the BLAS threads per stream: every core for a call on one stream (a single sequence),
    one core per stream for a batch split across streams. The thread count is process-wide and
    OpenBLAS and MKL threads spin while they wait, so two such calls at once (two dashboard
    sessions) would fight over the cores: calls take turns instead. A no-op off the CPU fast path.
    """
    if not _enabled:
        yield 1
        return
    with _compute_lock:
        n = fixed_blas_threads() or max(1, cores() // max(1, streams))
        if n != _blas_threads_now:
            set_blas_threads(n)
        yield n


@contextmanager
def kept() -> Iterator[None]:
    """Whatever the block does to the BLAS thread count is undone after it (a pack made inside
    a call on several streams must not leave the call's threads changed)."""
    with _compute_lock:
        before = _blas_threads_now
        try:
            yield
        finally:
            if _blas_threads_now != before and before > 0:
                set_blas_threads(before)


def set_blas_threads(n: int) -> bool:
    """Set the optimized BLAS's thread count; False when none with a known setter is loaded.

    The count is recorded here, wherever it is set from, so that :func:`compute` and :func:`kept`
    never trust a stale one (a benchmark that set 1 thread once left every later call on 1)."""
    global _blas_threads_now
    compact.set_threads(n)  # the compact-weight kernel takes the same number of threads
    process = ctypes.CDLL(None)
    setter = next((getattr(process, name) for name in _SET_THREADS if hasattr(process, name)), None)
    if setter is not None:
        setter(ctypes.c_int(n))
        _blas_threads_now = n
    return setter is not None


def get_blas_threads() -> int | None:
    """The optimized BLAS's current thread count; None when none with a known getter is loaded."""
    process = ctypes.CDLL(None)
    for name in _GET_THREADS:
        if hasattr(process, name):
            return int(getattr(process, name)())
    return None


def default_blas_threads() -> str:
    """Start with one BLAS thread (or the user's fixed count); :func:`compute` raises it per call.
    Returns the words for the notice line ("" when no known BLAS is loaded)."""
    n = fixed_blas_threads()
    if not set_blas_threads(n or 1):
        return ""
    if n:
        return f", {n} thread(s) fixed"
    return f", {cores()} threads for one sequence, 1 per stream for batches" if cores() > 1 else ", 1 thread"
