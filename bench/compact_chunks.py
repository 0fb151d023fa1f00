"""Two builds of the compact-weight kernel side by side in one process: this tree's and another commit's.

Each build is compiled into its own library (its own weight table and worker pool), the same
grid-structured weights are registered with both, and the products of one whole model call (every
matrix of SmolLM2-135M's shapes, 30 layers and the head) are timed in turns, at several row counts,
on both cores. Used to choose how a product is cut into chunks (``MIN_CHUNK_COLUMNS``).

    .venv/bin/python bench/compact_chunks.py --baseline HEAD~1 --rounds 7

Prints a markdown table: milliseconds for the products of one model call (best of rounds).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import tokconv  # noqa: F401  (the fast path first, as everywhere)
from tokconv.fastpath.build import built, cpu_flags

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "tokconv" / "fastpath"
# one SmolLM2-135M layer's matrices (out, in): q, k, v, o, gate, up, down; then the tied head
LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
SHAPES = LAYER * 30 + [(49152, 576)]


def _library(folder: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(built(folder / "_compact.c", ["-O3", "-march=native", "-lpthread"], cpu_flags())))
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.tokconv_compact_add.argtypes = [p, i, i]
    lib.tokconv_compact_gemm.argtypes = [i, i, i, p, i, p, ctypes.c_float, p, i, i]
    return lib


def _checkout(rev: str, into: Path) -> Path:
    for name in ("_compact.c", "_weights_table.h"):
        text = subprocess.run(["git", "show", f"{rev}:tokconv/fastpath/{name}"], cwd=HERE.parent, check=True,
                              capture_output=True, text=True).stdout
        (into / name).write_text(text)
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="HEAD", help="the other commit (default HEAD: this tree against it)")
    ap.add_argument("--rows", default="1,4,9,16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        libs = {"this tree": _library(SOURCE), args.baseline: _library(_checkout(args.baseline, Path(tmp)))}
        rng = np.random.default_rng(0)
        weights = []
        for n, k in SHAPES:  # an 8-bit grid in every group of 16, as a GGUF model has
            q = rng.integers(0, 256, (n, k // 16, 16)).astype(np.float32)
            w = np.ascontiguousarray((q * rng.uniform(1e-3, 1e-2, (n, k // 16, 1)).astype(np.float32)).reshape(n, k))
            for lib in libs.values():
                assert lib.tokconv_compact_add(w.ctypes.data, n, k) == 0
            weights.append(w)
        best: dict[tuple[int, str], float] = {}
        for r in range(args.rounds):
            for m in (int(x) for x in args.rows.split(",")):
                xs = {k: rng.standard_normal((m, k)).astype(np.float32) for k in {k for _, k in SHAPES}}
                outs = {n: np.empty((m, n), np.float32) for n in {n for n, _ in SHAPES}}
                for name, lib in (list(libs.items()) if r % 2 else list(libs.items())[::-1]):
                    t = time.perf_counter()
                    for w in weights:
                        n, k = w.shape
                        lib.tokconv_compact_gemm(m, n, k, xs[k].ctypes.data, k, w.ctypes.data, 0.0,
                                                 outs[n].ctypes.data, n, args.threads)
                    took = time.perf_counter() - t
                    best[m, name] = min(best.get((m, name), took), took)
    names = list(libs)
    print(f"| rows | {' | '.join(names)} | ratio |\n|---|{'---|' * len(names)}---|")
    for m in sorted({m for m, _ in best}):
        a, b = best[m, names[0]], best[m, names[1]]
        print(f"| {m} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
