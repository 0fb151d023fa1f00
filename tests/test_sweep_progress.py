"""The sweep's progress line: the time left moves between runs, and a stopped sweep's count matches the resume's."""

from __future__ import annotations

import numpy as np
import pytest
from tiny import table_lm

from tokconv import models
from tokconv.experiments.sweep import SweepProgress, SweepSpec, run_sweep
from tokconv.store import RunStore
from ui import sweeping


def test_time_left_is_estimating_until_the_first_run_finishes():
    pace = sweeping.Pace(started=10.0, last=10.0)
    assert pace.seconds_left(5, now=30.0) is None
    p = SweepProgress(done=0, total=5, skipped=0, elapsed=20.0, last=None)
    assert "estimating" in sweeping.progress_text(p, pace.seconds_left(5, now=30.0))


def test_time_left_counts_down_between_runs():
    pace = sweeping.Pace(started=0.0, last=0.0)
    pace.finished(1, now=10.0)  # one run in 10 s, 4 to go
    beats = [pace.seconds_left(4, now=t) for t in (10.0, 12.0, 15.0, 19.0)]
    assert beats == [40.0, 38.0, 35.0, 31.0]
    p = SweepProgress(done=1, total=5, skipped=0, elapsed=10.0, last=None)
    texts = [sweeping.progress_text(p, s) for s in beats]
    assert len(set(texts)) == 4 and texts[-1].endswith("about 31 s left")


def test_a_run_slower_than_the_average_raises_the_estimate_smoothly():
    pace = sweeping.Pace(started=0.0, last=0.0)
    pace.finished(2, now=20.0)  # 10 s a run
    at_pace = pace.seconds_left(3, now=30.0)
    later = pace.seconds_left(3, now=40.0)  # the third run has taken 20 s so far
    assert at_pace == pytest.approx(20.0) and later == pytest.approx(40.0 / 3 * 2)
    assert "finishing the last run" in sweeping.time_left_now(pace.seconds_left(1, now=45.0), 1)


def test_skipped_runs_do_not_count_as_fast_runs():
    pace = sweeping.Pace(started=100.0, last=100.0)
    pace.finished(1, now=110.0)  # 6 skipped, then 1 run in 10 s
    assert pace.seconds_left(3, now=110.0) == pytest.approx(30.0)


@pytest.fixture
def noisy_lm():
    lm = table_lm(np.random.default_rng(0).normal(size=(12, 12)) * 2.0, name="noisy")
    models.register(lm)
    yield lm
    models.unregister(lm.spec)


def test_after_a_stop_the_done_count_is_what_the_resumed_sweep_skips(noisy_lm, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    spec = SweepSpec(model="noisy", mode="sequential", lengths=(6,), seeds=tuple(range(5)))
    keys = [c.key() for c in spec.configs()]
    count = {"n": 0}

    def on_progress(p):
        count["n"] = p.done

    run_sweep(spec, store, on_progress=on_progress, should_stop=lambda: count["n"] >= 2)
    saved = sweeping.saved_count(keys, store)
    message = sweeping.stopped_message(keys, saved, kept=0)
    seen = []
    run_sweep(spec, store, on_progress=seen.append)
    assert saved == seen[0].skipped == 2
    assert message.startswith("The sweep was stopped with 2 of 5 run(s) done and saved") and "the 2 saved run(s) are skipped" in message
    assert sweeping.stopped_message(keys, sweeping.saved_count(keys, store), kept=0) is None  # all done now


def test_without_a_store_a_stopped_sweep_says_it_will_start_over():
    keys = ["a", "b", "c"]
    assert sweeping.saved_count(keys, None) is None
    message = sweeping.stopped_message(keys, None, kept=2)
    assert "2 of 3" in message and "starts from the first run" in message
