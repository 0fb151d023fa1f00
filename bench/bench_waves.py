"""Lockstep waves: short calls alone (the default) vs every wave paired over two streams, and the
same runs one by one, in one process, taking turns.

A lockstep call short enough for the compact-weight kernel runs alone on one stream, since that
kernel spreads each product over every core itself; ``paired`` is the scheduling before that rule,
where every wave paired calls over the two CPU streams, one core each (the shim below gives
:mod:`tokconv.engine.rows` a compact row limit of 0, which is that schedule exactly). Each round
uses new seeds, the same for the three sides, and the three take turns in a rotating order; the
per-shape traces are dropped before each side, so no side replays another's.

    .venv/bin/python bench/bench_waves.py --seeds 12 --rounds 3
    .venv/bin/python bench/bench_waves.py --mode single --seeds 12 --rounds 3

Writes bench/results/waves-MODE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import tokconv
from tokconv.engine import forward
from tokconv.engine import rows
from tokconv.experiments import RunConfig
from tokconv.experiments.config import MODES
from tokconv.experiments.experiment import run
from tokconv.experiments.lockstep import run_lockstep
from tokconv.models import load

SIDES = ("alone", "paired", "one by one")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="adversarial-single", choices=list(MODES))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--model-b", default="qwen2.5-coder-0.5b", help="the second model of adversarial modes")
    ap.add_argument("--seeds", type=int, default=12, help="runs per side and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    b = args.model_b if MODES[args.mode].adversarial else None
    lms = [load(m) for m in filter(None, (args.model, b))]

    def configs(base: int) -> list[RunConfig]:
        return [RunConfig(mode=args.mode, model_a=args.model, model_b=b, length=args.length, seed=base + s,
                          iterations=args.iterations) for s in range(args.seeds)]

    run(configs(10_000)[0])  # warm-up: loads, JIT kernels, vocabulary tables
    real = rows.compact
    seconds: dict[str, list[float]] = {s: [] for s in SIDES}
    essences: dict[str, list] = {s: [] for s in SIDES}
    for r in range(args.rounds):
        for side in SIDES[r % 3:] + SIDES[: r % 3]:
            for lm in lms:
                forward._of(lm).steps.clear()
            rows.compact = SimpleNamespace(current_max_rows=lambda: 0) if side == "paired" else real
            t0 = time.perf_counter()
            try:
                results = [run(c) for c in configs(100 * r)] if side == "one by one" else list(run_lockstep(configs(100 * r)))
            finally:
                rows.compact = real
            seconds[side].append((time.perf_counter() - t0) / args.seeds)
            essences[side] += sorted((x.config.seed, x.status, x.iterations, x.final_text) for x in results)
            print(f"round {r} {side}: {seconds[side][-1]:.2f} s a run", flush=True)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "runtime": tokconv.RUNTIME.notice(),
        "mode": args.mode, "models": [lm.name for lm in lms], "length": args.length, "seeds": args.seeds,
        "rounds": args.rounds, "seconds_per_run": seconds,
        "median_s_per_run": {s: statistics.median(v) for s, v in seconds.items()},
        "same_results": {s: essences[s] == essences["one by one"] for s in SIDES},
    }
    path = args.out or Path(__file__).parent / "results" / f"waves-{args.mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
