"""tokconv.fastpath: the Linux CPU fast path (BLAS, JIT flags, malloc), checked in fresh processes.

Import order matters (the BLAS must load before mlx.core), so most checks run a child
Python that imports tokconv first and prints JSON. Speed is left to bench/gemm_ceiling.py:
here we check what is loaded, where kernels are built, and that results stay correct.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tokconv import fastpath
from tokconv.fastpath import blas, build, threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux CPU fast path")

PROBE = """
import json, os, sys
import tokconv.fastpath as rt
from tokconv.fastpath import blas
import numpy as np
import mlx.core as mx

info = rt.setup()
rng = np.random.default_rng(0)
a, b = rng.standard_normal((257, 300), np.float32), rng.standard_normal((300, 129), np.float32)
got = np.array(mx.matmul(mx.array(a), mx.array(b)))
err = float(np.abs(got - a.astype(np.float64) @ b).max())
x = rng.standard_normal(100_000).astype(np.float32)
silu = np.array(mx.compile(lambda v: v * mx.sigmoid(v))(mx.array(x)))
silu_err = float(np.abs(silu - x / (1 + np.exp(-x))).max())
provider = blas.sgemm_provider()
print(json.dumps(dict(
    blas=info.blas, compiler_flags=info.compiler_flags, allocator=info.allocator,
    warnings=info.warnings, notice=info.notice(), provider=provider,
    mapped=bool(provider) and provider in open("/proc/self/maps").read(),
    matmul_err=err, silu_err=silu_err, tmpdir=os.environ.get("TMPDIR"),
    path0=os.environ["PATH"].split(os.pathsep)[0],
    denormal=float(np.array([1e-40], np.float32).sum()),
)))
"""


def run_child(code: str, *, env: dict[str, str] | None = None, pre: str = "") -> dict:
    """Run ``code`` in a fresh interpreter (after ``pre``) and return its last line as JSON."""
    full = dict(os.environ, **(env or {}))
    done = subprocess.run([sys.executable, "-c", pre + textwrap.dedent(code)], env=full,
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> tuple[dict, Path]:
    """One child with an empty cache: builds the shim and the g++ wrapper from scratch."""
    cache = tmp_path_factory.mktemp("runtime-cache")
    return run_child(PROBE, env={"TOKCONV_CACHE": str(cache)}), cache


def test_setup_maps_an_optimized_blas_and_matmul_matches_numpy(fresh):
    out, _ = fresh
    assert out["blas"] and "reference" not in out["notice"]
    assert out["mapped"], out["provider"]
    assert out["matmul_err"] < 1e-3
    assert out["notice"].startswith("tokconv fast path:") and out["blas"] in out["notice"]
    assert "\n" not in out["notice"]


def test_shim_is_built_once_into_the_cache(tmp_path):
    env = {"TOKCONV_CACHE": str(tmp_path), "TOKCONV_NO_MKL": "1"}  # MKL needs no shim
    out = run_child(PROBE, env=env)
    if "shim" not in out["blas"]:
        pytest.skip(f"{out['blas']} needs no shim")
    assert Path(out["provider"]).parent == tmp_path / "runtime"
    assert out["matmul_err"] < 1e-3
    again = run_child(PROBE, env=env)
    assert again["provider"] == out["provider"]


def _intel_with_mkl() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("mkl")
    except metadata.PackageNotFoundError:
        return False
    return b"GenuineIntel" in build.cpu_vendor()


@pytest.mark.skipif(not _intel_with_mkl(), reason="MKL is chosen only on Intel CPUs with the mkl wheel")
def test_mkl_is_chosen_on_intel_and_can_be_switched_off(fresh):
    out, _ = fresh
    assert out["blas"].startswith("MKL ") and out["mapped"]
    # libmlx's cblas_sgemm: the packed-weight interposer in front of MKL, where gcc built it
    packed = "packed weights" in out["blas"]
    assert ("mkl_pack" if packed else "libmkl_rt") in out["provider"]
    unpacked = run_child(PROBE, env={"TOKCONV_NO_PACK": "1", "TOKCONV_CACHE": str(fresh[1])})
    assert unpacked["blas"].startswith("MKL ") and "packed" not in unpacked["blas"]
    assert ("compact 8-bit weights" in unpacked["blas"]) == ("mkl_pack" in unpacked["provider"])
    assert unpacked["matmul_err"] < 1e-3
    plain = run_child(PROBE, env={"TOKCONV_NO_PACK": "1", "TOKCONV_NO_COMPACT": "1", "TOKCONV_CACHE": str(fresh[1])})
    assert plain["blas"].startswith("MKL ") and "packed" not in plain["blas"] and "compact" not in plain["blas"]
    assert "libmkl_rt" in plain["provider"] and plain["matmul_err"] < 1e-3
    off = run_child(PROBE, env={"TOKCONV_NO_MKL": "1", "TOKCONV_CACHE": str(fresh[1])})
    assert "OpenBLAS" in off["blas"] and off["matmul_err"] < 1e-3


THREADS = """
import json
import tokconv.fastpath as rt
from tokconv.fastpath import threads
rt.setup()
import mlx.core as mx
seen = {}
for streams in (1, 2, 1):
    with threads.compute(streams) as n:
        seen.setdefault(str(streams), []).append([n, threads.get_blas_threads()])
print(json.dumps(dict(seen=seen, cores=threads.cores(), blas=rt.setup().blas)))
"""


@pytest.mark.parametrize("no_mkl", ["0", "1"])
def test_compute_gives_one_sequence_every_core_and_each_stream_one(no_mkl, tmp_path):
    out = run_child(THREADS, env={"TOKCONV_NO_MKL": no_mkl, "TOKCONV_CACHE": str(tmp_path)})
    cores = out["cores"]
    assert out["seen"]["1"] == [[cores, cores], [cores, cores]], out
    assert out["seen"]["2"] == [[max(1, cores // 2)] * 2], out
    fixed = run_child(THREADS, env={"TOKCONV_NO_MKL": no_mkl, "TOKCONV_CACHE": str(tmp_path), "TOKCONV_BLAS_THREADS": "1"})
    assert fixed["seen"] == {"1": [[1, 1], [1, 1]], "2": [[1, 1]]} and "1 thread(s) fixed" in fixed["blas"]


def test_compiled_kernels_come_from_the_wrapper_into_a_private_dir(fresh):
    out, cache = fresh
    assert out["compiler_flags"] and out["silu_err"] < 1e-5
    assert Path(out["path0"], "g++").read_bytes().startswith(b"#!/bin/sh\n# Generated by tokconv.fastpath.jit")
    kernels = list(Path(out["tmpdir"]).glob("mlx/*/cpu/lib*.so"))
    assert kernels and Path(out["tmpdir"]).is_relative_to(cache / "runtime")


def test_compiled_kernels_leave_denormals_alone(fresh):
    # a -ffast-math link would add crtfastmath.o: flush-to-zero for Python's thread
    out, _ = fresh
    assert out["denormal"] == pytest.approx(1e-40, rel=1e-3)


def test_no_fast_blas_escape_hatch_keeps_the_reference_blas_and_correct_results():
    out = run_child(PROBE, env={"TOKCONV_NO_FAST_BLAS": "1"})
    assert out["blas"] is None and out["provider"] is None
    assert "TOKCONV_NO_FAST_BLAS" in out["notice"] and "reference BLAS" in out["notice"]
    assert out["matmul_err"] < 1e-3


def test_without_gxx_setup_warns_and_compile_still_works(tmp_path):
    (tmp_path / "bin").mkdir()  # a PATH with no compiler on it
    out = run_child(PROBE, env={"PATH": str(tmp_path / "bin"), "TOKCONV_CACHE": str(tmp_path)})
    assert not out["compiler_flags"]
    assert any("g++" in w for w in out["warnings"]) and "install g++" in out["notice"]
    assert out["silu_err"] < 1e-5 and out["matmul_err"] < 1e-3


def test_mlx_imported_first_is_reported(tmp_path):
    out = run_child(PROBE, pre="import mlx.core\n", env={"TOKCONV_CACHE": str(tmp_path)})
    assert out["blas"] is None
    assert any("imported before" in w for w in out["warnings"])
    assert out["matmul_err"] < 1e-3


def _blas_library(fresh) -> str:
    """The optimized BLAS that setup() loaded (MKL itself where the packed-weight interposer fronts it)."""
    provider = fresh[0]["provider"]
    return blas.mkl_library()[0] if "mkl_pack" in provider else provider


def test_ld_preloaded_blas_counts_even_after_mlx_import(fresh):
    out = run_child(PROBE, pre="import mlx.core\n", env={"LD_PRELOAD": _blas_library(fresh)})
    assert out["blas"] and "preloaded" in out["blas"] and not out["warnings"]


def test_tokconv_blas_names_the_library(fresh):
    out = run_child(PROBE, env={"TOKCONV_BLAS": _blas_library(fresh), "TOKCONV_CACHE": str(fresh[1])})
    assert "(TOKCONV_BLAS)" in out["blas"] and out["mapped"]


def test_missing_blas_warning_names_the_fix(monkeypatch):
    def fail() -> None:
        raise OSError("no such library")

    monkeypatch.delenv("TOKCONV_NO_FAST_BLAS", raising=False)
    monkeypatch.setattr(blas, "sgemm_provider", lambda: None)
    monkeypatch.delitem(sys.modules, "mlx.core", raising=False)
    monkeypatch.setattr(blas, "blas_candidates", list)
    warnings: list[str] = []
    assert blas.setup_blas(warnings) is None
    assert "pip install scipy-openblas32" in warnings[0]
    monkeypatch.setattr(blas, "blas_candidates", lambda: [("OpenBLAS (test)", fail)])
    assert blas.setup_blas(warnings) is None
    assert "OpenBLAS (test): no such library" in warnings[1]


BIG_BUFFERS = """
import json, resource
import tokconv.fastpath as rt
from tokconv.fastpath import threads
rt.setup()
import mlx.core as mx
x = mx.ones((64 << 18,))  # 64 MB, above glibc's default mmap threshold
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x + 1
    mx.eval(y)
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults[1:]))
"""


def test_big_buffers_are_reused_without_page_faults():
    tuned = run_child(BIG_BUFFERS, env={"GLIBC_TUNABLES": ""})
    plain = run_child(BIG_BUFFERS, env={"GLIBC_TUNABLES": "", "TOKCONV_NO_MALLOC_TUNING": "1"})
    assert min(plain) > 10_000  # 16k pages faulted in again on every reuse
    assert max(tuned) < 1_000


REEXEC = """
import json, os
from tokconv.fastpath.jit import reexec_with_tunables_if_needed
reexec_with_tunables_if_needed()
print(json.dumps(os.environ.get("GLIBC_TUNABLES")))
"""


def test_reexec_sets_the_tunables_and_can_be_disabled():
    assert "glibc.malloc.mmap_threshold=" in run_child(REEXEC, env={"GLIBC_TUNABLES": ""})
    assert run_child(REEXEC, env={"GLIBC_TUNABLES": "", "TOKCONV_NO_REEXEC": "1"}) == ""


def test_setup_is_idempotent():
    assert fastpath.setup() is fastpath.setup()
    assert fastpath.use_fp32_weights() is (fastpath.setup().device == "cpu")


def test_notice_is_one_line_naming_what_is_active():
    fast = fastpath.RuntimeInfo("cpu", "OpenBLAS (x)", True, True)
    assert fast.notice() == "tokconv fast path: OpenBLAS (x), tuned JIT flags, malloc tuned, fp32 weights"
    slow = fastpath.RuntimeInfo("cpu", None, False, True, ("no g++: apt-get install g++",))
    assert slow.notice().startswith("tokconv CPU path: reference BLAS")
    assert "apt-get install g++" in slow.notice()
    assert fastpath.RuntimeInfo("gpu", "Metal", False, False).notice() == (
        "tokconv native path: MLX on GPU (Metal), quantized weights")


def test_work_split_across_cpu_streams_matches_one_stream():
    import mlx.core as mx

    streams = threads.cpu_streams(2)
    assert len(streams) == 2 and streams[0] != streams[1] and threads.cpu_streams(2) == streams
    x, w = mx.random.normal((8, 64)), mx.random.normal((64, 32))
    parts = []
    for i, s in enumerate(streams):
        with mx.stream(s):
            parts.append(mx.sigmoid(x[4 * i : 4 * i + 4] @ w))
    assert mx.allclose(mx.concatenate(parts), mx.sigmoid(x @ w), atol=1e-5).item()


def test_unwritable_cache_degrades_to_warnings_and_correct_results():
    out = run_child(PROBE, env={"TOKCONV_CACHE": "/proc/no-such-cache", "PATH": os.environ["PATH"]})
    assert out["allocator"] and not out["compiler_flags"]
    assert out["warnings"] and "\n" not in out["notice"]
    assert out["matmul_err"] < 1e-3 and out["silu_err"] < 1e-5
