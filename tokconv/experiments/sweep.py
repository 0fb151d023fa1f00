"""Sweeps: a grid of models x modes x lengths x seeds, saved to the store as runs finish.

Independent ``single``-mode runs of one model and length are run in lockstep
as one batch: every iteration re-scores the rows that changed, each from its own
change, in as few forward passes as pay off (:class:`tokconv.engine.RowSession`), and each
row then makes exactly the move it would make alone, so the results are the same
as one-by-one runs. A stopped sweep
resumes without redoing finished runs (their settings are already in the store).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from ..engine import RowSession, Scorer
from ..engine.rows import supported
from ..models import LoadedModel, load
from ..models.vocab import random_tokens
from . import modes
from .config import RunConfig, SweepSpec
from .experiment import Experiment, collect, run
from .records import Record, RunCost, RunEnd, RunResult

__all__ = ["RunSink", "SweepProgress", "SweepSpec", "iter_sweep", "run_single_batch", "run_sweep"]


class RunSink(Protocol):
    """Where a sweep saves runs and learns which are done (:class:`tokconv.store.RunStore` is one)."""

    def done_keys(self) -> set[str]: ...

    def save(self, result: RunResult) -> int: ...


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep stands, with an estimate of the time left."""

    done: int
    total: int
    skipped: int
    elapsed: float
    last: RunResult | None

    @property
    def eta_seconds(self) -> float | None:
        ran = self.done - self.skipped
        left = self.total - self.done
        return None if ran <= 0 else self.elapsed / ran * left


def run_single_batch(lm: LoadedModel, configs: list[RunConfig], should_stop: Callable[[], bool] | None = None) -> Iterator[RunResult]:
    """Run ``single``-mode configs of one model and length in lockstep; yield each result as its row finishes."""
    starts = [random_tokens(lm, c.length, c.seed) for c in configs]
    tokens = np.array(starts, dtype=np.int64)  # (B, L)
    players = [modes.Player(lm, 0, lm.name) for _ in configs]
    records: list[list[Record]] = [[] for _ in configs]
    # Rows re-forwarded from their own changes; a shared-offset session where a layer's cache can't be split.
    session = RowSession(Scorer(lm)) if supported(lm, configs[0].length) else Scorer(lm).session()
    active = list(range(len(configs)))
    it = 0
    while active:
        if should_stop and should_stop():
            return
        it += 1
        scores = session.score(tokens)
        for b in list(active):
            p, c, ids = players[b], configs[b], [int(t) for t in tokens[b]]
            step, iteration_end = modes.single_turn(p, scores, ids, it, c.block_after, row=b)
            if step is not None:
                tokens[b, step.position] = step.new_token
                records[b].append(step)
            records[b].append(iteration_end)
            end = None
            if step is None:
                left = modes.mismatch_positions(scores, ids, b).size
                end = RunEnd(modes.stuck_status(left), it, None, lm.decode(ids))
            elif it >= c.iterations:
                end = RunEnd("max-iterations", c.iterations, None, lm.decode(ids))
            if end is not None:
                records[b].append(end)
                active.remove(b)
                state = modes.State([p], starts[b], shared_ids=True)
                result = collect(Experiment(c, [p], state, starts[b], state.text), iter(records[b]))
                share = len(configs)
                result.cost = RunCost(
                    forward_passes=session.cost.forward_passes,
                    forwarded_tokens=session.cost.forwarded_tokens / share,
                    seconds=session.cost.seconds / share,
                    wall_seconds=session.cost.seconds / share,
                    batched_rows=share,
                )
                yield result


def _groups(configs: Iterable[RunConfig], batch: bool, max_batch: int) -> Iterator[list[RunConfig]]:
    """Groups to run together, streamed: a grid's runs of one model and length come in a row."""
    if not batch:
        yield from ([c] for c in configs)
        return
    pending: list[RunConfig] = []
    for c in configs:
        if c.mode == "single" and c.start_text is None:
            if pending and ((c.model_a, c.length) != (pending[0].model_a, pending[0].length) or len(pending) >= max_batch):
                yield pending
                pending = []
            pending.append(c)
        else:
            yield [c]
    if pending:
        yield pending


def iter_sweep(
    spec: SweepSpec,
    store: RunSink | None = None,
    *,
    batch: bool = True,
    max_batch: int = 64,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> Iterator[RunResult]:
    """Run the grid lazily, yielding each run as it is saved to ``store``; runs already in the store are skipped.

    Memory stays flat whatever the grid's size: configs are streamed, never listed. A Ctrl-C inside
    a run raises KeyboardInterrupt here (the run is not saved; a resumed sweep runs it again);
    ``should_stop`` ends the sweep quietly instead.
    """
    configs = spec.iter_configs()  # validates the grid first
    total = spec.size
    done_keys = store.done_keys() if store else set()
    skipped = sum(1 for c in spec.iter_configs() if c.key() in done_keys) if done_keys else 0
    todo = (c for c in configs if c.key() not in done_keys)
    ran = 0
    t0 = time.perf_counter()

    def finished(r: RunResult) -> RunResult:
        nonlocal ran
        if store:
            store.save(r)
        ran += 1
        if on_progress:
            on_progress(SweepProgress(skipped + ran, total, skipped, time.perf_counter() - t0, r))
        return r

    if on_progress:
        on_progress(SweepProgress(skipped, total, skipped, 0.0, None))
    for group in _groups(todo, batch, max_batch):
        if should_stop and should_stop():
            return
        if len(group) > 1:
            for r in run_single_batch(load(group[0].model_a), group, should_stop):
                yield finished(r)
        else:
            r = run(group[0], should_stop=should_stop)
            if r.status == "interrupted":  # not saved: a resumed sweep runs it again
                if should_stop and should_stop():
                    return
                raise KeyboardInterrupt  # collect() caught a Ctrl-C inside the run: pass it on
            yield finished(r)


def run_sweep(
    spec: SweepSpec,
    store: RunSink | None = None,
    *,
    batch: bool = True,
    max_batch: int = 64,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> list[RunResult]:
    """Run the grid, saving each finished run to ``store``; runs already in the store are skipped.

    Returns the new runs; :func:`iter_sweep` streams them instead.
    """
    return list(iter_sweep(spec, store, batch=batch, max_batch=max_batch, should_stop=should_stop, on_progress=on_progress))
