"""Tables of a run for charts and downloads: pure functions from a RunResult to pandas DataFrames.

Every function takes a :class:`RunResult` (or its JSON dict) and returns a new
DataFrame; nothing here draws or imports a UI. Token text is shown two ways:
``token`` is the original's quoted form (``' '``, ``'\\n\\n'``) for charts and
tables, ``label`` has whitespace made visible (``·``, ``↵``) for token chips.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

import pandas as pd

from .display import token_repr, visible
from ..experiments import RunResult

__all__ = [
    "as_result",
    "blocked_positions",
    "chip_label",
    "flips_frame",
    "on_characters",
    "place",
    "places",
    "insertions_frame",
    "iterations_frame",
    "reference_frame",
    "sequence_frame",
    "start_pieces",
    "steps_frame",
    "sweep_frame",
    "sweep_summary",
]

SIDES = "AB"
STEP_COLUMNS = ["iteration", "model", "side", "position", "old", "new", "old_text", "new_text", "entropy", "prob", "flagged"]


def as_result(run: RunResult | dict[str, Any]) -> RunResult:
    """A RunResult from either a RunResult or its ``to_dict()`` form."""
    return run if isinstance(run, RunResult) else RunResult.from_dict(run)


def chip_label(text: str) -> str:
    """A token's text with spaces, newlines and tabs visible; '∅' for an empty piece."""
    return visible(text, spaces=True) if text else "∅"


def on_characters(run: RunResult | dict[str, Any]) -> bool:
    """Whether the run's places are characters of a shared text (models with different tokenizers)
    rather than token positions."""
    return any(s.span_start is not None for s in as_result(run).steps)


def place(step) -> int:
    """Where a step acted on the axis both models share: its first character across tokenizers,
    else its token position."""
    return step.position if step.span_start is None else step.span_start


def places(run: RunResult | dict[str, Any]) -> int:
    """How many places the run's axis has: the longest text in characters, or the most tokens."""
    r = as_result(run)
    if on_characters(r):
        return max([len(r.start_text), *(len(e.text) for e in r.iterations_log)])
    return max([len(r.start_tokens), *(len(e.tokens) for e in r.iterations_log)])


def _axis(df: pd.DataFrame, run: RunResult) -> pd.DataFrame:
    df.attrs["axis"] = "character" if on_characters(run) else "position"
    return df


def steps_frame(run: RunResult | dict[str, Any]) -> pd.DataFrame:
    """One row per replacement: when, who, where, what was replaced by what, and how sure the model was.

    ``position`` is the place on the shared axis (see :func:`place`); ``attrs["axis"]`` names it."""
    r = as_result(run)
    rows = [
        {
            "iteration": s.iteration,
            "model": s.model,
            "side": SIDES[s.model_index],
            "position": place(s),
            "old": token_repr(s.old_text),
            "new": token_repr(s.new_text),
            "old_text": s.old_text,
            "new_text": s.new_text,
            "entropy": round(s.entropy, 4),
            "prob": round(s.prob, 4),
            "flagged": not s.finite,  # the numerics audit: predicted from logits holding NaN or inf
        }
        for s in r.steps
    ]
    return _axis(pd.DataFrame(rows, columns=STEP_COLUMNS), r)


def flips_frame(run: RunResult | dict[str, Any]) -> pd.DataFrame:
    """How often each model changed each place: columns position, model, side, flips (see :func:`place`)."""
    r = as_result(run)
    counts = Counter((place(s), s.model, SIDES[s.model_index]) for s in r.steps)
    rows = [{"position": p, "model": m, "side": side, "flips": n} for (p, m, side), n in sorted(counts.items())]
    return _axis(pd.DataFrame(rows, columns=["position", "model", "side", "flips"]), r)


def insertions_frame(run: RunResult | dict[str, Any], *, top: int | None = None) -> pd.DataFrame:
    """Each model's fingerprint: the tokens it inserted, how often, their share of its insertions, and
    how many of them the numerics audit flagged (predicted from logits holding NaN or inf)."""
    r = as_result(run)
    flagged = Counter((s.model, s.new_text if s.inserted is None else s.inserted) for s in r.steps if not s.finite)
    rows = []
    for side, model in zip(SIDES, r.models):
        counts = r.fingerprints.get(model, {})
        total = sum(counts.values())
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        for rank, (text, n) in enumerate(ranked, 1):
            rows.append({"model": model, "side": side, "rank": rank, "token": token_repr(text), "text": text, "count": n,
                         "share": n / total, "flagged": flagged.get((model, text), 0)})
    return pd.DataFrame(rows, columns=["model", "side", "rank", "token", "text", "count", "share", "flagged"])


def iterations_frame(run: RunResult | dict[str, Any]) -> pd.DataFrame:
    """One row per iteration: who acted, how many tokens changed, how many positions are blocked, the text after."""
    r = as_result(run)
    rows = [
        {
            "iteration": e.iteration,
            "model": e.model,
            "side": SIDES[e.model_index],
            "changes": e.changes,
            "blocked": len(e.blocked),
            "tokens": len(e.tokens),
            "text": visible(e.text),
        }
        for e in r.iterations_log
    ]
    return pd.DataFrame(rows, columns=["iteration", "model", "side", "changes", "blocked", "tokens", "text"])


def start_pieces(run: RunResult | dict[str, Any]) -> list[str]:
    """The start sequence as token texts, in model A's tokenization (iteration 1 with its changes undone)."""
    r = as_result(run)
    if not r.iterations_log:
        return [r.start_text]
    first = r.iterations_log[0]
    pieces = list(first.pieces)
    for s in r.steps:
        if s.iteration == first.iteration and s.position < len(pieces):
            pieces[s.position] = s.old_text
    return pieces


def blocked_positions(run: RunResult | dict[str, Any], iteration: int) -> tuple[list[int], int]:
    """The blocked positions after ``iteration`` that exist in its sequence, and how many more were left out.

    Two models with different tokenizers share one set of blocked positions, each counted in the tokenization
    of the model that blocked it; positions past the end of the sequence shown cannot be pointed at in it.
    """
    r = as_result(run)
    if iteration <= 0 or not r.iterations_log:
        return [], 0
    entry = r.iterations_log[min(iteration, len(r.iterations_log)) - 1]
    shown = sorted(p for p in entry.blocked if 0 <= p < len(entry.pieces))
    return shown, len(entry.blocked) - len(shown)


def sequence_frame(run: RunResult | dict[str, Any], iteration: int) -> pd.DataFrame:
    """The sequence after ``iteration`` (0: the start), one row per token, marking what that iteration changed
    and which positions are blocked."""
    r = as_result(run)
    if iteration <= 0 or not r.iterations_log:
        pieces, changed = start_pieces(r), {}
    else:
        entry = r.iterations_log[min(iteration, len(r.iterations_log)) - 1]
        pieces = list(entry.pieces)
        changed = {s.position: s for s in r.steps if s.iteration == entry.iteration}
    blocked = set(blocked_positions(r, iteration)[0])
    rows = []
    for i, text in enumerate(pieces):
        s = changed.get(i)
        rows.append(
            {
                "position": i,
                "text": text,
                "label": chip_label(text),
                "changed": s is not None,
                "model": s.model if s else "",
                "side": SIDES[s.model_index] if s else "",
                "old_text": s.old_text if s else "",
                "blocked": i in blocked,
            }
        )
    return pd.DataFrame(rows, columns=["position", "text", "label", "changed", "model", "side", "old_text", "blocked"])


def sweep_frame(runs: Iterable[RunResult | dict[str, Any]]) -> pd.DataFrame:
    """One row per run of a sweep: mode, models, start length, seed, how it ended and after how many iterations."""
    rows = []
    for run in runs:
        r = as_result(run)
        rows.append(
            {
                "mode": r.config.mode,
                "models": " vs ".join(r.models),
                "length": len(r.start_tokens),
                "seed": r.config.seed,
                "status": r.status,
                "iterations": r.iterations,
                "period": r.period,
                "converged": r.status == "converged",
                "oscillating": r.status == "oscillating",
            }
        )
    return pd.DataFrame(
        rows, columns=["mode", "models", "length", "seed", "status", "iterations", "period", "converged", "oscillating"]
    )


def sweep_summary(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per start length: runs, convergence and oscillation rates, and iterations (mean, min, max)."""
    if sweep.empty:
        return pd.DataFrame(columns=["length", "runs", "converged_rate", "oscillating_rate", "mean_iterations", "min_iterations", "max_iterations"])
    g = sweep.groupby("length")
    out = pd.DataFrame(
        {
            "runs": g.size(),
            "converged_rate": g["converged"].mean(),
            "oscillating_rate": g["oscillating"].mean(),
            "mean_iterations": g["iterations"].mean(),
            "min_iterations": g["iterations"].min(),
            "max_iterations": g["iterations"].max(),
        }
    )
    return out.reset_index()


# The original experiment's claims about iterations to convergence, as functions of the length n.
CLAIMS = {
    "original: sequential solo, 2 iterations": lambda n: 2.0,
    "original: single solo, ~2.5n": lambda n: 2.5 * n,
    "original: adversarial-single, ~3n": lambda n: 3.0 * n,
}


def reference_frame(lengths: Iterable[int]) -> pd.DataFrame:
    """The original's claims evaluated at the smallest and largest length: columns claim, length, iterations."""
    ls = sorted(set(int(n) for n in lengths))
    ends = [ls[0], ls[-1]] if ls else []
    rows = [{"claim": claim, "length": n, "iterations": f(n)} for claim, f in CLAIMS.items() for n in ends]
    return pd.DataFrame(rows, columns=["claim", "length", "iterations"])
