"""The float32 GEMM ceiling of this machine, and MLX's matmul with and without the fast BLAS.

Shapes are SmolLM2-135M's projections (hidden 576, kv 192, MLP 1536) at M=640 rows (a batch
of 32 x 20 tokens) and M=20 (one sequence). The ceiling is the best rate at M=640 of numpy's
own OpenBLAS and of MLX on tokconv's fast path (MKL on Intel CPUs) and on OpenBLAS
(``TOKCONV_NO_MKL=1``); MLX is also measured with ``TOKCONV_NO_FAST_BLAS=1`` (the wheel's
reference BLAS). Every measurement runs in its own process, since the BLAS must be chosen
before mlx is imported, with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed so that
OpenBLAS picks its kernel for this CPU (threadpoolctl reports which, when installed).

    python bench/gemm_ceiling.py [--threads 2] [--seconds 0.2]

``measure()`` returns the dict that the script prints as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = ((576, 576), (576, 192), (576, 1536), (1536, 576))  # (K, N) of q/o, k/v, gate/up, down
ROWS = (640, 20)


def _gflops(matmul, m: int, k: int, n: int, seconds: float) -> float:
    """Best of five timed runs, each repeating ``matmul`` for about ``seconds / 5``."""
    matmul()
    start = time.perf_counter()
    matmul()
    reps = max(1, int(seconds / 5 / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            matmul()
        best = min(best, (time.perf_counter() - start) / reps)
    return round(2 * m * k * n / best / 1e9, 1)


def _worker(kind: str, seconds: float) -> dict:
    """Measure in this process: ``numpy``, or ``mlx`` with whatever BLAS the environment leads tokconv to."""
    out: dict = {"gflops": {}}
    if kind == "numpy":
        import numpy as np

        try:
            from threadpoolctl import threadpool_info

            out["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                           for d in threadpool_info() if d.get("user_api") == "blas"]
        except ImportError:
            out["blas"] = "threadpoolctl not installed"
        rng = np.random.default_rng(0)
        for m in ROWS:
            for k, n in SHAPES:
                a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
                out["gflops"][f"{m}x{k}x{n}"] = _gflops(lambda a=a, b=b: a @ b, m, k, n, seconds)
        return out
    import tokconv.fastpath as rt

    out["runtime"] = rt.setup().notice()
    import mlx.core as mx

    for m in ROWS:
        for k, n in SHAPES:
            a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
            mx.eval(a, b)
            out["gflops"][f"{m}x{k}x{n}"] = _gflops(lambda a=a, b=b: mx.eval(a @ b), m, k, n, seconds)
    return out


def measure(threads: int = 2, seconds: float = 0.2) -> dict:
    """Run the three measurements in child processes and return them with the ceiling.

    Args:
        threads: ``OPENBLAS_NUM_THREADS`` for every child.
        seconds: timing budget per shape (the reference BLAS gets a tenth of it per run).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    results: dict = {"threads": threads, "cpu_count": os.cpu_count()}
    for kind, extra, budget in (("numpy", {}, seconds), ("mlx", {}, seconds),
                                ("mlx-openblas", {"TOKCONV_NO_MKL": "1"}, seconds),
                                ("mlx-reference", {"TOKCONV_NO_FAST_BLAS": "1"}, seconds / 10)):
        worker = "mlx" if kind.startswith("mlx") else kind
        done = subprocess.run([sys.executable, __file__, "--worker", worker, "--seconds", str(budget)],
                              env={**env, **extra}, check=False, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{kind} worker failed:\n{done.stderr[-2000:]}")
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    big = [key for key in results["numpy"]["gflops"] if key.startswith(f"{ROWS[0]}x")]
    results["ceiling_gflops"] = max(results[kind]["gflops"][key] for key in big for kind in ("numpy", "mlx", "mlx-openblas"))
    fast, slow = (sum(results[kind]["gflops"][key] for key in big) for kind in ("mlx", "mlx-reference"))
    results["mlx_fast_vs_reference"] = round(fast / slow, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--worker", choices=("numpy", "mlx"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.seconds)))
    else:
        print(json.dumps(measure(args.threads, args.seconds), indent=2))


if __name__ == "__main__":
    main()
