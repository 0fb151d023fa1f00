"""Lockstep sweep vs the same runs one after another (default: the SmolLM2 vs Qwen battle,
adversarial-single across tokenizers, L=20, 64 seeds).

Both sides run in this one process on the same seeds; the results must be
identical. Target (issue: sweeps at scale): lockstep at least 3x faster.

    .venv/bin/python bench/bench_sweep.py --seeds 64 --length 20
    .venv/bin/python bench/bench_sweep.py --seeds 64 --serial-seeds 16   # one-by-one time scaled from 16
    .venv/bin/python bench/bench_sweep.py --mode single --seeds 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import tokconv
from tokconv.experiments.config import MODES
from tokconv.experiments.experiment import run
from tokconv.experiments.lockstep import run_lockstep
from tokconv.experiments.sweep import SweepSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="adversarial-single", choices=list(MODES))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--model-b", default="qwen2.5-coder-0.5b", help="the second model of adversarial modes")
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64, help="runs per lockstep batch")
    ap.add_argument("--serial-seeds", type=int, default=None,
                    help="run only the first N seeds one by one and scale their time to all seeds (a run alone "
                         "takes the same time whatever the sweep's size; saves machine time); default: all")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: bench/results/sweep-MODE.json)")
    args = ap.parse_args()
    spec = SweepSpec(model=args.model, model_b=args.model_b if MODES[args.mode].adversarial else None, mode=args.mode,
                     lengths=(args.length,), seeds=tuple(range(args.seeds)), iterations=args.iterations)
    configs = spec.configs()
    run(configs[0])  # warm-up: loads, JIT kernels, vocabulary tables

    t0 = time.perf_counter()
    batched = {}
    for k in range(0, len(configs), args.batch):
        for r in run_lockstep(configs[k : k + args.batch]):
            batched[r.config.seed] = r
    t_batched = time.perf_counter() - t0

    alone = configs[: args.serial_seeds] if args.serial_seeds else configs
    t0 = time.perf_counter()
    serial = {c.seed: run(c) for c in alone}
    t_serial_measured = time.perf_counter() - t0
    t_serial = t_serial_measured * len(configs) / len(alone)

    def essence(r):
        return (r.status, r.iterations, [(s.iteration, s.position, s.new_token) for s in r.steps], r.final_text)

    same = sum(essence(batched[s]) == essence(serial[s]) for s in serial)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "runtime": tokconv.RUNTIME.notice(),
        "mode": args.mode, "models": configs[0].models, "length": args.length, "seeds": args.seeds,
        "batch": args.batch, "batched_s": t_batched, "serial_s": t_serial, "speedup": t_serial / t_batched,
        "serial_seeds_run": len(alone), "serial_s_measured": t_serial_measured,
        "identical_runs": f"{same} of {len(serial)}",
        "batched_model_s": sum(r.cost.seconds for r in batched.values()),
        "batched_forwarded_tokens": round(sum(r.cost.forwarded_tokens for r in batched.values())),
        "serial_forwarded_tokens": sum(r.cost.forwarded_tokens for r in serial.values()),
        "batched_forwarded_tokens_of_those_seeds": round(sum(batched[s].cost.forwarded_tokens for s in serial)),
        "mean_iterations": sum(r.iterations for r in serial.values()) / len(serial),
        "statuses": {s: sum(r.status == s for r in serial.values()) for s in sorted({r.status for r in serial.values()})},
    }
    path = args.out or Path(__file__).parent / "results" / f"sweep-{args.mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
