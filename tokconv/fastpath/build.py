"""Build small C libraries with gcc, cached by their source, flags and this CPU's features."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..paths import cache_dir


def built(source: Path, args: list[str], *key: bytes) -> Path:
    """``source`` compiled by gcc into a shared library, cached by its text, ``args`` and ``key``."""
    text = source.read_bytes()
    headers = [(source.parent / name.decode()).read_bytes() for name in re.findall(rb'#include "([^"]+)"', text)]
    digest = digest_of(text, *headers, *key, *map(str.encode, args))  # a changed header rebuilds too
    out = cache_dir() / "runtime" / f"{source.stem.lstrip('_')}-{digest}.so"
    if not out.exists():
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise OSError("no gcc to build it: apt-get install gcc")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        done = subprocess.run([cc, "-O2", "-shared", "-fPIC", str(source), *args, "-o", str(tmp)],
                              check=False, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise OSError(f"building {source.name} failed: {done.stderr}")
        os.replace(tmp, out)
    return out


def digest_of(*parts: bytes) -> str:
    """A short hash of ``parts`` that keeps their boundaries."""
    return hashlib.sha256(b"".join(len(p).to_bytes(8, "little") + p for p in parts)).hexdigest()[:16]


def _cpuinfo(field: bytes) -> bytes:
    """The first ``field`` line of /proc/cpuinfo (b"" off Linux)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            return next((line for line in f if line.startswith(field)), b"")
    except OSError:
        return b""


def cpu_vendor() -> bytes:
    """This CPU's vendor line (``GenuineIntel``, ``AuthenticAMD``), b"" off Linux."""
    return _cpuinfo(b"vendor_id")


def cpu_flags() -> bytes:
    """This CPU's feature flags (``/proc/cpuinfo``): part of the cache key of code built with ``-march=native``."""
    return _cpuinfo(b"flags")


@contextmanager
def setting(get: Callable[[], int] | None, set_: Callable[[int], object], value: int) -> Iterator[None]:
    """A built library's process-wide setting at ``value`` inside the block, put back after it;
    nothing where the library is absent (``get`` None)."""
    if get is None:
        yield
        return
    before = get()
    set_(value)
    try:
        yield
    finally:
        set_(before)
