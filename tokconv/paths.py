"""Where tokconv keeps its files: one cache folder, overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder: ``$TOKCONV_CACHE``, else ``$XDG_CACHE_HOME/tokconv``, else ``~/.cache/tokconv``."""
    env = os.environ.get("TOKCONV_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tokconv"


def models_dir() -> Path:
    """Folder of converted mlx-lm model directories."""
    return cache_dir() / "models"
