"""``tokconv complete``: greedy continuation of a prompt, the quickest model check."""

from __future__ import annotations

import argparse
import sys

from mlx_lm import stream_generate

from ..errors import InvalidTokens
from ..models import DEFAULT_MODEL_A, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL_A, help=f"model spec (default: {DEFAULT_MODEL_A})")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens to generate (1-1024, default 16)")


def greedy_complete(spec: str, prompt: str, max_tokens: int, progress=None):
    """Yield the greedy continuation of ``prompt`` piece by piece (text)."""
    if not 1 <= max_tokens <= 1024:
        raise InvalidTokens(f"--max-tokens must be between 1 and 1024, got {max_tokens}", "pick a number in range")
    if not prompt:
        raise InvalidTokens("the prompt is empty", "give some text to continue, e.g. --prompt 'Once upon a time'")
    lm = load(spec, progress=progress)
    ids = lm.encode(prompt)
    if lm.bos_id is not None:
        ids = [lm.bos_id] + ids
    with lm.lock:
        for response in stream_generate(lm.model, lm.tokenizer, ids, max_tokens=max_tokens):
            yield response.text


def main(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        print(msg, file=sys.stderr)

    print(args.prompt, end="", flush=True)
    for piece in greedy_complete(args.model, args.prompt, args.max_tokens, progress=progress):
        print(piece, end="", flush=True)
    print()
    return 0
