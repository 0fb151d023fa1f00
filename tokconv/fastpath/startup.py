"""Make MLX fast on Linux CPU before it is imported, say what is active, and prepare loaded models.

The ``mlx-cpu`` wheel links netlib's reference BLAS, JIT-compiles kernels without ``-march``
(scalar ``exp``/``silu``), and glibc unmaps big buffers on every free. :func:`setup` fixes all
three in-process on Linux CPU (nothing to do on Metal or CUDA): :mod:`.blas`, :mod:`.jit`.
:func:`prepare_model` then readies each loaded model for this device: float32 weights on CPU,
the vectorised attention and RoPE of :mod:`.kernels`, and MKL's packed weights (:mod:`.packing`).

Environment: ``TOKCONV_BLAS`` (a library exporting ``cblas_sgemm``), and ``=1`` switches
``TOKCONV_NO_FAST_BLAS``, ``TOKCONV_NO_MKL``, ``TOKCONV_NO_JIT_FLAGS``, ``TOKCONV_NO_MALLOC_TUNING``,
``TOKCONV_NO_REEXEC``, ``TOKCONV_NO_FAST_EXP`` (mlx-lm's own attention and RoPE),
``TOKCONV_NO_COMPILE`` (uncompiled model calls, :mod:`tokconv.engine.forward`), ``TOKCONV_NO_SHAPELESS``
(a trace per input shape, :mod:`tokconv.engine.lean`), ``TOKCONV_NO_PACK`` (no MKL
packed weights), ``TOKCONV_NO_COMPACT`` (no compact 8-bit weights, :mod:`.compact`), ``TOKCONV_NO_INT16``
(float32 inputs to products on compact weights, not int16: :mod:`.compact`), ``TOKCONV_NO_NATIVE``
(one-sequence calls through MLX, not in C: :mod:`tokconv.engine.native`), ``TOKCONV_EAGER_WEIGHTS`` (every
weight loaded at load time, none left in its file: :mod:`.lazy`);
``TOKCONV_PACK_MAX_ROWS`` (most rows a packed matmul may have, 1024), ``TOKCONV_COMPACT_MAX_ROWS``;
``TOKCONV_BLAS_THREADS`` fixes the BLAS thread count (``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` too).
``TOKCONV_COMPACT=1`` turns compact weights on where the kernel has no code for the CPU (neither AVX2
nor AVX-512: :mod:`.compact`).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import compact, lazy, packing, threads
from .blas import setup_blas
from .jit import setup_allocator, setup_jit


@dataclass(frozen=True)
class RuntimeInfo:
    """What :func:`setup` found and switched on."""

    device: str  # "cpu" or "gpu"
    blas: str | None  # e.g. "OpenBLAS (scipy-openblas32 0.3.30, shim)", "Metal"; None = reference BLAS
    compiler_flags: bool  # the g++ wrapper is first on PATH for MLX's JIT
    allocator: bool  # glibc keeps big freed buffers (tunables or mallopt)
    warnings: tuple[str, ...] = ()
    fast_exp: bool = False  # mlx-lm attention uses the vectorised softmax of .kernels

    def notice(self) -> str:
        """One line for logs and the dashboard: the active path, or what is missing and the fix."""
        if self.device != "cpu":
            return f"tokconv native path: MLX on GPU ({self.blas}), quantized weights"
        parts = [self.blas or "reference BLAS"]
        parts += ["tuned JIT flags"] * self.compiler_flags + ["vectorised exp"] * self.fast_exp
        parts += ["malloc tuned"] * self.allocator
        head = "tokconv CPU path: " if self.warnings else "tokconv fast path: "
        return head + ", ".join([*parts, "fp32 weights"]) + "".join(f" | {w}" for w in self.warnings)


_info: RuntimeInfo | None = None


def setup() -> RuntimeInfo:
    """Switch on the fast paths for this process; idempotent, never raises."""
    global _info
    if _info is None:
        try:
            _info = _setup()
        except Exception as exc:  # noqa: BLE001  (a tuning step must never stop tokconv from running)
            _info = RuntimeInfo("cpu", None, False, False, (f"runtime setup failed: {exc!r}",))
        if _info.device == "cpu" and _info.blas is not None:
            threads.enable()
    return _info


def use_fp32_weights() -> bool:
    """True where quantized and half-precision matmuls are slow (CPU), False on Metal/CUDA."""
    return setup().device == "cpu"


DTYPES = ("auto", "float32", "float16", "bfloat16")


def prepare_model(model: Any, dtype: str = "auto", cache: Path | None = None) -> compact.CompactReport | None:
    """Ready a freshly loaded mlx-lm model for this device (once per load).

    ``auto``: on Linux CPU dequantized float32 weights (quantized and half-precision matmuls are
    slow there), on Metal or CUDA the model's native (often quantized) weights. Any other ``dtype``
    runs weights and activations in that precision on every device (half precision on a CPU is
    several times slower). On a CPU the vectorised attention softmax and table RoPE go in, and
    float32 weights get compact copies for short calls (:mod:`.compact`; returned: what it did)
    and MKL's packed copies where available: made now, or, where every weight has a compact form,
    before the model's first product too long for it (:func:`.packing.ensure`). ``cache``: a
    folder of the caller's where compact forms are kept between loads (:func:`.compact.compact_model`),
    and whose weights file holds the model's float32 values: those a native call need not read
    stay there (:mod:`.lazy`) until :func:`.lazy.materialize`.
    The model may come lazily loaded (``mlx_lm`` ``load_model(..., lazy=True)``): every weight is
    read here, on the loading thread, but those :mod:`.lazy` leaves in their file.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    cpu = use_fp32_weights()
    import mlx.core as mx  # not at import: setup() must run before MLX loads

    if dtype == "auto" and not cpu:
        # read now, on the loading thread: a lazy array is of this thread's stream, and model
        # calls run on a thread of their own (MLX evaluates nothing of another thread's stream)
        mx.eval(model.parameters())
        return None
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.utils import dequantize_model

    target = mx.float32 if dtype == "auto" else getattr(mx, dtype)
    if any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()):
        dequantize_model(model)
    model.set_dtype(target)
    if not cpu:
        mx.eval(model.parameters())
        return None
    if setup().fast_exp:
        from . import kernels  # imports MLX: only after setup()

        kernels.install()
        kernels.use_table_rope(model)
    files = lazy.file_tensors(model, cache) if target == mx.float32 else {}
    with threads.compute(1):  # every core builds the compact forms
        report = compact.compact_model(model, packing.named_matmul_weights(model), cache, files)
    # only where every matrix is compact: a model with one on BLAS runs through MLX, which reads them all
    waiting = lazy.keep(model, compact.waiting(model), files) if report is not None and report.complete else []
    skip = {id(a) for a, _ in waiting}
    mx.eval([a for _, a in tree_flatten(model.parameters()) if id(a) not in skip])
    if report is not None and report.complete:
        packing.defer(model)  # short products all run compact: pack on the first long one
    else:
        packing.pack_model(model)
    return report


def _setup() -> RuntimeInfo:
    device, native_blas = _native_device()
    if device != "cpu" or not sys.platform.startswith("linux"):
        return RuntimeInfo(device, native_blas, False, False)
    warnings: list[str] = []
    done: list[Any] = []
    for step, fallback in ((setup_blas, None), (setup_jit, False), (setup_allocator, False)):
        try:
            done.append(step(warnings))
        except Exception as exc:  # noqa: BLE001  (one failed step must not hide what the others did)
            done.append(fallback)
            warnings.append(f"{step.__name__.removeprefix('setup_')} setup failed: {exc!r}")
    return RuntimeInfo("cpu", *done, tuple(warnings), fast_exp=os.environ.get("TOKCONV_NO_FAST_EXP") != "1")


def _native_device() -> tuple[str, str | None]:
    """("gpu", its BLAS) on Metal or CUDA, else ("cpu", None), without importing mlx."""
    mx = sys.modules.get("mlx.core")
    if mx is not None and mx.default_device() == mx.gpu:
        return "gpu", "Metal" if sys.platform == "darwin" else "CUDA"
    if sys.platform == "darwin":
        return ("gpu", "Metal") if os.uname().machine == "arm64" else ("cpu", "Accelerate")
    spec = importlib.util.find_spec("mlx")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if glob.glob(os.path.join(folder, "..", "mlx_cuda*.dist-info")) and os.path.exists("/dev/nvidiactl"):
            return "gpu", "CUDA"
    return "cpu", None
