"""Which token ids count as ordinary vocabulary, and random start sequences drawn from them."""

from __future__ import annotations

import hashlib
import numpy as np

from .loading import LoadedModel


_ORDINARY: dict[str, np.ndarray] = {}  # per model spec; computing it decodes the whole vocabulary once
_KEYS: dict[str, str] = {}


def _ordinary_ids(lm: LoadedModel) -> np.ndarray:
    hf = getattr(lm.tokenizer, "_tokenizer", lm.tokenizer)
    special = set(getattr(hf, "all_special_ids", []) or [])
    added = getattr(hf, "added_tokens_decoder", {}) or {}
    special |= {int(i) for i, t in added.items() if getattr(t, "special", False)}
    vocab = hf.get_vocab()  # piece -> id
    keep = []
    for piece, i in vocab.items():
        if i in special or i >= lm.vocab_size:
            continue
        # Control, unused, reserved and byte-fallback pieces look like <...>;
        # pieces that decode to broken UTF-8 (lone byte tokens) are not ordinary text either.
        if piece.startswith("<") and piece.endswith(">") and len(piece) > 2:
            continue
        text = hf.decode([i])
        if not text or "\ufffd" in text:
            continue
        keep.append(i)
    return np.array(sorted(keep), dtype=np.int64)


def ordinary_token_ids(lm: LoadedModel) -> np.ndarray:
    """Sorted ids of the model's ordinary vocabulary: no special, control, unused, reserved or byte pieces."""
    if lm.spec not in _ORDINARY:
        _ORDINARY[lm.spec] = _ordinary_ids(lm)
    return _ORDINARY[lm.spec]


def random_tokens(lm: LoadedModel, length: int, seed: int) -> list[int]:
    """``length`` ids drawn uniformly from the ordinary vocabulary with a seeded RNG."""
    ids = ordinary_token_ids(lm)
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.choice(ids, size=length, replace=True)]


def tokenizer_key(lm: LoadedModel) -> str:
    """A hash of the vocabulary: two models with the same key share token positions directly."""
    if lm.spec not in _KEYS:
        hf = getattr(lm.tokenizer, "_tokenizer", lm.tokenizer)
        vocab = sorted(hf.get_vocab().items(), key=lambda kv: kv[1])
        _KEYS[lm.spec] = hashlib.sha1(repr(vocab).encode()).hexdigest()[:16]
    return _KEYS[lm.spec]
