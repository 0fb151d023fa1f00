"""Choose and load an optimized BLAS into the process before MLX binds ``cblas_sgemm``.

The ``mlx-cpu`` wheel links netlib's reference BLAS. Loading another library that exports
``cblas_sgemm`` into the global symbol scope first makes libmlx use it. Intel's MKL is first on
Intel CPUs (its small-row GEMMs are faster there; see BENCHMARKS.md), with :mod:`.packing`'s
interposer in front of it; OpenBLAS elsewhere, from Debian or from the ``scipy-openblas32`` wheel
behind a small shim (``_blas_shim.c``) that exports the unprefixed ``cblas_*`` names. Both the
interposer and the shim hand short products on compact weights to :mod:`.compact` first.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from . import compact, packing, threads
from .build import built, cpu_vendor

_SHIM_SOURCE = Path(__file__).with_name("_blas_shim.c")
_DEBIAN_OPENBLAS = "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0"


def setup_blas(warnings: list[str]) -> str | None:
    """Load the best BLAS found; returns its label for the notice, or None (and a warning) for none."""
    if os.environ.get("TOKCONV_NO_FAST_BLAS") == "1":
        warnings.append("fast BLAS off (TOKCONV_NO_FAST_BLAS=1): matmul on the reference BLAS, ~30x slower")
        return None
    if provider := sgemm_provider():  # LD_PRELOAD, or an earlier setup() in this process
        return f"{os.path.basename(provider)} (preloaded)"
    if "mlx.core" in sys.modules:
        warnings.append("mlx.core was imported before tokconv's fast-path setup, so matmul stays on the"
                        " reference BLAS: import tokconv first, or LD_PRELOAD an OpenBLAS")
        return None
    errors = []
    for label, load in blas_candidates():
        try:
            load()
        except OSError as exc:
            errors.append(f"{label}: {str(exc).strip()[:200]}")
            continue
        if sgemm_provider():
            packed = f" with packed weights (<= {packing.row_limit()} rows)" if packing.loaded() and packing.packs_enabled() else ""
            if hook_compact():
                int16 = compact.int16_inputs()
                packed += (f", compact 8-bit weights{' with int16 inputs' * int16} (<= {compact.row_limit()} rows,"
                           " and one-sequence calls in C; TOKCONV_NO_COMPACT=1"
                           f"{' / TOKCONV_NO_INT16=1' * int16} / TOKCONV_NO_NATIVE=1 turn them off)")
            elif reason := compact.declined_reason():
                packed += f", {reason}"
            return label + packed + threads.default_blas_threads()
        errors.append(f"{label}: exports no cblas_sgemm")
    fix = "; ".join(errors) or "pip install scipy-openblas32 (needs gcc) or apt-get install libopenblas0-pthread"
    warnings.append(f"no optimized BLAS, matmul ~30x slower: {fix}")
    return None


def blas_candidates() -> list[tuple[str, Callable[[], object]]]:
    """(label, loader) pairs in order of preference."""
    out: list[tuple[str, Callable[[], object]]] = []
    if env := os.environ.get("TOKCONV_BLAS"):
        out.append((f"{os.path.basename(env)} (TOKCONV_BLAS)", lambda: ctypes.CDLL(env, ctypes.RTLD_GLOBAL)))
    if (mkl := mkl_library()) is not None:
        out.append((f"MKL {mkl[1]}", lambda: _load_mkl(mkl[0])))
    for path in sorted(glob.glob(_DEBIAN_OPENBLAS)):
        out.append(("OpenBLAS (Debian libopenblas0-pthread)", lambda p=path: ctypes.CDLL(p, ctypes.RTLD_GLOBAL)))
    if (spec := importlib.util.find_spec("scipy_openblas32")) and spec.origin:
        pkg = os.path.dirname(spec.origin)
        dist = glob.glob(os.path.join(pkg, "..", "scipy_openblas32-*.dist-info"))
        version = dist[0].removesuffix(".dist-info").rsplit("-", 1)[1] if dist else "?"
        lib = os.path.join(pkg, "lib", "libscipy_openblas.so")
        out.append((f"OpenBLAS (scipy-openblas32 {version}, shim)", lambda: _load_shimmed(lib, ())))
    if (spec := importlib.util.find_spec("numpy")) and spec.origin:  # 64-bit ints, `64_` suffix
        libs = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "numpy.libs")
        for path in glob.glob(os.path.join(libs, "libscipy_openblas64_*.so"))[:1]:
            ilp64 = ("-DBLASINT=long", "-DSUFFIX=64_")
            out.append(("OpenBLAS (numpy's bundled copy, shim)", lambda p=path, d=ilp64: _load_shimmed(p, d)))
    return out


def mkl_library() -> tuple[str, str] | None:
    """(path of libmkl_rt, version) from the ``mkl`` wheel on an Intel CPU, unless ``TOKCONV_NO_MKL=1``.

    Intel only: MKL picks slower code paths on other vendors' CPUs, where OpenBLAS stays first
    (measured on an AMD EPYC Zen 4, see BENCHMARKS.md)."""
    if os.environ.get("TOKCONV_NO_MKL") == "1" or b"GenuineIntel" not in cpu_vendor():
        return None
    try:
        dist = metadata.distribution("mkl")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name.startswith("libmkl_rt.so"):
            return os.path.realpath(f.locate()), dist.version
    return None


def _load_mkl(path: str) -> None:
    """Load MKL's single dynamic library, threaded by Intel OpenMP when its wheel is beside it.

    ``KMP_BLOCKTIME=0``: an idle OpenMP thread sleeps at once instead of spinning 200 ms on a core
    that the next call's second CPU stream, or the numpy head, needs."""
    if os.path.exists(os.path.join(os.path.dirname(path), "libiomp5.so")):
        os.environ.setdefault("MKL_THREADING_LAYER", "INTEL")
        os.environ.setdefault("KMP_BLOCKTIME", "0")
    else:
        os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")
    os.environ.setdefault("MKL_INTERFACE_LAYER", "LP64")  # MLX passes 32-bit ints
    ctypes.CDLL(path)  # raises here if MKL cannot load, before anything is global
    packing.load_in_front_of(path, lambda: ctypes.CDLL(path, ctypes.RTLD_GLOBAL))


def _load_shimmed(lib: str, defines: tuple[str, ...]) -> None:
    """Load ``lib`` behind a cached shim (see ``_blas_shim.c``) exporting ``cblas_*gemm``."""
    lib = os.path.realpath(lib)
    st = os.stat(lib)
    shim = built(_SHIM_SOURCE, [*defines, "-Wl,--no-as-needed", lib, f"-Wl,-rpath,{os.path.dirname(lib)}"],
                  lib.encode(), f"{st.st_size}:{st.st_mtime_ns}".encode())
    ctypes.CDLL(str(shim), mode=ctypes.RTLD_GLOBAL)


def hook_compact() -> bool:
    """Point the interposer in front of the BLAS at the compact-weight kernel; False where either
    is missing (another BLAS, no gcc, ``TOKCONV_NO_COMPACT=1``, ``TOKCONV_NO_PACK=1`` on MKL)."""
    setter = getattr(ctypes.CDLL(None), "tokconv_set_compact_hook", None)
    if setter is None or compact.row_limit() == 0 or (address := compact.hook_address()) is None:
        return False
    setter(ctypes.c_void_p(address))
    compact.set_hooked()
    return True


class _DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]


def sgemm_provider() -> str | None:
    """Path of the library that a global lookup of ``cblas_sgemm`` finds, if any."""
    process = ctypes.CDLL(None)
    try:
        addr = ctypes.cast(process.cblas_sgemm, ctypes.c_void_p)
    except AttributeError:
        return None
    info = _DlInfo()
    path = info.fname.decode() if process.dladdr(addr, ctypes.byref(info)) and info.fname else ""
    return path if path and "mlx_cpu.libs" not in path else None  # not the wheel's reference BLAS
