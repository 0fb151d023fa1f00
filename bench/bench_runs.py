"""Whole-run benchmark: what a user waits for, warm (models loaded) and in a fresh process.

Each configuration runs in its own subprocess: first a fresh-process run (the CLI user's wait,
loading included), then warm repeats over a few seeds. With ``--baseline CHECKOUT`` a checkout of
another commit runs the same configurations in alternating rounds, so before/after see the same
noise on this shared machine. With ``--busy`` the same tree also runs with one competing process
keeping a core busy during its warm runs (a dashboard shares its cores with a browser).

    .venv/bin/python bench/bench_runs.py
    .venv/bin/python bench/bench_runs.py --baseline ../old-checkout --rounds 3

Writes bench/results/runs.json and prints a markdown table for BENCHMARKS.md.

Peers (issue #17): with ``--peers`` the same runs are also made, in the same invocation and rounds,
by the same algorithm written plainly on other engines over the same GGUF files (bench/peer_runs.py,
run with ``--peer-python``, an interpreter that has them; tokconv's venv must never get them):

- ``torch``: PyTorch 2.13 CPU + transformers 5.23, float32, whole sequence forwarded every call
  (no KV cache): full re-scoring after every replacement, as the original experiment did;
- ``llamacpp``: llama.cpp through llama-cpp-python, ``logits_all=True``, 2 threads, the GGUF's
  quantized weights, full re-scoring (``reset()`` + ``eval()`` of the whole sequence);
- ``llamacpp-kv``: the same keeping llama.cpp's KV cache for the common prefix with the previous call.

In each round the trees take turns going first, then the peers run. tokconv's start tokens (its
``random_tokens`` for each seed, and seed+1000 for the fresh run) are handed to the peers, so all
start from the same text. The table
gives, per run and engine, warm and fresh seconds, model calls, forwarded tokens and tokconv's
speedup; a second table gives the memory floor: the weight bytes one call reads (compact for tokconv, float32 for
the baseline and PyTorch, the stored quantized bytes for llama.cpp) times the calls of the run, over the
memory bandwidth measured in this invocation (numpy streaming reads of a 1 GiB array: ``max`` on 1
and 2 threads, ``dot``; the highest rate).

Setup of the peers' interpreter (once; a separate venv, torch from the local CPU wheel):

    python3 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install torch==2.13.0 transformers==5.23.0 gguf==0.19.0 accelerate
    CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
        -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=ON \
        -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
        /work/peers-venv/bin/pip install llama-cpp-python==0.3.36    # builds llama.cpp from the sdist (~15 min)

(``-DGGML_NATIVE=ON`` builds fine but dies with SIGILL on the first ``eval``: these VMs' CPUs list AMX,
and ggml's AMX matmul runs ``tilezero``, which the guest may not execute. The flags above are
-march=native without AMX; on a machine without AVX-512, drop the AVX512 ones. On CPUs that list no
AMX, such as AMD's, ``-DGGML_NATIVE=ON`` worked: BENCHMARKS.md, 2026-12-02.)

Then:

    .venv/bin/python bench/bench_runs.py --rounds 1 --seeds 0,1 \
        --peers torch,llamacpp,llamacpp-kv --peer-python /work/peers-venv/bin/python
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# (label, mode, model A, model B, length)
RUNS = [
    ("SmolLM2 single, L=20", "single", "smollm2-135m", None, 20),
    ("SmolLM2 vs Qwen adversarial-single, L=20 (default battle)", "adversarial-single", "smollm2-135m", "qwen2.5-coder-0.5b", 20),
    ("SmolLM2 vs Qwen adversarial, L=20", "adversarial", "smollm2-135m", "qwen2.5-coder-0.5b", 20),
    # the other modes, Qwen alone and L=64 (#17 asks for every mode at L=20 and L=64); peers: the three above
    ("Qwen single, L=20", "single", "qwen2.5-coder-0.5b", None, 20),
    ("SmolLM2 sequential, L=20", "sequential", "smollm2-135m", None, 20),
    ("SmolLM2 batch, L=20", "batch", "smollm2-135m", None, 20),
    ("SmolLM2 vs Qwen adversarial, L=64", "adversarial", "smollm2-135m", "qwen2.5-coder-0.5b", 64),
    ("SmolLM2 single, L=64", "single", "smollm2-135m", None, 64),
    ("SmolLM2 vs Qwen adversarial-single, L=64", "adversarial-single", "smollm2-135m", "qwen2.5-coder-0.5b", 64),
]
PEER_MODES = ("single", "adversarial-single", "adversarial")  # the modes bench/peer_runs.py writes
PEERS = ("torch", "llamacpp", "llamacpp-kv")
ITERATIONS = 300


def _api():
    """run() and RunConfig of whichever tokconv is on the path (the layout changed over time), and
    prepare/collect where they exist (per-model call counts)."""
    importlib.import_module("tokconv")  # the fast path before MLX

    try:
        from tokconv.experiments import RunConfig, run
    except ImportError:  # a checkout from before the package had floors
        from tokconv.experiment import run
        from tokconv.records import RunConfig
    try:
        from tokconv.experiments import collect, prepare
    except ImportError:
        collect = prepare = None
    return RunConfig, run, prepare, collect


def _cost(r, name: str) -> float:
    c = r.cost
    return float(c[name] if isinstance(c, dict) else getattr(c, name))


def _one(api, config) -> dict:
    """One run: seconds, iterations, calls (also per model where the tree tells), tokens, status, start."""
    RunConfig, run, prepare, collect = api
    t0 = time.perf_counter()
    by_model = None
    if prepare is not None:
        exp = prepare(config)
        r = collect(exp, exp.records())
        by_model = {name: p.session.cost.forward_passes for name, p in zip(config.models, exp.players)}
    else:
        r = run(config)
    sec = time.perf_counter() - t0
    out = {"seconds": sec, "iterations": r.iterations, "calls": _cost(r, "forward_passes"),
           "tokens": _cost(r, "forwarded_tokens"), "status": r.status, "start": [int(t) for t in r.start_tokens]}
    if by_model is not None:
        out["calls_by_model"] = by_model
    return out


def worker(index: int, seeds: list[int], busy: bool = False, threaded: bool = False) -> dict:
    """One configuration: the first run cold in this process (models load), then warm runs per seed
    (with ``busy``, while another process spins on one core; with ``threaded``, each run in a new
    thread, as the dashboard makes them), then the first seed once more ("repeat": no new shapes)."""
    label, mode, a, b, length = RUNS[index]
    api = _api()
    RunConfig = api[0]

    def config(seed: int):
        return RunConfig(mode=mode, model_a=a, model_b=b, length=length, seed=seed, iterations=ITERATIONS)

    out = {"label": label, "warm": []}
    fresh = _one(api, config(seeds[0] + 1000))
    out["fresh_s"], out["fresh"] = fresh["seconds"], fresh
    out["fresh"]["seed"] = seeds[0] + 1000
    try:
        from tokconv.models.catalog import get_entry

        out["gguf"] = {m: str(get_entry(m).gguf_path()) for m in filter(None, (a, b))}
    except Exception:  # an old checkout, or a model outside the catalog: peers then cannot run
        pass
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        for seed in seeds:
            if threaded:
                box: list = []
                t = threading.Thread(target=lambda: box.append(_one(api, config(seed))))
                t.start()
                t.join()
                out["warm"].append({"seed": seed, **box[0]})
            else:
                out["warm"].append({"seed": seed, **_one(api, config(seed))})
        # the first warm seed again: every input shape already met (#17 item 4: what new shapes cost)
        out["repeat"] = {"seed": seeds[0], **_one(api, config(seeds[0]))}
    finally:
        if hog is not None:
            hog.kill()
    return out


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 and lines:  # finished its runs, then died on the way out: keep both facts
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        return {**json.loads(lines[-1]), "exit": f"exit {proc.returncode} after its runs: {last}"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(lines[-1])


def _spawn(tree: Path, index: int, seeds: str, busy: bool = False, threaded: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, str(HERE / "bench_runs.py"), "--worker", str(index), "--seeds", seeds] + ["--busy"] * busy
    cmd += ["--new-thread"] * threaded
    return _last_json(subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=tree))


def _spawn_peer(python: str, engine: str, index: int, tokconv_result: dict, timeout: int) -> dict:
    """The peer worker (bench/peer_runs.py under ``python``) on the start tokens tokconv used."""
    _, mode, a, b, _ = RUNS[index]
    if mode not in PEER_MODES:
        return {"error": f"bench/peer_runs.py has no {mode} mode"}
    if "error" in tokconv_result or "gguf" not in tokconv_result:
        return {"error": "no start tokens or GGUF paths: the tokconv worker of this round failed"}
    fresh = tokconv_result["fresh"]
    starts = [{"seed": fresh["seed"], "tokens": fresh["start"]}] + [
        {"seed": w["seed"], "tokens": w["start"]} for w in tokconv_result["warm"]]
    names = [m for m in (a, b) if m]
    cmd = [python, str(HERE / "peer_runs.py"), "--engine", engine, "--mode", mode, "--names", ",".join(names),
           "--model-a", tokconv_result["gguf"][a], "--starts", json.dumps(starts), "--iterations", str(ITERATIONS)]
    if b:
        cmd += ["--model-b", tokconv_result["gguf"][b]]
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1")
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    return _last_json(proc)


def measure_bandwidth(gib: float = 1.0, reps: int = 5, threads: int = 2) -> dict:
    """Memory read bandwidth over a ``gib`` GiB float64 array, best of ``reps``: ``np.max`` (a SIMD
    reduction, so memory-bound, unlike ``np.sum``'s pairwise sum) on one thread and on ``threads``
    threads each reducing its own slice (numpy releases the GIL), and ``np.dot(a, a)`` (BLAS). The
    highest, ``read_gb_s``, sets the memory floor. The copy rate (bytes read + written) for reference."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    a = np.ones(int(gib * (1 << 30)) // 8)
    b = np.empty_like(a)
    parts = np.array_split(a, threads)
    best: dict[str, float] = {}
    with ThreadPoolExecutor(threads) as pool:
        tests = {"max_1thread": a.max, f"max_{threads}threads": lambda: max(pool.map(np.max, parts)),
                 "dot": lambda: np.dot(a, a), "copy": lambda: np.copyto(b, a)}
        for _ in range(reps):
            for key, fn in tests.items():
                t0 = time.perf_counter()
                fn()
                best[key] = min(best.get(key, float("inf")), time.perf_counter() - t0)
    rates = {f"{k}_gb_s": (2 if k == "copy" else 1) * a.nbytes / t / 1e9 for k, t in best.items()}
    return {"read_gb_s": max(v for k, v in rates.items() if not k.startswith("copy")), **rates, "array_gib": gib}


def weight_bytes(path: str) -> dict:
    """Bytes of weights one model call reads: the output projection and every layer, not the input
    embedding table (only its rows are gathered) unless it doubles as the output projection (tied).
    ``float32``: at 4 bytes per weight (PyTorch, and tokconv's long calls); ``compact``: 1.5 bytes
    per weight, what tokconv's short calls read (tokconv.fastpath.compact); ``stored``: the GGUF's
    own (quantized) bytes, what llama.cpp reads."""
    from gguf import GGUFReader

    tensors = {t.name: (int(t.n_elements), int(t.n_bytes)) for t in GGUFReader(path).tensors}
    skip = {"token_embd.weight"} if "output.weight" in tensors else set()
    kept = [v for k, v in tensors.items() if k not in skip]
    return {"float32": 4 * sum(n for n, _ in kept), "stored": sum(b for _, b in kept),
            "compact": 3 * sum(n for n, _ in kept) // 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seeds", default="0,1,2", help="warm runs' seeds (default 0,1,2)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, alternating with the baseline (default 2)")
    ap.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT", help="also run this checkout of another commit")
    ap.add_argument("--baseline-weights", choices=("float32", "compact"), default="float32",
                    help="the weights the baseline's short calls read, for the memory floor (default float32)")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON", help="only print the tables of a saved result")
    ap.add_argument("--only", default=None, help="comma list of configuration numbers (0-based) to run")
    ap.add_argument("--busy", action="store_true", help="also run this tree with a competing process busy on one core")
    ap.add_argument("--new-thread", action="store_true",
                    help="make every warm run in a new thread, as the dashboard does (every tree)")
    ap.add_argument("--peers", default="", help=f"comma list of peer engines to run too: {', '.join(PEERS)}")
    ap.add_argument("--peer-python", default=None, metavar="PATH",
                    help="interpreter with torch/transformers/llama-cpp-python for the peers (never tokconv's venv)")
    ap.add_argument("--peer-timeout", type=int, default=3600, help="seconds one peer worker may take (default 3600)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "runs.json")
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, [int(s) for s in args.seeds.split(",")], args.busy, args.new_thread)))
        return
    if args.render is not None:
        print(render(json.loads(args.render.read_text())))
        return
    peers = [p for p in args.peers.split(",") if p]
    if any(p not in PEERS for p in peers):
        ap.error(f"--peers takes {', '.join(PEERS)}")
    if peers and not args.peer_python:
        ap.error("--peers needs --peer-python PATH (an interpreter with the peers' packages)")
    trees = {"tokconv": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    runs = {name: (tree, False) for name, tree in trees.items()} | ({"tokconv, one core busy": (ROOT, True)} if args.busy else {})
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(len(RUNS))
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
               "bandwidth": measure_bandwidth(), "weights": {}, "runs": {}, "baseline_weights": args.baseline_weights,
               "new_thread": args.new_thread}
    print(json.dumps({"bandwidth": results["bandwidth"]}), flush=True)
    for i in chosen:
        rounds: dict[str, list] = {name: [] for name in [*runs, *peers]}
        for r in range(args.rounds):
            # the trees take turns going first: the first process of a round ran slower fresh (BENCHMARKS.md)
            names = list(runs)[r % len(runs):] + list(runs)[: r % len(runs)]
            for name in names:
                tree, busy = runs[name]
                rounds[name].append(_spawn(tree, i, args.seeds, busy, args.new_thread))
            for engine in peers:
                rounds[engine].append(_spawn_peer(args.peer_python, engine, i, rounds["tokconv"][-1], args.peer_timeout))
        for r in rounds["tokconv"]:
            for model, path in r.get("gguf", {}).items():
                if model not in results["weights"]:
                    results["weights"][model] = weight_bytes(path)
        results["runs"][RUNS[i][0]] = rounds
        print(json.dumps({RUNS[i][0]: rounds}), flush=True)
    results["bandwidth_after"] = measure_bandwidth()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(render(results))


def _warm(rounds: list[dict]) -> list[dict]:
    return [w for r in rounds if "error" not in r for w in r["warm"]]


def _median(rounds: list[dict], key: str) -> float:
    ok = [r for r in rounds if "error" not in r]
    if key == "fresh_s":
        return statistics.median(r["fresh_s"] for r in ok) if ok else float("nan")
    warm = _warm(rounds)
    return statistics.median(w[key] for w in warm) if warm else float("nan")


def _floor_s(w: dict, weights: dict, kind: str, bw: float) -> float:
    """Seconds the weight reads of one run take at ``bw`` bytes/s (``calls_by_model`` needed)."""
    by = w.get("calls_by_model")
    if not by or any(m not in weights for m in by):
        return float("nan")
    def size(m: str) -> float:  # results saved before "compact" was recorded: 1.5 of the 4 bytes
        return weights[m].get(kind, weights[m]["float32"] * 3 / 8) if kind == "compact" else weights[m][kind]

    return sum(n * size(m) for m, n in by.items()) / bw


def render(results: dict) -> str:
    first = next(iter(results["runs"].values()))
    names = list(first)
    lines = [f"Machine: {results['machine']}.", "",
             "| run | engine | warm s | repeat s | fresh s | calls | forwarded tokens | warm ms/call | tokconv speedup warm | tokconv speedup fresh |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, rounds in results["runs"].items():
        tw, tf = _median(rounds["tokconv"], "seconds"), _median(rounds["tokconv"], "fresh_s")
        for n in names:
            rs = rounds[n]
            err = next((r["error"] for r in rs if "error" in r), None)
            if err and not any("error" not in r for r in rs):
                lines.append(f"| {label} | {n} | failed: {err[:120]} | | | | | | | |")
                continue
            w, f = _median(rs, "seconds"), _median(rs, "fresh_s")
            sp = "-" if n == "tokconv" else f"{w / tw:.1f}x"
            spf = "-" if n == "tokconv" else f"{f / tf:.1f}x"
            per = statistics.median(x["seconds"] / x["calls"] for x in _warm(rs) if x["calls"]) if _warm(rs) else float("nan")
            reps = [r["repeat"]["seconds"] for r in rs if "repeat" in r]  # older results and peers: none
            rep = f"{statistics.median(reps):.2f}" if reps else "-"
            lines.append(f"| {label} | {n} | {w:.2f} | {rep} | {f:.1f} | {_median(rs, 'calls'):.0f} | {_median(rs, 'tokens'):.0f} | "
                         f"{1e3 * per:.0f} | {sp} | {spf} |")
    # the floor takes the better of the two bandwidth measurements (start and end of the invocation):
    # on a shared machine the lower one is mostly other processes' traffic
    start, after = (results.get(k, {}).get("read_gb_s") for k in ("bandwidth", "bandwidth_after"))
    bw = max(filter(None, (start, after)), default=None)
    weights = results.get("weights", {})
    if bw and weights:
        bps = bw * 1e9
        wl = ", ".join(f"{m} {v['float32'] / 1e6:.0f} MB float32 / {v['stored'] / 1e6:.0f} MB stored" for m, v in weights.items())
        lines += ["", f"Memory floor: the weight bytes one call reads ({wl}; float32 for PyTorch, "
                      f"{results.get('baseline_weights', 'float32')} for the baseline, "
                      f"compact for tokconv's short calls, the GGUF's stored bytes for llama.cpp), times each model's calls, over the read bandwidth measured "
                      f"in this invocation, {bw:.1f} GB/s (the better of {start or float('nan'):.1f} at the start and "
                      f"{after or float('nan'):.1f} at the end)"
                  + ": the time a run cannot beat while every call streams all weights from memory once. "
                    "Per warm run, median over seeds and rounds.", "",
                  "| run | engine | weights read | warm s | floor s | ms/call | floor ms/call | ÷ floor |",
                  "|---|---|---|---|---|---|---|---|"]
        # tokconv's calls in these runs are short (a re-scored suffix): compact weights, where active
        kinds = {"tokconv": "compact", "tokconv, one core busy": "compact", "torch": "float32", "llamacpp": "stored",
                 "llamacpp-kv": "stored", "baseline": results.get("baseline_weights", "float32")}
        for label, rounds in results["runs"].items():
            for n in names:
                warm = [w for w in _warm(rounds[n]) if w.get("calls")]
                fl = [_floor_s(w, weights, kinds.get(n, "float32"), bps) for w in warm]
                if not warm or any(f != f for f in fl):  # no runs, or no per-model calls (an old checkout)
                    continue
                per = statistics.median(w["seconds"] / w["calls"] for w in warm)
                fper = statistics.median(f / w["calls"] for f, w in zip(fl, warm))
                lines.append(f"| {label} | {n} | {kinds.get(n, 'float32')} | {statistics.median(w['seconds'] for w in warm):.2f} | "
                             f"{statistics.median(fl):.2f} | {1e3 * per:.0f} | {1e3 * fper:.0f} | {per / fper:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
