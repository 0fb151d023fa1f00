"""A shapeless model call in one compiled trace against the same call in segments of
``lean.SEGMENT_LAYERS`` layers (tokconv/engine/lean.py), in one process, taking turns.

MLX rebuilds a replayed trace node by node on the calling thread before any of it computes. In
segments, each is set running (``mx.async_eval``) before the next one is rebuilt. Both sides share the
model's weights, compact forms and KV cache; each call adds ``--tokens`` new tokens after
``--cached`` positions, and the logits and keys of both sides are compared bit for bit.

    .venv/bin/python bench/lean_segments.py
    .venv/bin/python bench/lean_segments.py --models smollm2-135m --tokens 1,9 --rounds 12

Writes bench/results/lean-segments.json and prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import tokconv  # noqa: F401  (the fast path before MLX)

HERE = Path(__file__).resolve().parent


def measure(name: str, tokens: list[int], cached: int, rounds: int, calls: int) -> list[dict]:
    """Median ms per call of each side, per round, for each count of new tokens."""
    import mlx.core as mx

    from tokconv.engine import forward, lean
    from tokconv.models import load

    lm = load(name)
    stream = mx.default_stream(mx.cpu)
    segmented = lean._of(lm)
    if segmented is None:
        raise SystemExit(f"{name}: its calls do not take the shapeless step")
    sides = {"one trace": dataclasses.replace(segmented, segments=[(0, len(segmented.layers))], steps={}),
             "segments": segmented}
    rng = np.random.default_rng(0)
    caches = forward.make_caches(lm)
    mx.eval(forward.call(lm, mx.array(rng.integers(0, lm.vocab_size, (1, cached))), caches, stream))
    past = [(c.keys, c.values) for c in caches]
    out = []
    for n in tokens:
        times: dict[str, list[float]] = {side: [] for side in sides}
        for r in range(rounds):
            for side in (list(sides) if r % 2 else list(sides)[::-1]):
                ts = []
                for _ in range(calls):
                    x = mx.array(rng.integers(0, lm.vocab_size, (1, n)))
                    t0 = time.perf_counter()
                    logits, kv = lean.call(sides[side], x, past, stream)
                    mx.eval(logits, kv)
                    ts.append(time.perf_counter() - t0)
                times[side].append(1e3 * statistics.median(ts))
        x = mx.array(rng.integers(0, lm.vocab_size, (1, n)))
        got = [lean.call(s, x, past, stream) for s in sides.values()]
        same = mx.array_equal(got[0][0], got[1][0]).item() and all(
            mx.array_equal(a, b).item() for pa, pb in zip(got[0][1], got[1][1]) for a, b in zip(pa, pb))
        out.append({"model": name, "tokens": n, "cached": cached, "segments": len(segmented.segments),
                    "layers": len(segmented.layers), "ms": times, "bits_equal": bool(same)})
        print(json.dumps(out[-1]), flush=True)
    return out


def render(results: dict) -> str:
    lines = [f"Machine: {results['machine']}.", "",
             "| model | new tokens | segments | one trace, ms | segments, ms | speedup | bits equal |",
             "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        one, seg = (statistics.median(r["ms"][k]) for k in ("one trace", "segments"))
        lines.append(f"| {r['model']} | {r['tokens']} | {r['segments']} of {r['layers']} layers | {one:.1f} | {seg:.1f} "
                     f"| {one / seg:.2f}x | {'yes' if r['bits_equal'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    ap.add_argument("--tokens", default="1,9", help="new tokens per call (comma list)")
    ap.add_argument("--cached", type=int, default=11, help="cached positions before each call")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calls", type=int, default=15, help="calls per side and round (their median is kept)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "lean-segments.json")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        rows += measure(name, [int(t) for t in args.tokens.split(",")], args.cached, args.rounds, args.calls)
    results = {"machine": f"{platform.machine()}, {platform.platform()}", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(render(results))


if __name__ == "__main__":
    main()
