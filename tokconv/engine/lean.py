"""Llama-family model calls from one set of compiled traces for every input length and cache offset.

:func:`.forward.call` traces mlx-lm's model once per (input shape, cache offset). A trace costs
tens of milliseconds (Python builds the graph, MLX simplifies and fuses it), and a battle meets a new
shape on most of its calls, because the text is re-encoded after every move; BENCHMARKS.md has the
numbers. This module writes the same layers with operations whose output shapes MLX infers from their
inputs (no slices, no reshape with two unknown sizes, no broadcast to a fixed shape), so that one
``mx.compile(shapeless=True)`` trace per segment of :data:`SEGMENT_LAYERS` layers serves every call:

- RoPE's rotate-half is a product with a signed permutation matrix (exact: one term is the value,
  the others are zeros) instead of two slices;
- grouped-query heads meet their keys and values through the product's own batch broadcast (a size-1
  axis), as mlx-lm's attention does, not through a broadcast to a fixed shape;
- the causal mask, cos and sin come in as inputs.

The arithmetic is mlx-lm's operation for operation, so the logits and the cache are bit for bit
those of :func:`.forward.call` (``tests/test_lean.py``). Where that was not so, or MLX failed, the
call keeps the per-shape trace: batches of more than one row (the last bits differed past the
compact kernel's row limit; worse, MLX 0.32.4 replays a shapeless ``(rows, n, K) @ (K, N)`` product
traced on one row wrongly, or crashes, once rows reach ~20: see BENCHMARKS.md), an empty cache
(MLX crashed replaying a shapeless trace with one), and biased projections on products too long
for the compact kernel (mlx-lm's fused bias add rounds differently in BLAS). One-token calls
(adversarial runs are made of them) go shapeless every time: with the hidden state kept 2-D the
shapeless replay is as fast as a per-shape one (BENCHMARKS.md), and no cache offset pays for a
trace of its own. The traces are made on a two-token call after two cached positions: replays of
traces made on a one-token call corrupted memory. A call runs in segments because MLX rebuilds a
replayed trace node by node on the calling thread before any of it computes: segment by segment,
the stream computes the layers already rebuilt while the thread rebuilds the next ones.

Scope: mlx-lm's ``llama`` and ``qwen2`` models (SmolLM2, Qwen2.5) with tokconv's table RoPE and
attention (:mod:`tokconv.fastpath.kernels`, Linux CPU). ``TOKCONV_NO_SHAPELESS=1`` turns it off.
Hand-written because mlx-lm's layers use shape-fixed reshapes and slices that a shapeless trace
rejects.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.activations import swiglu

from ..fastpath import compact, kernels, lazy
from ..models import LoadedModel

ARCHITECTURES = ("llama", "qwen2")
# Compiled steps kept per model: one per stream (a trace records its stream).
MAX_STREAMS = 8
# Layers per compiled segment. A replayed trace is rebuilt node by node on the calling thread before
# any of it runs; in segments, the stream computes one while the next is rebuilt (BENCHMARKS.md).
SEGMENT_LAYERS = 4


@dataclass(frozen=True)
class _Layer:
    norm1: Any
    eps1: float
    norm2: Any
    eps2: float
    q: Any  # weights transposed (views, evaluated once: no transpose node per call)
    k: Any
    v: Any
    o: Any
    bq: Any
    bk: Any
    bv: Any
    gate: Any
    up: Any
    down: Any


@dataclass
class _Lean:
    """One model's layers in the form the shapeless step reads, and its compiled steps per stream."""

    embed: Any
    head: Any
    norm: Any
    eps: float
    layers: list
    heads: int
    kv_heads: int
    head_dim: int
    scale: float
    rope: tuple  # dims, base, scale
    perm: Any  # (D, D): x @ perm = concatenate([-x2, x1]) for halves x1, x2
    biased: bool
    segments: list  # (start, stop) layers of each compiled segment (_segments)
    steps: dict = field(default_factory=dict)  # stream -> its compiled segments
    traces: int = 0  # times the Python step ran: once per stream's compiled segments (tests)
    evaluated: bool = False  # the arrays above are evaluated (_ready)


_state: "weakref.WeakKeyDictionary[LoadedModel, _Lean | None]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def enabled() -> bool:
    """False when the user turned shapeless calls off (``TOKCONV_NO_SHAPELESS=1``)."""
    return os.environ.get("TOKCONV_NO_SHAPELESS") != "1"


def _linear(m: Any) -> bool:
    return type(m) is nn.Linear


def _build(lm: LoadedModel) -> _Lean | None:
    """The lean form of ``lm``, or None where its layers are not the ones written here."""
    model = lm.model
    args = getattr(model, "args", None)
    inner = getattr(model, "model", None)
    if getattr(args, "model_type", None) not in ARCHITECTURES or inner is None:
        return None
    if any(t != "full_attention" for t in (getattr(args, "layer_types", None) or ())):
        return None
    tied = bool(getattr(args, "tie_word_embeddings", False))
    head = inner.embed_tokens if tied else getattr(model, "lm_head", None)
    if type(inner.embed_tokens) is not nn.Embedding or head is None or (not tied and (not _linear(head) or "bias" in head)):
        return None
    if inner.embed_tokens.weight.dtype != mx.float32:  # the tables and the permutation are float32
        return None
    layers, first = [], inner.layers[0].self_attn
    for layer in inner.layers:
        at, mlp = layer.self_attn, getattr(layer, "mlp", None)
        projections = (at.q_proj, at.k_proj, at.v_proj, at.o_proj, mlp and mlp.gate_proj, mlp and mlp.up_proj, mlp and mlp.down_proj)
        if not all(_linear(p) for p in projections) or any("bias" in p for p in projections[3:]):
            return None
        if type(layer.input_layernorm) is not nn.RMSNorm or type(layer.post_attention_layernorm) is not nn.RMSNorm:
            return None
        rope = at.rope
        if type(rope) is not kernels.TableRoPE or rope.traditional:
            return None
        if (at.n_heads, at.n_kv_heads, rope.dims, rope.base, rope.scale) != (
                first.n_heads, first.n_kv_heads, first.rope.dims, first.rope.base, first.rope.scale):
            return None
        biases = [p["bias"] if "bias" in p else None for p in projections[:3]]
        if len({b is None for b in biases}) != 1:
            return None
        layers.append(_Layer(layer.input_layernorm.weight, layer.input_layernorm.eps, layer.post_attention_layernorm.weight,
                             layer.post_attention_layernorm.eps, *(p.weight.T for p in projections[:4]), *biases,
                             *(p.weight.T for p in projections[4:])))
    if type(inner.norm) is not nn.RMSNorm:
        return None
    H, Hkv = first.n_heads, first.n_kv_heads
    D = first.q_proj.weight.shape[0] // H
    if H % Hkv or first.rope.dims != D or D % 2 or first.scale != D**-0.5:
        return None
    half = D // 2
    perm = np.zeros((D, D), np.float32)
    perm[np.arange(half) + half, np.arange(half)] = -1.0
    perm[np.arange(half), np.arange(half) + half] = 1.0
    out = _Lean(inner.embed_tokens.weight, head.weight.T, inner.norm.weight, inner.norm.eps, layers, H, Hkv, D,
                first.scale, (first.rope.dims, first.rope.base, first.rope.scale), mx.array(perm), layers[0].bq is not None,
                _segments(len(layers)))
    if not lazy.waiting(model):  # else on the first call through MLX (_ready): native calls never read them
        _ready(out)
    return out


def forget(lm: LoadedModel) -> None:
    """Drop ``lm``'s lean form (its weights were replaced: :func:`tokconv.fastpath.lazy.materialize`)."""
    with _lock:
        _state.pop(lm, None)


def _ready(lean: _Lean) -> None:
    """Evaluate the lean form's arrays once (the transposes are views: no transpose node per call)."""
    if not lean.evaluated:
        mx.eval(lean.head, lean.perm, [[a for a in vars(layer).values() if isinstance(a, mx.array)] for layer in lean.layers])
        lean.evaluated = True


def _of(lm: LoadedModel) -> _Lean | None:
    with _lock:
        if lm not in _state:
            _state[lm] = _build(lm)
        return _state[lm]


def _segments(n_layers: int) -> list[tuple[int, int]]:
    """The layers of each compiled segment: :data:`SEGMENT_LAYERS` each, the last takes the rest."""
    bounds = list(range(0, n_layers, SEGMENT_LAYERS)) + [n_layers]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < SEGMENT_LAYERS // 2:
        bounds.pop(-2)  # no short tail segment
    return list(zip(bounds, bounds[1:]))


def _step(lean: _Lean, start: int, stop: int):
    """Layers ``start:stop`` of the call as a function of (x, past [(keys, values)] per layer of the
    segment, cos, sin (n, 1, D), allowed (n, T)): mlx-lm's llama/qwen2 forward with the kernels of
    :mod:`tokconv.fastpath.kernels`. The first segment takes the tokens (1, n) as x and embeds
    them; the last one ends with the norm and the head, and returns logits (1, n, V).

    The hidden state is kept as (n, hidden), not (1, n, hidden): MLX brackets a shapeless product of
    a 3-D input with reshapes, and each node of the replayed graph costs the call a few microseconds
    whatever it does (BENCHMARKS.md). The products are the same (n, K) @ (K, N) either way."""
    H, Hkv, D = lean.heads, lean.kv_heads, lean.head_dim
    rep = H // Hkv
    first, last = start == 0, stop == len(lean.layers)

    def norm(x, weight, eps):
        # mx.fast.rms_norm's own CPU arithmetic, op for op, with its 1 / hidden as a constant: a
        # shapeless trace would otherwise count the elements on every call (one node per norm)
        inv = mx.array(1.0 / x.shape[-1], mx.float32)
        return (x * mx.rsqrt(mx.sum(mx.square(x), -1, keepdims=True) * inv + mx.array(eps, mx.float32))) * weight

    def rope(x, cos, sin):  # (n, heads, D) -> (heads, n, D)
        return (x * cos + (x @ lean.perm) * sin).transpose(1, 0, 2)

    def step(x, past, cos, sin, allowed):
        if first:
            lean.traces += 1
            x = lean.embed[mx.flatten(x)]
        kv = []
        for layer, (pk, pv) in zip(lean.layers[start:stop], past):
            y = norm(x, layer.norm1, layer.eps1)
            q, k, v = y @ layer.q, y @ layer.k, y @ layer.v
            # a separate add, not mx.addmm: MLX 0.32.4 replays a shapeless addmm's bias at the traced shape
            if layer.bq is not None:
                q, k, v = q + layer.bq, k + layer.bk, v + layer.bv
            q = rope(mx.unflatten(q, 1, (H, D)), cos, sin)
            k = mx.concatenate([pk, mx.expand_dims(rope(mx.unflatten(k, 1, (Hkv, D)), cos, sin), 0)], axis=2)
            v = mx.concatenate([pv, mx.expand_dims(mx.unflatten(v, 1, (Hkv, D)).transpose(1, 0, 2), 0)], axis=2)
            kv.append((k, v))
            s = (q * lean.scale).reshape(1, Hkv, rep, -1, D) @ mx.expand_dims(k, 2).swapaxes(-1, -2)  # (1, Hkv, rep, n, T)
            s = mx.where(allowed, s, mx.array(-mx.inf, s.dtype))
            o = (kernels.softmax(s) @ mx.expand_dims(v, 2)).reshape(H, -1, D).transpose(1, 0, 2)  # (n, H, D)
            x = x + mx.flatten(o, 1, 2) @ layer.o
            y = norm(x, layer.norm2, layer.eps2)
            x = x + swiglu(y @ layer.gate, y @ layer.up) @ layer.down
        if last:
            x = mx.expand_dims(norm(x, lean.norm, lean.eps) @ lean.head, 0)
        return x, kv

    return step


_tables: dict = {}  # RoPE (dims, base, scale) -> full-width cos, sin


def _rope_tables(lean: _Lean, length: int) -> tuple[Any, Any]:
    """cos and sin over the whole head dimension, (n >= length, 1, D), from the shared tables."""
    cos, sin = kernels.rope_tables(*lean.rope, length)
    with _lock:
        have = _tables.get(lean.rope)
        if have is None or have[0].shape[0] != cos.shape[0]:  # the shared tables grew
            have = _tables[lean.rope] = tuple(mx.concatenate([t, t], axis=-1)[:, None, :] for t in (cos, sin))
            mx.eval(have)
        return have


@functools.lru_cache(maxsize=512)
def _mask(n: int, offset: int) -> Any:
    """Which of the offset + n keys each of the n new queries may see (causal)."""
    out = kernels.causal(n, offset + n)
    mx.eval(out)
    return out


def _inputs(lean: _Lean, n: int, offset: int) -> tuple[Any, Any, Any]:
    cos, sin = _rope_tables(lean, offset + n)
    return cos[offset : offset + n], sin[offset : offset + n], _mask(n, offset)


def _compiled(lean: _Lean, stream: Any) -> list:
    """The shapeless segments for ``stream``, traced at once on a two-token call after two positions."""
    key = str(stream)
    fns = lean.steps.get(key)
    if fns is None:
        while len(lean.steps) >= MAX_STREAMS:
            lean.steps.pop(next(iter(lean.steps)))
        fns = lean.steps[key] = [mx.compile(_step(lean, a, b), shapeless=True) for a, b in lean.segments]
        past = [tuple(mx.zeros((1, lean.kv_heads, 2, lean.head_dim)) for _ in "kv") for _ in lean.layers]
        _run(lean, fns, mx.zeros((1, 2), mx.int32), past, _inputs(lean, 2, 2), start=False)  # traced, never evaluated
    return fns


def _run(lean: _Lean, fns: list, tokens: Any, past: list, inputs: tuple, start: bool = True) -> tuple[Any, list]:
    """The segments one after the other; with ``start``, each but the last is set running
    (``mx.async_eval``) before the next one's graph is built, so that MLX replays the next trace on
    this thread while the stream computes the layers before it (BENCHMARKS.md has the gain)."""
    x, kv = tokens, []
    for fn, (a, b) in zip(fns, lean.segments):
        x, part = fn(x, past[a:b], *inputs)
        kv += part
        if start and b < len(lean.layers):
            mx.async_eval(x, part)
    return x, kv


def takes(lm: LoadedModel, tokens: Any, offset: int) -> _Lean | None:
    """The lean form to :func:`call` with where it may serve this call, else None (then
    :func:`.forward.call` traces the call's shape)."""
    if offset < 1 or tokens.shape[0] != 1 or not enabled():
        return None
    lean = _of(lm)
    if lean is not None:
        _ready(lean)
    if lean is not None and lean.biased:  # bit-identical only where every product runs on compact weights
        if lm.compact is None or not lm.compact.complete or tokens.shape[1] > compact.current_max_rows():
            return None
    return lean


def call(lean: _Lean, tokens: Any, past: list, stream: Any) -> tuple[Any, list]:
    """Logits (1, n, V) for ``tokens`` (1, n) after ``past`` (keys, values) per layer, and the new
    keys and values, for the lean form :func:`takes` gave. Runs on ``stream``."""
    with mx.stream(stream):
        return _run(lean, _compiled(lean, stream), tokens.astype(mx.int32), past,
                    _inputs(lean, tokens.shape[1], past[0][0].shape[2]))
