"""An independent causal-LM forward in plain numpy, read straight from a GGUF file.

For tests only: it checks the MLX models made by ``tokconv.models.gguf_convert`` against a second,
deliberately separate implementation. It imports neither mlx nor tokconv, and it works in
llama.cpp's native GGUF conventions rather than the Hugging Face ones the converter targets:

- Q/K rows of ``llama`` files stay in llama.cpp's permuted order, so RoPE rotates adjacent
  pairs (x[2i], x[2i+1]) ("normal" mode); ``qwen2`` and ``gemma3`` use NEOX mode, which
  rotates x[i] with x[i + d/2] (llama.cpp's ``llama_model_rope_type``).
- Gemma RMSNorm weights are used as stored: llama.cpp's converter already folded in the
  ``1 + w`` (the stored weights have means of 2-30), and llama.cpp multiplies by them directly.
- Gemma 3 hyperparameters the file does not carry follow llama.cpp's ``load_hparams``:
  sliding-window layers with rope base 10000 and every 6th layer global, query scale
  ``key_length ** -0.5``, embeddings scaled by ``sqrt(hidden)`` in float32.

Matmuls run in float32; norms, softmax and the final logits in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

_ARCHS = ("llama", "qwen2", "gemma3")


@dataclass(frozen=True)
class Hparams:
    arch: str
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim: int
    eps: float
    rope_base: float
    rope_neox: bool  # NEOX (half-split) rotation; else adjacent pairs
    attn_scale: float
    embed_scale: float = 1.0
    rope_base_local: float = 10000.0  # gemma3 sliding-window layers
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] = ()  # per layer: True = sliding-window attention
    final_softcap: float | None = None


def _field(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _read_hparams(r: gguf.GGUFReader) -> Hparams:
    arch = _field(r, "general.architecture")
    if arch not in _ARCHS:
        raise NotImplementedError(f"reference forward has no {arch!r} architecture")

    def meta(key: str, default=None):
        return _field(r, f"{arch}.{key}", default)

    if meta("rope.scaling.type", "none") not in ("none", "linear") or meta("rope.scaling.factor", 1.0) != 1.0:
        raise NotImplementedError("RoPE scaling is not implemented in the reference")
    n_layer, d_model, n_head = meta("block_count"), meta("embedding_length"), meta("attention.head_count")
    head_dim = meta("attention.key_length", d_model // n_head)
    gemma = {}
    if arch == "gemma3":
        pattern = meta("attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):  # newer files: one flag per layer
            sliding = tuple(bool(p) for p in pattern)
        else:  # llama.cpp's set_swa_pattern(n): layer il is global when il % n == n - 1
            sliding = tuple(il % pattern < pattern - 1 for il in range(n_layer))
        gemma = {
            "embed_scale": math.sqrt(d_model),
            "rope_base_local": meta("rope.freq_base_swa", 10000.0),
            "sliding_window": meta("attention.sliding_window"),
            "sliding_layers": sliding,
        }
    return Hparams(
        arch=arch,
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=meta("attention.head_count_kv", n_head),
        head_dim=head_dim,
        eps=meta("attention.layer_norm_rms_epsilon"),
        rope_base=meta("rope.freq_base", 10000.0),
        rope_neox=arch != "llama",
        attn_scale=head_dim**-0.5,
        final_softcap=meta("final_logit_softcapping"),
        **gemma,
    )


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    y = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps)
    return (y * w).astype(np.float32)


def rope(x: np.ndarray, base: float, neox: bool) -> np.ndarray:
    """Rotate x (L, H, D) by position 0..L-1, llama.cpp style (all D dims rotated)."""
    L, _, D = x.shape
    inv_freq = base ** (-np.arange(0, D, 2, dtype=np.float64) / D)  # (D/2,)
    ang = np.arange(L, dtype=np.float64)[:, None] * inv_freq  # (L, D/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]  # (L, 1, D/2)
    if neox:
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    else:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    r1, r2 = x1 * cos - x2 * sin, x1 * sin + x2 * cos  # (L, H, D/2)
    out = np.concatenate([r1, r2], -1) if neox else np.stack([r1, r2], -1).reshape(x.shape)
    return out.astype(np.float32)


def attention(q, k, v, scale: float, window: int | None) -> np.ndarray:
    """Causal grouped-query attention: q (L, H, D), k and v (L, Hkv, D) -> (L, H*D)."""
    L, H, D = q.shape
    group = H // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # (L, H, D): head h reads kv head h // group
    s = np.einsum("qhd,khd->hqk", q, k).astype(np.float64) * scale  # (H, L, L)
    i, j = np.arange(L)[:, None], np.arange(L)[None, :]
    masked = j > i
    if window is not None:
        masked |= i - j >= window  # llama.cpp: a key at distance >= n_swa is masked
    s[:, masked] = -np.inf
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p.astype(np.float32), v).reshape(L, H * D)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


class ReferenceModel:
    """Teacher-forced next-token logits from a GGUF file, in numpy."""

    def __init__(self, hp: Hparams, weights: dict[str, np.ndarray], *, bos_id: int | None, add_bos: bool):
        self.hp, self.w = hp, weights
        self.bos_id, self.add_bos = bos_id, add_bos
        self.vocab_size = weights["token_embd.weight"].shape[0]

    @classmethod
    def from_gguf(cls, path: str | Path | gguf.GGUFReader) -> ReferenceModel:
        """Read hyperparameters and dequantize every tensor to float32, once.

        Takes a path or an open reader (opening a 262k-token vocabulary's file costs ~15 s).
        """
        r = path if isinstance(path, gguf.GGUFReader) else gguf.GGUFReader(str(path))
        hp = _read_hparams(r)
        weights = {}
        for t in r.tensors:
            # GGUF lists shapes fastest-axis first; the dequantized array is (out, in), row-major.
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            weights[t.name] = w.reshape([int(n) for n in reversed(t.shape)])
        bos = _field(r, "tokenizer.ggml.bos_token_id")
        add_bos = bool(_field(r, "tokenizer.ggml.add_bos_token", False))
        return cls(hp, weights, bos_id=None if bos is None else int(bos), add_bos=add_bos)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.w[name + ".weight"].T  # weights are (out, in)
        bias = self.w.get(name + ".bias")  # qwen2: q/k/v biases
        return y if bias is None else y + bias

    def _attention(self, x: np.ndarray, il: int) -> np.ndarray:
        hp, p = self.hp, f"blk.{il}."
        L = x.shape[0]
        q = self._linear(x, p + "attn_q").reshape(L, hp.n_head, hp.head_dim)  # (L, H, D)
        k = self._linear(x, p + "attn_k").reshape(L, hp.n_kv_head, hp.head_dim)  # (L, Hkv, D)
        v = self._linear(x, p + "attn_v").reshape(L, hp.n_kv_head, hp.head_dim)  # (L, Hkv, D)
        base, window = hp.rope_base, None
        if hp.arch == "gemma3":
            q = rms_norm(q, self.w[p + "attn_q_norm.weight"], hp.eps)  # per head, over D
            k = rms_norm(k, self.w[p + "attn_k_norm.weight"], hp.eps)
            if hp.sliding_layers[il]:
                base, window = hp.rope_base_local, hp.sliding_window
        q, k = rope(q, base, hp.rope_neox), rope(k, base, hp.rope_neox)
        out = attention(q, k, v, hp.attn_scale, window)  # (L, H*D)
        return self._linear(out, p + "attn_output")  # (L, d_model)

    def _mlp(self, x: np.ndarray, il: int) -> np.ndarray:
        p = f"blk.{il}."
        gate, up = self._linear(x, p + "ffn_gate"), self._linear(x, p + "ffn_up")  # (L, F)
        act = gelu_tanh(gate) if self.hp.arch == "gemma3" else silu(gate)
        return self._linear(act * up, p + "ffn_down")  # (L, d_model)

    def hidden_states(self, ids: list[int]) -> list[np.ndarray]:
        """Residual stream after the embedding and after each layer: n_layer + 1 arrays (L, d_model)."""
        hp, w = self.hp, self.w
        x = w["token_embd.weight"][np.asarray(ids, dtype=np.int64)] * np.float32(hp.embed_scale)  # (L, d_model)
        states = [x]
        for il in range(hp.n_layer):
            p = f"blk.{il}."
            h = self._attention(rms_norm(x, w[p + "attn_norm.weight"], hp.eps), il)
            if hp.arch == "gemma3":  # sandwich norms around both sublayers
                x = x + rms_norm(h, w[p + "post_attention_norm.weight"], hp.eps)
                h = self._mlp(rms_norm(x, w[p + "ffn_norm.weight"], hp.eps), il)
                x = x + rms_norm(h, w[p + "post_ffw_norm.weight"], hp.eps)
            else:
                x = x + h
                x = x + self._mlp(rms_norm(x, w[p + "ffn_norm.weight"], hp.eps), il)
            states.append(x)
        return states

    def logits(self, ids: list[int], *, last: int | None = None) -> np.ndarray:
        """(L, V) float64 next-token logits at each position, for exactly the ids given.

        ``last=n`` keeps only the final n positions (n, V), sparing memory on long inputs.
        """
        if len(ids) == 0:
            raise ValueError("logits() needs at least one token")
        x = self.hidden_states(ids)[-1][-(last or len(ids)) :]  # (L or n, d_model)
        x = rms_norm(x, self.w["output_norm.weight"], self.hp.eps)
        head = self.w.get("output.weight", self.w["token_embd.weight"])  # tied when no output.weight
        z = (x @ head.T).astype(np.float64)  # (L, V)
        if self.hp.final_softcap:
            z = self.hp.final_softcap * np.tanh(z / self.hp.final_softcap)
        return z


def gguf_tokenizer(path: str | Path | gguf.GGUFReader):
    """A ``tokenizers.Tokenizer`` from the file's own vocabulary, via transformers' torch-free converter."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    r = path if isinstance(path, gguf.GGUFReader) else gguf.GGUFReader(str(path))
    fields = {
        name: _field(r, "tokenizer." + key)
        for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
        if "tokenizer." + key in r.fields
    }
    return convert_gguf_tokenizer(_field(r, "general.architecture"), fields)[0]
