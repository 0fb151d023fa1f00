"""Fingerprints over many seeds, with their spread: the data behind FINDINGS.md.

Runs adversarial battles of two models over seeds, under one or more ways of sharing the sequence
(the shared text, or token ids passed straight across with an out-of-vocabulary policy), and
reports per model what it inserts (counts over seeds, share, and in how many seeds each token
appears), iterations per start token (mean, sd, range), statuses, and how many moves the numerics
audit flagged. Every run is saved in a run database too (``--db``), so the runs can be reopened.

    .venv/bin/python bench/fingerprint_study.py --pair smollm2-135m,qwen2.5-coder-0.5b --seeds 0-15
    .venv/bin/python bench/fingerprint_study.py --pair gemma3-270m,qwen2.5-coder-0.5b --share text,ids:nan --seeds 0-15

Writes bench/results/fingerprints-<a>-<b>.json and prints markdown for FINDINGS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import tokconv
from tokconv.analysis.display import token_repr
from tokconv.experiments import RunConfig, RunResult
from tokconv.store import RunStore

HERE = Path(__file__).resolve().parent


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi) + 1)) if hi else [int(s) for s in text.split(",")]


def summarise(runs: list[RunResult], length: int) -> dict:
    """Per model: insertions over all runs, their shares, in how many runs each appears; iterations/n; flags."""
    its = [r.iterations / length for r in runs]
    out = {
        "runs": len(runs),
        "iterations_per_n": {"mean": statistics.mean(its), "sd": statistics.pstdev(its), "min": min(its), "max": max(its)},
        "statuses": dict(Counter(r.status for r in runs)),
        "flagged_steps": sum(not s.finite for r in runs for s in r.steps),
        "steps": sum(len(r.steps) for r in runs),
        "models": {},
    }
    for side, label in enumerate(runs[0].models):
        total: Counter = Counter()
        seen_in: Counter = Counter()
        per_run = []
        for r in runs:
            counts = r.fingerprints.get(r.models[side], {})
            total.update(counts)
            seen_in.update(counts.keys())
            per_run.append(sum(counts.values()))
        n = sum(total.values())
        out["models"][label] = {
            "insertions": n,
            "insertions_per_run": {"mean": statistics.mean(per_run), "sd": statistics.pstdev(per_run)},
            "top": [{"token": t, "count": c, "share": c / n if n else 0.0, "runs": seen_in[t]} for t, c in total.most_common(8)],
        }
    return out


def render(title: str, s: dict) -> str:
    ipn = s["iterations_per_n"]
    lines = [f"**{title}**: {s['runs']} seeds, iterations/n {ipn['mean']:.2f} ± {ipn['sd']:.2f} "
             f"(range {ipn['min']:.2f}-{ipn['max']:.2f}); statuses {s['statuses']}; "
             f"flagged moves {s['flagged_steps']} of {s['steps']}.", "",
             "| model | insertions per run | top insertions: token × count (share, in how many runs) |", "|---|---|---|"]
    for label, m in s["models"].items():
        top = ", ".join(f"{token_repr(t['token'])} × {t['count']} ({100 * t['share']:.0f}%, {t['runs']}/{s['runs']})" for t in m["top"])
        per = m["insertions_per_run"]
        lines.append(f"| {label} | {per['mean']:.1f} ± {per['sd']:.1f} | {top} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=f"{tokconv.DEFAULT_MODEL_A},{tokconv.DEFAULT_MODEL_B}")
    ap.add_argument("--mode", default="adversarial-single")
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--seeds", default="0-15")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--share", default="text", help="comma list of text | ids:error | ids:nan | ids:unk")
    ap.add_argument("--db", type=Path, default=HERE / "results" / "fingerprints.sqlite")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    a, b = args.pair.split(",")
    store = RunStore(args.db)
    results: dict = {"pair": [a, b], "mode": args.mode, "length": args.length, "ways": {}}
    report = []
    for way in args.share.split(","):
        share, _, oov = way.partition(":")
        runs = []
        t0 = time.perf_counter()
        for seed in _seeds(args.seeds):
            config = RunConfig(mode=args.mode, model_a=a, model_b=b, length=args.length, seed=seed,
                               iterations=args.iterations, share=share, oov=oov or "error")
            saved = store.latest_ids([config.key()]).get(config.key())
            r = store.get(saved) if saved is not None else tokconv.run(config)
            if saved is None:
                store.save(r)
            runs.append(r)
            print(f"{way} seed {seed}: {r.status} after {r.iterations} ({time.perf_counter() - t0:.0f} s)", flush=True)
        s = summarise(runs, args.length)
        results["ways"][way] = s
        report.append(render(f"{a} vs {b}, {args.mode}, L={args.length}, shared {way}", s))
    out = args.out or HERE / "results" / f"fingerprints-{a}-{b}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print("\n\n".join(report))


if __name__ == "__main__":
    main()
