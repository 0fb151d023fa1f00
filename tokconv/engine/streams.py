"""How one model call is spread over the CPU: row groups, CPU streams, waves, and the logits budget.

MLX runs its non-BLAS ops on one thread per stream, so on a CPU a batch is split over two
streams (one BLAS thread each) and a single sequence gets one stream with every core
(:func:`tokconv.fastpath.threads.compute`). A call's logits are kept under
:data:`LOGITS_BUDGET_BYTES` by taking fewer rows; calls then run in waves of one per stream.
"""

from __future__ import annotations

import os
import threading
import queue
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

import mlx.core as mx

from .. import fastpath
from ..fastpath import threads

# Logits and the head's temporaries take up to ~12 bytes per forwarded token per vocabulary entry
# (MLX's head on a GPU; on CPU the numpy/C head adds only ~1 MB chunks to the 4-byte logits).
# One model call keeps them under this budget by taking fewer rows (unsplit, Qwen's 151,936-token
# vocabulary at 32 x 256 needed tens of GB).
LOGITS_BUDGET_BYTES = 512 << 20

T = TypeVar("T")
_calls: "queue.SimpleQueue | None" = None
_calls_pid = 0
_calls_ident: int | None = None
_calls_lock = threading.Lock()


def max_rows(n_tokens: int, vocab_size: int) -> int:
    """How many rows of ``n_tokens`` one model call may take within :data:`LOGITS_BUDGET_BYTES` (>= 1)."""
    return max(1, LOGITS_BUDGET_BYTES // max(1, 12 * n_tokens * vocab_size))


def n_streams() -> int:
    """Streams that run at once: two on CPU (one thread each for MLX's non-BLAS ops), one on a GPU."""
    return 2 if fastpath.setup().device == "cpu" else 1


def row_groups(batch: int, limit: int | None = None) -> list[slice]:
    """Split a batch into row groups: one per stream (a single sequence stays whole), more when
    a group would exceed ``limit`` rows."""
    n = min(batch, n_streams())
    if limit:
        n = max(n, -(-batch // limit))
    bounds = [round(k * batch / n) for k in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def streams(n: int) -> list[Any]:
    """``n`` streams to run calls on: the default stream for one, this thread's CPU streams for more."""
    return [mx.default_stream(mx.default_device())] if n == 1 else threads.cpu_streams(n)


def _serve(jobs: "queue.SimpleQueue") -> None:
    global _calls_ident
    _calls_ident = threading.get_ident()
    while True:
        fn, args, kwargs, done = jobs.get()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001  (raised again in the caller's thread)
            done.set_exception(exc)
        del fn, args, kwargs, done


def on_call_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on this process's model-call thread and return what it returns (its exceptions
    are raised here); the caller waits.

    MLX's streams belong to the thread that made them and ``mx.compile``'s traces to their
    stream, so calls made from short-lived threads (the dashboard runs every script run in a new
    thread) would trace every input shape again on each run, tens of milliseconds a shape. All
    model calls run on one long-lived daemon thread instead, which keeps its streams and traces.
    """
    global _calls, _calls_pid
    if threading.get_ident() == _calls_ident:
        return fn(*args, **kwargs)
    with _calls_lock:
        if _calls is None or _calls_pid != os.getpid():  # a forked child has the queue, not the thread
            _calls, _calls_pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=_serve, args=(_calls,), name="tokconv-calls", daemon=True).start()
        jobs = _calls
    done: Future = Future()
    jobs.put((fn, args, kwargs, done))
    return done.result()
