"""``tokconv vocab A B``: how two models' vocabularies relate, id by id."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..analysis.display import token_repr
from ..models import load_vocabulary
from ..models.vocab import compare_vocabularies


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_a", help="first model (catalog name, .gguf path, mlx-lm folder or repo id)")
    p.add_argument("model_b", help="second model")
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")


def main(args: argparse.Namespace) -> int:
    a, b = load_vocabulary(args.model_a), load_vocabulary(args.model_b)  # tokenizers only: no weights
    c = compare_vocabularies(a, b)
    if args.format == "json":
        print(json.dumps(asdict(c), ensure_ascii=False, indent=1))
        return 0
    print(f"{c.name_a}: {c.size_a:,} ids; {c.name_b}: {c.size_b:,} ids")
    print(f"id 0: {token_repr(c.id0_a)} in {c.name_a}, {token_repr(c.id0_b)} in {c.name_b}")
    print(f"ids below both sizes that decode to the same string in both: {c.same_text:,} of {min(c.size_a, c.size_b):,}")
    print("first id whose strings differ: " + ("none" if c.first_divergent is None else f"{c.first_divergent:,}"))
    print(f"{c.name_a}'s ordinary vocabulary beyond {c.name_b}'s range: {100 * c.beyond_b:.1f}%")
    print(f"{c.name_b}'s ordinary vocabulary beyond {c.name_a}'s range: {100 * c.beyond_a:.1f}%")
    return 0
