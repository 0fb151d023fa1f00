"""What to run: the modes, the limits, one run's settings (:class:`RunConfig`) and a sweep's grid (:class:`SweepSpec`).

Pure data: nothing here loads a model, so the CLI and the pages validate settings before any work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from itertools import product
from typing import Iterator

from ..errors import TokconvError

MIN_LENGTH, MAX_LENGTH = 2, 512
MAX_ITERATIONS = 10_000


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
    """The grid to run: one mode and model (pair), every length x seed."""

    model: str
    mode: str
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]
    model_b: str | None = None
    iterations: int = 100
    block_after: int = 3

    def configs(self) -> list[RunConfig]:
        """Every run of the grid, validated."""
        return list(self.iter_configs())

    def iter_configs(self) -> Iterator[RunConfig]:
        """Every run of the grid, validated, one at a time."""
        if self.mode in MODES and MODES[self.mode].adversarial and not self.model_b:
            raise TokconvError(f"mode '{self.mode}' needs two models", "give a second model with --model-b")
        b = self.model_b if self.mode in ADVERSARIAL_MODES else None
        for L, s in product(self.lengths, self.seeds):
            yield RunConfig(mode=self.mode, model_a=self.model, model_b=b, length=L, seed=s,
                            iterations=self.iterations, block_after=self.block_after)
