"""One-sequence model calls in C (tokconv/engine/native.py) against the same calls through MLX (the
shapeless trace of tokconv/engine/lean.py), in one process, taking turns; and how closely they agree.

Speed: each call adds ``--tokens`` new tokens after ``--cached`` positions; every side reads the same
compact weights: MLX and native calls with float32 inputs, and native calls with int16 inputs. The memory floor is the compact bytes read per call over the machine's read bandwidth
measured in the same run (bench_runs.measure_bandwidth).

Agreement (#17: at least 99.5% of argmax predictions equal to the float32 MLX path): ``--sequences``
random sequences of ``--length`` tokens per model, each scored by a session through native calls and
through MLX (``TOKCONV_NO_NATIVE=1``) with float32 inputs, first 30 tokens, then the rest after that
cached prefix: native calls with float32 inputs, with the compact kernel's int16 inputs (the default
where the CPU has AVX-512 VNNI), and with the input of every product rounded as an int8, bfloat16
or int16 kernel would (``--probes``), to measure what such a kernel would change (FINDINGS.md).

    .venv/bin/python bench/native_calls.py
    .venv/bin/python bench/native_calls.py --models smollm2-135m --tokens 1,9 --rounds 12

Writes bench/results/native-calls.json and prints markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import tokconv  # noqa: F401  (the fast path before MLX)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def speed(lm, tokens: list[int], cached: int, rounds: int, calls: int) -> list[dict]:
    """Median ms per call of each side, per round, for each count of new tokens."""
    import mlx.core as mx

    from tokconv.engine import forward, lean, native
    from tokconv.fastpath import compact

    nat = native.of(lm)
    if nat is None or lean._of(lm) is None:
        raise SystemExit(f"{lm.name}: no native calls here (not llama/qwen2, or no compact weights)")
    stream = mx.default_stream(mx.cpu)
    rng = np.random.default_rng(0)
    prefix = rng.integers(0, lm.vocab_size, cached)
    caches = forward.make_caches(lm)
    mx.eval(forward.call(lm, mx.array(prefix[None].astype(np.int32)), caches, stream))
    past = [(c.keys, c.values) for c in caches]
    cache = native.NativeCache(nat)
    native.call(nat, prefix, cache, 2)
    out = []
    sides = ["mlx", "native", "native int16"] if compact.int16_inputs() else ["mlx", "native"]
    for n in tokens:
        times: dict[str, list[float]] = {side: [] for side in sides}
        for r in range(rounds):
            for side in sides[r % len(sides):] + sides[: r % len(sides)]:  # each side goes first in turn
                ts = []
                with compact.int16(side == "native int16"):  # mlx and native: float32 inputs
                    for _ in range(calls):
                        x = rng.integers(0, lm.vocab_size, n)
                        t0 = time.perf_counter()
                        if side == "mlx":
                            logits, kv = lean.call(lean._of(lm), mx.array(x[None].astype(np.int32)), past, stream)
                            mx.eval(logits, kv)
                        else:
                            cache.trim(cache.offset - cached)
                            native.call(nat, x, cache, 2)
                        ts.append(time.perf_counter() - t0)
                times[side].append(statistics.median(ts) * 1e3)
        out.append({"tokens": n, "ms": {s: statistics.median(v) for s, v in times.items()}, "rounds": times})
    return out


# What a lower-precision kernel would change: the native call with the input of every product rounded
# (tokconv_native_set_probe in _native.c): (kind, values per integer scale)
# "int16 kernel" is no probe: the compact kernel's own int16 inputs (the default where the CPU has VNNI).
PROBES = {"native": (0, 16), "int16 kernel": (0, 16), "int8 per 16": (1, 16), "int8 per 32": (1, 32),
          "bfloat16": (2, 16), "int16 per 16": (3, 16), "int16 per row": (3, 1 << 30)}


def agreement(lm, sequences: int, length: int, probes: list[str]) -> dict:
    """Argmax agreement and entropy error against MLX session scores on random sequences: the native
    call as it is, and with each of ``probes`` (PROBES)."""
    from tokconv.engine import Scorer, native
    from tokconv.fastpath import compact

    rng = np.random.default_rng(11)
    seqs = rng.integers(0, lm.vocab_size, (sequences, length))

    def score(flag: str) -> list:
        os.environ["TOKCONV_NO_NATIVE"] = flag
        out = []
        for s in seqs:
            session = Scorer(lm).session()
            session.score(s[None, :30])
            out.append(session.score(s[None]))
        return out

    with compact.int16(False):  # the float32 path
        theirs = score("1")
    lo = 0 if lm.bos_id is not None else 1  # position 0 has no prediction without a BOS token
    results = {}
    for name in probes:
        if name == "int16 kernel" and not compact.int16_inputs():
            continue
        native.library().tokconv_native_set_probe(*PROBES[name])
        try:
            with compact.int16(name == "int16 kernel"):
                mine = score("0")
        finally:
            native.library().tokconv_native_set_probe(0, 16)
        same = np.concatenate([(a.argmax == b.argmax)[0, lo:] for a, b in zip(mine, theirs)])
        err = np.concatenate([np.abs(a.entropy - b.entropy)[0, lo:] for a, b in zip(mine, theirs)])
        results[name] = {"positions": int(same.size), "argmax_agreement": float(same.mean()),
                         "entropy_err_max": float(err.max()), "entropy_err_median": float(np.median(err))}
    os.environ.pop("TOKCONV_NO_NATIVE")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    ap.add_argument("--tokens", default="1,9", help="new tokens per call (default 1,9)")
    ap.add_argument("--cached", type=int, default=11)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=15)
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--probes", default=",".join(PROBES), help=f"agreement of: {', '.join(PROBES)} (comma list)")
    ap.add_argument("--no-speed", action="store_true", help="only the agreement")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "native-calls.json")
    args = ap.parse_args()
    from bench_runs import measure_bandwidth

    from tokconv.engine.streams import on_call_thread
    from tokconv.models import load

    bandwidth = measure_bandwidth()
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
               "bandwidth": bandwidth, "models": {}}
    for name in args.models.split(","):
        lm = load(name)
        results["models"][name] = {
            "compact_bytes": lm.compact.bytes,
            "speed": [] if args.no_speed else on_call_thread(speed, lm, [int(t) for t in args.tokens.split(",")],
                                                             args.cached, args.rounds, args.calls),
            "agreement": on_call_thread(agreement, lm, args.sequences, args.length, args.probes.split(","))}
        print(json.dumps({name: results["models"][name]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(render(results))


def render(results: dict) -> str:
    bw = results["bandwidth"].get("read_gb_s")
    lines = ["| model | new tokens | MLX (ms) | native (ms) | native, int16 inputs (ms) | speedup over MLX | "
             "memory floor (ms) |", "|---|---|---|---|---|---|---|"]
    for name, m in results["models"].items():
        floor = f"{m['compact_bytes'] / (bw * 1e9) * 1e3:.1f}" if bw else "?"
        for s in m["speed"]:
            a, b = s["ms"]["mlx"], s["ms"]["native"]
            c = s["ms"].get("native int16")
            best = min(b, c) if c else b
            lines.append(f"| {name} | {s['tokens']} | {a:.1f} | {b:.1f} | {f'{c:.1f}' if c else '-'} | {a / best:.2f}x "
                         f"| {floor} |")
    lines += ["", "| model | arithmetic | positions | argmax agreement with MLX float32 | entropy error, max | median |",
              "|---|---|---|---|---|---|"]
    for name, m in results["models"].items():
        for probe, g in m["agreement"].items():
            lines.append(f"| {name} | {probe} | {g['positions']} | {g['argmax_agreement']:.2%} | "
                         f"{g['entropy_err_max']:.1e} | {g['entropy_err_median']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
