"""Scoring many independent sequences together, each re-forwarded only from its own change.

:class:`~tokconv.engine.session.ScoringSession` keeps one KV cache for a whole batch,
so one offset for every row: after row 3 changes position 2 and row 7 changes
position 15, both are re-forwarded from position 2, and rows that finished long
ago are forwarded again with them. A lockstep sweep of 64 single-mode runs spent
most of its time there.

:class:`RowPool` keeps each row's keys and values separately (one array per layer,
rows on the first axis) and lets each row have its own length, which may change
from call to call (a text re-encoded by another tokenizer). A call takes requests
for any of its rows: each row keeps the predictions and the keys and values of its
longest unchanged prefix, exactly as a one-row ScoringSession would (with ``upto`` and
poisoned positions alike). The rows to forward are sorted by their first input
and cut into groups, trading one more model call per group against the tokens a
group re-forwards for its earliest row and pads up to its longest (dynamic
programming over the sorted rows). Each group gathers its rows' cached prefixes into
:class:`~tokconv.engine.forward.PastKV` caches, runs one compiled forward from its
offset (shorter rows padded at the end, which causal attention never lets earlier
positions see) and scatters the new keys and values back. Unchanged rows are not
forwarded. :class:`RowSession` is the same for a rectangular batch.

Where one-sequence calls run in C (:mod:`.native`: llama/qwen2 on compact weights), each row
keeps its own :class:`~tokconv.engine.native.NativeCache` instead, and all the rows to forward go
into one C call, each from its own offset: no groups and no padding, and every row's results are
bit for bit those of a one-row session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import mlx.core as mx
import numpy as np

from ..fastpath import compact, threads
from ..models import LoadedModel
from . import forward, head, native
from .scores import Cost, Scores
from .session import Scorer
from .streams import LOGITS_BUDGET_BYTES, max_rows, n_streams, on_call_thread, streams

# One model call costs about as much as this many extra forwarded tokens: tuned on SmolLM2 with
# packed weights, by 32-seed single-mode sweeps alternating in one process (BENCHMARKS.md).
CALL_COST_TOKENS = 15


def supported(lm: LoadedModel, length: int) -> bool:
    """True when every layer can keep a :class:`~tokconv.engine.forward.PastKV` (plain or sliding-window
    attention: the window is applied by the mask), whatever ``length``."""
    return forward.functional(lm)


def plan_groups(starts: np.ndarray, end, call_cost: float = CALL_COST_TOKENS) -> list[np.ndarray]:
    """Cut rows into forward groups: ``starts[r]`` is row r's first input to forward, ``end`` the
    exclusive end (one for all, or one per row). Groups are runs of the rows sorted by start;
    minimises sum over groups of ``call_cost + rows * (max end - min start)``."""
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    e = np.broadcast_to(np.asarray(end), starts.shape)[order]
    n = len(s)
    best = np.full(n + 1, np.inf)
    best[n] = 0.0
    cut = np.zeros(n + 1, dtype=np.int64)
    # best[j]: cheapest way to forward rows order[j:]; a group order[j:k] starts at s[j] (the smallest).
    for j in range(n - 1, -1, -1):
        hi = 0
        for k in range(j + 1, n + 1):
            hi = max(hi, e[k - 1])
            c = call_cost + (k - j) * (hi - s[j]) + best[k]
            if c < best[j]:
                best[j], cut[j] = c, k
    groups, j = [], 0
    while j < n:
        groups.append(order[j : cut[j]])
        j = cut[j]
    return groups


class RowRequest(NamedTuple):
    """Scores wanted for one row of a :class:`RowPool`: its ``tokens`` (L,) now, current up to
    position ``upto`` (all when None), NaN embeddings where ``poison`` (L,) is True."""

    row: int
    tokens: np.ndarray
    upto: int | None = None
    poison: np.ndarray | None = None


@dataclass
class _Row:
    """What a pool remembers of one row: what it last read, what is still current, and its cost."""

    tokens: np.ndarray | None = None  # (L,) as last read, -1 at poisoned positions
    valid: int = 0  # predictions for positions < valid are current
    offset: int = 0  # inputs whose keys and values are stored and current
    scores: Scores | None = None  # (1, L), filled in place
    cost: Cost = field(default_factory=Cost)  # its share of the model calls it took part in


@dataclass
class _Job:
    """One row's part of a call: inputs lo..hi (exclusive) of ``inputs``."""

    row: int
    inputs: np.ndarray
    poison: np.ndarray | None
    lo: int
    hi: int


class RowPool:
    """A fixed number of independent rows, each with its own length, tokens and KV cache; any of
    them are scored together. Each row gets what a one-row ScoringSession of its own would give
    (up to float rounding, which differs between batch shapes)."""

    def __init__(self, scorer: Scorer, rows: int, *, call_cost: float = CALL_COST_TOKENS) -> None:
        self.scorer = scorer
        self.call_cost = call_cost
        self.cost = Cost()
        self.rows = [_Row() for _ in range(rows)]
        self._keys: list | None = None  # per layer (rows, heads, T, dim)
        self._values: list | None = None
        # Where native calls serve the model (tokconv.engine.native), each row keeps its own cache
        # and every row to forward goes into one C call: no groups, no padding.
        self._nat = native.takes(scorer.lm, 1)
        self._native: list = [None] * rows  # per row: its NativeCache once it has one

    def row_cost(self, row: int) -> Cost:
        """Row ``row``'s share of the calls it took part in (its tokens, and the seconds in proportion)."""
        return self.rows[row].cost

    def score(self, requests: Sequence[RowRequest]) -> list[Scores]:
        """Scores (1, L) for each request, in order; at most one request per row."""
        if len({r.row for r in requests}) < len(requests):
            raise ValueError("a row may be asked for once per call")
        s = self.scorer.shift
        jobs, outs = [], []
        for req in requests:
            tokens = self.scorer.validate(req.tokens)[0]
            L = tokens.shape[0]
            stop = L - 1 if req.upto is None else min(int(req.upto), L - 1)
            poison = None if req.poison is None or not np.any(req.poison) else np.asarray(req.poison, bool).reshape(L)
            seen = tokens if poison is None else np.where(poison, -1, tokens)  # a poisoned position differs from any token
            row = self.rows[req.row]
            change = _common_prefix(row.tokens, seen)
            if row.scores is None:
                row.scores = Scores.blank(1, L)
            elif row.scores.argmax.shape[1] != L:  # another length (a re-encoded text): keep the current prefix
                kept = Scores.blank(1, L)
                n = min(row.valid, L, change + 1)
                kept.fill(slice(None), slice(0, n), *(a[:, :n] for a in row.scores.arrays()))
                row.scores = kept
            # A change at position c leaves predictions for positions <= c intact, and the inputs before c + s.
            row.valid = min(row.valid, change + 1)
            row.offset = min(row.offset, max(row.valid - 1 + s, 0))
            row.tokens = seen.copy()
            if row.valid <= stop:
                inputs = self.scorer.inputs(tokens[None])[0]
                if poison is not None and s:
                    poison = np.concatenate([[False], poison])  # the BOS is never poisoned
                jobs.append(_Job(req.row, inputs, poison, row.offset, stop + s))
                row.valid = stop + 1
            outs.append((row, stop, L))
        if jobs:
            self._forward(jobs)
        results = []
        for row, stop, L in outs:
            out = row.scores.copy()
            if stop < L - 1:
                out.fill(slice(None), slice(stop + 1, None), -1, np.nan, np.nan, True)
            results.append(out)
        return results

    def _schedule(self, jobs: list[_Job]) -> list[list[tuple[list[_Job], int, int, object]]]:
        """Model calls to make, as waves of (jobs, first input, end, stream) with at most one call per stream.

        On Linux CPU two streams run at once (see streams.n_streams), one BLAS thread each.
        That pays for calls long enough for BLAS: whole groups go to the less loaded stream,
        and a group heavier than all the others together is split in two halves instead,
        one per stream. Calls short enough for the compact-weight kernel
        (:mod:`tokconv.fastpath.compact`) run alone, one after another: that kernel spreads
        each product over every core itself, and two such calls side by side on one core each
        wait for the longer one (a lockstep battle took 1.3x as long that way, BENCHMARKS.md).
        A call whose logits would pass streams.LOGITS_BUDGET_BYTES is split by rows.
        """
        n = n_streams()
        short = compact.current_max_rows()  # products of at most this many rows run compact
        vocab = self.scorer.lm.vocab_size
        starts = np.array([j.lo for j in jobs], dtype=np.int64)
        ends = np.array([j.hi for j in jobs], dtype=np.int64)
        groups = [(m, int(starts[m].min()), int(ends[m].max())) for m in plan_groups(starts, ends, self.call_cost)]
        work = [self.call_cost + len(m) * (hi - lo) for m, lo, hi in groups]
        heaviest = int(np.argmax(work))
        alone, split = [], []  # (work, jobs, lo, hi)
        for k, (members, lo, hi) in enumerate(groups):
            pieces = -(-len(members) // max_rows(hi - lo, vocab))
            if k == heaviest and n > 1 and work[k] > sum(work) / 2 and len(members) * (hi - lo) > 2 * short:
                pieces = max(pieces, 2)  # one half per stream
            for part in np.array_split(members, min(pieces, len(members))):  # members are sorted by start
                plo, phi = int(starts[part].min()), int(ends[part].max())  # a piece forwards only its own span
                piece = (self.call_cost + len(part) * (phi - plo), [jobs[i] for i in part], plo, phi)
                (alone if len(part) * (phi - plo) <= short else split).append(piece)
        on = streams(n)
        waves = [[(part, lo, hi, on[0])] for _, part, lo, hi in alone]
        if split:
            queues: list[list] = [[] for _ in range(n)]
            load = [0.0] * n
            for cost, part, lo, hi in sorted(split, key=lambda j: -j[0]):
                k = load.index(min(load))
                load[k] += cost
                queues[k].append((part, lo, hi))
            waves += [[(*q[w], on[k]) for k, q in enumerate(queues) if w < len(q)] for w in range(max(len(q) for q in queues))]
        return waves

    def _forward(self, jobs: list[_Job]) -> None:
        on_call_thread(self._forward_here, jobs)  # where streams and traces live on (.streams)

    def _forward_here(self, jobs: list[_Job]) -> None:
        lm = self.scorer.lm
        if self._nat is not None and any(j.poison is not None for j in jobs):
            self._to_mlx()  # NaN embeddings are MLX's (tokconv.engine.oov): the rest of this pool too
        if self._nat is not None:
            self._forward_native(jobs)
            return
        with lm.lock:
            for wave in self._schedule(jobs):
                t0 = time.perf_counter()
                with threads.compute(len(wave)):
                    nonfinite = self._call(wave)
                dt = time.perf_counter() - t0
                tokens = sum(len(part) * (hi - lo) for part, lo, hi, _ in wave)
                for part, lo, hi, _ in wave:
                    for job in part:  # each row's share: its tokens, and the wave's time in proportion
                        self.rows[job.row].cost.add(Cost(1, hi - lo, dt * (hi - lo) / tokens, nonfinite.get(job.row, 0)))
                step = Cost(len(wave), tokens, dt, sum(nonfinite.values()))
                self.cost.add(step)
                self.scorer.cost.add(step)

    def _forward_native(self, jobs: list[_Job]) -> None:
        """Every job in C calls of all their rows together (:func:`.native.call_rows`), as many
        rows per call as the logits budget allows; each row from its own offset."""
        lm, s = self.scorer.lm, self.scorer.shift
        budget = max(1, LOGITS_BUDGET_BYTES // (12 * lm.vocab_size))  # tokens per call, as streams.max_rows
        calls, tokens = [[]], 0
        for job in jobs:
            if calls[-1] and tokens + job.hi - job.lo > budget:
                calls.append([])
                tokens = 0
            calls[-1].append(job)
            tokens += job.hi - job.lo
        for part in calls:
            t0 = time.perf_counter()
            with lm.lock, threads.compute(1) as n_threads:
                rows = []
                for job in part:
                    cache = self._native[job.row]
                    if cache is None:
                        cache = self._native[job.row] = native.NativeCache(self._nat)
                    cache.trim(cache.offset - job.lo)
                    rows.append((job.inputs[job.lo : job.hi], cache))
                logits = native.call_rows(self._nat, rows, n_threads)
                out = head.predict([logits[None]])[0]
            dt, total = time.perf_counter() - t0, sum(j.hi - j.lo for j in part)
            at, bad = 0, 0
            for job in part:
                n = job.hi - job.lo
                row = self.rows[job.row]
                row.scores.fill(0, slice(job.lo + 1 - s, job.hi + 1 - s), *(a[0, at : at + n] for a in out))
                row.offset = job.hi
                nonfinite = int(n - np.count_nonzero(out[3][0, at : at + n]))
                row.cost.add(Cost(1, n, dt * n / total, nonfinite))
                at, bad = at + n, bad + nonfinite
            step = Cost(1, total, dt, bad)
            self.cost.add(step)
            self.scorer.cost.add(step)

    def _to_mlx(self) -> None:
        """Hand the rows' native caches to the MLX store (rows, heads, T, dim) and use MLX from now on."""
        width = max((c.offset for c in self._native if c is not None), default=0)
        if width:
            nat = self._nat
            shape = (len(self.rows), nat.kv_heads, width, nat.head_dim)
            self._keys, self._values = [], []
            for layer in range(nat.n_layers):
                k, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
                for r, c in enumerate(self._native):
                    if c is not None:
                        k[r, :, : c.offset], v[r, :, : c.offset] = c.keys[layer, :, : c.offset], c.values[layer, :, : c.offset]
                self._keys.append(mx.array(k))
                self._values.append(mx.array(v))
        self._nat, self._native = None, [None] * len(self.rows)

    def _call(self, wave: list) -> dict[int, int]:
        """One wave of model calls (one per stream): forward, store the keys and values, fill the
        scores; returns how many predictions came from non-finite logits, per row."""
        lm, s = self.scorer.lm, self.scorer.shift
        calls = []  # (jobs, their mx index, first input, end, caches, logits)
        for part, lo, hi, stream in wave:
            idx = mx.array([j.row for j in part], dtype=mx.int32)
            caches = []
            for layer in range(len(lm.model.layers)):
                if lo > 0:  # the store exists: every row's first call forwards from 0
                    caches.append(forward.PastKV(mx.take(self._keys[layer][:, :, :lo], idx, axis=0),
                                                 mx.take(self._values[layer][:, :, :lo], idx, axis=0)))
                else:
                    caches.append(forward.PastKV())
            x = np.zeros((len(part), hi - lo), np.int32)  # shorter rows padded at the end with id 0
            bad = np.zeros(x.shape, bool)
            for r, j in enumerate(part):
                x[r, : j.hi - lo] = j.inputs[lo : j.hi]
                if j.poison is not None:
                    bad[r, : j.hi - lo] = j.poison[lo : j.hi]
            if bad.any():
                out = forward.call_poisoned(lm, mx.array(x), caches, stream, bad)
            else:
                out = forward.call(lm, mx.array(x), caches, stream)  # logits (b, n, V)
            calls.append((part, idx, lo, hi, caches, out))
        self._reserve(max(hi for _, _, _, hi, _, _ in calls), calls[0][4])
        for _, idx, _, hi, caches, _ in calls:
            for layer, c in enumerate(caches):
                self._keys[layer][idx, :, :hi] = c.keys
                self._values[layer][idx, :, :hi] = c.values
        mx.eval([c[5] for c in calls], self._keys, self._values)
        outs = head.predict([c[5] for c in calls])
        nonfinite: dict[int, int] = {}
        for (part, _, lo, _, _, _), out in zip(calls, outs):
            for r, j in enumerate(part):
                n = j.hi - lo
                cols = slice(lo + 1 - s, j.hi + 1 - s)  # positions predicted by inputs lo..hi-1
                self.rows[j.row].scores.fill(0, cols, *(a[r, :n] for a in out))
                self.rows[j.row].offset = j.hi
                nonfinite[j.row] = int(n - np.count_nonzero(out[3][r, :n]))
        return nonfinite

    def _reserve(self, width: int, caches: list) -> None:
        """Make the key/value store (rows, heads, T, dim) at least ``width`` inputs wide."""
        have = 0 if self._keys is None else self._keys[0].shape[2]
        if width <= have:
            return
        grown_k, grown_v = [], []
        for layer, c in enumerate(caches):
            B, (h, d) = len(self.rows), (c.keys.shape[1], c.keys.shape[3])
            k = mx.zeros((B, h, width, d), c.keys.dtype)
            v = mx.zeros((B, c.values.shape[1], width, c.values.shape[3]), c.values.dtype)
            if have:
                k[:, :, :have] = self._keys[layer]
                v[:, :, :have] = self._values[layer]
            grown_k.append(k)
            grown_v.append(v)
        self._keys, self._values = grown_k, grown_v


def _common_prefix(old: np.ndarray | None, new: np.ndarray) -> int:
    """How many leading tokens ``old`` and ``new`` share (0 when there is no ``old``)."""
    if old is None:
        return 0
    n = min(old.shape[0], new.shape[0])
    diff = np.nonzero(old[:n] != new[:n])[0]
    return int(diff[0]) if diff.size else n


class RowSession:
    """Re-scores a batch of independent equal-length sequences row by row (same results as
    :class:`~tokconv.engine.session.ScoringSession`, fewer tokens forwarded): a :class:`RowPool`
    with one row per sequence."""

    def __init__(self, scorer: Scorer, call_cost: float = CALL_COST_TOKENS) -> None:
        self.scorer = scorer
        self.call_cost = call_cost
        self._pool: RowPool | None = None
        self._cost = Cost()

    @property
    def cost(self) -> Cost:
        """What scoring cost so far."""
        return self._cost

    def score(self, tokens) -> Scores:
        """Scores for ``tokens`` (B, L); rows that did not change since the last call are not forwarded."""
        tokens = self.scorer.validate(tokens)
        B = tokens.shape[0]
        if self._pool is None or len(self._pool.rows) != B:
            self._pool = RowPool(self.scorer, B, call_cost=self.call_cost)
            self._pool.cost = self._cost
        outs = self._pool.score([RowRequest(r, tokens[r]) for r in range(B)])
        return Scores(*(np.concatenate(a) for a in zip(*(o.arrays() for o in outs))))
