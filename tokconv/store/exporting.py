"""Export runs as JSON (whole runs), CSV or Parquet (one row per step), and read JSON back."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import TokconvError
from ..experiments import RunResult
from ..experiments.records import RUN_FILE_FIX, json_kind


def steps_table(runs: dict[int, RunResult]):
    """A DataFrame with one row per replacement, with its run's settings alongside."""
    import pandas as pd  # only for CSV and Parquet: importing it costs the CLI about half a second

    rows = []
    for rid, r in runs.items():
        c = r.config
        base = {"run_id": rid, "mode": c.mode, "model_a": c.model_a, "model_b": c.model_b, "length": c.length,
                "seed": c.seed, "share": c.share, "oov": c.oov, "dtype": c.dtype, "status": r.status,
                "run_iterations": r.iterations}
        for s in r.steps:
            rows.append({**base, "iteration": s.iteration, "model": s.model, "position": s.position,
                         "old_token": s.old_token, "new_token": s.new_token, "old_text": s.old_text,
                         "new_text": s.new_text, "entropy": s.entropy, "prob": s.prob, "finite": s.finite,
                         "span_start": s.span_start, "span_end": s.span_end, "inserted": s.inserted})
    cols = ["run_id", "mode", "model_a", "model_b", "length", "seed", "share", "oov", "dtype", "status", "run_iterations",
            "iteration", "model", "position", "old_token", "new_token", "old_text", "new_text", "entropy", "prob",
            "finite", "span_start", "span_end", "inserted"]
    return pd.DataFrame(rows, columns=cols)


def export_runs(runs: dict[int, RunResult], fmt: str, output: Path) -> None:
    """Write runs to ``output``: json keeps everything; csv and parquet hold the steps table."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        output.write_text(json.dumps({"runs": [r.to_dict() for r in runs.values()]}, ensure_ascii=False, indent=1), encoding="utf-8")
    elif fmt == "csv":
        steps_table(runs).to_csv(output, index=False)
    elif fmt == "parquet":
        steps_table(runs).to_parquet(output, index=False)
    else:
        raise TokconvError(f"unknown export format '{fmt}'", "use json, csv or parquet")


def export_bytes(runs: dict[int, RunResult], fmt: str) -> bytes:
    """The bytes :func:`export_runs` writes, for a download button."""
    with tempfile.TemporaryDirectory(prefix="tokconv-export-") as tmp:
        output = Path(tmp) / f"runs.{fmt}"
        export_runs(runs, fmt, output)
        return output.read_bytes()


def read_runs_json(path: Path) -> list[RunResult]:
    """Runs from a JSON file: one run, a list of runs, or ``{"runs": [...]}`` as exported."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise TokconvError(f"{path} does not exist", "check the path of the exported JSON file") from None
    except OSError as exc:  # a folder, no permission, an unreadable disk
        raise TokconvError(f"{path} cannot be read ({exc.strerror or exc})", "check the path of the exported JSON file") from exc
    return runs_from_json(text, str(path))


def runs_from_json(data: str | bytes, source: str) -> list[RunResult]:
    """Runs from the text of a JSON run file (``source`` names it in error messages), as :func:`read_runs_json`.

    Every run is checked before any is returned, so a caller that saves them saves all or none;
    an error names the file, the run (when there are several) and the bad field."""
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokconvError(f"{source}: this is not a JSON run file ({exc})", RUN_FILE_FIX) from exc
    if isinstance(parsed, dict) and "runs" in parsed and "schema_version" not in parsed:
        items = parsed["runs"]
        if not isinstance(items, list):
            raise TokconvError(f"{source}: field 'runs' must be a list of runs, got {json_kind(items)}", RUN_FILE_FIX)
    elif isinstance(parsed, (dict, list)):
        items = [parsed] if isinstance(parsed, dict) else parsed
    else:
        raise TokconvError(f"{source} is not a tokconv run file: expected a run or {{\"runs\": [...]}}, got {json_kind(parsed)}", RUN_FILE_FIX)
    results = []
    for i, item in enumerate(items, 1):
        try:
            results.append(RunResult.from_dict(item))
        except TokconvError as exc:
            where = f"run {i} in {source}" if len(items) > 1 else source
            raise TokconvError(f"{where}: {exc.problem}", exc.fix) from exc
    return results
