"""Compact weights for short model calls (``_compact.c``): one byte per weight plus a scale and an
offset per 16, multiplied by a C kernel built for this CPU.

Experiments make short calls (1 to a few dozen rows), and those are bound by reading the weights:
float32 weights cost 4 bytes per weight per call, the compact form 1.5. A model dequantized from a
GGUF file or from MLX's 4/8-bit groups holds at most 256 levels in every group of 16 weights, so
the compact form is exact there: :func:`compact_model` accepts a matrix only when every weight is
reproduced within a few float32 ulps, and products differ from BLAS by summation order only.
Matrices without that structure (float16 or bfloat16 originals) stay on BLAS.

The interposer in front of the BLAS (:mod:`.packing` for MKL, the OpenBLAS shim of :mod:`.blas`)
asks this library first; products with at most :func:`row_limit` rows of a registered weight
are answered here, every other product goes to the BLAS. ``TOKCONV_NO_COMPACT=1`` turns it off,
``TOKCONV_COMPACT_MAX_ROWS`` moves the crossover (``bench/compact_curve.py`` measures it).

It is on by default only where the kernel was written for the CPU: AVX-512 or AVX2 (x86-64). On
other CPUs (x86-64 without AVX2, ARM) gcc's generic vectors are all it has, and where measured they
ran slower than float32 BLAS, so products stay on BLAS there and the fast-path notice says why;
``TOKCONV_COMPACT=1`` turns compact weights on anyway.

Where the CPU has AVX-512 VNNI, the inputs of a product are rounded to 16-bit integers (one scale
per 16 values) so that each group's products run as integer dot products, twice as many per
instruction as float32 ones. That changes predictions a little: ``bench/native_calls.py`` measures
the argmax agreement with float32 inputs (BENCHMARKS.md), and ``tests/test_compact.py`` and
``tests/test_native.py`` hold it to at least 99.5% on every bundled model. ``TOKCONV_NO_INT16=1`` keeps float32 inputs.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .build import built, cpu_flags, setting

_SOURCE = Path(__file__).with_name("_compact.c")
DEFAULT_MAX_ROWS = 48  # bench/compact_curve.py: compact ahead of MKL up to ~56 rows on both cores
_lib: ctypes.CDLL | None = None
_tried = False  # library() was asked once: built, or not buildable here
_declined: str | None = None  # why a built library is not used here (declined())
_hooked = False  # an interposer in front of the BLAS calls the kernel (set by .blas)

# tokconv_compact_add's answers
REFUSED = {3: "out of memory", 4: "table full", 5: "not on an 8-bit grid", 6: "shape not a multiple of 16",
           7: "compact weights are off here"}


def enabled() -> bool:
    """False when the user turned compact weights off (``TOKCONV_NO_COMPACT=1``)."""
    return os.environ.get("TOKCONV_NO_COMPACT") != "1"


def forced() -> bool:
    """True when the user asked for compact weights even without a kernel for this CPU
    (``TOKCONV_COMPACT=1``)."""
    return os.environ.get("TOKCONV_COMPACT") == "1"


KERNELS = {2: "AVX-512", 1: "AVX2", 0: "generic vectors"}  # tokconv_compact_kernel's answers


def kernel(lib: ctypes.CDLL) -> str:
    """Which float32 kernel a build of ``_compact.c`` has: ``KERNELS``."""
    return KERNELS.get(int(lib.tokconv_compact_kernel()), "generic vectors")


def declined(lib: ctypes.CDLL) -> str | None:
    """Why a build of ``_compact.c`` is not used by default (its kernel was written for no CPU
    feature this one has), for the fast-path notice; None where it is used."""
    if kernel(lib) != "generic vectors" or forced():
        return None
    return ("compact 8-bit weights off: their kernel needs AVX2 or AVX-512, which this CPU lacks"
            " (TOKCONV_COMPACT=1 turns them on)")


def declined_reason() -> str | None:
    """Why this process runs without compact weights although they were built, or None."""
    library()
    return _declined


def row_limit() -> int:
    """Most rows a product may have to run on compact weights: ``TOKCONV_COMPACT_MAX_ROWS``."""
    try:
        return max(0, int(os.environ.get("TOKCONV_COMPACT_MAX_ROWS", str(DEFAULT_MAX_ROWS))))
    except ValueError:
        return DEFAULT_MAX_ROWS


def int16_wanted() -> bool:
    """False when the user asked for float32 inputs (``TOKCONV_NO_INT16=1``)."""
    return os.environ.get("TOKCONV_NO_INT16") != "1"


def library() -> ctypes.CDLL | None:
    """The kernel library, built on first use (None where off or where gcc cannot build it)."""
    global _lib, _tried, _declined
    if _tried:
        return _lib
    _tried = True
    if not enabled():
        return None
    try:
        lib = build()
    except OSError:
        return None  # plain BLAS: correct, only slower for short calls
    _declined = declined(lib)
    if _declined is not None:
        return None
    _lib = lib
    return _lib


# The kernel as built for other CPUs than this one (on an x86-64 CPU with AVX2), for the tests and
# bench/compact_builds.py: the AVX2 code as on a CPU without AVX-512, and gcc's generic vectors as on
# a CPU with neither (what ARM or an old x86-64 gets).
OTHER_CPUS = {"AVX2": ("-mno-avx512f",), "generic vectors": ("-mno-avx512f", "-mno-avx2", "-mno-fma")}


def build(extra: tuple[str, ...] = ()) -> ctypes.CDLL:
    """A build of ``_compact.c`` for this CPU (or with ``extra`` gcc flags, as ``OTHER_CPUS``), loaded
    with its argument types declared; each build is a library of its own (its own registered
    matrices and threads). Raises OSError where gcc cannot build it."""
    return declare(ctypes.CDLL(str(built(_SOURCE, ["-O3", "-march=native", *extra, "-lpthread"], cpu_flags()))))


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """``lib`` (a build of ``_compact.c``) with its functions' argument types and this process's
    settings (row limit, int16 inputs)."""
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.tokconv_compact_add.argtypes = [p, i, i]
    lib.tokconv_compact_remove.argtypes = [p]
    lib.tokconv_compact_gemm.argtypes = [i, i, i, p, i, p, ctypes.c_float, p, i, i]
    lib.tokconv_compact_size.argtypes = [i, i]
    lib.tokconv_compact_size.restype = ctypes.c_longlong
    lib.tokconv_compact_build.argtypes = [p, i, i, p]
    lib.tokconv_compact_add_built.argtypes = [p, i, i, p]
    lib.tokconv_compact_add_alias.argtypes = [p, i, i, p]
    lib.tokconv_compact_verify.argtypes = [p, i, i, p, i]
    lib.tokconv_compact_kernel.restype = i
    lib.tokconv_compact_set_max_rows(row_limit())
    lib.tokconv_compact_set_int16(int(int16_wanted()))
    return lib


def hook_address() -> int | None:
    """The address of ``tokconv_compact_sgemm``, for the interposer to call first; None where off."""
    lib = library()
    return None if lib is None else ctypes.cast(lib.tokconv_compact_sgemm, ctypes.c_void_p).value


def set_hooked() -> None:
    """Record that an interposer calls the kernel (called by :mod:`.blas` once it is in place)."""
    global _hooked
    _hooked = True


def active() -> bool:
    """True where products on registered weights really run here (library built and hooked)."""
    return _hooked and library() is not None


def set_threads(n: int) -> None:
    """Threads per product (the BLAS thread count of :mod:`.threads` is mirrored here)."""
    if _lib is not None:
        _lib.tokconv_compact_set_threads(int(n))


@dataclass(frozen=True)
class CompactStats:
    """Process-wide counters of the kernel."""

    calls: int  # products offered: by the interposer, or asked for directly (tokconv.engine.native)
    compact_calls: int  # of which answered from compact weights
    bytes: int  # memory held by compact weights


def stats() -> CompactStats | None:
    """The kernel's counters, or None where it is off."""
    lib = _lib
    if lib is None:
        return None
    out = (ctypes.c_longlong * 3)()
    lib.tokconv_compact_stats(out)
    return CompactStats(int(out[0]), int(out[1]), int(out[2]))


def current_max_rows() -> int:
    """Most rows a product may have to run on compact weights right now (0 where off)."""
    return int(_lib.tokconv_compact_get_max_rows()) if _lib is not None and _hooked else 0


@contextmanager
def max_rows(rows: int) -> Iterator[None]:
    """Inside the block, products with at most ``rows`` rows use compact weights (0: none do); for
    side-by-side measurements and tests. Process-wide."""
    lib = _lib
    with setting(lib and lib.tokconv_compact_get_max_rows, lib and lib.tokconv_compact_set_max_rows, rows):
        yield


def int16_inputs() -> bool:
    """True where products on compact weights round their inputs to 16-bit integers right now
    (this CPU has AVX-512 VNNI and ``TOKCONV_NO_INT16`` is not set)."""
    return _lib is not None and bool(_lib.tokconv_compact_get_int16())


@contextmanager
def int16(on: bool) -> Iterator[None]:
    """Inside the block, products round their inputs to int16 (``on``) or keep them float32; for
    side-by-side measurements and tests. Process-wide."""
    lib = _lib
    with setting(lib and lib.tokconv_compact_get_int16, lib and lib.tokconv_compact_set_int16, int(on)):
        yield


def add(weight: np.ndarray) -> int:
    """Register a C-contiguous float32 matrix (kept by the caller); 0 on success, else a code of
    :data:`REFUSED` (or -1: already registered)."""
    lib = library()
    if lib is None:
        return 7
    return int(lib.tokconv_compact_add(weight.ctypes.data, weight.shape[0], weight.shape[1]))


def remove(weight: np.ndarray) -> None:
    """Forget a matrix registered with :func:`add` (before its memory can be freed)."""
    if _lib is not None:
        _lib.tokconv_compact_remove(weight.ctypes.data)


def gemm(x: np.ndarray, weight: np.ndarray, threads: int = 1) -> np.ndarray:
    """``x @ weight.T`` on the compact form of a registered ``weight`` (for tests and benchmarks)."""
    lib = library()
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], weight.shape[0]), dtype=np.float32)
    if lib is None or lib.tokconv_compact_gemm(x.shape[0], weight.shape[0], weight.shape[1], x.ctypes.data,
                                               x.shape[1], weight.ctypes.data, 0.0, out.ctypes.data,
                                               out.shape[1], threads) != 0:
        raise ValueError("this weight has no compact form")
    return out


@dataclass(frozen=True)
class CompactReport:
    """What :func:`compact_model` did to one model."""

    matrices: int  # matmul weights offered
    compact: int  # of which now compact
    weights: int  # weights (values) in compact matrices
    bytes: int  # memory they take in compact form
    refused: tuple[str, ...] = ()  # "name: reason" for matrices left on BLAS

    @property
    def complete(self) -> bool:
        """Every matrix offered has a compact form (short products never reach the BLAS)."""
        return self.compact == self.matrices


# The cache folder's name: bump when struct block in _compact.c changes.
CACHE_FORMAT = "compact-v1"
# Groups of 16 weights a cache file is checked on against the float32 matrix it stands for. A file
# of another matrix fails on its first groups; a damaged one is caught with a chance that grows with
# the samples. Against a weights file left on disk (read-only views, .lazy), each sample may read a
# page of it, which a first run after a reboot waits for: fewer there.
VERIFY_SAMPLES = 4096
VERIFY_SAMPLES_IN_FILE = 64


def compact_model(model: Any, weights: list[tuple[str, Any]], cache: Path | None = None,
                  files: dict[str, np.ndarray] | None = None) -> CompactReport | None:
    """Register ``model``'s float32 matmul ``weights`` ((name, mx.array) pairs); the compact forms
    live as long as the model. None where compact weights are off or not hooked in.

    With ``cache`` (a folder the caller owns, beside converted weights), each compact form is
    written there once and memory-mapped on later loads, instead of being fitted again. With
    ``files`` (``{tensor name: float32 view}`` of the model's own files, :mod:`.filemap`), a weight
    whose file holds exactly its values is registered under its file view and left unevaluated:
    :func:`waiting` lists those, and :func:`alias` registers them under MLX's buffers later."""
    if not active():
        return None
    import mlx.core as mx  # not at import: this module loads during setup, before MLX may

    held: list[tuple[np.ndarray, Any, Any]] = []  # (view, array, mapped file): the array keeps the memory alive
    late: list[tuple[Any, np.ndarray, Any]] = []  # (array, file view, mapped file) of weights left in their file
    refused: list[str] = []
    n_weights = n_bytes = 0
    folder = cache / CACHE_FORMAT if cache is not None else None
    for name, w in weights:
        if w.dtype != mx.float32 or w.ndim != 2:
            continue
        in_file = (files or {}).get(f"{name}.weight")
        if in_file is not None and in_file.shape == tuple(w.shape) and folder is not None:
            view = in_file  # the same values, nothing read yet
        else:
            in_file = None
            mx.eval(w)
            view = np.asarray(w)  # zero-copy: the address MLX hands to cblas_sgemm
        mapped = None
        if not view.flags.c_contiguous:
            rc = 6
        elif folder is not None:
            rc, mapped = _add_cached(view, folder / f"{name}.{view.shape[0]}x{view.shape[1]}.bin", in_file=in_file is not None)
        else:
            rc = add(view)
        if rc == 0:
            held.append((view, w, mapped))
            n_weights += view.size
            n_bytes += view.size * 3 // 2
            if in_file is not None:
                late.append((w, in_file, mapped))
        elif rc != -1:
            refused.append(f"{name}: {REFUSED.get(rc, f'code {rc}')}")
    if held:
        _registered[id(model)] = (weakref.ref(model), held, late)
        weakref.finalize(model, _release, id(model), held)
    return CompactReport(len(weights), len(held), n_weights, n_bytes, tuple(refused))


# id(model) -> (its weakref, what it registered, the weights it left in their file): for alias()
_registered: dict[int, tuple[Any, list, list]] = {}


def waiting(model: Any) -> list[tuple[Any, np.ndarray]]:
    """(MLX array, file view) of the weights :func:`compact_model` registered from ``model``'s file
    without evaluating them."""
    entry = _registered.get(id(model))
    return [(w, view) for w, view, _ in entry[2]] if entry is not None and entry[0]() is model else []


def alias(model: Any, replaced: dict[int, Any]) -> None:
    """Register the compact forms of weights :func:`waiting` listed under the evaluated arrays that
    replace them in ``model`` (``{id(old array): new array}``): MLX's own buffers, where the
    interposer looks them up."""
    entry = _registered.get(id(model))
    if entry is None or entry[0]() is not model:
        return
    lib, held, late = library(), entry[1], entry[2]
    for w, _, mapped in [t for t in late if id(t[0]) in replaced]:
        new = replaced[id(w)]
        view = np.asarray(new)
        if lib is None or not view.flags.c_contiguous:
            continue
        if mapped is not None:
            rc = int(lib.tokconv_compact_add_alias(view.ctypes.data, view.shape[0], view.shape[1], mapped.ctypes.data))
        else:  # registered without a cache file (an unwritable folder): fitted again
            rc = add(view)
        if rc == 0:
            held.append((view, new, mapped))
    late[:] = [t for t in late if id(t[0]) not in replaced]


def _add_cached(view: np.ndarray, path: Path, again: bool = True, in_file: bool = False) -> tuple[int, np.ndarray | None]:
    """Register ``view`` from its cache file, building and writing the file first if needed.
    Falls back to :func:`add` where the cache cannot be written (read-only folder, full disk).
    ``in_file``: ``view`` maps a weights file on disk (checked on fewer samples: VERIFY_SAMPLES_IN_FILE)."""
    lib = library()
    if lib is None:
        return 7, None
    n, k = view.shape
    size = int(lib.tokconv_compact_size(n, k))
    if size == 0:
        return 6, None
    if not (path.is_file() and path.stat().st_size == size):
        blocks = np.empty(size, dtype=np.uint8)
        rc = int(lib.tokconv_compact_build(view.ctypes.data, n, k, blocks.ctypes.data))
        if rc != 0:
            return rc, None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            blocks.tofile(tmp)
            os.replace(tmp, path)  # whole or absent: a killed load leaves no half file under the name
        except OSError:
            return add(view), None
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    samples = VERIFY_SAMPLES_IN_FILE if in_file else VERIFY_SAMPLES
    if lib.tokconv_compact_verify(view.ctypes.data, n, k, mapped.ctypes.data, samples) != 0:
        del mapped  # not this matrix's compact form (a damaged or foreign file): build it again
        path.unlink(missing_ok=True)
        return _add_cached(view, path, again=False, in_file=in_file) if again else (add(view), None)
    rc = int(lib.tokconv_compact_add_built(view.ctypes.data, n, k, mapped.ctypes.data))
    return rc, mapped if rc == 0 else None


def _release(key: int, held: list[tuple[np.ndarray, Any, Any]]) -> None:
    _registered.pop(key, None)
    for view, _, _ in held:
        remove(view)  # before the mapped file can be closed
    held.clear()
