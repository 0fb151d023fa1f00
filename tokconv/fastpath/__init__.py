"""The fast path: MLX made fast on Linux CPUs. It knows nothing about experiments.

:func:`setup` must run before ``mlx.core`` is imported anywhere (``import tokconv`` does it);
:func:`prepare_model` is called once per loaded model. Modules: ``startup`` (setup(), prepare_model()
and the notice), ``blas`` (MKL or OpenBLAS), ``packing`` (MKL packed weights), ``kernels``
(vectorised softmax, entropy and RoPE), ``lazy`` and ``filemap`` (weights left in their file until
MLX needs them), ``jit`` (compiler flags, malloc), ``threads`` (cores,
BLAS threads per call, CPU streams), ``build`` (the gcc build cache).
"""

from .startup import RuntimeInfo, prepare_model, setup, use_fp32_weights

__all__ = ["RuntimeInfo", "prepare_model", "setup", "use_fp32_weights"]
