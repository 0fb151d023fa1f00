"""Sweeps: a grid of models x modes x lengths x seeds, saved to the store as runs finish.

Runs of one mode, model(s) and length, whatever the mode, are run in lockstep, up to
``max_batch`` at a time (:func:`tokconv.experiments.lockstep.run_lockstep`): each wave
gathers every run's request for scores into one batched model call per model, each row
re-forwarded from its own change, and each run then makes exactly the move it would make
alone, so the results are the same as one-by-one runs. A stopped sweep resumes without
redoing finished runs (their settings are already in the store).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from .config import RunConfig, SweepSpec
from .experiment import run
from .lockstep import lockstep_key, run_lockstep
from .records import RunResult

__all__ = ["RunSink", "SweepProgress", "SweepSpec", "iter_sweep", "run_lockstep", "run_sweep"]


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


def _groups(configs: Iterable[RunConfig], batch: bool, max_batch: int) -> Iterator[list[RunConfig]]:
    """Groups to run together, streamed: a grid's runs of one mode, model(s) and length come in a row."""
    if not batch:
        yield from ([c] for c in configs)
        return
    pending: list[RunConfig] = []
    for c in configs:
        if pending and (lockstep_key(c) != lockstep_key(pending[0]) or len(pending) >= max_batch):
            yield pending
            pending = []
        pending.append(c)
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
            for r in run_lockstep(group, should_stop=should_stop):
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
