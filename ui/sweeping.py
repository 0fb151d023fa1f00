"""A sweep inside the dashboard: ``tokconv.experiments.sweep.run_sweep`` with a progress bar, the time left, Cancel, and the store.

Streamlit stops a script only at an ``st.*`` call. ``run_sweep`` calls ``on_progress``
after each finished (and already saved) run, where the bar moves; between model
steps it asks ``should_stop``, where a caption is refreshed now and then, so Cancel
(or any widget change) stops the sweep within a moment even during a long run.
The run cut short is not saved, as with ``tokconv sweep``: running the sweep again
skips every saved run and redoes only that one and those after it.

The time left is re-estimated on every heartbeat, not only when a run ends (:class:`Pace`), and
after a Cancel the page counts what the store holds for the grid's keys (:func:`saved_count`),
exactly as the resumed sweep will when it says how many runs it skips.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from tokconv.experiments import RunResult, SweepSpec
from tokconv.experiments.sweep import RunSink, SweepProgress, run_sweep

from . import running, runstore
from .views import status_sentence

LAST = "sweep_last"  # session state: the latest sweep (a SweepState)
RUNNING = "sweep_running"  # session state: set while a sweep runs; still set on the next script run if it was cut short
BEAT = 0.5  # seconds between two "still working" captions (each one is a chance for Streamlit to stop the script)


@dataclass
class SweepState:
    """The latest sweep of this browser session: its grid, and runs kept here when there is no store."""

    keys: list[str]  # config keys of the grid, in order
    skipped: int = 0
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


def last_sweep() -> SweepState | None:
    return st.session_state.get(LAST)


def grid_of(spec_fn: Callable[[], SweepSpec]) -> SweepState | None:
    """The grid of the page's settings (None while they cannot run): a shared link shows its saved runs."""
    try:
        return SweepState([c.key() for c in spec_fn().iter_configs()])
    except Exception:  # settings that cannot run yet (e.g. 'other…' with nothing typed) show nothing
        return None


def was_cut_short() -> bool:
    """Whether the last sweep was stopped part way (call once per script run, before a new sweep starts)."""
    return bool(st.session_state.pop(RUNNING, False))


def time_left(seconds: float | None) -> str:
    """'about 1 min 20 s left'."""
    if seconds is None:
        return "estimating the time left…"
    s = round(seconds)
    if s < 60:
        return f"about {s} s left"
    if s < 3600:
        return f"about {s // 60} min {s % 60:02d} s left"
    return f"about {s // 3600} h {s % 3600 // 60:02d} min left"


@dataclass
class Pace:
    """How fast this sweep's runs finish, to estimate the time left at any moment, between runs too.

    Times are ``time.perf_counter()`` seconds; ``started`` is when the first run began (after the models
    loaded), ``last`` when the latest run finished, ``ran`` how many runs this sweep finished (skipped ones
    do not count: they took no time).
    """

    started: float
    last: float
    ran: int = 0

    def finished(self, ran: int, now: float) -> None:
        self.ran, self.last = ran, now

    def seconds_left(self, to_go: int, now: float) -> float | None:
        """Seconds until ``to_go`` more runs are done, or None before the first run finished (no pace yet).

        While the current run takes no longer than the average run so far, the estimate counts down with
        the clock; when it takes longer, the average is recomputed as if it were finishing now.
        """
        if to_go <= 0:
            return 0.0
        if self.ran <= 0:
            return None
        pace = (self.last - self.started) / self.ran  # seconds per run so far
        since = max(0.0, now - self.last)  # time spent on the run in progress
        if since <= pace:
            return pace * to_go - since
        return (now - self.started) / (self.ran + 1) * (to_go - 1)


def time_left_now(seconds: float | None, to_go: int) -> str:
    """The time left in words; 'finishing the last run…' when the estimate has run out before the run has."""
    if seconds is not None and seconds < 1 and to_go > 0:
        return "finishing the last run…" if to_go == 1 else "finishing the current run…"
    return time_left(seconds)


def progress_text(p: SweepProgress, seconds_left: float | None = None) -> str:
    """'3 of 8 run(s) done (2 already saved) · about 40 s left'; ``seconds_left`` overrides the estimate in ``p``."""
    skipped = f" ({p.skipped} already saved)" if p.skipped else ""
    if p.done >= p.total:
        return f"All {p.total} run(s) done{skipped}."
    eta = p.eta_seconds if seconds_left is None else seconds_left
    return f"{p.done} of {p.total} run(s) done{skipped} · {time_left_now(eta, p.total - p.done)}"


def saved_count(keys: list[str], sink: RunSink | None) -> int | None:
    """How many runs of the grid ``keys`` the store holds, counted as ``run_sweep`` counts the runs it skips;
    None without a store."""
    if sink is None:
        return None
    done = sink.done_keys()
    return sum(1 for k in keys if k in done)


def stopped_message(keys: list[str], saved: int | None, kept: int) -> str | None:
    """What to say after a sweep was stopped: how many runs are saved (the resumed sweep skips exactly these),
    or, without a store, how many this session kept; None when nothing is left to do."""
    total = len(keys)
    if saved is None:
        if kept >= total:
            return None
        return (f"The sweep was stopped with {kept} of {total} run(s) done. Runs are not being saved (no usable "
                "run database), so running the sweep again starts from the first run.")
    if saved >= total:
        return None
    return (f"The sweep was stopped with {saved} of {total} run(s) done and saved. Press Run sweep again to finish it: "
            f"the {saved} saved run(s) are skipped.")


def run(spec_fn: Callable[[], SweepSpec]) -> None:
    """Run the sweep of the page's settings, showing progress; errors are shown, not raised."""
    try:
        spec = spec_fn()
        configs = spec.configs()
    except Exception as exc:
        running.show_error(exc)
        return
    state = SweepState([c.key() for c in configs])
    st.session_state[LAST] = state
    store = runstore.store()
    cancel = st.empty()
    cancel.button("Cancel", key="sweep_cancel", help="Stop the sweep. Finished runs are saved and stay in the chart; the run in progress is dropped.")
    note, bar, line, beat = st.empty(), st.progress(0.0, text=f"0 of {len(configs)} run(s) done · {time_left(None)}"), st.empty(), st.empty()
    clock = {"start": time.perf_counter(), "beat": 0.0}
    pace = Pace(clock["start"], clock["start"])
    latest: dict[str, SweepProgress] = {}

    def show(p: SweepProgress, now: float) -> None:
        bar.progress(p.done / p.total if p.total else 1.0, text=progress_text(p, pace.seconds_left(p.total - p.done, now)))

    def on_progress(p: SweepProgress) -> None:
        if p.last is None:  # before the first run: what is skipped, then the models
            state.skipped = p.skipped
            if p.skipped:
                note.info(f"{p.skipped} run(s) already saved, skipped.")
            if p.skipped < p.total:
                running.load_models(configs[0].models, line.caption)
            pace.started = pace.last = time.perf_counter()  # loading the models is not a run's time
        else:
            pace.finished(p.done - p.skipped, time.perf_counter())
            if store is None:
                state.runs[p.last.config.key()] = p.last
            r: RunResult = p.last
            line.caption(f"Latest: length {r.config.length}, seed {r.config.seed}: {status_sentence(r)}")
        latest["p"] = p
        show(p, time.perf_counter())

    def keep_responsive() -> bool:
        now = time.perf_counter()
        if now - clock["beat"] >= BEAT:
            clock["beat"] = now
            beat.caption(f"Working… {now - clock['start']:.0f} s so far.")
            if "p" in latest:  # the time left counts down between runs too
                show(latest["p"], now)
        return False  # Streamlit itself stops the script at the caption above when Cancel is pressed

    st.session_state[RUNNING] = True
    try:
        run_sweep(spec, store, on_progress=on_progress, should_stop=keep_responsive)
    except sqlite3.Error as exc:
        runstore.forget()
        st.error(f"A run could not be saved to {store.path if store else 'the run database'} ({exc}); the sweep stopped there.")
        st.info("Check the disk and the database file, then run the sweep again: the saved runs are skipped.")
    except Exception as exc:
        running.show_error(exc)
    st.session_state.pop(RUNNING, None)  # not reached when Streamlit stops the script: the next run sees it was cut short
    cancel.empty()
    beat.empty()


def stopped_info(state: SweepState, kept: int) -> str | None:
    """:func:`stopped_message` for the latest sweep, counting the store's runs of its grid now."""
    return stopped_message(state.keys, saved_count(state.keys, runstore.store()), kept)


def grid_runs(state: SweepState) -> list[RunResult | dict[str, Any]]:
    """The runs of the sweep's grid that exist, in grid order: from the store, or kept in the session without one."""
    found: dict[str, RunResult | dict[str, Any]] = dict(state.runs)
    store = runstore.store()
    missing = [k for k in state.keys if k not in found]
    if store is not None and missing:
        for key, rid in store.latest_ids(missing).items():
            found[key] = store.get(rid)
    return [found[k] for k in state.keys if k in found]
