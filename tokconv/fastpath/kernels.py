"""Keep ``exp`` inside MLX's JIT-compiled kernels on CPU, where it is vectorised.

MLX's CPU library kernels for ``exp`` and ``softmax`` are scalar. Inside an
``mx.compile``d group of elementwise ops, the same ``exp`` is JIT-compiled with
tokconv's vectorising flags and runs an order of magnitude faster. But an ``exp``
whose input or output feeds more than one op is left out of the fused kernel and
falls back to the scalar one: the textbook entropy head and mlx-lm's attention
softmax on CPU both did, and cost more than the model's matmuls at long lengths.

:func:`entropy_head` and :func:`softmax` are written so that every ``exp`` sits in a
single-consumer chain; :func:`install` puts the softmax into mlx-lm's llama, qwen2
and gemma3 attention. :class:`TableRoPE` likewise replaces ``mx.fast.rope``, which
computes a scalar sin and cos for every element, by tables of them computed once and a fused multiply-add.
Only on Linux CPU: Metal and CUDA have fast fused attention and RoPE.
Hand-written because MLX's own kernels have no such path on CPU.
"""

from __future__ import annotations

import threading

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import base, gemma3_text, llama, qwen2


@mx.compile
def entropy_head(logits: mx.array) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """argmax, its probability, the entropy (nats) and whether the row was finite, over the last axis
    of ``logits``. A non-finite row's argmax is 0 (as MLX's argmax over NaN).

    H = log S - sum(e * d) / S with d = x - max, e = exp(d), S = sum(e). ``d`` is written
    twice (``x - m`` and ``x + (-m)``) so that MLX does not merge the two into one
    shared array: each ``exp`` then fuses with its neighbours into a vectorised kernel.
    """
    x = logits.astype(mx.float32)
    m = mx.max(x, axis=-1, keepdims=True)
    s = mx.sum(mx.exp(x - m), axis=-1)
    neg = -m
    t = mx.sum(mx.exp(x + neg) * (x + neg), axis=-1)
    finite = mx.isfinite(m[..., 0]) & mx.isfinite(s) & mx.isfinite(t)
    return mx.where(finite, mx.argmax(x, axis=-1), 0), 1.0 / s, mx.log(s) - t / s, finite


@mx.compile
def softmax(scores: mx.array) -> mx.array:
    """Softmax over the last axis, its ``exp`` fused and vectorised (``mx.softmax`` is scalar on CPU)."""
    e = mx.exp(scores - mx.max(scores, axis=-1, keepdims=True))
    return e / mx.sum(e, axis=-1, keepdims=True)


def causal(n: int, total: int) -> mx.array:
    """Which of ``total`` keys each of the last ``n`` queries may see: (n, total) bool."""
    return mx.arange(total)[None, :] <= (mx.arange(n) + (total - n))[:, None]


def attention(queries, keys, values, cache, scale: float, mask, sinks=None):
    """mlx-lm's ``scaled_dot_product_attention`` for CPU, with the vectorised :func:`softmax`.

    Grouped-query heads are matched by reshaping, not by repeating keys. A ``"causal"``
    mask aligns the queries with the last keys (the cache holds the earlier ones).
    Quantized caches and attention sinks go to mlx-lm's own implementation.
    """
    if hasattr(cache, "bits") or sinks is not None:
        return _original_attention(queries, keys, values, cache, scale, mask, sinks=sinks)
    B, Hq, n, D = queries.shape
    Hkv, T = keys.shape[1], keys.shape[2]
    q = (queries * scale).reshape(B, Hkv, Hq // Hkv, n, D)
    s = q @ mx.expand_dims(keys, 2).swapaxes(-1, -2)  # (B, Hkv, rep, n, T)
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"unsupported attention mask {mask!r}")
        s = mx.where(causal(n, T), s, mx.array(-mx.inf, s.dtype))
    elif mask is not None:
        if mask.ndim == 4:  # (B or 1, H or 1, n, T) -> broadcast over the rep axis
            mask = mx.expand_dims(mask, 2)
        s = mx.where(mask, s, mx.array(-mx.inf, s.dtype)) if mask.dtype == mx.bool_ else s + mask
    out = softmax(s) @ mx.expand_dims(values, 2)
    return out.reshape(B, Hq, n, values.shape[-1])


_original_attention = None
_installed = False


def install() -> None:
    """Use :func:`attention` in mlx-lm's llama, qwen2 and gemma3 models (idempotent)."""
    global _original_attention, _installed
    if _installed:
        return
    _installed = True
    _original_attention = getattr(base, "scaled_dot_product_attention", None)
    if _original_attention is None:  # an mlx-lm without this hook (requirements pin one with it): stay native
        return
    for module in (llama, qwen2, gemma3_text):
        if hasattr(module, "scaled_dot_product_attention"):
            module.scaled_dot_product_attention = attention


_tables: dict[tuple[int, float, float], tuple[mx.array, mx.array]] = {}
_tables_lock = threading.Lock()


def rope_tables(dims: int, base: float, scale: float, length: int) -> tuple[mx.array, mx.array]:
    """cos and sin of position x frequency, (n >= length, dims / 2) float32, grown by doubling and shared."""
    key = (dims, float(base), float(scale))
    with _tables_lock:
        have = _tables.get(key)
        if have is None or have[0].shape[0] < length:
            n = max(256, 1 << (max(1, length) - 1).bit_length())
            inv_freq = base ** (-mx.arange(0, dims, 2, dtype=mx.float32) / dims)
            theta = (mx.arange(n, dtype=mx.float32) * scale)[:, None] * inv_freq[None, :]
            have = _tables[key] = (mx.cos(theta), mx.sin(theta))
            mx.eval(have)
        return have


@mx.compile
def _rotate_half(x1: mx.array, x2: mx.array, cos: mx.array, sin: mx.array) -> tuple[mx.array, mx.array]:
    return x1 * cos - x2 * sin, x2 * cos + x1 * sin


class TableRoPE(nn.Module):
    """``nn.RoPE`` with sin and cos from :func:`rope_tables` (same results to float32 rounding)."""

    def __init__(self, dims: int, traditional: bool = False, base: float = 10000, scale: float = 1.0):
        super().__init__()
        self.dims, self.traditional, self.base, self.scale = dims, traditional, base, scale

    def __call__(self, x: mx.array, offset: int = 0) -> mx.array:
        if not isinstance(offset, int):  # per-row offsets (batched generation): MLX's own kernel
            return mx.fast.rope(x, self.dims, traditional=self.traditional, base=self.base,
                                scale=self.scale, offset=offset)
        n, d = x.shape[-2], self.dims
        cos, sin = rope_tables(d, self.base, self.scale, offset + n)
        cos, sin = cos[offset : offset + n].astype(x.dtype), sin[offset : offset + n].astype(x.dtype)
        if self.traditional:  # rotate consecutive pairs
            pairs = x[..., :d].reshape(*x.shape[:-1], d // 2, 2)
            a, b = _rotate_half(pairs[..., 0], pairs[..., 1], cos, sin)
            out = mx.stack([a, b], axis=-1).reshape(*x.shape[:-1], d)
        else:  # rotate the two halves
            a, b = _rotate_half(x[..., : d // 2], x[..., d // 2 : d], cos, sin)
            out = mx.concatenate([a, b], axis=-1)
        return out if d == x.shape[-1] else mx.concatenate([out, x[..., d:]], axis=-1)


def use_table_rope(model: nn.Module) -> int:
    """Replace every plain ``nn.RoPE`` in ``model`` by a :class:`TableRoPE`; returns how many."""
    swapped = 0
    for _, module in model.named_modules():
        for name, child in list(module.children().items()):
            if type(child) is nn.RoPE:
                setattr(module, name, TableRoPE(child.dims, child.traditional, child.base, child.scale))
                swapped += 1
    return swapped
