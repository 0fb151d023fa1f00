"""The scoring head: from logits (B, n, V) to argmax, its probability, the entropy and whether the
row's logits were all finite (each (B, n)).

A row with a NaN or an infinity is flagged, and its argmax is 0: what numpy's and MLX's argmax give
over NaN, so that an audited run shows what an unchecked one would have done (id 0 is ``!`` in the
Llama 3 and Qwen2 vocabularies).

On a GPU it is :func:`tokconv.fastpath.kernels.entropy_head`, run by MLX where the logits are. On CPU
it runs over the evaluated logits in place (``np.asarray`` of an MLX array shares its memory),
a share of the rows on each core: a small C loop (``_head.c``, built once by gcc, two passes per
row) or, where it cannot be built, numpy over chunks that stay in L2. Written by hand for CPU
because MLX's CPU reductions (max, argmax, sum) are scalar and walk the whole (B·n, V) array once
per op, out of cache (see BENCHMARKS.md for the measured difference).
"""

from __future__ import annotations

import ctypes
import platform
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np

from .. import fastpath
from ..fastpath import threads
from ..fastpath.build import built, cpu_flags
from ..fastpath.kernels import entropy_head

# Rows per chunk: about 1 MB of float32 logits, so that the chunk and its two temporaries stay in L2.
CHUNK_BYTES = 1 << 20

_SOURCE = Path(__file__).with_name("_head.c")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_c_rows: object = None  # the C function once built; False where it cannot be


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(threads.cores(), thread_name_prefix="tokconv-head")
        return _pool


def _c_head() -> object:
    """``tokconv_entropy_rows`` from ``_head.c``, built on first use; None without gcc."""
    global _c_rows
    with _pool_lock:
        if _c_rows is None:
            args = ["-O3", "-march=native", "-ffast-math", "-lm"]
            if platform.machine() in ("x86_64", "AMD64"):
                args.insert(2, "-mprefer-vector-width=512")  # gcc keeps to 256-bit vectors otherwise
            try:
                fn = ctypes.CDLL(str(built(_SOURCE, args, cpu_flags()))).tokconv_entropy_rows
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32] + [ctypes.c_void_p] * 4
                fn.restype = None
                _c_rows = fn
            except OSError:
                _c_rows = False
        return _c_rows or None


def entropy_rows(x: np.ndarray, argmax: np.ndarray, prob: np.ndarray, entropy: np.ndarray,
                 finite: np.ndarray) -> None:
    """Fill ``argmax`` (int64), ``prob`` and ``entropy`` (float32) and ``finite`` (bool), each (R,),
    from float32 logits ``x`` (R, V): in C where it is built (ctypes releases the GIL), else
    :func:`entropy_rows_numpy`."""
    fn = _c_head()
    ok = (x.dtype == prob.dtype == entropy.dtype == np.float32 and argmax.dtype == np.int64
          and finite.dtype == np.bool_ and x.shape[1] < 2**31
          and all(a.flags.c_contiguous for a in (x, argmax, prob, entropy, finite)))
    if fn is None or not ok:
        entropy_rows_numpy(x, argmax, prob, entropy, finite)
        return
    fn(x.ctypes.data, x.shape[0], x.shape[1], argmax.ctypes.data, prob.ctypes.data, entropy.ctypes.data,
       finite.ctypes.data)


def entropy_rows_numpy(x: np.ndarray, argmax: np.ndarray, prob: np.ndarray, entropy: np.ndarray,
                       finite: np.ndarray) -> None:
    """:func:`entropy_rows` in numpy, chunk by chunk.

    H = log S - sum(e * d) / S with d = x - max, e = exp(d), S = sum(e); prob = 1 / S.
    """
    rows = max(1, CHUNK_BYTES // max(1, x.shape[1] * x.itemsize))
    d = np.empty((min(rows, x.shape[0]), x.shape[1]), np.float32)
    e = np.empty_like(d)
    for a in range(0, x.shape[0], rows):
        c = x[a : a + rows]
        k = c.shape[0]
        dk, ek = d[:k], e[:k]
        m = c.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are flagged, not warned about
            np.subtract(c, m, out=dk)
            np.exp(dk, out=ek)
            s = ek.sum(axis=1)
            t = np.einsum("ij,ij->i", ek, dk)  # einsum, not dot: no BLAS threads of numpy's own
            ok = np.isfinite(m[:, 0]) & np.isfinite(s) & np.isfinite(t)
            argmax[a : a + k] = np.where(ok, c.argmax(axis=1), 0)
            finite[a : a + k] = ok
            prob[a : a + k] = 1.0 / s
            entropy[a : a + k] = np.log(s) - t / s


def predict(logits: list) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """argmax (int64), probability and entropy (float32) and finite (bool), each (B, n), for each
    array of logits (B, n, V): MLX arrays or numpy float32 arrays.

    The logits must already be evaluated on CPU. On a GPU the head runs in MLX instead.
    """
    if fastpath.setup().device != "cpu":
        outs = [entropy_head(lg) for lg in logits]
        mx.eval(outs)
        return [tuple(np.array(a) for a in out) for out in outs]
    # One share of all rows per core; numpy releases the GIL inside its loops. A numpy view of an
    # MLX array holds a reference to it, so the logits live until their jobs are done.
    total = sum(lg.shape[0] * lg.shape[1] for lg in logits)
    share = max(1, -(-total // threads.cores()))
    results, jobs = [], []
    for lg in logits:
        if isinstance(lg, np.ndarray):  # a native call's logits (tokconv.engine.native)
            x = np.ascontiguousarray(lg, np.float32)
        else:
            x = np.asarray(lg if lg.dtype == mx.float32 else lg.astype(mx.float32))
        B, n, V = x.shape
        flat = x.reshape(B * n, V)
        out = (np.empty(B * n, np.int64), np.empty(B * n, np.float32), np.empty(B * n, np.float32),
               np.empty(B * n, np.bool_))
        results.append((out, (B, n)))
        jobs += [(flat[a : a + share], *(o[a : a + share] for o in out)) for a in range(0, B * n, share)]
    if len(jobs) == 1:
        entropy_rows(*jobs[0])
    else:
        for f in [_executor().submit(entropy_rows, *job) for job in jobs]:
            f.result()
    return [tuple(a.reshape(shape) for a in out) for out, shape in results]
