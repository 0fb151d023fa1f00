"""Step records and results of a convergence run, and their JSON form.

Experiments stream frozen records (:class:`Step` for each replacement,
:class:`IterationEnd` after each iteration); the CLI, the pages and the store
all consume the same stream. :class:`RunResult` collects it and serialises to a
versioned JSON schema (``SCHEMA_VERSION``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import TokconvError
from .config import RunConfig

# 2: steps carry `finite` and, across tokenizers, their character span; cost carries `nonfinite_rows`.
# Version 1 files read as version 2 with those fields at their defaults.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Step:
    """One replacement: which model put which token where, and how sure it was."""

    iteration: int
    model: str
    model_index: int  # 0 for model A, 1 for model B
    position: int  # token index in the acting model's tokenization
    old_token: int
    new_token: int
    old_text: str
    new_text: str
    entropy: float  # nats, of the model's distribution at this position
    prob: float  # probability of the inserted token
    finite: bool = True  # False: the prediction came from logits holding NaN or inf (numerics audit)
    # Models with different tokenizers share the text: the characters [span_start, span_end) of the
    # shared text before this step, and the text put there (None when the models share token ids).
    span_start: int | None = None
    span_end: int | None = None
    inserted: str | None = None


@dataclass(frozen=True)
class IterationEnd:
    """The state after one iteration (one pass, one move or one batch update)."""

    iteration: int
    model: str
    model_index: int
    tokens: tuple[int, ...]  # in the acting model's tokenization
    pieces: tuple[str, ...]  # the text of each token
    text: str
    changes: int
    blocked: tuple[int, ...] = ()


@dataclass(frozen=True)
class RunEnd:
    """How the run ended."""

    status: str  # converged | oscillating | all-blocked | max-iterations | interrupted
    iterations: int
    period: int | None
    final_text: str


Record = Step | IterationEnd | RunEnd


@dataclass
class RunCost:
    """What a run cost: model calls, tokens forwarded, model seconds and wall seconds.

    A run made in a batch of ``batched_rows`` (a sweep) carries its share of the tokens and seconds."""

    forward_passes: int = 0
    forwarded_tokens: float = 0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    batched_rows: int = 1
    nonfinite_rows: int = 0  # predictions made from logits holding NaN or inf (numerics audit)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunCost":
        """From the JSON form (unknown keys are ignored, missing ones take their defaults)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class RunResult:
    """A whole run: its settings, every record, fingerprints and cost."""

    config: RunConfig
    models: list[str]
    start_text: str
    start_tokens: list[int]
    steps: list[Step] = field(default_factory=list)
    iterations_log: list[IterationEnd] = field(default_factory=list)
    status: str = "running"
    iterations: int = 0
    period: int | None = None
    final_text: str = ""
    fingerprints: dict[str, dict[str, int]] = field(default_factory=dict)
    cost: RunCost = field(default_factory=RunCost)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON form."""
        c = self.config
        return {
            "schema_version": SCHEMA_VERSION,
            "mode": c.mode,
            "models": self.models,
            "length": c.length,
            "seed": c.seed,
            "status": self.status,
            "period": self.period,
            "iterations": self.iterations,
            "start_text": self.start_text,
            "start_tokens": self.start_tokens,
            "final_text": self.final_text,
            "config": asdict(c),
            "steps": [asdict(s) for s in self.steps],
            "iteration_log": [
                {**asdict(e), "tokens": list(e.tokens), "pieces": list(e.pieces), "blocked": list(e.blocked)}
                for e in self.iterations_log
            ],
            "fingerprints": self.fingerprints,
            "cost": asdict(self.cost),
            "versions": self.versions,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        """Rebuild a result from its JSON form (raises TokconvError on a foreign or newer schema)."""
        version = d.get("schema_version") if isinstance(d, dict) else None
        if version not in READABLE_VERSIONS:
            raise TokconvError(
                f"this run file has schema version {version!r}; this tokconv reads version {SCHEMA_VERSION}",
                "export it again with this tokconv version, or upgrade tokconv",
            )
        try:
            result = cls(
                config=RunConfig(**d["config"]),
                models=list(d["models"]),
                start_text=d["start_text"],
                start_tokens=list(d["start_tokens"]),
                steps=[Step(**s) for s in d["steps"]],
                iterations_log=[
                    IterationEnd(
                        **{**e, "tokens": tuple(e["tokens"]), "pieces": tuple(e["pieces"]), "blocked": tuple(e["blocked"])}
                    )
                    for e in d["iteration_log"]
                ],
                status=d["status"],
                iterations=d["iterations"],
                period=d.get("period"),
                final_text=d["final_text"],
                fingerprints=d["fingerprints"],
                cost=RunCost.from_dict(d["cost"]),
                versions=d.get("versions", {}),
            )
        except (KeyError, TypeError) as exc:
            raise TokconvError(f"this run file is missing or has a malformed field: {exc}", "export it again") from exc
        return result

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise TokconvError(f"this is not a JSON run file: {exc}", "pick a file exported by tokconv") from exc
