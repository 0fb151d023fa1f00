"""The History page's helpers: labels and tables of saved runs, grouped fingerprints, import, delete and export.

Actions that change the store (import, delete) run as widget callbacks, before the
script: the page drawn right after already shows the new state, and what happened
is kept as a message for that run (``flash``).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

import pandas as pd
import streamlit as st

from tokconv.errors import TokconvError
from tokconv.experiments import RunResult
from tokconv.store import RunRow, RunStore, export_bytes, runs_from_json

from tokconv.analysis.display import markdown_escape as md  # user text in markdown elements

FLASH = "history_flash"  # session state: messages of the last import/delete, shown once
IMPORTED = "history_imported"  # session state: ids of uploaded files already imported
SELECTED = "hist_selected"  # widget key: the runs picked for export and delete
OPEN = "hist_open"  # widget key: the run opened in 'Open a run'
LINK = "run"  # the URL query parameter naming the opened run
FORMATS = {  # export format -> (button label, MIME type, help)
    "json": ("JSON", "application/json", "Whole runs, every step and iteration; import it again here or with `tokconv runs import`."),
    "csv": ("CSV", "text/csv", "One row per token replacement, with its run's settings alongside: for a spreadsheet."),
    "parquet": ("Parquet", "application/vnd.apache.parquet", "The same table as the CSV, typed and compressed: for pandas, polars or DuckDB."),
}


def models_of(row: RunRow) -> str:
    return row.model_a if row.model_b is None else f"{row.model_a} vs {row.model_b}"


def saved_at(row: RunRow) -> str:
    """'2026-11-23 18:02 UTC' from the stored ISO timestamp."""
    return row.created_at[:16].replace("T", " ") + " UTC"


def label(row: RunRow) -> str:
    """A saved run in one line, for pickers."""
    return f"#{row.id} · {row.mode} · {models_of(row)} · L={row.length} · seed {row.seed} · {row.status}"


def table(rows: list[RunRow]) -> pd.DataFrame:
    """The saved runs as a table, newest first."""
    return pd.DataFrame(
        [{"run": r.id, "saved": saved_at(r), "mode": r.mode, "models": models_of(r), "length": r.length, "seed": r.seed,
          "status": r.status, "iterations": r.iterations} for r in rows],
        columns=["run", "saved", "mode", "models", "length", "seed", "status", "iterations"],
    )


def sides(rows: list[RunRow]) -> dict[str, str]:
    """Every fingerprint in these runs: 'id:side' -> label (a solo run has one, a battle two)."""
    out = {}
    for r in rows:
        if r.model_b is None:
            out[f"{r.id}:0"] = f"#{r.id} {r.model_a} · {r.mode} · L={r.length} · seed {r.seed}"
            continue
        for side, (me, other) in enumerate(((r.model_a, r.model_b), (r.model_b, r.model_a))):
            out[f"{r.id}:{side}"] = f"#{r.id} {me} (model {'AB'[side]}, vs {other}) · {r.mode} · L={r.length} · seed {r.seed}"
    return out


def group_fingerprint(store: RunStore, picks: list[str]) -> dict[str, int]:
    """The summed fingerprint of the picked 'id:side' entries (each run loaded once)."""
    runs: dict[int, RunResult] = {}
    total: Counter[str] = Counter()
    for pick in picks:
        rid, side = (int(x) for x in pick.split(":"))
        if rid not in runs:
            runs[rid] = store.get(rid)
        r = runs[rid]
        if side < len(r.models):
            total.update(r.fingerprints.get(r.models[side], {}))
    return dict(total.most_common())


def keep_valid(key: str, options: list, default: list | None = None) -> None:
    """Drop picks that are no longer offered (deleted or filtered out) before the widget is drawn."""
    if key in st.session_state:
        st.session_state[key] = [v for v in st.session_state[key] if v in options]
    elif default is not None:
        st.session_state[key] = [v for v in default if v in options]


def open_linked(by_id: dict[int, RunRow]) -> None:
    """Before the run picker is drawn: a link's ``?run=ID`` picks the opened run (the first time this session sees it)."""
    raw = st.query_params.get(LINK)
    if raw is None or OPEN in st.session_state:
        return
    try:
        rid = int(raw)
    except ValueError:
        rid = None
    if rid in by_id:
        st.session_state[OPEN] = rid
    else:
        shown = md(raw, 40)
        st.warning(f"The link's {LINK}={shown} is not among the saved runs listed here; showing the newest run instead.")


def link_to(rid: int | None) -> None:
    """Put the opened run in the page's address, so a copied link opens it."""
    if rid is not None and st.query_params.get(LINK) != str(rid):
        st.query_params[LINK] = str(rid)


def say(kind: str, text: str) -> None:
    st.session_state.setdefault(FLASH, []).append((kind, text))


def show_flash() -> None:
    """Show (once) what the last import or delete did."""
    for kind, text in st.session_state.pop(FLASH, []):
        getattr(st, kind)(text)


def import_uploads(store: RunStore, key: str) -> None:
    """Callback of the import uploader: save the runs of each newly uploaded JSON file.

    Each file is all or nothing (a bad run refuses its whole file, naming the field); the other
    files are still imported, and runs already saved are skipped and counted."""
    done: set[str] = st.session_state.setdefault(IMPORTED, set())
    for f in st.session_state.get(key) or []:
        if f.file_id in done:
            continue
        try:
            report = store.import_runs(runs_from_json(f.getvalue(), f.name))
        except TokconvError as exc:
            say("error", f"Not imported: {exc.problem}" if f.name in exc.problem else f"{f.name} was not imported: {exc.problem}")
            if exc.fix:
                say("info", exc.fix)
            continue
        except Exception as exc:  # e.g. the database went away: a message, not a traceback
            logging.getLogger("tokconv.dashboard").exception("import of %s failed", f.name)
            say("error", f"{f.name} was not imported ({type(exc).__name__}: {exc}).")
            continue
        done.add(f.file_id)
        shown = ", ".join(f"#{i}" for i in report.added)
        skipped = f", skipped {len(report.duplicates)} already saved" if report.duplicates else ""
        say("success", f"Imported {len(report.added)} run(s) from {f.name}" + (f" as {shown}" if shown else "") + skipped + ".")
        if report.conflicts:
            say("info", f"{f.name}: {report.summary()}.")


def delete_runs(store: RunStore, ids: list[int]) -> None:
    """Callback of the Delete button: delete the runs and clear the selection."""
    gone, missing = [], []
    for rid in ids:
        try:
            store.delete(rid)
            gone.append(rid)
        except TokconvError:  # deleted meanwhile, from another browser tab or the CLI
            missing.append(rid)
        except Exception as exc:
            logging.getLogger("tokconv.dashboard").exception("delete of run %s failed", rid)
            say("error", f"Run #{rid} could not be deleted ({type(exc).__name__}: {exc}).")
    if gone:
        say("success", f"Deleted {len(gone)} run(s): " + ", ".join(f"#{i}" for i in gone) + ".")
    if missing:
        say("warning", "Already gone: " + ", ".join(f"#{i}" for i in missing) + ".")
    st.session_state[SELECTED] = []


def exporter(store: RunStore, ids: list[int], fmt: str) -> Callable[[], bytes]:
    """The file of the picked runs, built only when its download button is clicked."""
    return lambda: export_bytes({i: store.get(i) for i in ids}, fmt)
