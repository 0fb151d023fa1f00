"""Batched sweep vs the same runs one after another (single mode, SmolLM2, L=20, 64 seeds).

Both sides run in this one process on the same seeds; the results must be
identical. Target (issue: sweeps at scale): batched at least 3x faster.

    .venv/bin/python bench/bench_sweep.py --seeds 64 --length 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import tokconv
from tokconv.experiments.experiment import run
from tokconv.experiments.sweep import SweepSpec, run_single_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64, help="rows per lockstep batch")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sweep.json")
    args = ap.parse_args()
    lm = tokconv.load(args.model)
    configs = SweepSpec(model=args.model, mode="single", lengths=(args.length,), seeds=tuple(range(args.seeds))).configs()
    run(configs[0])  # warm-up: JIT kernels, vocabulary tables

    t0 = time.perf_counter()
    batched = {}
    for k in range(0, len(configs), args.batch):
        for r in run_single_batch(lm, configs[k : k + args.batch]):
            batched[r.config.seed] = r
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    serial = {c.seed: run(c) for c in configs}
    t_serial = time.perf_counter() - t0

    def essence(r):
        return (r.status, r.iterations, [(s.position, s.new_token) for s in r.steps])

    same = sum(essence(batched[s]) == essence(serial[s]) for s in serial)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "runtime": tokconv.RUNTIME.notice(),
        "model": args.model, "length": args.length, "seeds": args.seeds, "batch": args.batch,
        "batched_s": t_batched, "serial_s": t_serial, "speedup": t_serial / t_batched,
        "identical_runs": same,
        "batched_forwarded_tokens": round(sum(r.cost.forwarded_tokens for r in batched.values())),
        "serial_forwarded_tokens": sum(r.cost.forwarded_tokens for r in serial.values()),
        "mean_iterations": sum(r.iterations for r in serial.values()) / len(serial),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
