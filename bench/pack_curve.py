"""Packed against plain MKL GEMM on a real model's weights, by rows per call.

Calls the process's ``cblas_sgemm`` (tokconv's interposer, the one libmlx calls) on every
matmul weight of the model in turn, as one forward does, with packs allowed and with them
switched off (``packing.max_rows(0)``), alternating in one process. Picks the default of
``TOKCONV_PACK_MAX_ROWS``.

    .venv/bin/python bench/pack_curve.py [--model smollm2-135m]

Writes bench/results/pack-curve.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", default="1,2,4,8,19,40,64,80,160,304,512")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pack-curve.json")
    args = ap.parse_args()

    import numpy as np

    import tokconv
    from tokconv import fastpath
    from tokconv.fastpath import packing, threads

    lm = tokconv.load(args.model)
    if not packing.available():
        raise SystemExit(f"packed weights are off here: {fastpath.setup().notice()}")
    weights = [np.asarray(w) for w in packing.matmul_weights(lm.model)]
    sgemm, f = ctypes.CDLL(None).cblas_sgemm, ctypes.c_float
    rng = np.random.default_rng(0)
    rows_list = [int(r) for r in args.rows.split(",")]
    inputs = {(m, k): rng.standard_normal((m, k)).astype(np.float32)
              for m in rows_list for k in {w.shape[1] for w in weights}}
    outputs = {(m, w.shape[0]): np.empty((m, w.shape[0]), np.float32) for m in rows_list for w in weights}

    def forward(m: int) -> float:
        t0 = time.perf_counter()
        for w in weights:
            n, k = w.shape
            a, c = inputs[(m, k)], outputs[(m, n)]
            sgemm(101, 111, 112, m, n, k, f(1.0), ctypes.c_void_p(a.ctypes.data), k, ctypes.c_void_p(w.ctypes.data),
                  k, f(0.0), ctypes.c_void_p(c.ctypes.data), n)
        return time.perf_counter() - t0

    flops_per_row = 2 * sum(w.size for w in weights)
    table = []
    for n_threads in (threads.cores(), 1):
        threads.set_blas_threads(n_threads)
        for m in rows_list:
            best = {"packed": float("inf"), "plain": float("inf")}
            for _ in range(args.rounds):
                with packing.max_rows(m):
                    forward(m)
                    best["packed"] = min(best["packed"], forward(m))
                with packing.max_rows(0):
                    forward(m)
                    best["plain"] = min(best["plain"], forward(m))
            row = {"threads": threads, "rows": m, **{k: v * 1e3 for k, v in best.items()},
                   "speedup": best["plain"] / best["packed"],
                   "packed_gflops": flops_per_row * m / best["packed"] / 1e9,
                   "plain_gflops": flops_per_row * m / best["plain"] / 1e9}
            table.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "weights": len(weights), "runtime": fastpath.setup().notice(),
                                    "rows": table}, indent=1))
    print(f"\n{args.model}: all {len(weights)} matmul weights once per pass, best of {args.rounds}\n")
    print("| BLAS threads | rows | plain (ms) | packed (ms) | packed speedup | plain GFLOP/s | packed GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['threads']} | {r['rows']} | {r['plain']:.1f} | {r['packed']:.1f} | {r['speedup']:.2f}x | "
              f"{r['plain_gflops']:.0f} | {r['packed_gflops']:.0f} |")


if __name__ == "__main__":
    main()
