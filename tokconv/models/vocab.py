"""Which token ids count as ordinary vocabulary, and random start sequences drawn from them."""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

import numpy as np

from .loading import LoadedModel


# Per loaded model (not per spec: two models may carry one name); computing them reads the whole vocabulary.
_ORDINARY: "weakref.WeakKeyDictionary[LoadedModel, np.ndarray]" = weakref.WeakKeyDictionary()
_KEYS: "weakref.WeakKeyDictionary[LoadedModel, str]" = weakref.WeakKeyDictionary()
_SIZES: "weakref.WeakKeyDictionary[LoadedModel, int]" = weakref.WeakKeyDictionary()


def _ordinary_ids(lm: LoadedModel) -> np.ndarray:
    hf = getattr(lm.tokenizer, "_tokenizer", lm.tokenizer)
    special = set(getattr(hf, "all_special_ids", []) or [])
    added = getattr(hf, "added_tokens_decoder", {}) or {}
    special |= {int(i) for i, t in added.items() if getattr(t, "special", False)}
    vocab = hf.get_vocab()  # piece -> id
    # Control, unused, reserved and byte-fallback pieces look like <...>;
    # pieces that decode to broken UTF-8 (lone byte tokens) are not ordinary text either.
    candidates = [i for piece, i in vocab.items() if i not in special and i < lm.vocab_size
                  and not (piece.startswith("<") and piece.endswith(">") and len(piece) > 2)]
    keep = [i for i, text in zip(candidates, _one_token_texts(hf, candidates)) if text and "\ufffd" not in text]
    return np.array(sorted(keep), dtype=np.int64)


def _one_token_texts(hf, ids: list[int]) -> list[str]:
    """The text of each id alone, as far as being empty or holding U+FFFD goes: ``hf.decode([i])``.

    A transformers tokenizer's decode is its Rust backend's, then an optional clean-up of spaces
    before punctuation that neither empties a text nor adds or removes a U+FFFD; the backend
    decodes the whole vocabulary in one call, which halves the time a model's first run spends here
    (BENCHMARKS.md). Other tokenizers: one decode per id."""
    backend = getattr(hf, "_tokenizer", None)
    if hasattr(backend, "decode_batch"):
        return backend.decode_batch([[i] for i in ids], skip_special_tokens=False)
    return [hf.decode([i]) for i in ids]


def ordinary_token_ids(lm: LoadedModel) -> np.ndarray:
    """Sorted ids of the model's ordinary vocabulary: no special, control, unused, reserved or byte pieces."""
    if lm not in _ORDINARY:
        _ORDINARY[lm] = _ordinary_ids(lm)
    return _ORDINARY[lm]


def random_tokens(lm: LoadedModel, length: int, seed: int) -> list[int]:
    """``length`` ids drawn uniformly from the ordinary vocabulary with a seeded RNG."""
    ids = ordinary_token_ids(lm)
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.choice(ids, size=length, replace=True)]


def tokenizer_key(lm: LoadedModel) -> str:
    """A hash of the vocabulary: two models with the same key share token positions directly."""
    if lm not in _KEYS:
        hf = getattr(lm.tokenizer, "_tokenizer", lm.tokenizer)
        vocab = sorted(hf.get_vocab().items(), key=lambda kv: kv[1])
        _KEYS[lm] = hashlib.sha1(repr(vocab).encode()).hexdigest()[:16]
    return _KEYS[lm]


def same_vocabulary(a: LoadedModel, b: LoadedModel) -> bool:
    """Whether ``a`` and ``b`` share token positions directly: their :func:`tokenizer_key` are equal.
    Vocabularies of different sizes are told apart without hashing them (a model's first run
    would spend a few tenths of a second on it)."""
    if a is b:
        return True
    if _vocab_len(a) != _vocab_len(b):
        return False
    return tokenizer_key(a) == tokenizer_key(b)


def _vocab_len(lm: LoadedModel) -> int:
    """How many pieces the tokenizer has, once per loaded model (every run of a sweep asks)."""
    if lm not in _SIZES:
        _SIZES[lm] = len(getattr(lm.tokenizer, "_tokenizer", lm.tokenizer).get_vocab())
    return _SIZES[lm]


@dataclass(frozen=True)
class VocabComparison:
    """How two models' vocabularies relate, id by id (what passing ids straight across would mean)."""

    name_a: str
    name_b: str
    size_a: int  # rows of each model's embedding (ids 0..size-1)
    size_b: int
    same_text: int  # ids below both sizes that decode to the same string in both
    first_divergent: int | None  # the lowest id whose strings differ (None: none below both sizes)
    id0_a: str  # what id 0 is in each
    id0_b: str
    beyond_b: float  # share of A's ordinary vocabulary at ids >= size_b (out of B's range)
    beyond_a: float  # share of B's ordinary vocabulary at ids >= size_a


def _id_texts(lm: LoadedModel, n: int) -> list[str]:
    hf = getattr(lm.tokenizer, "_tokenizer", lm.tokenizer)
    size = min(n, len(hf.get_vocab()))
    batch = getattr(hf, "batch_decode", None)
    texts = batch([[i] for i in range(size)]) if batch else [hf.decode([i]) for i in range(size)]
    return list(texts) + [""] * (n - size)  # ids the tokenizer lacks (padding rows of the embedding)


def compare_vocabularies(a: LoadedModel, b: LoadedModel) -> VocabComparison:
    """Compare two vocabularies id by id: sizes, shared strings, the first divergence, id 0, and how
    much of each model's ordinary vocabulary lies beyond the other's range."""
    n = min(a.vocab_size, b.vocab_size)
    ta, tb = _id_texts(a, n), _id_texts(b, n)
    same = [x == y and x != "" for x, y in zip(ta, tb)]
    first = next((i for i, s in enumerate(same) if not s), None)
    oa, ob = ordinary_token_ids(a), ordinary_token_ids(b)
    return VocabComparison(
        a.name, b.name, a.vocab_size, b.vocab_size, sum(same), first, ta[0] if ta else "", tb[0] if tb else "",
        float(np.mean(oa >= b.vocab_size)) if oa.size else 0.0, float(np.mean(ob >= a.vocab_size)) if ob.size else 0.0,
    )
