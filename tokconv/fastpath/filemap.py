"""The float32 tensors of a folder's safetensors files as read-only numpy views of memory maps.

A short model call on compact weights (:mod:`.compact`) never reads a matrix's float32 values, yet
loading a model read and copied all of them (2.5 GB for Qwen2.5-0.5B, about a second of a fresh
process). Where the loaded values are exactly the file's bytes, the views below stand in for them:
they cost nothing until a page is touched, and the page cache shares them between processes.

Hand-written because the ``safetensors`` library hands numpy copies, not views, and the format is
a length, a JSON header and the raw little-endian tensors
(https://github.com/huggingface/safetensors#format).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

MAX_HEADER = 100 << 20  # the format's own limit


def float32_tensors(folder: Path) -> dict[str, np.ndarray]:
    """``{name: view}`` for every float32 tensor in ``folder/*.safetensors`` (C-contiguous, read-only,
    memory-mapped); empty where a file cannot be read as safetensors (the caller loads as before)."""
    if sys.byteorder != "little":
        return {}
    out: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob("*.safetensors")):
        try:
            out.update(_file(path))
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            return {}
    return out


def _file(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > MAX_HEADER:
            raise ValueError("header too long")
        header = json.loads(f.read(size))
    base = 8 + size
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, stop = (int(v) for v in info["data_offsets"])
        shape = tuple(int(d) for d in info["shape"])
        if stop - start != 4 * int(np.prod(shape)) or base + stop > mapped.size or (base + start) % 4:
            raise ValueError(f"tensor {name} does not fit the file")
        out[name] = mapped[base + start: base + stop].view(np.float32).reshape(shape)
    return out
