"""Each build of the compact kernel against float32 BLAS on the same product, in one process.

Why: the compact kernel has code written for AVX-512 and for AVX2; every other CPU (ARM, x86-64
without AVX2) gets gcc's generic vectors. compact.py turns compact weights on by default only where
that code exists. This measures the builds this machine can make (the native one, the AVX2 code with
``-mno-avx512f``, the generic vectors with ``-mno-avx2 -mno-fma`` too) against numpy's float32 matmul
(OpenBLAS) on one of Qwen2.5-0.5B's MLP matrices (4864 x 896, 8-bit values with a scale and offset per
16), one thread, taking turns so that all see the same noise.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/compact_builds.py [--rows 1,6,12] [--rounds 15]

Writes bench/results/compact-builds.json and prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import tokconv  # noqa: F401  (the fast path before numpy's BLAS is used)
from tokconv.fastpath import compact
from tokconv.fastpath.build import cpu_flags

HERE = Path(__file__).resolve().parent
BUILDS = {"native": ()} | compact.OTHER_CPUS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1,6,12")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "compact-builds.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, k = 4864, 896
    q = rng.integers(0, 256, (n, k)).astype(np.float32)
    scale = rng.uniform(1e-3, 1e-2, (n, k // 16, 1)).astype(np.float32)
    w = np.ascontiguousarray((q.reshape(n, k // 16, 16) * scale - 128 * scale).reshape(n, k))
    libs = {}
    x86 = b"avx2" in cpu_flags().split()
    for name, extra in BUILDS.items():
        if extra and not x86:
            continue
        lib = compact.build(extra)
        if lib.tokconv_compact_add(w.ctypes.data, n, k) != 0:
            raise SystemExit(f"{name}: the matrix was refused")
        libs[f"{name} ({compact.kernel(lib)})" if name == "native" else name] = lib
    rows = [int(r) for r in args.rows.split(",")]
    table = {}
    for m in rows:
        x = rng.standard_normal((m, k)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        sides = {label: (lambda lib=lib: lib.tokconv_compact_gemm(m, n, k, x.ctypes.data, k, w.ctypes.data, 0.0,
                                                                   c.ctypes.data, n, 1)) for label, lib in libs.items()}
        sides["float32 BLAS (numpy)"] = lambda: np.matmul(x, w.T, out=c)
        times: dict[str, list[float]] = {s: [] for s in sides}
        for r in range(args.rounds):
            order = list(sides)[r % len(sides):] + list(sides)[: r % len(sides)]
            for s in order:
                t0 = time.perf_counter()
                for _ in range(3):
                    sides[s]()
                times[s].append((time.perf_counter() - t0) / 3 * 1e6)
        table[m] = {s: statistics.median(v) for s, v in times.items()}
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "cpu": platform.processor() or "",
           "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "shape": [n, k], "median_us": table}
    args.out.write_text(json.dumps(out, indent=1))
    cols = list(next(iter(table.values())))
    print("| rows | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for m, t in table.items():
        print(f"| {m} | " + " | ".join(f"{t[c]:.0f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
