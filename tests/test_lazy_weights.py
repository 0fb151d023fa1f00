"""Float32 weights that native calls never read stay in the converted file (tokconv/fastpath/lazy.py,
tokconv/fastpath/filemap.py): runs give what they gave with every weight loaded, the memory is not
spent, and the first call through MLX loads them on whatever thread it runs.

Each check that depends on what a process has loaded runs in a fresh process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tokconv.fastpath import compact, filemap
from tokconv.models.resolve import resolve

pytestmark = pytest.mark.slow  # bundled models, loaded in fresh processes

ROOT = Path(__file__).resolve().parent.parent
BATTLE = ("smollm2-135m", "qwen2.5-coder-0.5b")

CHILD = r"""
import hashlib, json, sys, threading
import numpy as np
import tokconv
from tokconv.engine import Scorer, native
from tokconv.experiments import RunConfig, run
from tokconv.fastpath import compact, lazy
from tokconv.models import load

def rss_anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

def digest(result):
    d = result.to_dict()
    keep = {k: d[k] for k in ("status", "iterations", "period", "start_tokens", "final_text", "fingerprints")}
    keep["steps"] = [{k: v for k, v in s.items() if "second" not in k} for s in d["steps"]]
    return hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()

out = {}
models = [load(name) for name in sys.argv[1:]]
out["rss_after_load_mb"] = rss_anon_mb()
out["waiting_after_load"] = [lazy.waiting(lm.model) for lm in models]
out["native"] = [native.of(lm) is not None for lm in models]
out["runs"] = [digest(run(RunConfig(mode="adversarial-single", model_a=sys.argv[1], model_b=sys.argv[2], length=20, seed=s)))
               for s in (0, 1)]
out["runs"].append(digest(run(RunConfig(mode="single", model_a=sys.argv[2], length=16, seed=3))))
out["rss_after_runs_mb"] = rss_anon_mb()
out["waiting_after_runs"] = [lazy.waiting(lm.model) for lm in models]

# a batch of two sequences goes through MLX: its first call loads the weights, on the call thread
lm = models[0]
tokens = np.random.default_rng(7).integers(0, lm.vocab_size, (2, 24))
before = compact.stats()
scores = Scorer(lm).score(tokens)
after = compact.stats()
out["batch_compact_calls"] = after.compact_calls - before.compact_calls
out["waiting_after_batch"] = lazy.waiting(lm.model)
out["batch_scores"] = hashlib.sha1(scores.argmax.tobytes() + scores.entropy.tobytes()).hexdigest()
one = Scorer(lm).score(tokens[:1])  # one sequence: native again, after the weights were replaced
out["native_after_batch"] = native.of(lm) is not None
out["one_vs_batch_argmax"] = float(np.mean(one.argmax[0] == scores.argmax[0]))

# mlx-lm's own generation (tokconv complete) runs the model outside tokconv's calls: it loads them first
from tokconv.commands.complete import continuation
qwen = models[1]
out["waiting_before_complete"] = lazy.waiting(qwen.model)
out["complete"] = "".join(continuation(qwen, "def add(a, b):", 8))
out["waiting_after_complete"] = lazy.waiting(qwen.model)
print("RESULT " + json.dumps(out))
"""


def _child(env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, *BATTLE], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def lazy_and_eager() -> tuple[dict, dict]:
    if compact.library() is None:
        pytest.skip("compact weights are off on this CPU: every weight is loaded, as before")
    for name in BATTLE:
        resolve(name)  # converted (and its compact cache written) before either child is timed
    return _child(), _child({"TOKCONV_EAGER_WEIGHTS": "1"})


def test_runs_are_the_same_with_weights_left_in_the_file(lazy_and_eager):
    lazy, eager = lazy_and_eager
    assert lazy["native"] == eager["native"] == [True, True]
    assert lazy["runs"] == eager["runs"]  # battles and a single run, step by step, bit for bit
    assert lazy["batch_scores"] == eager["batch_scores"]  # the MLX path after the late load


def test_the_float32_matrices_are_never_loaded_by_native_runs(lazy_and_eager):
    lazy, eager = lazy_and_eager
    assert lazy["waiting_after_load"] == lazy["waiting_after_runs"] == [True, True]
    assert eager["waiting_after_load"] == [False, False]
    # Qwen2.5-0.5B alone holds ~2.5 GB of float32 matrices; the lazy process must not hold them
    assert eager["rss_after_load_mb"] - lazy["rss_after_load_mb"] > 1500, (lazy, eager)
    assert lazy["rss_after_runs_mb"] < eager["rss_after_runs_mb"] - 1500, (lazy, eager)


def test_the_first_call_through_mlx_loads_the_weights_and_keeps_compact_products(lazy_and_eager):
    lazy, eager = lazy_and_eager
    assert lazy["waiting_after_batch"] is False
    # the interposer knows MLX's new buffers: short products still run on compact weights
    assert lazy["batch_compact_calls"] > 0
    assert lazy["batch_compact_calls"] == eager["batch_compact_calls"]
    assert lazy["native_after_batch"] is True  # native calls still served (by the file's addresses)
    assert lazy["one_vs_batch_argmax"] >= 0.9  # the native row and the MLX batch agree on predictions


def test_generation_with_mlx_lm_loads_the_weights_first(lazy_and_eager):
    lazy, eager = lazy_and_eager
    assert lazy["waiting_before_complete"] is True and lazy["waiting_after_complete"] is False
    assert lazy["complete"] == eager["complete"] and lazy["complete"].strip()


def test_a_weight_replaced_after_loading_is_never_taken_from_the_file():
    """Code that swaps a weight (an edit, an ablation) must get its own values: the file's view of
    the old weight may not stand in for it, so the model leaves native calls."""
    code = r"""
import tokconv  # first: the fast path goes in before MLX loads
import mlx.core as mx
from tokconv.engine import native
from tokconv.fastpath import lazy
from tokconv.models import load
lm = load("smollm2-135m")
assert lazy.waiting(lm.model)
proj = lm.model.model.layers[3].mlp.up_proj
view = lazy.file_view(lm.model, proj.weight)
assert view is not None and view.shape == tuple(proj.weight.shape)
proj.weight = mx.array(view) * 1.5
assert lazy.file_view(lm.model, proj.weight) is None
print("NATIVE", native.of(lm) is not None)
"""
    if compact.library() is None:
        pytest.skip("compact weights are off on this CPU")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NATIVE False" in proc.stdout


def test_file_views_are_the_files_tensors():
    path, _, _ = resolve("smollm2-135m")
    views = filemap.float32_tensors(path)
    (weights_file,) = path.glob("*.safetensors")
    stored = load_file(weights_file)
    assert set(views) == {k for k, v in stored.items() if v.dtype == np.float32} and views
    for name, view in views.items():
        assert not view.flags.writeable and view.flags.c_contiguous
        np.testing.assert_array_equal(view, stored[name])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "huge header"])
def test_a_damaged_weights_file_gives_no_views(tmp_path, damage):
    path, _, _ = resolve("smollm2-135m")
    (weights_file,) = path.glob("*.safetensors")
    data = weights_file.read_bytes()[:1 << 20]
    bad = tmp_path / "model.safetensors"
    if damage == "truncated":
        bad.write_bytes(data)  # the header promises tensors past the end
    elif damage == "garbage":
        bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + data[:100])
    else:
        bad.write_bytes((1 << 40).to_bytes(8, "little") + data[8:100])
    assert filemap.float32_tensors(tmp_path) == {}  # the load reads every weight itself, as before


def test_a_matrix_registered_from_its_file_multiplies_and_a_wrong_cache_file_is_rebuilt(tmp_path):
    """compact_model with the file's views: the weight stays unevaluated, products from the file's
    address are right, and a cache file of another matrix is caught and fitted again from the file."""
    import gguf
    import mlx.core as mx
    from safetensors.numpy import save_file

    from tokconv.models import catalog

    if compact.library() is None:
        pytest.skip("compact weights are off on this CPU")
    reader = gguf.GGUFReader(catalog.get_entry("smollm2-135m").gguf_path())
    tensors = {t.name: t for t in reader.tensors}

    def rows(name: str) -> np.ndarray:  # 64 rows dequantized as the converter does: on an 8-bit grid
        t = tensors[name]
        return np.ascontiguousarray(gguf.quants.dequantize(t.data[:64], t.tensor_type).astype(np.float32).reshape(64, -1))

    w, other = rows("blk.0.ffn_down.weight"), rows("blk.1.ffn_down.weight")
    save_file({"down.weight": w, "other.weight": other}, str(tmp_path / "model.safetensors"))
    x = np.random.default_rng(0).standard_normal((3, w.shape[1])).astype(np.float32)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    tol = 1e-2 * np.abs(want).max()

    class Holder:  # compact forms live as long as their model
        pass

    def register() -> tuple[Holder, np.ndarray]:
        holder, lazy_w = Holder(), mx.load(str(tmp_path / "model.safetensors"))["down.weight"]
        views = filemap.float32_tensors(tmp_path)
        report = compact.compact_model(holder, [("down", lazy_w)], tmp_path, views)
        assert report.compact == 1
        assert [(a is lazy_w, v is views["down.weight"]) for a, v in compact.waiting(holder)] == [(True, True)]
        return holder, compact.gemm(x, views["down.weight"])

    holder, got = register()
    assert np.abs(got - want).max() <= tol
    (cached,) = (tmp_path / compact.CACHE_FORMAT).glob("down.*.bin")
    del holder
    import gc

    gc.collect()
    holder = Holder()  # another matrix's compact form under this one's name
    compact.compact_model(holder, [("down", mx.array(other))], tmp_path / "elsewhere")
    (foreign,) = (tmp_path / "elsewhere" / compact.CACHE_FORMAT).glob("down.*.bin")
    del holder
    gc.collect()
    cached.write_bytes(foreign.read_bytes())
    holder, got = register()
    assert np.abs(got - want).max() <= tol
    assert cached.read_bytes() != foreign.read_bytes()
