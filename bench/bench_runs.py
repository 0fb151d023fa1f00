"""Whole-run benchmark: what a user waits for, warm (models loaded) and in a fresh process.

Each configuration runs in its own subprocess: first a fresh-process run (the CLI user's wait,
loading included), then warm repeats over a few seeds. With ``--baseline CHECKOUT`` a checkout of
another commit runs the same configurations in alternating rounds, so before/after see the same
noise on this shared machine. With ``--busy`` the same tree also runs with one competing process
keeping a core busy during its warm runs (a dashboard shares its cores with a browser).

    .venv/bin/python bench/bench_runs.py
    .venv/bin/python bench/bench_runs.py --baseline ../old-checkout --rounds 3

Writes bench/results/runs.json and prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# (label, mode, model A, model B, length)
RUNS = [
    ("SmolLM2 single, L=20", "single", "smollm2-135m", None, 20),
    ("SmolLM2 vs Qwen adversarial-single, L=20 (default battle)", "adversarial-single", "smollm2-135m", "qwen2.5-coder-0.5b", 20),
    ("SmolLM2 vs Qwen adversarial, L=20", "adversarial", "smollm2-135m", "qwen2.5-coder-0.5b", 20),
]


def _api():
    """run() and RunConfig of whichever tokconv is on the path (the layout changed over time)."""
    import tokconv  # noqa: F401  (the fast path before MLX)

    try:
        from tokconv.experiments import RunConfig, run
    except ImportError:  # a checkout from before the package had floors
        from tokconv.experiment import run
        from tokconv.records import RunConfig
    return RunConfig, run


def _cost(r, name: str) -> float:
    c = r.cost
    return float(c[name] if isinstance(c, dict) else getattr(c, name))


def worker(index: int, seeds: list[int], busy: bool = False) -> dict:
    """One configuration: the first run cold in this process (models load), then warm runs per seed
    (with ``busy``, while another process spins on one core)."""
    label, mode, a, b, length = RUNS[index]
    RunConfig, run = _api()
    out = {"label": label, "warm": []}
    t0 = time.perf_counter()
    run(RunConfig(mode=mode, model_a=a, model_b=b, length=length, seed=seeds[0] + 1000, iterations=300))
    out["fresh_s"] = time.perf_counter() - t0
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        _warm(out, run, RunConfig, mode, a, b, length, seeds)
    finally:
        if hog is not None:
            hog.kill()
    return out


def _warm(out: dict, run, RunConfig, mode: str, a: str, b: str | None, length: int, seeds: list[int]) -> None:
    for seed in seeds:
        t0 = time.perf_counter()
        r = run(RunConfig(mode=mode, model_a=a, model_b=b, length=length, seed=seed, iterations=300))
        out["warm"].append({"seed": seed, "seconds": time.perf_counter() - t0, "iterations": r.iterations,
                            "calls": _cost(r, "forward_passes"), "tokens": _cost(r, "forwarded_tokens"),
                            "status": r.status})


def _spawn(tree: Path, index: int, seeds: str, busy: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, str(HERE / "bench_runs.py"), "--worker", str(index), "--seeds", seeds] + ["--busy"] * busy
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=tree)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seeds", default="0,1,2", help="warm runs' seeds (default 0,1,2)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, alternating with the baseline (default 2)")
    ap.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT", help="also run this checkout of another commit")
    ap.add_argument("--only", default=None, help="comma list of configuration numbers (0-based) to run")
    ap.add_argument("--busy", action="store_true", help="also run this tree with a competing process busy on one core")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "runs.json")
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, [int(s) for s in args.seeds.split(",")], args.busy)))
        return
    trees = {"tokconv": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    runs = {name: (tree, False) for name, tree in trees.items()} | ({"tokconv, one core busy": (ROOT, True)} if args.busy else {})
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(len(RUNS))
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}", "runs": {}}
    for i in chosen:
        rounds: dict[str, list] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (tree, busy) in runs.items():
                rounds[name].append(_spawn(tree, i, args.seeds, busy))
        results["runs"][RUNS[i][0]] = rounds
        print(json.dumps({RUNS[i][0]: rounds}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(render(results))


def _median(rounds: list[dict], key: str) -> float:
    ok = [r for r in rounds if "error" not in r]
    if key == "fresh_s":
        return statistics.median(r["fresh_s"] for r in ok) if ok else float("nan")
    return statistics.median(w[key] for r in ok for w in r["warm"]) if ok else float("nan")


def render(results: dict) -> str:
    names = list(next(iter(results["runs"].values())))
    head = " | ".join(f"{n} warm s | {n} fresh s | {n} calls | {n} tokens" for n in names)
    lines = [f"Machine: {results['machine']}.", "", f"| run | {head} |", "|---|" + "---|" * (4 * len(names))]
    for label, rounds in results["runs"].items():
        cells = []
        for n in names:
            cells += [f"{_median(rounds[n], 'seconds'):.2f}", f"{_median(rounds[n], 'fresh_s'):.1f}",
                      f"{_median(rounds[n], 'calls'):.0f}", f"{_median(rounds[n], 'tokens'):.0f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
