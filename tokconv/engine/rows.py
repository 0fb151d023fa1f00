"""Scoring many independent sequences together, each re-forwarded only from its own change.

:class:`~tokconv.engine.session.ScoringSession` keeps one KV cache for a whole batch,
so one offset for every row: after row 3 changes position 2 and row 7 changes
position 15, both are re-forwarded from position 2, and rows that finished long
ago are forwarded again with them. A lockstep sweep of 64 single-mode runs spent
most of its time there.

:class:`RowSession` keeps each row's keys and values separately (one array per
layer, rows on the first axis). On every call it finds each row's first change,
sorts the changed rows by it and cuts them into groups, trading one more model
call per group against the tokens a group re-forwards for its earliest row
(dynamic programming over the sorted rows). Each group gathers its rows' cached
prefixes into :class:`~tokconv.engine.forward.PastKV` caches, runs one compiled forward
from its offset and scatters the new keys and values back. Unchanged rows are not forwarded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..fastpath import threads
from ..models import LoadedModel
from . import forward, head
from .scores import Cost, Scores
from .session import Scorer
from .streams import max_rows, n_streams, streams

# One model call costs about as much as this many extra forwarded tokens: tuned on SmolLM2 with
# packed weights, by 32-seed single-mode sweeps alternating in one process (BENCHMARKS.md).
CALL_COST_TOKENS = 15


def supported(lm: LoadedModel, length: int) -> bool:
    """True when every layer can keep a :class:`~tokconv.engine.forward.PastKV` (plain or sliding-window
    attention: the window is applied by the mask), whatever ``length``."""
    return forward.functional(lm)


def plan_groups(starts: np.ndarray, end: int, call_cost: float = CALL_COST_TOKENS) -> list[np.ndarray]:
    """Cut rows into forward groups: ``starts[r]`` is row r's first input to forward, ``end`` the
    exclusive end for all. Minimises sum over groups of ``call_cost + rows * (end - min start)``."""
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    n = len(s)
    best = np.full(n + 1, np.inf)
    best[n] = 0.0
    cut = np.zeros(n + 1, dtype=np.int64)
    # best[j]: cheapest way to forward rows order[j:]; a group order[j:k] starts at s[j] (the smallest).
    for j in range(n - 1, -1, -1):
        for k in range(j + 1, n + 1):
            c = call_cost + (k - j) * (end - s[j]) + best[k]
            if c < best[j]:
                best[j], cut[j] = c, k
    groups, j = [], 0
    while j < n:
        groups.append(order[j : cut[j]])
        j = cut[j]
    return groups


@dataclass
class RowSession:
    """Re-scores a batch of independent equal-length sequences row by row (same results as
    :class:`~tokconv.engine.session.ScoringSession`, fewer tokens forwarded)."""

    scorer: Scorer
    call_cost: float = CALL_COST_TOKENS
    cost: Cost = field(default_factory=Cost)
    _tokens: np.ndarray | None = None
    _keys: list | None = None  # per layer (B, heads, T, dim)
    _values: list | None = None
    _scores: Scores | None = None  # predictions so far, filled in place

    def score(self, tokens) -> Scores:
        """Scores for ``tokens`` (B, L); rows that did not change since the last call are not forwarded."""
        tokens = self.scorer.validate(tokens)
        B, L = tokens.shape
        s = self.scorer.shift
        end = L - 1 + s  # inputs forwarded: all but the last token (it predicts nothing we need)
        if self._tokens is None or self._tokens.shape != tokens.shape:
            self._tokens = None
            self._keys = self._values = None
            self._scores = Scores.blank(B, L)
            starts = np.zeros(B, dtype=np.int64)
        else:
            changed = self._tokens != tokens
            first = np.where(changed.any(axis=1), changed.argmax(axis=1), L)
            # A change at position c changes the predictions after c: forward from input c + s.
            starts = first + s
        self._tokens = tokens.copy()
        need = np.nonzero(starts < end)[0]
        if need.size:
            self._forward(tokens, need, starts[need], end)
        return self._scores.copy()

    def _schedule(self, rows: np.ndarray, starts: np.ndarray, end: int) -> list[list[tuple[np.ndarray, int, object]]]:
        """Model calls to make, as waves of (rows, first input, stream) with at most one call per stream.

        On Linux CPU two streams run at once (see streams.n_streams). Whole groups go to
        the less loaded stream; a group heavier than all the others together is split in
        two halves instead, one per stream. Small calls are bound by reading the weights,
        so splitting every group would double that cost for little gain. A call whose
        logits would pass streams.LOGITS_BUDGET_BYTES is split by rows.
        """
        n = n_streams()
        vocab = self.scorer.lm.vocab_size
        groups = [(rows[m], int(starts[m].min())) for m in plan_groups(starts, end, self.call_cost)]
        work = [self.call_cost + len(g) * (end - lo) for g, lo in groups]
        heaviest = int(np.argmax(work))
        split = []  # (work, rows, lo)
        for k, (group, lo) in enumerate(groups):
            pieces = -(-len(group) // max_rows(end - lo, vocab))
            if k == heaviest and n > 1 and work[k] > sum(work) / 2:
                pieces = max(pieces, 2)  # one half per stream
            split += [(self.call_cost + len(p) * (end - lo), p, lo) for p in np.array_split(group, min(pieces, len(group)))]
        queues: list[list] = [[] for _ in range(n)]
        load = [0.0] * n
        for cost, group, lo in sorted(split, key=lambda j: -j[0]):
            k = load.index(min(load))
            load[k] += cost
            queues[k].append((group, lo))
        on = streams(n)
        waves = []
        for w in range(max(len(q) for q in queues)):
            waves.append([(*q[w], on[k]) for k, q in enumerate(queues) if w < len(q)])
        return waves

    def _forward(self, tokens: np.ndarray, rows: np.ndarray, starts: np.ndarray, end: int) -> None:
        lm, s = self.scorer.lm, self.scorer.shift
        B = tokens.shape[0]
        inputs = self.scorer.inputs(tokens)
        t0 = time.perf_counter()
        tokens_forwarded = calls = nonfinite = 0
        with lm.lock:
            for wave in self._schedule(rows, starts, end):
                with threads.compute(len(wave)):
                    nonfinite += self._call(wave, inputs, B, end, s)
                tokens_forwarded += sum(len(part) * (end - lo) for part, lo, _ in wave)
                calls += len(wave)
        step = Cost(calls, tokens_forwarded, time.perf_counter() - t0, nonfinite)
        self.cost.add(step)
        self.scorer.cost.add(step)

    def _call(self, wave: list, inputs: np.ndarray, B: int, end: int, s: int) -> int:
        """One wave of model calls (one per stream): forward, store the keys and values, fill the
        scores; returns how many predictions came from non-finite logits."""
        lm = self.scorer.lm
        jobs = []  # (row ids, their mx index, first input, caches, logits)
        for part, lo, stream in wave:
            idx = mx.array(part.astype(np.int32))
            caches = []
            for layer in range(len(lm.model.layers)):
                if lo > 0:  # the store exists: the first call forwards from 0
                    caches.append(forward.PastKV(mx.take(self._keys[layer][:, :, :lo], idx, axis=0),
                                                 mx.take(self._values[layer][:, :, :lo], idx, axis=0)))
                else:
                    caches.append(forward.PastKV())
            x = mx.array(inputs[part, lo:end].astype(np.int32))
            out = forward.call(lm, x, caches, stream)  # logits (b, n, V)
            jobs.append((part, idx, lo, caches, out))
        if self._keys is None:  # first call: an empty store (a zero prefix of length 0 is never read)
            k0, v0 = jobs[0][3][0].keys, jobs[0][3][0].values
            n = len(lm.model.layers)
            self._keys = [mx.zeros((B, k0.shape[1], end, k0.shape[3]), k0.dtype) for _ in range(n)]
            self._values = [mx.zeros((B, v0.shape[1], end, v0.shape[3]), v0.dtype) for _ in range(n)]
        for _, idx, _, caches, _ in jobs:
            for layer, c in enumerate(caches):
                self._keys[layer][idx] = c.keys[:, :, :end]
                self._values[layer][idx] = c.values[:, :, :end]
        mx.eval([j[4] for j in jobs], self._keys, self._values)
        outs = head.predict([j[4] for j in jobs])
        nonfinite = 0
        for (part, _, lo, _, _), out in zip(jobs, outs):
            cols = slice(lo + 1 - s, end + 1 - s)  # positions predicted by inputs lo..end-1
            self._scores.fill(part, cols, *out)
            nonfinite += int(out[3].size - np.count_nonzero(out[3]))
        return nonfinite
