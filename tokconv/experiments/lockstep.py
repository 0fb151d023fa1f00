"""Many runs in lockstep: every mode, scored in batched model calls, with one-by-one results.

A mode's generator never calls the model: where it needs scores it yields a
:class:`~tokconv.experiments.modes.ScoreRequest` and is sent the scores back. One run
(:meth:`Experiment.records`) answers each request at once from the player's own
:class:`~tokconv.engine.ScoringSession`. Here many runs are driven together, in waves:
each run's generator is advanced until it asks for scores (or ends); the requests of
all runs are gathered per model and answered by one :class:`~tokconv.engine.rows.RowPool`
call per model; each run is sent its scores and the next wave begins. The rules of each
mode are written once (:mod:`.modes`) and serve both ways of running.

Why requests rather than other designs:

- Rows of one model in a battle across tokenizers have different lengths, and each
  move re-encodes the text, so the lengths change every turn. Grouping rows by
  length would split a batch into many small calls; padding a rectangular batch would
  re-forward every row from the earliest change. A pool keeps each row's own KV cache
  and longest unchanged token prefix (as a one-row ScoringSession does, across
  re-tokenization too), pads a call's shorter rows at the end only, and forwards each
  row from its own first change.
- Threads parked on a barrier inside ``Player.score`` would need no change to the modes,
  but a Ctrl-C, an exception or a closed sweep would have to unwind a thread per run;
  a yield point is plain control flow in one thread.

Each row's scores are what a one-row session gives, up to float32 rounding: BLAS sums in
another order for another batch shape, so a near-tie in argmax or entropy could in
principle go the other way. The tests hold lockstep runs to the one-by-one runs' steps,
status and final text on tiny models and on SmolLM2 and Qwen. Models whose layers cannot
keep per-row caches (:func:`tokconv.engine.rows.supported`) are still run in lockstep, each
request answered from the player's own session.

Memory is bounded: a pool keeps keys and values for its rows only (rows x longest input),
and :mod:`tokconv.engine.streams` caps each call's logits. Each result's cost is its own
share: the calls its rows took part in, its rows' tokens, model seconds in proportion to
them, and wall seconds of its own (its generator's time plus its model seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Generator, Iterator, Sequence

from ..engine.rows import RowPool, RowRequest, supported
from ..engine import Scorer, Scores
from ..models import LoadedModel, load
from . import modes
from .config import RunConfig
from .experiment import Experiment, collect, prepare
from .records import Record, RunEnd, RunResult

__all__ = ["lockstep_key", "run_lockstep"]


def lockstep_key(c: RunConfig) -> tuple:
    """Runs with the same key run in lockstep together: one mode, the same models read the same
    way, one length; seeds, start texts, iterations and blocking may differ. (Any runs of the same
    models could share the pools; alike runs end at alike times, so batches stay full.)"""
    return (c.mode, c.model_a, c.model_b, c.length, c.share, c.oov, c.dtype)


@dataclass
class _Lane:
    """One run in the lockstep: its experiment, its generator and the records so far."""

    exp: Experiment
    gen: Generator
    records: list[Record] = field(default_factory=list)
    rows: dict[int, tuple[RowPool | None, int]] = field(default_factory=dict)  # player index -> (pool, row)
    seconds: float = 0.0  # time spent in its own generator
    request: modes.ScoreRequest | None = None
    done: bool = False

    def advance(self, reply: Scores | None) -> None:
        """Run the generator until it asks for scores (kept in ``request``) or ends (``done``)."""
        t0 = time.perf_counter()
        self.request = None
        try:
            while True:
                item = self.gen.send(reply)
                reply = None
                if isinstance(item, modes.ScoreRequest):
                    self.request = item
                    return
                self.records.append(item)
                if isinstance(item, RunEnd):
                    self.gen.close()
                    self.done = True
                    return
        except StopIteration:
            self.done = True
        finally:
            self.seconds += time.perf_counter() - t0

    def result(self, batch: int) -> RunResult:
        """The run's result, with its share of the batch's cost."""
        result = collect(self.exp, iter(self.records))
        cost = self.exp.cost()  # scores from the players' own sessions (models without pools)
        for pool, row in self.rows.values():
            if pool is not None:
                c = pool.row_cost(row)
                cost.forward_passes += c.forward_passes
                cost.forwarded_tokens += c.forwarded_tokens
                cost.seconds += c.seconds
                cost.nonfinite_rows += c.nonfinite_rows
        cost.wall_seconds = self.seconds + cost.seconds
        cost.batched_rows = batch
        result.cost = cost
        return result


def run_lockstep(configs: Sequence[RunConfig], *, models: Sequence[LoadedModel] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[RunResult]:
    """Run ``configs`` (one :func:`lockstep_key`) in lockstep; yield each result as its run ends.

    ``models`` are the loaded models (one per spec in the configs' ``models``), else they are
    loaded. ``should_stop`` is asked before each wave and after each result; a yes ends quietly,
    unfinished runs dropped. A Ctrl-C or an error inside a run ends them all (runs already
    yielded are complete).
    """
    if not configs:
        return
    first = configs[0]
    if any(lockstep_key(c) != lockstep_key(first) for c in configs):
        raise ValueError("runs in lockstep must share their mode, models, length, sharing, oov policy and precision")
    lms = list(models) if models is not None else [load(spec, None, first.dtype) for spec in first.models]
    lanes = [_Lane(exp, exp.requests()) for exp in (prepare(c, lms) for c in configs)]
    # One pool per model, one row in it per run and player of that model (a model can play both sides).
    sides: dict[int, list[int]] = {}  # id(model) -> the player indices it plays
    for p in lanes[0].exp.players:
        sides.setdefault(id(p.lm), []).append(p.index)
    pools = {id(lm): RowPool(Scorer(lm), len(lanes) * len(sides[id(lm)])) if supported(lm, first.length) else None
             for lm in lms}
    for k, lane in enumerate(lanes):
        for p in lane.exp.players:
            mine = sides[id(p.lm)]
            lane.rows[p.index] = (pools[id(p.lm)], k * len(mine) + mine.index(p.index))

    replies: dict[int, Scores | None] = {k: None for k in range(len(lanes))}
    active = list(range(len(lanes)))
    while active:
        if should_stop and should_stop():
            return
        for k in active:
            lanes[k].advance(replies[k])
        for k in [k for k in active if lanes[k].done]:
            active.remove(k)
            yield lanes[k].result(len(lanes))
            if should_stop and should_stop():  # asked after each result, as between one-by-one runs
                return
        replies = _answer([(k, lanes[k]) for k in active])


def _answer(asking: list[tuple[int, _Lane]]) -> dict[int, Scores]:
    """Scores for each lane's request: one pool call per model, or each player's own session."""
    replies: dict[int, Scores] = {}
    by_pool: dict[int, tuple[RowPool, list]] = {}
    for k, lane in asking:
        req = lane.request
        pool, row = lane.rows[req.player.index]
        if pool is None:
            replies[k] = modes.answer(req)
            continue
        arr, poison = req.player.inputs(list(req.ids))
        wanted = RowRequest(row, arr[0], req.upto, None if poison is None else poison[0])
        by_pool.setdefault(id(pool), (pool, []))[1].append((k, wanted))
    for pool, wanted in by_pool.values():
        for (k, _), scores in zip(wanted, pool.score([w for _, w in wanted])):
            replies[k] = scores
    return replies
