"""What to run: the modes, the limits, one run's settings (:class:`RunConfig`) and a sweep's grid (:class:`SweepSpec`).

Pure data: nothing here loads a model, so the CLI and the pages validate settings before any work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from itertools import product
from typing import Iterator, Sequence

from ..errors import TokconvError

MIN_LENGTH, MAX_LENGTH = 2, 512
MAX_ITERATIONS = 10_000
MAX_SEED = 2**63 - 1  # the run store keeps seeds as signed 64-bit integers; numpy's default_rng takes any int >= 0
# The most runs one sweep may hold: at about a second a run that is a day's work, and a bigger
# grid is more likely a typo (--seeds 0-100000000) than a plan. Split bigger grids; each part resumes.
MAX_SWEEP_RUNS = 100_000


@dataclass(frozen=True)
class ModeInfo:
    """One convergence mode: its name, what one iteration does, and whether it takes two models."""

    name: str
    help: str
    adversarial: bool


# The registry of modes, in the order menus show them; tokconv.experiments.modes.RUNNERS holds their generators.
MODES: dict[str, ModeInfo] = {m.name: m for m in (
    ModeInfo("sequential", "greedy left-to-right passes; converged when a pass changes nothing (solo: 2 iterations)", False),
    ModeInfo("single", "one token per iteration, the highest-entropy mismatch; a position that flips 3+ times is blocked", False),
    ModeInfo("batch", "replace every mismatch at once each iteration (may oscillate; cycles are detected)", False),
    ModeInfo("adversarial", "two models take turns, each doing a full sequential pass", True),
    ModeInfo("adversarial-single", "two models take turns, one token each, with blocking; shows each model's fingerprint", True),
)}
SOLO_MODES = tuple(name for name, m in MODES.items() if not m.adversarial)
ADVERSARIAL_MODES = tuple(name for name, m in MODES.items() if m.adversarial)
MODE_HELP = {name: m.help for name, m in MODES.items()}

# How two models with different vocabularies share the sequence (see tokconv.experiments.textaxis):
SHARE = {
    "text": "the text: each model reads it with its own tokenizer (positions are characters)",
    "ids": "the token ids, passed straight across as a naive script would (ids may mean other things, or nothing)",
}
# What a model does with an id beyond its vocabulary, when ids are shared:
OOV = {
    "error": "stop with a message naming the id and both vocabulary sizes",
    "nan": "feed a NaN embedding there: an emulation of an unchecked gather (undefined behaviour), marked in results",
    "unk": "feed the model's unknown (or padding) token there",
}
# Fields added after the first stored runs: left out of the settings key at their defaults, so
# runs saved before they existed keep their keys.
_KEY_DEFAULTS = {"share": "text", "oov": "error", "dtype": "auto"}
# Precision of weights and activations: auto is the device's best (float32 on a CPU, the model's
# own weights on a GPU); half precision on a CPU is several times slower.
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class RunConfig:
    """What to run. Field names are the JSON keys."""

    mode: str = "sequential"
    model_a: str = "smollm2-135m"
    model_b: str | None = None
    length: int = 10
    iterations: int = 100
    seed: int = 0
    start_text: str | None = None
    block_after: int = 3
    share: str = "text"
    oov: str = "error"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def adversarial(self) -> bool:
        return MODES[self.mode].adversarial

    @property
    def models(self) -> list[str]:
        return [self.model_a, self.model_b] if self.adversarial else [self.model_a]

    def key(self) -> str:
        """A stable key of these settings: the store keeps one run per key, and sweeps skip keys it has."""
        d = {k: v for k, v in asdict(self).items() if _KEY_DEFAULTS.get(k, object()) != v}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()


def validate_config(c: RunConfig) -> None:
    """Raise a TokconvError for settings that cannot run."""
    if c.mode not in MODES:
        raise TokconvError(f"unknown mode '{c.mode}'", f"use one of: {', '.join(MODES)}")
    if not 0 <= c.seed <= MAX_SEED:
        raise TokconvError(f"seed {c.seed} is out of range", f"use a seed between 0 and {MAX_SEED} (2**63-1)")
    if c.start_text is None and not MIN_LENGTH <= c.length <= MAX_LENGTH:
        raise TokconvError(
            f"length {c.length} is out of range", f"use a length between {MIN_LENGTH} and {MAX_LENGTH} tokens"
        )
    if not 1 <= c.iterations <= MAX_ITERATIONS:
        raise TokconvError(
            f"iterations must be between 1 and {MAX_ITERATIONS}, got {c.iterations}", "pick a number in range"
        )
    if c.block_after < 1:
        raise TokconvError(f"block-after must be at least 1, got {c.block_after}", "use 3 as in the original")
    if MODES[c.mode].adversarial and not c.model_b:
        raise TokconvError(f"mode '{c.mode}' needs two models", "give a second model with --model-b")
    if c.share not in SHARE:
        raise TokconvError(f"unknown sharing '{c.share}'", f"use one of: {', '.join(SHARE)}")
    if c.oov not in OOV:
        raise TokconvError(f"unknown out-of-vocabulary policy '{c.oov}'", f"use one of: {', '.join(OOV)}")
    if c.dtype not in DTYPES:
        raise TokconvError(f"unknown precision '{c.dtype}'", f"use one of: {', '.join(DTYPES)}")
    if c.oov != "error" and c.share != "ids":
        raise TokconvError(f"--oov {c.oov} applies only when token ids are shared", "add --share ids, or leave --oov out")
    if c.start_text is not None and not c.start_text.strip():
        raise TokconvError("the start text is empty", "give some text, or leave it out for a random start")


@dataclass(frozen=True)
class SweepSpec:
    """The grid to run: one mode and model (pair), every length x seed.

    ``seeds`` may be a ``range``: a grid is streamed by :meth:`iter_configs`, never built whole,
    and :meth:`validate` checks it in time independent of its size (at most ``MAX_SWEEP_RUNS`` runs).
    """

    model: str
    mode: str
    lengths: tuple[int, ...]
    seeds: Sequence[int]
    model_b: str | None = None
    iterations: int = 100
    block_after: int = 3

    @property
    def size(self) -> int:
        """How many runs the grid holds."""
        return len(self.lengths) * len(self.seeds)

    def validate(self) -> None:
        """Raise a TokconvError for a grid that cannot run: empty, too big, a bad seed or setting."""
        if not self.lengths:
            raise TokconvError("no lengths given", "give start lengths like 8,16,32")
        if not len(self.seeds):
            raise TokconvError("no seeds given", "give seeds as a range like 0-7 or a list like 1,2,5")
        if self.size > MAX_SWEEP_RUNS:
            raise TokconvError(
                f"the sweep has {self.size:,} runs ({len(self.lengths)} length(s) x {len(self.seeds):,} seed(s)), "
                f"more than the limit of {MAX_SWEEP_RUNS:,} runs in one sweep",
                f"split it into sweeps of at most {MAX_SWEEP_RUNS:,} runs: {_split_hint(self)}; "
                "each part resumes, skipping runs already saved",
            )
        ends = (self.seeds[0], self.seeds[-1]) if isinstance(self.seeds, range) else self.seeds  # O(1) for ranges
        if min(ends) < 0 or max(ends) > MAX_SEED:
            bad = min(ends) if min(ends) < 0 else max(ends)
            raise TokconvError(f"seed {bad} is out of range", f"use seeds between 0 and {MAX_SEED} (2**63-1)")
        for L in dict.fromkeys(self.lengths):  # one config per length checks every setting
            next(self._configs((L,), self.seeds[:1]))

    def configs(self) -> list[RunConfig]:
        """Every run of the grid, validated."""
        return list(self.iter_configs())

    def iter_configs(self) -> Iterator[RunConfig]:
        """Every run of the grid, validated, one at a time (lengths outer, seeds inner)."""
        self.validate()
        return self._configs(self.lengths, self.seeds)

    def _configs(self, lengths: Sequence[int], seeds: Sequence[int]) -> Iterator[RunConfig]:
        if self.mode in MODES and MODES[self.mode].adversarial and not self.model_b:
            raise TokconvError(f"mode '{self.mode}' needs two models", "give a second model with --model-b")
        b = self.model_b if self.mode in ADVERSARIAL_MODES else None
        for L, s in product(lengths, seeds):
            yield RunConfig(mode=self.mode, model_a=self.model, model_b=b, length=L, seed=s,
                            iterations=self.iterations, block_after=self.block_after)


def _split_hint(spec: SweepSpec) -> str:
    """E.g. '--seeds 0-49999, then --seeds 50000-99999, and so on' for a seed range."""
    per = max(1, MAX_SWEEP_RUNS // len(spec.lengths))
    if isinstance(spec.seeds, range) and spec.seeds.step == 1 and len(spec.lengths) <= MAX_SWEEP_RUNS:
        a = spec.seeds.start
        return f"--seeds {a}-{a + per - 1}, then --seeds {a + per}-{a + 2 * per - 1}, and so on"
    return f"at most {per:,} seeds per sweep with these {len(spec.lengths)} length(s)"
