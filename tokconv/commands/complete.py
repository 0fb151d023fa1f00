"""``tokconv complete``: greedy continuation of a prompt, the quickest model check."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterator

from mlx_lm import stream_generate

from ..engine import forward
from ..errors import InvalidTokens
from ..models import DEFAULT_MODEL_A, LoadedModel, load
from ._common import add_quiet_option, check_cache, check_text, runtime_notice


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL_A, help=f"model spec (default: {DEFAULT_MODEL_A})")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens to generate (1-1024, default 16)")
    add_quiet_option(parser)


def check(prompt: str, max_tokens: int) -> None:
    """Refuse a bad prompt or token count before any model loads."""
    if not 1 <= max_tokens <= 1024:
        raise InvalidTokens(f"--max-tokens must be between 1 and 1024, got {max_tokens}", "pick a number in range")
    check_text(prompt, "the prompt")
    if not prompt:
        raise InvalidTokens("the prompt is empty", "give some text to continue, e.g. --prompt 'Once upon a time'")


def continuation(lm: LoadedModel, prompt: str, max_tokens: int) -> Iterator[str]:
    """Yield the greedy continuation of ``prompt`` piece by piece, as text that follows the prompt exactly.

    Each piece is the growth of ``decode(prompt + generated)``: decoding the continuation alone
    would drop the leading space of its first token (' Paris' printed as 'isParis').
    """
    ids = lm.encode(prompt)
    head = [lm.bos_id] + ids if lm.bos_id is not None else ids
    shown = lm.decode(ids)
    generated: list[int] = []
    with lm.lock:
        forward.ready(lm)  # mlx-lm multiplies the weights itself: load those left in the file
        for response in stream_generate(lm.model, lm.tokenizer, head, max_tokens=max_tokens):
            generated.append(int(response.token))
            text = lm.decode(ids + generated)
            if text.endswith("\ufffd"):
                continue  # half of a multi-byte character: wait for the rest
            if text.startswith(shown):
                piece, shown = text[len(shown):], text
                if piece:
                    yield piece
    tail = lm.decode(ids + generated)
    if tail.startswith(shown) and len(tail) > len(shown):
        yield tail[len(shown):]


def greedy_complete(spec: str, prompt: str, max_tokens: int, progress: Callable[[str], None] | None = None) -> Iterator[str]:
    """Yield the greedy continuation of ``prompt`` piece by piece (text)."""
    check(prompt, max_tokens)
    yield from continuation(load(spec, progress=progress), prompt, max_tokens)


def main(args: argparse.Namespace) -> int:
    check(args.prompt, args.max_tokens)
    check_cache()
    runtime_notice(args.quiet)
    # Load first (progress on stderr): a model that fails leaves stdout empty, not a dangling prompt.
    lm = load(args.model, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(args.prompt, end="", flush=True)
    for piece in continuation(lm, args.prompt, args.max_tokens):
        print(piece, end="", flush=True)
    print()
    return 0
