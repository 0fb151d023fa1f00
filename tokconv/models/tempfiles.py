"""Atomic files in the model cache, and cleaning up after processes that died mid-write.

Everything large the cache holds (assembled GGUF files, converted model folders) is
written under a temp name in the same folder and renamed into place only when
complete, so a file under its final name is always a finished one. Temp names look
like ``.NAME.tmp-PID-HEX``: hidden, never ending in the final name's suffix, and
carrying the writer's pid so that a later process can tell a live writer's temp
from one a killed process left behind.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Temps untouched for this long are abandoned even if their pid now belongs to some other process.
STALE_AFTER_S = 15 * 60
_TEMP = re.compile(r"^\..+\.tmp-(\d+)-[0-9A-Za-z]+$")


def temp_path(target: Path) -> Path:
    """A fresh temp name next to ``target`` (see the module docstring for its shape)."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temp path to write ``target``'s content to; on success it becomes ``target``.

    The temp file is flushed to disk and renamed over ``target`` (so readers see the old
    file or the whole new one, never a part); on any exception, KeyboardInterrupt included,
    it is removed and ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    tmp = temp_path(target)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)  # make the rename itself durable
    finally:
        tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _last_touched(path: Path) -> float:
    """The newest modification time in a file or folder tree (a writer touches what it writes)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    pass
    return newest


def is_stale(path: Path, *, now: float | None = None) -> bool:
    """Whether ``path`` is a temp of ours that no live writer will finish: its pid is gone, or it is long untouched."""
    m = _TEMP.match(path.name)
    if m is None:
        return False
    pid = int(m.group(1))
    if pid == os.getpid():
        return False  # ours, being written right now
    if not _pid_alive(pid):
        return True
    try:
        return (now if now is not None else time.time()) - _last_touched(path) > STALE_AFTER_S
    except OSError:
        return False  # vanished meanwhile: its writer finished


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files and folders in ``folder`` that killed processes left behind; returns them."""
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if not is_stale(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
