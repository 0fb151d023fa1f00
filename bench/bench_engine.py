"""Engine benchmark: scoring speed, load times and memory for each bundled model,
side by side with the reference BLAS and with PyTorch + transformers on the same GGUF.

Every configuration runs in its own subprocess (the BLAS fix must be decided
before MLX is imported, and peak memory is per process); all run in one
invocation so ratios compare like with like on a noisy machine.

    .venv/bin/python bench/bench_engine.py                 # everything (~15-25 min)
    .venv/bin/python bench/bench_engine.py --models smollm2-135m --shapes 1x20,32x20
    .venv/bin/python bench/bench_engine.py --models smollm2-135m --shapes 1x20,32x20 --baseline ../old-checkout

``--baseline`` times a checkout of an earlier commit too (its own bench script's worker), in the
same alternating rounds: a before/after comparison that sees the same noise.

Writes bench/results/engine.json and prints a markdown table for BENCHMARKS.md.
The PyTorch peer runs when torch is installed (bench only, never a tokconv
dependency): `.venv/bin/pip install torch==2.13.0 accelerate`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SHAPES = "1x20,32x20,1x256,32x256"


def _timeit(fn, reps: int) -> float:
    fn()  # warm-up: JIT compiles, allocator settles
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _reps(b: int, l: int) -> int:
    return max(2, min(10, 4000 // (b * l)))


def worker_mlx(model: str, shapes: list[tuple[int, int]]) -> dict:
    """Scoring time (forward + argmax + entropy) with tokconv's engine, in this process's runtime setup."""
    import numpy as np

    import tokconv
    from tokconv.engine import Scorer

    t0 = time.perf_counter()
    lm = tokconv.load(model)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    out = {"runtime": tokconv.RUNTIME.notice(), "load_s": load_s, "converted": lm.converted, "shapes": {}}
    for b, l in shapes:
        tokens = rng.integers(0, min(lm.vocab_size, 30000), size=(b, l))
        sec = _timeit(lambda: Scorer(lm).score(tokens), _reps(b, l))
        out["shapes"][f"{b}x{l}"] = {"seconds": sec, "tokens_per_s": b * l / sec}
    import resource

    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def worker_torch(model: str, shapes: list[tuple[int, int]]) -> dict:
    """PyTorch + transformers plain forward (logits only) on the same GGUF file."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from tokconv.models.catalog import get_entry

    path = get_entry(model).gguf_path()
    t0 = time.perf_counter()
    m = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
    m.eval()
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    out = {"runtime": f"torch {torch.__version__}, {torch.get_num_threads()} threads", "load_s": load_s, "shapes": {}}
    for b, l in shapes:
        x = torch.tensor(rng.integers(0, 30000, size=(b, l)))

        def fwd():
            with torch.inference_mode():
                m(x, use_cache=False).logits

        sec = _timeit(fwd, _reps(b, l))
        out["shapes"][f"{b}x{l}"] = {"seconds": sec, "tokens_per_s": b * l / sec}
    import resource

    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _spawn(kind: str, model: str, shapes: str, env_extra: dict[str, str], timeout: int = 3600,
           tree: Path = ROOT) -> dict:
    env = {**os.environ, **env_extra}
    if tree != ROOT:  # another checkout: its own package first on the path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(tree / "bench" / "bench_engine.py"), "--worker", kind, "--models", model, "--shapes", shapes]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tree)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_of(runs: list[dict]) -> dict:
    """One result from several rounds: median seconds per shape and load time, the highest peak
    memory, and every round's seconds under ``rounds``."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    out = {"runtime": ok[0].get("runtime"), "load_s": statistics.median(r["load_s"] for r in ok),
           "peak_rss_mb": max(r["peak_rss_mb"] for r in ok), "shapes": {}}
    for shape, first in ok[0]["shapes"].items():
        secs = [r["shapes"][shape]["seconds"] for r in ok]
        b, l = (int(v) for v in shape.split("x"))
        med = statistics.median(secs)
        out["shapes"][shape] = {"seconds": med, "tokens_per_s": b * l / med, "rounds": secs}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b,gemma3-270m")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="BxL list")
    ap.add_argument("--slow-shapes", default="1x20,32x20", help="shapes for the reference-BLAS run (30x slower)")
    ap.add_argument("--worker", choices=["mlx", "torch"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3, help="tokconv/PyTorch rounds, alternating (median kept)")
    ap.add_argument("--openblas", action="store_true", help="also time tokconv on OpenBLAS (TOKCONV_NO_MKL=1)")
    ap.add_argument("--nopack", action="store_true", help="also time tokconv on MKL without packed weights (TOKCONV_NO_PACK=1)")
    ap.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                    help="also time tokconv from this checkout of another commit, alternating (before/after)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold load and the reference BLAS (faster)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "engine.json")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.worker:
        fn = worker_mlx if args.worker == "mlx" else worker_torch
        print(json.dumps(fn(args.models, shapes)))
        return

    sys.path.insert(0, str(HERE))
    from gemm_ceiling import measure

    import importlib.util

    have_torch = importlib.util.find_spec("torch") is not None
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "gemm_ceiling": measure(),
        "models": {},
    }
    print(json.dumps({"gemm_ceiling": results["gemm_ceiling"]}), flush=True)
    for model in args.models.split(","):
        r: dict = {}
        if not args.no_cold:
            with tempfile.TemporaryDirectory() as cold_cache:  # cold: convert from the GGUF into an empty cache
                r["cold"] = _spawn("mlx", model, "1x20", {"TOKCONV_CACHE": cold_cache})
        # warm from here on: the converted folder exists now. tokconv and PyTorch alternate, round
        # after round, so that both see the same slow and fast spells of this shared machine.
        rounds: dict[str, list] = {"fast": [], "baseline": [], "torch": [], "openblas": [], "nopack": []}
        for _ in range(args.rounds):
            rounds["fast"].append(_spawn("mlx", model, args.shapes, {}))
            if args.baseline:
                rounds["baseline"].append(_spawn("mlx", model, args.shapes, {}, tree=args.baseline.resolve()))
            if have_torch:
                rounds["torch"].append(_spawn("torch", model, args.shapes, {}))
            if args.openblas:
                rounds["openblas"].append(_spawn("mlx", model, args.shapes, {"TOKCONV_NO_MKL": "1"}))
            if args.nopack:
                rounds["nopack"].append(_spawn("mlx", model, args.shapes, {"TOKCONV_NO_PACK": "1"}))
        r.update({k: _median_of(v) for k, v in rounds.items() if v})
        if not args.no_cold:
            r["reference_blas"] = _spawn("mlx", model, args.slow_shapes, {"TOKCONV_NO_FAST_BLAS": "1"})
        results["models"][model] = r
        print(json.dumps({model: r}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(render(results))


def render(results: dict) -> str:
    """Markdown tables of a results dict."""
    g = results["gemm_ceiling"]
    lines = [f"Machine: {results['machine']}; Python {results['python']}.", "", f"GEMM ceiling (same run): `{json.dumps(g)}`", ""]
    lines += ["| model | shape BxL | tokconv (s) | tok/s | baseline checkout (s) | without packed weights (s) | tokconv on OpenBLAS (s) | reference BLAS (s) | PyTorch (s) | tokconv vs PyTorch |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(run: dict, shape: str) -> str:
        v = run.get("shapes", {}).get(shape, {}).get("seconds")
        return f"{v:.3f}" if v else "-"

    for model, r in results["models"].items():
        fast, tor = r.get("fast", {}), r.get("torch", {})
        for shape, m in fast.get("shapes", {}).items():
            t = tor.get("shapes", {}).get(shape, {}).get("seconds")
            ratio = f"{t / m['seconds']:.2f}x" if t else "-"
            lines.append(f"| {model} | {shape} | {m['seconds']:.3f} | {m['tokens_per_s']:.0f} | {cell(r.get('baseline', {}), shape)} | "
                         f"{cell(r.get('nopack', {}), shape)} | "
                         f"{cell(r.get('openblas', {}), shape)} | "
                         f"{cell(r.get('reference_blas', {}), shape)} | {cell(tor, shape)} | {ratio} |")
    lines += ["", "| model | cold load (convert) s | warm load s | peak RSS MB (tokconv) | without packs | peak RSS MB (PyTorch) |",
              "|---|---|---|---|---|---|"]
    for model, r in results["models"].items():
        lines.append(
            f"| {model} | {r.get('cold', {}).get('load_s', float('nan')):.1f} | {r.get('fast', {}).get('load_s', float('nan')):.1f} | "
            f"{r.get('fast', {}).get('peak_rss_mb', float('nan')):.0f} | {r.get('nopack', {}).get('peak_rss_mb', float('nan')):.0f} | "
            f"{r.get('torch', {}).get('peak_rss_mb', float('nan')):.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
