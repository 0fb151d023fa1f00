"""The scoring primitive: for every position, the model's argmax next token,
its probability and the entropy of the predictive distribution.

This module speaks token ids only. Predictions are aligned with the positions
they predict: ``argmax[b, i]`` is the model's guess for token ``i`` given tokens
``< i`` (and the BOS token when the model uses one). Position 0 has no
prediction of its own unless a BOS token precedes it; there ``argmax`` is -1
and ``entropy``/``prob`` are NaN.

A :class:`ScoringSession` keeps a KV cache of the sequences it last scored, so
after a change at position ``i`` only the suffix from ``i`` is forwarded again:
a left-to-right pass costs O(L) forwarded tokens, not O(L^2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..errors import InvalidTokens
from ..fastpath import threads
from ..models import LoadedModel
from . import forward, head, native
from .scores import Cost, Scores
from .streams import max_rows, n_streams, on_call_thread, row_groups, streams


def validate_tokens(tokens: np.ndarray, vocab_size: int, max_length: int | None = None) -> np.ndarray:
    """Check a batch of token ids; return it as a 2-D int array or raise InvalidTokens."""
    arr = np.asarray(tokens)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidTokens(
            f"token ids must be a sequence or a batch of sequences, got an array of shape {arr.shape}",
            "pass a list of ints or a 2-D array (batch, length)",
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidTokens("the token sequence is empty", "give at least one token (experiments need 2 or more)")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidTokens(f"token ids must be integers, got {arr.dtype}", "convert the ids to int")
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
        first = int(arr[bad][0])
        raise InvalidTokens(
            f"token id {first} is outside this model's vocabulary (0..{vocab_size - 1})",
            "use ids produced by this model's tokenizer",
        )
    if max_length is not None and arr.shape[1] > max_length:
        raise InvalidTokens(
            f"the sequence has {arr.shape[1]} tokens, more than this model's limit of {max_length}",
            f"use at most {max_length} tokens",
        )
    return arr.astype(np.int64, copy=False)


class Scorer:
    """Scores token sequences with one loaded model."""

    def __init__(self, lm: LoadedModel, *, max_length: int | None = None) -> None:
        self.lm = lm
        self.bos_id = lm.bos_id
        self.max_length = max_length
        self.cost = Cost()

    @property
    def shift(self) -> int:
        """1 when a BOS token precedes the sequence, else 0."""
        return 1 if self.bos_id is not None else 0

    def inputs(self, tokens: np.ndarray) -> np.ndarray:
        """What the model reads for ``tokens`` (B, L): the BOS token first when the model uses one."""
        if self.bos_id is None:
            return tokens
        return np.concatenate([np.full((tokens.shape[0], 1), self.bos_id, np.int64), tokens], axis=1)

    def validate(self, tokens) -> np.ndarray:
        """Tokens as a checked (B, L) int array."""
        return validate_tokens(tokens, self.lm.vocab_size, self.max_length)

    def score(self, tokens) -> Scores:
        """Score a batch from scratch (no cache kept)."""
        return self.session().score(tokens)

    def session(self) -> "ScoringSession":
        """A KV-cached session for re-scoring suffixes of one batch."""
        return ScoringSession(self)


@dataclass
class ScoringSession:
    """Re-scores a batch of equal-length sequences, forwarding only what changed.

    The session remembers the tokens it last saw and the KV cache behind them.
    ``score(new_tokens)`` finds the first column where anything changed, trims
    the cache back to it, and forwards only the suffix.
    """

    scorer: Scorer
    cost: Cost = field(default_factory=Cost)
    _tokens: np.ndarray | None = None  # (B, L) tokens whose predictions are cached
    _valid: int = 0  # predictions for positions < _valid are current
    _cache: list | None = None  # one mlx-lm prompt cache per row group
    _groups: list | None = None
    _scores: Scores | None = None  # predictions so far, filled in place

    @property
    def shift(self) -> int:
        """1 when a BOS token precedes the sequence, else 0."""
        return self.scorer.shift

    def reset(self) -> None:
        """Forget the cache and the remembered tokens."""
        self._tokens, self._valid, self._cache = None, 0, None

    def _first_change(self, tokens: np.ndarray) -> int:
        """The first column where ``tokens`` differ from the last ones scored (their common length
        when one is a prefix of the other; 0 for another batch size)."""
        old = self._tokens
        if old is None or old.shape[0] != tokens.shape[0]:
            return 0
        n = min(old.shape[1], tokens.shape[1])
        diff = np.nonzero((old[:, :n] != tokens[:, :n]).any(axis=0))[0]
        return int(diff[0]) if diff.size else n

    def score(self, tokens, *, upto: int | None = None, poison: np.ndarray | None = None) -> Scores:
        """Scores for ``tokens`` (B, L), reusing the cache for the unchanged prefix.

        With ``upto``, only predictions for positions ``<= upto`` are guaranteed
        current (fewer tokens are forwarded); later positions hold NaN / -1.
        ``poison`` (B, L bool) feeds a NaN embedding at its positions instead of the token's: an
        emulation of what an unchecked out-of-range gather can do (see tokconv.experiments.oov).
        """
        tokens = self.scorer.validate(tokens)
        B, L = tokens.shape
        stop = L - 1 if upto is None else min(int(upto), L - 1)
        poison = None if poison is None or not np.any(poison) else np.asarray(poison, bool).reshape(B, L)
        # what the cache was made from: a poisoned position differs from any token there
        seen = tokens if poison is None else np.where(poison, -1, tokens)
        change = self._first_change(seen)
        if self._tokens is None or self._tokens.shape[0] != B:
            self._scores = Scores.blank(B, L)
            self._cache, self._valid = None, 0
        elif self._tokens.shape[1] != L:
            # Another length (a re-encoded text): keep the cached prefix, as after an edit.
            kept = Scores.blank(B, L)
            n = min(self._valid, L, change + 1)
            kept.fill(slice(None), slice(0, n), *(a[:, :n] for a in self._scores.arrays()))
            self._scores = kept
            if self._cache is not None and row_groups(B, max_rows(L + self.shift, self.scorer.lm.vocab_size)) != self._groups:
                self._cache, self._valid = None, 0  # the rows would be grouped differently
        # A change at position c leaves predictions for positions <= c intact.
        self._valid = min(self._valid, change + 1)
        self._tokens = seen.copy()
        if self._valid <= stop:
            self._forward(tokens, self._valid, stop, poison)
        out = self._scores.copy()
        if stop < L - 1:
            out.fill(slice(None), slice(stop + 1, None), -1, np.nan, np.nan, True)
        return out

    def _forward(self, tokens: np.ndarray, first: int, stop: int, poison: np.ndarray | None = None) -> None:
        """Make predictions for positions first..stop current by forwarding the needed inputs (on
        the model-call thread, :func:`.streams.on_call_thread`)."""
        on_call_thread(self._forward_here, tokens, first, stop, poison)

    def _forward_here(self, tokens: np.ndarray, first: int, stop: int, poison: np.ndarray | None = None) -> None:
        lm, s = self.scorer.lm, self.shift
        B = tokens.shape[0]
        inputs = self.scorer.inputs(tokens)
        if poison is not None and s:
            poison = np.concatenate([np.zeros((B, 1), bool), poison], axis=1)  # the BOS is never poisoned
        # Prediction for position p comes from the logits at input index p - 1 + s.
        lo = max(first - 1 + s, 0)
        hi = stop + s  # exclusive end of the inputs to forward
        t0 = time.perf_counter()
        with lm.lock:
            if self._cache is None:
                # One KV cache per group of rows; groups run in waves, one per CPU stream.
                self._groups = row_groups(B, max_rows(tokens.shape[1] + s, lm.vocab_size))
                nat = native.takes(lm, B) if poison is None else None
                self._cache = [[native.NativeCache(nat)]] if nat is not None else [forward.make_caches(lm) for _ in self._groups]
            offset = self._cache[0][0].offset
            if offset > lo:
                if all(c.is_trimmable() for cache in self._cache for c in cache):
                    for cache in self._cache:
                        for c in cache:
                            c.trim(c.offset - lo)
                else:  # e.g. a rotating cache past its window: start over
                    self._cache = [forward.make_caches(lm) for _ in self._groups]
            lo = self._cache[0][0].offset
            nat = self._cache[0][0] if isinstance(self._cache[0][0], native.NativeCache) else None
            if nat is not None and lo < hi and poison is not None and poison[:, lo:hi].any():
                self._cache, nat = [nat.past()], None  # NaN embeddings are MLX's: the rest of this session too
            if nat is not None and lo < hi:
                with threads.compute(1) as n_threads:
                    logits = native.call(nat.nat, inputs[0, lo:hi], nat, n_threads)
                    out = head.predict([logits])[0]
                self._scores.fill(slice(None), slice(lo + 1 - s, hi + 1 - s), *out)
                step = Cost(1, hi - lo, time.perf_counter() - t0, int(out[3].size - np.count_nonzero(out[3])))
                self.cost.add(step)
                self.scorer.cost.add(step)
            elif lo < hi:
                x = mx.array(inputs[:, lo:hi].astype(np.int32))
                bad = None if poison is None or not poison[:, lo:hi].any() else poison[:, lo:hi]
                waves = streams(min(len(self._groups), n_streams()))
                p0 = lo + 1 - s  # first position these logits predict
                cols = slice(p0, p0 + (hi - lo))
                nonfinite = 0
                for w in range(0, len(self._groups), len(waves)):
                    wave = list(zip(self._groups[w:], self._cache[w:], waves))
                    with threads.compute(len(wave)):
                        logits = []
                        for rows, cache, stream in wave:
                            if bad is None:
                                logits.append(forward.call(lm, x[rows], cache, stream))  # (b, n, V)
                            else:
                                logits.append(forward.call_poisoned(lm, x[rows], cache, stream, bad[rows]))
                        mx.eval(logits)
                        outs = head.predict(logits)
                    del logits
                    for (rows, _, _), out in zip(wave, outs):
                        self._scores.fill(rows, cols, *out)
                        nonfinite += int(out[3].size - np.count_nonzero(out[3]))
                n = B * (hi - lo)
                step = Cost(1, n, time.perf_counter() - t0, nonfinite)
                self.cost.add(step)
                self.scorer.cost.add(step)
        self._valid = stop + 1


def score(lm: LoadedModel, tokens) -> Scores:
    """Score a batch of sequences with a loaded model (convenience wrapper)."""
    return Scorer(lm).score(tokens)
