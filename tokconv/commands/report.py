"""``tokconv report``: rerun the original experiments over many seeds and write a markdown report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..analysis.report import ReportSpec, report
from ..errors import TokconvError
from ..experiments import RunConfig
from ..models import DEFAULT_MODEL_A, DEFAULT_MODEL_B


def parse_seeds(text: str) -> list[int]:
    """'0-7' or '1,2,5' -> list of ints."""
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return list(range(int(lo), int(hi) + 1))
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise TokconvError(f"cannot read seeds '{text}'", "write a range like 0-7 or a list like 1,2,5") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-a", default=DEFAULT_MODEL_A, help=f"first model (default {DEFAULT_MODEL_A})")
    p.add_argument("--model-b", default=DEFAULT_MODEL_B, help=f"second model (default {DEFAULT_MODEL_B})")
    p.add_argument("-l", "--length", type=int, default=20, help="start length in tokens (default 20)")
    p.add_argument("--seeds", default="0-7", help="seeds, as a range 0-7 or a list 1,2,5 (default 0-7)")
    p.add_argument("-n", "--iterations", type=int, default=100, help="maximum iterations per run (default 100)")
    p.add_argument("--output", type=Path, default=Path("FINDINGS-measured.md"), help="markdown file to write")


def main(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    if not seeds:
        raise TokconvError("no seeds given", "write a range like 0-7")
    RunConfig(mode="adversarial", model_a=args.model_a, model_b=args.model_b, length=args.length, iterations=args.iterations)
    spec = ReportSpec(args.model_a, args.model_b, args.length, seeds, args.iterations)
    text, _ = report(spec, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    args.output.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
