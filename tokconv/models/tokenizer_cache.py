"""The tokenizer of a converted model folder, loaded once and then kept as a pickle beside it.

Loading a tokenizer the way ``mlx_lm.load`` does is a large share of a fresh process's wait:
transformers parses the 11 MB ``tokenizer.json`` of Qwen2.5 with Python's ``json`` several times
and rebuilds its vocabulary, and mlx-lm's wrapper reads the vocabulary twice more
(BENCHMARKS.md). Neither library offers a faster way in, so tokconv pickles the finished
``TokenizerWrapper`` (the same object, hence the same encoding and decoding) and unpickles it on
later loads.

The pickle is only read from tokconv's own converted folders (where the compiled kernels it
loads also live, so it adds no new trust), and only when its key matches: a digest of every
JSON file of the folder, of ``eos_token_ids`` and of the versions of Python, mlx-lm,
transformers and tokenizers. Anything wrong with the file (stale, corrupt, unreadable) means
the tokenizer is loaded as mlx-lm loads it and the file is written again; a folder that
cannot be written to just goes without. ``TOKCONV_NO_TOKENIZER_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import mlx_lm
import tokenizers
import transformers
from mlx_lm.utils import load_tokenizer

from .tempfiles import atomic_file

PREFIX = "tokenizer-cache."
SUFFIX = ".pickle"


def cache_key(folder: Path, eos_token_ids: Any = None) -> str:
    """The digest that names a folder's tokenizer pickle: its JSON files, ``eos_token_ids`` and the
    versions of the libraries whose objects the pickle holds."""
    h = hashlib.blake2b(digest_size=12)
    for path in sorted(folder.glob("*.json")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(repr(eos_token_ids).encode())
    h.update(repr(sys.version_info[:2]).encode())
    for module in (mlx_lm, transformers, tokenizers):  # __version__: importlib.metadata takes ~30 ms each
        h.update(f"{module.__name__}={module.__version__}".encode())
    return h.hexdigest()


def cache_file(folder: Path, eos_token_ids: Any = None) -> Path:
    """Where the pickle of ``folder``'s tokenizer goes (for its current key)."""
    return folder / f"{PREFIX}{cache_key(folder, eos_token_ids)}{SUFFIX}"


def load_cached_tokenizer(folder: Path, eos_token_ids: Any = None) -> Any:
    """``mlx_lm.utils.load_tokenizer(folder, eos_token_ids=...)``, from the folder's pickle when one
    with the current key is there; otherwise loaded and then pickled for the next process."""
    if os.environ.get("TOKCONV_NO_TOKENIZER_CACHE") == "1":
        return load_tokenizer(folder, eos_token_ids=eos_token_ids)
    target = cache_file(folder, eos_token_ids)
    try:
        with open(target, "rb") as f:
            return pickle.load(f)
    except Exception:  # absent, unreadable, corrupt, or from a library changed under the same version
        pass
    tokenizer = load_tokenizer(folder, eos_token_ids=eos_token_ids)
    _store(tokenizer, target)
    return tokenizer


def _store(tokenizer: Any, target: Path) -> None:
    """Pickle ``tokenizer`` to ``target`` (whole or not at all) and drop pickles of older keys.
    A folder that cannot be written to, or a tokenizer that does not pickle, is left without one."""
    try:
        data = pickle.dumps(tokenizer, protocol=pickle.HIGHEST_PROTOCOL)
        with atomic_file(target) as tmp:
            tmp.write_bytes(data)
        for old in target.parent.glob(f"{PREFIX}*{SUFFIX}"):
            if old != target:
                old.unlink(missing_ok=True)
    except Exception:  # never a reason to fail a load: the next process loads as mlx-lm does
        pass
