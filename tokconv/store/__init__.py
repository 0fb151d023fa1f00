"""The run store: every run in a local SQLite database, and runs as JSON, CSV or Parquet files."""

from .database import ImportReport, RunRow, RunStore, resolve_db_path
from .exporting import export_bytes, export_runs, read_runs_json, runs_from_json, steps_table

__all__ = ["ImportReport", "RunRow", "RunStore", "export_bytes", "export_runs", "read_runs_json", "resolve_db_path",
           "runs_from_json", "steps_table"]
