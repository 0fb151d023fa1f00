"""Cost of each convergence mode vs a plain reference that re-scores the whole sequence
after every replacement, as the original script did.

Both run the same mode code on the same seeds; the reference just forgets its KV
cache before every scoring, so it forwards the full sequence each time. The
results must be identical; the cost is compared side by side in one process.

    .venv/bin/python bench/bench_modes.py --lengths 20,100 --seeds 0-2
writes bench/results/modes.json and prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import tokconv
from tokconv.experiments.experiment import collect, prepare
from tokconv.experiments import RunConfig
from tokconv.engine import ScoringSession


class FullRescoreSession(ScoringSession):
    """The original's cost model: every scoring forwards the whole sequence from scratch."""

    def score(self, tokens, *, upto=None):
        self.reset()
        return super().score(tokens)


def run_mode(config: RunConfig, naive: bool):
    exp = prepare(config)
    if naive:
        for p in exp.players:
            p.session = FullRescoreSession(p.session.scorer)
    t0 = time.perf_counter()
    result = collect(exp, exp.records())
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--model-b", default="qwen2.5-coder-0.5b")
    ap.add_argument("--lengths", default="20,100")
    ap.add_argument("--seeds", default="0-1")
    ap.add_argument("--modes", default="sequential,single,batch,adversarial,adversarial-single")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "modes.json")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.seeds.split("-"))
    rows = []
    for mode in args.modes.split(","):
        for L in (int(x) for x in args.lengths.split(",")):
            tot = {"ours_tokens": 0, "ref_tokens": 0, "ours_s": 0.0, "ref_s": 0.0, "ours_passes": 0, "ref_passes": 0}
            for seed in range(lo, hi + 1):
                cfg = RunConfig(mode=mode, model_a=args.model, model_b=args.model_b if mode.startswith("adv") else None,
                                length=L, seed=seed, iterations=args.iterations)
                ours, t_ours = run_mode(cfg, naive=False)
                ref, t_ref = run_mode(cfg, naive=True)
                same = [(s.position, s.new_token) for s in ours.steps] == [(s.position, s.new_token) for s in ref.steps]
                if not same:
                    raise SystemExit(f"{mode} L={L} seed={seed}: cached and full re-scoring disagree")
                tot["ours_tokens"] += ours.cost.forwarded_tokens
                tot["ref_tokens"] += ref.cost.forwarded_tokens
                tot["ours_passes"] += ours.cost.forward_passes
                tot["ref_passes"] += ref.cost.forward_passes
                tot["ours_s"] += t_ours
                tot["ref_s"] += t_ref
            row = {"mode": mode, "length": L, "seeds": hi - lo + 1, **tot,
                   "token_ratio": tot["ref_tokens"] / max(1, tot["ours_tokens"]),
                   "time_ratio": tot["ref_s"] / max(1e-9, tot["ours_s"])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"machine": f"{platform.machine()} {platform.processor() or ''} {__import__('os').cpu_count()} cores",
           "runtime": tokconv.RUNTIME.notice(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print("\n| mode | L | seeds | forwarded tokens (ours / full re-score) | ratio | wall s (ours / full) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['length']} | {r['seeds']} | {r['ours_tokens']:,} / {r['ref_tokens']:,} | {r['token_ratio']:.1f}x | "
              f"{r['ours_s']:.1f} / {r['ref_s']:.1f} | {r['time_ratio']:.1f}x |")


if __name__ == "__main__":
    main()
