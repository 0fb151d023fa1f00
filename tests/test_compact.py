"""tokconv.fastpath.compact: GGUF weights held in 8 bits, exactly, and multiplied by a C kernel that
agrees with float32 BLAS (per product against numpy, per model on argmax), with float32 inputs and
with inputs rounded to int16 (the default where the CPU has AVX-512 VNNI)."""

from __future__ import annotations

import gc

import gguf
import numpy as np
import pytest

import tokconv
from conftest import make_tiny_lm
from tokconv.engine import Scorer
from tokconv.fastpath import compact
from tokconv.models import catalog
from tokconv.models.vocab import random_tokens

pytestmark = pytest.mark.skipif(not compact.active(), reason="compact weights need the Linux CPU fast path and gcc")

# (catalog name, GGUF tensor) pairs covering every block format in the bundled files
TENSORS = [
    ("smollm2-135m", "blk.0.ffn_down.weight"),  # Q4_1
    ("smollm2-135m", "token_embd.weight"),  # Q8_0
    ("qwen2.5-coder-0.5b", "token_embd.weight"),  # Q5_0
    ("qwen2.5-coder-0.5b", "blk.0.ffn_down.weight"),  # Q6_K (16-value groups)
    ("qwen2.5-coder-0.5b", "blk.11.ffn_down.weight"),  # Q4_K
]


def _rows(name: str, tensor: str, rows: int = 48) -> tuple[np.ndarray, str]:
    """The first ``rows`` rows of a GGUF tensor, dequantized to float32 as the converter does."""
    reader = gguf.GGUFReader(catalog.get_entry(name).gguf_path())
    t = next(t for t in reader.tensors if t.name == tensor)
    w = gguf.quants.dequantize(t.data[:rows], t.tensor_type).astype(np.float32)
    return np.ascontiguousarray(w.reshape(rows, -1)), t.tensor_type.name


@pytest.fixture(scope="module", params=TENSORS, ids=[f"{m}:{t}" for m, t in TENSORS])
def registered(request):
    w, kind = _rows(*request.param)
    assert compact.add(w) == 0, f"{kind} rows were not taken as an 8-bit grid"
    yield w, kind
    compact.remove(w)


def _bound(x: np.ndarray, w: np.ndarray, int16: bool) -> np.ndarray:
    """How far a product may be from float64's: float32 rounding, which grows with |x| @ |w|.T, and
    with int16 inputs the rounding of each input to its group's step (largest |x| of the 16 / 32767):
    at most half a step times the span of the group's weights (offset + scale * q, q >= 0), per input."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    bound = 1e-6 * (np.abs(x64) @ np.abs(w64).T) + 1e-30
    if int16:
        groups = x.shape[1] // 16
        big = np.abs(x64).reshape(len(x), groups, 16).max(-1)
        span = np.ptp(w64.reshape(len(w), groups, 16), axis=-1)
        bound += 16 * (1 + 1e-5) / 65534 * (big @ span.T)
    return bound


INPUTS = ["float32", "int16"]


@pytest.fixture(params=INPUTS)
def inputs(request):
    """Products with float32 inputs, then with int16 inputs (where this CPU has AVX-512 VNNI)."""
    int16 = request.param == "int16"
    with compact.int16(int16):
        if compact.int16_inputs() != int16:
            pytest.skip("int16 inputs need AVX-512 VNNI")
        yield int16


@pytest.mark.parametrize("m", [1, 3, 12, 13, 16, 17, 40])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_numpy_on_every_gguf_block_format(registered, m, threads, inputs):
    w, kind = registered
    x = np.random.default_rng(m).standard_normal((m, w.shape[1])).astype(np.float32)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    got = compact.gemm(x, w, threads)
    assert np.all(np.abs(got - want) <= _bound(x, w, inputs)), kind


@pytest.mark.parametrize("m", [1, 9, 16, 40])
def test_a_product_cut_into_chunks_over_both_threads_gives_the_one_thread_bits(m, inputs):
    # 256 block columns: enough that a product of many rows is cut by the chunk floor, not by its work
    rng = np.random.default_rng(m)
    q = rng.integers(0, 256, (4096, 576 // 16, 16)).astype(np.float32)
    w = np.ascontiguousarray((q * rng.uniform(1e-3, 1e-2, (4096, 576 // 16, 1)).astype(np.float32)).reshape(4096, 576))
    assert compact.add(w) == 0
    try:
        x = rng.standard_normal((m, 576)).astype(np.float32)
        one, two = compact.gemm(x, w, 1), compact.gemm(x, w, 2)
        np.testing.assert_array_equal(two, one)  # each output column is one thread's, in the same order
        want = x.astype(np.float64) @ w.T.astype(np.float64)
        assert np.all(np.abs(two - want) <= _bound(x, w, inputs))
        # each row is rounded on its own: a row's results do not depend on the rows beside it
        np.testing.assert_array_equal(compact.gemm(x[-1:], w, 2), two[-1:])
    finally:
        compact.remove(w)


@pytest.fixture(scope="module", params=list(compact.OTHER_CPUS))
def kernel_build(request):
    """The kernel as built for another CPU (compact.OTHER_CPUS), so that CI tests each code path
    whatever CPU it runs on."""
    from tokconv.fastpath.build import cpu_flags

    if b"avx2" not in cpu_flags().split():
        pytest.skip("builds for other CPUs are made on x86-64 CPUs with AVX2")
    return request.param, compact.build(compact.OTHER_CPUS[request.param])


@pytest.mark.parametrize("tensor", TENSORS, ids=[f"{m}:{t}" for m, t in TENSORS])
def test_each_kernel_build_matches_numpy_on_every_gguf_block_format(kernel_build, tensor):
    # AVX2: 1-5 rows widen weights in registers, 6 multiply from a float block, 7+ from a float
    # column written once for several passes; beta=1 adds to what the output held (x += o @ Wo.T)
    name, lib = kernel_build
    assert compact.kernel(lib) == name
    w, kind = _rows(*tensor)
    assert lib.tokconv_compact_add(w.ctypes.data, *w.shape) == 0, kind
    try:
        for m in (1, 2, 3, 5, 6, 7, 12, 13, 40):
            x = np.random.default_rng(m).standard_normal((m, w.shape[1])).astype(np.float32)
            want = x.astype(np.float64) @ w.T.astype(np.float64)
            for threads in (1, 2):
                for beta in (0.0, 1.0):
                    c = np.random.default_rng(9).standard_normal((m, w.shape[0])).astype(np.float32)
                    held = c.astype(np.float64)
                    assert lib.tokconv_compact_gemm(m, w.shape[0], w.shape[1], x.ctypes.data, w.shape[1], w.ctypes.data,
                                                    beta, c.ctypes.data, w.shape[0], threads) == 0
                    err = np.abs(c - (want + beta * held))
                    assert np.all(err <= _bound(x, w, False) + 1e-6 * beta * np.abs(held)), (name, kind, m, threads, beta)
        # a row's results do not depend on the rows beside it or on the threads (lockstep sweeps
        # equal one-by-one runs): the first rows of 40, multiplied 1 to 13 at a time, bit for bit
        x = np.random.default_rng(1).standard_normal((40, w.shape[1])).astype(np.float32)
        whole = np.zeros((40, w.shape[0]), np.float32)
        assert lib.tokconv_compact_gemm(40, w.shape[0], w.shape[1], x.ctypes.data, w.shape[1], w.ctypes.data, 0.0,
                                        whole.ctypes.data, w.shape[0], 2) == 0
        for m in (1, 2, 3, 4, 5, 6, 7, 12, 13):
            part = np.zeros((m, w.shape[0]), np.float32)
            assert lib.tokconv_compact_gemm(m, w.shape[0], w.shape[1], x.ctypes.data, w.shape[1], w.ctypes.data, 0.0,
                                            part.ctypes.data, w.shape[0], 1) == 0
            np.testing.assert_array_equal(part, whole[:m], err_msg=f"{name} {kind} {m} rows")
    finally:
        lib.tokconv_compact_remove(w.ctypes.data)


def test_every_build_fits_the_same_compact_form_and_refuses_values_off_a_grid(kernel_build):
    """The fit of each group of 16 (AVX-512 and AVX2 code, scalar elsewhere) gives the same bytes as
    the scalar fit of the generic build, on every GGUF block format; values off an 8-bit grid are
    refused by each."""
    name, lib = kernel_build
    scalar = compact.build(compact.OTHER_CPUS["generic vectors"])
    for model, tensor in TENSORS:
        w, kind = _rows(model, tensor, rows=64)
        forms = []
        for fit in (lib, compact.library(), scalar):
            out = np.zeros(fit.tokconv_compact_size(*w.shape), np.uint8)
            assert fit.tokconv_compact_build(w.ctypes.data, *w.shape, out.ctypes.data) == 0, (name, kind)
            forms.append(out)
        assert forms[0].any()
        np.testing.assert_array_equal(forms[0], forms[2], err_msg=f"{name} {kind}")
        np.testing.assert_array_equal(forms[1], forms[2], err_msg=f"this CPU's build, {kind}")
    noise = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    out = np.zeros(lib.tokconv_compact_size(*noise.shape), np.uint8)
    assert lib.tokconv_compact_build(noise.ctypes.data, *noise.shape, out.ctypes.data) == 5


def test_compact_weights_are_on_by_default_only_where_the_kernel_has_code_for_the_cpu(kernel_build, monkeypatch):
    """gcc's generic vectors ran slower than float32 BLAS (BENCHMARKS.md), so a CPU with neither AVX2
    nor AVX-512 keeps its products on BLAS unless the user asks, and the notice says why."""
    name, lib = kernel_build
    monkeypatch.delenv("TOKCONV_COMPACT", raising=False)
    reason = compact.declined(lib)
    if name == "AVX2":
        assert reason is None
    else:
        assert "AVX2 or AVX-512" in reason and "TOKCONV_COMPACT=1" in reason
        monkeypatch.setenv("TOKCONV_COMPACT", "1")
        assert compact.declined(lib) is None
    # this process's own kernel: the code written for this CPU, and used
    from tokconv.fastpath.build import cpu_flags

    assert compact.kernel(compact.library()) == ("AVX-512" if b"avx512f" in cpu_flags().split() else "AVX2")
    assert compact.declined_reason() is None


def test_int16_inputs_change_products_within_their_bound_and_pass_nan_and_infinity_through():
    w, _ = _rows("smollm2-135m", "blk.0.ffn_down.weight", rows=32)
    assert compact.add(w) == 0
    try:
        x = np.random.default_rng(4).standard_normal((5, w.shape[1])).astype(np.float32)
        x[:, 32:48] *= 50  # one group far larger than the rest, as real activations have: its own step
        with compact.int16(False):
            exact = compact.gemm(x, w)
        with compact.int16(True):
            if not compact.int16_inputs():
                pytest.skip("int16 inputs need AVX-512 VNNI")
            rounded = compact.gemm(x, w)
            assert not np.array_equal(rounded, exact)  # the int16 kernel really ran
            assert np.all(np.abs(rounded - exact) <= _bound(x, w, True))
            for bad in (np.nan, np.inf):
                y = x.copy()
                y[2, 100] = bad
                got = compact.gemm(y, w)
                assert not np.isfinite(got[2]).any()  # as float32 BLAS: NaN and infinity carry through
                np.testing.assert_array_equal(got[[0, 1, 3, 4]], rounded[[0, 1, 3, 4]])  # the others: untouched
    finally:
        compact.remove(w)


def test_products_through_blas_answer_from_the_compact_form_with_beta(registered):
    """libmlx's own call shape (x @ W.T, with and without a bias in C) goes through the hook."""
    import ctypes

    w, _ = registered
    m, k = 5, w.shape[1]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal((m, w.shape[0])).astype(np.float32)
    c = bias.copy()
    f, p = ctypes.c_float, ctypes.c_void_p
    before = compact.stats().compact_calls
    ctypes.CDLL(None).cblas_sgemm(101, 111, 112, m, w.shape[0], k, f(1.0), p(x.ctypes.data), k, p(w.ctypes.data),
                                  k, f(1.0), p(c.ctypes.data), w.shape[0])
    assert compact.stats().compact_calls == before + 1
    want = x.astype(np.float64) @ w.T.astype(np.float64) + bias
    assert np.all(np.abs(c - want) <= _bound(x, w, compact.int16_inputs()) + 1e-6 * np.abs(bias))


def test_matrices_off_the_grid_are_refused_and_stay_on_blas():
    rng = np.random.default_rng(0)
    floats = rng.standard_normal((64, 64)).astype(np.float32)  # float originals: no 8-bit grid
    assert compact.add(floats) == 5
    assert compact.add(np.zeros((20, 64), np.float32)) == 6  # rows not a multiple of 16
    half = floats.astype(np.float16).astype(np.float32)  # float16 weights: 2^11 levels, not 2^8
    assert compact.add(half) == 5


def test_tiny_random_model_keeps_float32_blas():
    lm = make_tiny_lm(vocab_size=320, layers=2)
    report = compact.compact_model(lm.model, [("w", lm.model.layers[0].mlp.up_proj.weight)])
    assert report.compact == 0 and "not on an 8-bit grid" in report.refused[0]


def test_removing_a_matrix_frees_its_compact_form(smollm2):
    held = compact.stats().bytes
    assert smollm2.compact is not None and held >= smollm2.compact.bytes > 0
    w, _ = _rows("smollm2-135m", "blk.0.ffn_down.weight", rows=32)
    assert compact.add(w) == 0
    assert compact.stats().bytes > held
    compact.remove(w)
    del w
    gc.collect()
    assert compact.stats().bytes == held


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"])
def test_every_bundled_model_is_compact_and_agrees_with_float32_on_argmax(name):
    """The issue's bound: argmax agreement with the float32 path of at least 99.5% on random
    sequences, for float32 inputs and for int16 inputs; every matrix of a GGUF model has an exact
    compact form."""
    lm = tokconv.load(name)
    assert lm.compact is not None and lm.compact.compact == lm.compact.matrices and not lm.compact.refused
    scorer = Scorer(lm)
    tokens = np.array([random_tokens(lm, 16, seed) for seed in range(12)])
    runs = {}
    # every product compact (with int16 inputs where this CPU has them, then float32), then none
    for key, rows, int16 in (("int16", 4096, True), ("float32", 4096, False), ("blas", 0, False)):
        with compact.max_rows(rows), compact.int16(int16):
            if int16 and not compact.int16_inputs():
                continue
            before = compact.stats().compact_calls
            runs[key] = [scorer.score(tokens[i : i + 1]) for i in range(len(tokens))]  # short calls, as runs make
            used = compact.stats().compact_calls - before
        assert (used > 0) == (rows > 0)
    off = np.concatenate([s.argmax[:, 1:] for s in runs["blas"]])
    ent_off = np.concatenate([s.entropy[:, 1:] for s in runs["blas"]])
    for key in runs.keys() - {"blas"}:
        on = np.concatenate([s.argmax[:, 1:] for s in runs[key]])
        assert (on == off).mean() >= 0.995, key
        err = np.abs(np.concatenate([s.entropy[:, 1:] for s in runs[key]]) - ent_off)
        if key == "float32":
            # float32 summation order alone: MKL's packed and plain GEMMs differ as much on Qwen (its
            # large activations make rare positions move by up to ~0.03 nats either way), so bound the bulk
            assert np.median(err) < 1e-4 and np.percentile(err, 99) < 1e-2
        else:  # int16 inputs: measured median 1-5e-4 nats, 99th percentile under 4e-3 (BENCHMARKS.md)
            assert np.median(err) < 2e-3 and np.percentile(err, 99) < 2e-2, key


NOTICE = """
import json, os
import tokconv
from tokconv.fastpath import compact
lm = tokconv.load("smollm2-135m")
print(json.dumps(dict(notice=tokconv.fastpath.setup().notice(), active=compact.active(),
                      report=None if lm.compact is None else lm.compact.compact, int16=compact.int16_inputs(),
                      vnni="avx512_vnni" in open("/proc/cpuinfo").read())))
"""


@pytest.mark.parametrize("off", ["", "TOKCONV_NO_COMPACT", "TOKCONV_NO_INT16"])
def test_notice_names_compact_weights_and_the_switches_turn_them_off(off):
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TOKCONV_NO_COMPACT", "TOKCONV_NO_INT16")}
    if off:
        env[off] = "1"
    done = subprocess.run([sys.executable, "-c", NOTICE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if off == "TOKCONV_NO_COMPACT":
        assert not out["active"] and out["report"] is None and "compact" not in out["notice"]
        return
    assert out["active"] and out["report"] == 211
    assert "compact 8-bit weights" in out["notice"] and "TOKCONV_NO_COMPACT=1" in out["notice"]
    assert "TOKCONV_NO_NATIVE=1" in out["notice"]
    # int16 inputs: the default where the CPU has AVX-512 VNNI, named with its switch
    assert out["int16"] == (out["vnni"] and off != "TOKCONV_NO_INT16")
    assert ("with int16 inputs" in out["notice"]) == out["int16"]
    assert ("TOKCONV_NO_INT16=1" in out["notice"]) == out["int16"]


def test_compact_forms_are_cached_on_disk_and_a_damaged_file_is_rebuilt(tmp_path):
    """A conversion's compact forms are written once and memory-mapped later; a file that does
    not match its matrix (damaged, or another model's) is fitted and written again."""
    import mlx.core as mx

    w, _ = _rows("smollm2-135m", "blk.0.ffn_down.weight", rows=64)
    arr = mx.array(w)
    x = np.random.default_rng(0).standard_normal((3, w.shape[1])).astype(np.float32)
    want = x.astype(np.float64) @ w.T.astype(np.float64)

    class Holder:  # compact forms live as long as their model
        pass

    def register() -> tuple[Holder, np.ndarray]:
        holder = Holder()
        report = compact.compact_model(holder, [("down", arr)], tmp_path)
        assert report.compact == 1
        return holder, compact.gemm(x, np.asarray(arr))

    holder, got = register()
    files = list((tmp_path / compact.CACHE_FORMAT).glob("down.*.bin"))
    assert len(files) == 1 and files[0].stat().st_size == w.size * 3 // 2
    assert np.all(np.abs(got - want) <= _bound(x, w, compact.int16_inputs()))
    del holder
    gc.collect()
    first = files[0].stat().st_mtime_ns
    holder, got = register()  # from the file: not written again
    assert files[0].stat().st_mtime_ns == first
    assert np.all(np.abs(got - want) <= _bound(x, w, compact.int16_inputs()))
    del holder
    gc.collect()
    damaged = bytearray(files[0].read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 4096] = bytes(4096)  # zeros over some blocks
    files[0].write_bytes(bytes(damaged))
    holder, got = register()
    assert np.all(np.abs(got - want) <= _bound(x, w, compact.int16_inputs()))
    assert files[0].read_bytes() != bytes(damaged)


def test_a_run_records_the_arithmetic_of_its_products():
    """Runs with int16 inputs can take other moves at near-ties than float32 runs, so a stored run
    says which it had (its ``versions``)."""
    from tokconv.experiments import RunConfig, collect, prepare

    def arithmetic() -> dict:
        exp = prepare(RunConfig(mode="sequential", model_a="smollm2-135m", length=6, iterations=2))
        result = collect(exp, exp.records())
        return {k: v for k, v in result.versions.items() if k.startswith("arithmetic:")}

    with compact.int16(False):
        assert arithmetic() == {"arithmetic:smollm2-135m": "float32"}
    with compact.int16(True):
        want = "int16 inputs" if compact.int16_inputs() else "float32"
        assert arithmetic() == {"arithmetic:smollm2-135m": want}
