"""Compact 8-bit weights against float32 BLAS, per product and per row count: where is the crossover?

For each distinct weight shape of a model, times ``x @ W.T`` through MLX (as a model call makes it)
with the compact kernel on and off, at several row counts, alternating the two in one process.
Also measures the memory bandwidth (numpy streaming sum over 1 GB) for the floor of one call.

    .venv/bin/python bench/compact_curve.py --model qwen2.5-coder-0.5b --rows 1,2,4,8,16,24,32,48,64

Prints a markdown table (per whole model: the sum over its matrices of one product each).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tokconv  # noqa: F401  (the fast path before MLX)
import mlx.core as mx
from tokconv.fastpath import compact, packing, threads
from tokconv.models import load


def bandwidth_gbs(gb: float = 1.0, rounds: int = 5) -> float:
    """Streaming read bandwidth of this machine, GB/s (numpy sum over ``gb`` of float32)."""
    a = np.ones(int(gb * 1e9 / 4), dtype=np.float32)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


def time_model(weights: list, m: int, rounds: int, compact_on: bool, threads_n: int | None = None) -> float:
    """Seconds for one product of every matrix with ``m`` rows (best of rounds)."""
    xs = {w.shape[1]: mx.random.normal((m, w.shape[1])) for w in weights}
    mx.eval(list(xs.values()))
    out = []
    # compute() gives every core; the next one puts them back after a 1-thread column (the count is
    # recorded wherever it is set: before 2026-11-30 evening, later "2 threads" columns ran on 1)
    with compact.max_rows(4096 if compact_on else 0), threads.compute(1):
        if threads_n:
            threads.set_blas_threads(threads_n)
        for _ in range(rounds):
            t = time.perf_counter()
            for w in weights:
                mx.eval(xs[w.shape[1]] @ w.T)
            out.append(time.perf_counter() - t)
    return min(out)  # the least disturbed round: the machine is shared


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--rows", default="1,2,4,8,12,16,20,24,32,48,64")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    lm = load(args.model)
    weights = packing.matmul_weights(lm.model)
    n = sum(w.size for w in weights)
    bw = bandwidth_gbs()
    print(f"model {args.model}: {len(weights)} matrices, {n / 1e6:.0f} M weights; bandwidth {bw:.1f} GB/s")
    print(f"floor per call: float32 {n * 4 / bw / 1e6:.1f} ms, compact {n * 1.5 / bw / 1e6:.1f} ms\n")
    print("| rows | compact ms | compact, 1 thread ms | float32 BLAS ms | BLAS / compact |")
    print("|---|---|---|---|---|")
    for m in [int(r) for r in args.rows.split(",")]:
        pairs = []
        for _ in range(2):  # alternate, so all see the same noise
            pairs.append((time_model(weights, m, args.rounds, True), time_model(weights, m, args.rounds, True, 1),
                          time_model(weights, m, args.rounds, False)))
        a, a1, b = (min(p[i] for p in pairs) for i in range(3))
        print(f"| {m} | {a * 1e3:.1f} | {a1 * 1e3:.1f} | {b * 1e3:.1f} | {b / a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
