"""Sweeps: batched runs equal one-by-one runs, results land in the store, stopped sweeps resume."""

from __future__ import annotations

import numpy as np
import pytest

from tiny import table_lm
from tokconv import models
from tokconv.experiments.experiment import run
from tokconv.store import RunStore
from tokconv.experiments.sweep import SweepSpec, run_lockstep, run_sweep


@pytest.fixture
def noisy_lm():
    """A random bigram model registered under a spec name, so sweeps can load it."""
    rng = np.random.default_rng(0)
    lm = table_lm(rng.normal(size=(12, 12)) * 2.0, name="noisy")
    models.register(lm)
    yield lm
    models.unregister(lm.spec)


def _essence(r):
    return (r.status, r.iterations, [(s.iteration, s.position, s.new_token) for s in r.steps], r.final_text)


def test_batched_single_runs_equal_one_by_one_runs(noisy_lm):
    spec = SweepSpec(model="noisy", mode="single", lengths=(7,), seeds=tuple(range(6)), iterations=40)
    batched = {r.config.seed: r for r in run_lockstep(spec.configs(), models=[noisy_lm])}
    assert len(batched) == 6
    for c in spec.configs():
        assert _essence(batched[c.seed]) == _essence(run(c))


def test_sweep_saves_every_run_and_reports_progress(noisy_lm, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    seen = []
    spec = SweepSpec(model="noisy", mode="single", lengths=(5, 8), seeds=(0, 1, 2))
    results = run_sweep(spec, store, on_progress=seen.append)
    assert len(results) == 6 and len(store.list()) == 6
    assert seen[-1].done == seen[-1].total == 6
    assert seen[-1].eta_seconds == 0


def test_a_stopped_sweep_resumes_without_redoing_finished_runs(noisy_lm, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    spec = SweepSpec(model="noisy", mode="sequential", lengths=(6,), seeds=tuple(range(5)))
    count = {"n": 0}

    def stop_after_two(progress):
        count["n"] = progress.done

    first = run_sweep(spec, store, on_progress=stop_after_two, should_stop=lambda: count["n"] >= 2)
    assert len(first) == 2
    second = run_sweep(spec, store)
    assert len(second) == 3
    seeds = sorted(r.seed for r in store.list())
    assert seeds == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_batched_sweep_matches_one_by_one_on_smollm2(smollm2):
    spec = SweepSpec(model="smollm2-135m", mode="single", lengths=(8,), seeds=(0, 1, 2, 3), iterations=60)
    batched = {r.config.seed: r for r in run_lockstep(spec.configs(), models=[smollm2])}
    for c in spec.configs():
        assert _essence(batched[c.seed]) == _essence(run(c))
