"""Load time and memory of the default battle's two models, in fresh processes (the wait before a
CLI run or a dashboard's first battle), side by side with another checkout.

Each round starts one process per tree, alternating: it imports tokconv, loads SmolLM2 then Qwen
(converted folders and compact caches already on disk: a warm cache), and reports the seconds of
each step and the process's resident memory after each load.

    .venv/bin/python bench/bench_load.py --baseline ../old-checkout --rounds 3

Writes bench/results/load.json and prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import tokconv
from tokconv.models import load
out = {"import_s": time.perf_counter() - t0}
def rss_mb():
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                got[key] = int(line.split()[1]) / 1024
    return got
held = []
for name in sys.argv[1:]:
    t = time.perf_counter()
    held.append(load(name))
    got = rss_mb()
    out[name] = {"load_s": time.perf_counter() - t, "rss_mb": got["VmRSS"], "anon_mb": got.get("RssAnon"),
                 "file_mb": got.get("RssFile")}
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def one(tree: Path) -> dict:
    """One fresh process of ``tree`` loading both models."""
    proc = subprocess.run([sys.executable, "-c", CHILD, *MODELS], cwd=tree, capture_output=True, text=True,
                          env=None, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{tree}: the load failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def split(rounds: list[dict]) -> str:
    """Median anonymous / file-backed memory after both loads: the page cache's pages of mapped files
    (weights files, compact caches) count in RSS but are shared and given back under pressure."""
    if any(r[MODELS[1]].get("anon_mb") is None for r in rounds):
        return "-"
    return (f"{statistics.median(r[MODELS[1]]['anon_mb'] for r in rounds):.0f} / "
            f"{statistics.median(r[MODELS[1]]['file_mb'] for r in rounds):.0f}")


def render(results: dict) -> str:
    """A markdown table: medians over rounds, per tree."""
    lines = ["| tree | import s | SmolLM2 load s | Qwen load s | RSS after both (MB) | of which anonymous / "
             "file-backed (MB) | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
    for name, rounds in results["trees"].items():
        med = lambda f: statistics.median(f(r) for r in rounds)  # noqa: E731
        lines.append(f"| {name} | {med(lambda r: r['import_s']):.2f} | {med(lambda r: r[MODELS[0]]['load_s']):.2f} | "
                     f"{med(lambda r: r[MODELS[1]]['load_s']):.2f} | {med(lambda r: r[MODELS[1]]['rss_mb']):.0f} | "
                     f"{split(rounds)} | {med(lambda r: r['peak_rss_mb']):.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT", help="also load with this checkout")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "load.json")
    args = ap.parse_args()
    trees = {"tokconv": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    one(ROOT)  # converted folders and compact caches in place before anything is timed
    results: dict = {"models": MODELS, "trees": {name: [] for name in trees}}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            results["trees"][name].append(one(tree))
            print(json.dumps({name: results["trees"][name][-1]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(render(results))


if __name__ == "__main__":
    main()
