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
    def from_dict(cls, d: Any) -> "RunResult":
        """Rebuild a result from its JSON form, checking the type of every field first.

        Raises TokconvError naming the first bad field, or saying what a run file is
        when ``d`` is not one at all (foreign JSON, a newer or unknown schema)."""
        check_run_dict(d)
        cfg = d["config"]
        try:
            config = RunConfig(**{k: cfg[k] for k in RunConfig.__dataclass_fields__ if k in cfg})
        except TokconvError as exc:
            raise TokconvError(f"field 'config' holds settings that cannot run: {exc.problem}", RUN_FILE_FIX) from exc
        return cls(
            config=config,
            models=list(d["models"]),
            start_text=d["start_text"],
            start_tokens=list(d["start_tokens"]),
            steps=[Step(**{k: s[k] for k in Step.__dataclass_fields__ if k in s}) for s in d["steps"]],
            iterations_log=[
                IterationEnd(
                    **{k: e[k] for k in ("iteration", "model", "model_index", "text", "changes")},
                    **{k: tuple(e.get(k, ())) for k in ("tokens", "pieces", "blocked")},
                )
                for e in d["iteration_log"]
            ],
            status=d["status"],
            iterations=d["iterations"],
            period=d.get("period"),
            final_text=d["final_text"],
            fingerprints={m: dict(c) for m, c in d["fingerprints"].items()},
            cost=RunCost.from_dict(d["cost"]),
            versions=dict(d.get("versions", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise TokconvError(f"this is not a JSON run file: {exc}", "pick a file exported by tokconv") from exc


# The JSON form, field by field, for checking a run file before anything is built from it.
# A spec is a type name ("int", "num", "str"), ("opt", spec) for null-or-spec, ("list", spec),
# ("map", spec, label) for an object of string keys, or a dict of fields (a leading "?" marks one
# that may be missing). Unknown fields are ignored, so newer files of the same schema still read.
_Spec = Any
_CONFIG: dict[str, _Spec] = {
    "mode": "str", "model_a": "str", "?model_b": ("opt", "str"), "length": "int", "iterations": "int", "seed": "int",
    "?start_text": ("opt", "str"), "?block_after": "int", "?share": "str", "?oov": "str", "?dtype": "str",
}
_STEP: dict[str, _Spec] = {
    "iteration": "int", "model": "str", "model_index": "int", "position": "int", "old_token": "int",
    "new_token": "int", "old_text": "str", "new_text": "str", "entropy": "num", "prob": "num",
    "?finite": "bool", "?span_start": ("opt", "int"), "?span_end": ("opt", "int"), "?inserted": ("opt", "str"),
}
_ITERATION: dict[str, _Spec] = {
    "iteration": "int", "model": "str", "model_index": "int", "tokens": ("list", "int"), "pieces": ("list", "str"),
    "text": "str", "changes": "int", "?blocked": ("list", "int"),
}
_COST: dict[str, _Spec] = {
    "?forward_passes": "int", "?forwarded_tokens": "num", "?seconds": "num", "?wall_seconds": "num", "?batched_rows": "int",
    "?nonfinite_rows": "int",
}
_RUN: dict[str, _Spec] = {
    "?mode": "str", "models": ("list", "str"), "?length": "int", "?seed": "int", "status": "str",
    "?period": ("opt", "int"), "iterations": "int", "start_text": "str", "start_tokens": ("list", "int"),
    "final_text": "str", "config": _CONFIG, "steps": ("list", _STEP), "iteration_log": ("list", _ITERATION),
    "fingerprints": ("map", ("map", "int", "token -> count"), "model -> {token: count}"), "cost": _COST,
    "?versions": ("map", "str", "name -> version"),
}
# Keys only a run has: JSON with none of them (and no schema_version) is some other file.
RUN_KEYS = frozenset(k.lstrip("?") for k in _RUN) - {"mode", "length", "seed", "status", "iterations"}
RUN_FILE_FIX = "pick a file written by `tokconv runs export`, `tokconv run --json` or a page's 'Download the whole run'"
_SCALARS = {"int": ("an integer", "integers"), "num": ("a number", "numbers"), "str": ("a string", "strings"),
            "bool": ("true or false", "true or false values")}


def json_kind(v: Any) -> str:
    """What a JSON value is, in words ('got a string')."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean (true/false)"
    for typ, word in ((int, "an integer"), (float, "a number"), (str, "a string"), (list, "a list"), (dict, "an object")):
        if isinstance(v, typ):
            return word
    return type(v).__name__


def _describe(spec: _Spec, plural: bool = False) -> str:
    if isinstance(spec, str):
        return _SCALARS[spec][plural]
    if isinstance(spec, dict):
        return "objects" if plural else "an object"
    if spec[0] == "opt":
        return f"{_describe(spec[1], plural)} or null"
    if spec[0] == "list":
        return f"lists of {_describe(spec[1], True)}" if plural else f"a list of {_describe(spec[1], True)}"
    return f"objects of {spec[2]}" if plural else f"an object of {spec[2]}"


def _fits(v: Any, spec: str) -> bool:
    if spec == "bool":
        return isinstance(v, bool)
    if isinstance(v, bool):  # JSON true/false is a Python int: never a count or a number here
        return False
    return isinstance(v, {"int": int, "num": (int, float), "str": str}[spec])


def _check(v: Any, spec: _Spec, where: str) -> None:
    """Raise TokconvError naming ``where`` if ``v`` does not match ``spec``."""
    def bad(expected: str) -> TokconvError:
        return TokconvError(f"field '{where}' must be {expected}, got {json_kind(v)}", RUN_FILE_FIX)

    if isinstance(spec, str):
        if not _fits(v, spec):
            raise bad(_describe(spec))
    elif isinstance(spec, dict):
        if not isinstance(v, dict):
            raise bad("an object")
        for name, sub in spec.items():
            key = name.lstrip("?")
            if key in v:
                _check(v[key], sub, f"{where}.{key}" if where else key)
            elif not name.startswith("?"):
                raise TokconvError(f"field '{where}.{key}' is missing" if where else f"field '{key}' is missing", RUN_FILE_FIX)
    elif spec[0] == "opt":
        if v is not None and isinstance(spec[1], str) and not _fits(v, spec[1]):
            raise bad(_describe(spec))  # '... a string or null'
        if v is not None:
            _check(v, spec[1], where)
    elif spec[0] == "list":
        if not isinstance(v, list):
            raise bad(_describe(spec))
        for i, item in enumerate(v):
            _check(item, spec[1], f"{where}[{i}]")
    else:  # map
        if not isinstance(v, dict):
            raise bad(_describe(spec))
        for k, item in v.items():
            _check(item, spec[1], f'{where}["{k}"]')


def check_run_dict(d: Any) -> None:
    """Raise a TokconvError saying what is wrong if ``d`` is not a run in the JSON form this tokconv reads."""
    if not isinstance(d, dict):
        raise TokconvError(f"this is not a tokconv run: expected a JSON object with a run's fields, got {json_kind(d)}", RUN_FILE_FIX)
    version = d.get("schema_version")
    if version is None:
        if not RUN_KEYS & d.keys():
            shown = ", ".join(repr(k) for k in list(d)[:5]) + (", ..." if len(d) > 5 else "")
            raise TokconvError(
                "this is not a tokconv run file: expected a run (an object with 'schema_version', 'config', 'steps', "
                "'fingerprints', ...) or an export ({\"runs\": [...]}), got an object with "
                + (f"the keys {shown}" if d else "no keys"),
                RUN_FILE_FIX,
            )
        raise TokconvError("this run file has no 'schema_version' field, so it cannot be read safely",
                           "export it again with tokconv (every file tokconv writes has one)")
    if not _fits(version, "int") or version < 1:
        raise TokconvError(f"field 'schema_version' must be a positive integer, got {version!r}", RUN_FILE_FIX)
    if version > SCHEMA_VERSION:
        raise TokconvError(
            f"this run file has schema version {version}; this tokconv reads version {SCHEMA_VERSION}",
            "upgrade tokconv to read it, or export it again with this tokconv version",
        )
    _check(d, _RUN, "")
