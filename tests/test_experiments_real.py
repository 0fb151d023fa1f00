"""Every mode end to end on the real bundled SmolLM2 (and Qwen for the battles)."""

from __future__ import annotations

import pytest

import tokconv
from tokconv.experiments.experiment import run
from tokconv.experiments import RunConfig, RunResult

pytestmark = pytest.mark.slow


def test_sequential_solo_converges_in_two_iterations(smollm2):
    for seed in range(3):
        r = run(RunConfig(mode="sequential", length=12, seed=seed))
        assert r.status == "converged" and r.iterations <= 3
        assert r.iterations_log[-1].changes == 0


def test_sequential_pass_forwards_each_token_about_once(smollm2):
    r = run(RunConfig(mode="sequential", length=24, seed=1))
    # one greedy pass over L tokens plus a confirming pass: O(L) forwarded tokens, not O(L^2)
    assert r.cost.forwarded_tokens <= 2 * 24


def test_same_settings_give_the_identical_run(smollm2):
    cfg = RunConfig(mode="single", length=10, seed=7, iterations=40)
    a, b = run(cfg).to_dict(), run(cfg).to_dict()
    for d in (a, b):
        d.pop("cost")
    assert a == b


def test_single_solo_ends_converged_or_blocked_and_respects_blocking(smollm2):
    r = run(RunConfig(mode="single", length=10, seed=2, iterations=200, block_after=3))
    assert r.status in ("converged", "all-blocked")
    flips: dict[int, int] = {}
    for s in r.steps:
        flips[s.position] = flips.get(s.position, 0) + 1
    assert max(flips.values()) <= 3
    assert all(s.position >= 1 for s in r.steps)


def test_batch_solo_converges_within_length_iterations(smollm2):
    r = run(RunConfig(mode="batch", length=10, seed=4))
    assert r.status == "converged" and r.iterations <= 11


def test_start_text_is_used_as_given(smollm2):
    r = run(RunConfig(mode="sequential", start_text="The capital of France is Berlin", iterations=5))
    assert r.start_text == "The capital of France is Berlin"
    assert r.status == "converged"


def test_battle_across_tokenizers_runs_and_fingerprints_both(smollm2):
    r = run(RunConfig(mode="adversarial-single", model_a="smollm2-135m", model_b="qwen2.5-coder-0.5b", length=8, seed=0, iterations=12))
    assert {s.model for s in r.steps} == {"smollm2-135m", "qwen2.5-coder-0.5b"}
    assert set(r.fingerprints) == {"smollm2-135m", "qwen2.5-coder-0.5b"}
    assert sum(r.fingerprints["smollm2-135m"].values()) == sum(1 for s in r.steps if s.model == "smollm2-135m")
    assert RunResult.from_json(r.to_json()).to_dict() == r.to_dict()


def test_battle_across_tokenizers_keeps_the_length_bounded(smollm2):
    """One model's token can be two of the other's; the text must not grow pass after pass."""
    r = run(RunConfig(mode="adversarial", model_a="smollm2-135m", model_b="qwen2.5-coder-0.5b", length=8, seed=1, iterations=10))
    qwen_start = len(tokconv.load("qwen2.5-coder-0.5b").encode(r.start_text))
    for e in r.iterations_log:
        assert len(e.tokens) <= (8 if e.model_index == 0 else qwen_start)


def test_adversarial_sequential_does_not_converge_quickly(smollm2):
    r = run(RunConfig(mode="adversarial", model_a="smollm2-135m", model_b="qwen2.5-coder-0.5b", length=8, seed=0, iterations=6))
    assert r.status in ("oscillating", "max-iterations")
    assert r.iterations_log[1].changes > 0  # the second model disagrees with the first one's fixed point
