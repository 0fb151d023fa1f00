"""Where tokconv keeps its files: a cache folder and a data folder, each overridable by environment.

One rule for both: the tokconv variable, else the XDG variable, else the usual folder in the home.
"""

from __future__ import annotations

import os
from pathlib import Path


def _located(own: str, xdg: str, home: tuple[str, ...], leaf: str) -> Path:
    """``$own`` if set, else ``$xdg/leaf``, else ``~/home/leaf``."""
    if env := os.environ.get(own):
        return Path(env).expanduser()
    base = os.environ.get(xdg)
    return (Path(base).expanduser() if base else Path.home().joinpath(*home)) / leaf


def cache_dir() -> Path:
    """The user cache folder: ``$TOKCONV_CACHE``, else ``$XDG_CACHE_HOME/tokconv``, else ``~/.cache/tokconv``."""
    return _located("TOKCONV_CACHE", "XDG_CACHE_HOME", (".cache",), "tokconv")


def default_db_path() -> Path:
    """The run database: ``$TOKCONV_DB``, else ``$XDG_DATA_HOME/tokconv/runs.sqlite``, else ``~/.local/share/tokconv/runs.sqlite``."""
    return _located("TOKCONV_DB", "XDG_DATA_HOME", (".local", "share"), "tokconv/runs.sqlite")


def models_dir() -> Path:
    """Folder of converted mlx-lm model directories."""
    return cache_dir() / "models"
