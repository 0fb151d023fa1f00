"""Tiny deterministic models whose convergence behaviour is known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokconv.experiments.experiment import Experiment, collect, prepare
from tokconv.models import LoadedModel
from tokconv.experiments import RunConfig, RunResult


class CharTokenizer:
    """Token i is the letter chr(97 + i); no special tokens."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.all_special_ids: list[int] = []

    def decode(self, ids) -> str:
        return "".join(chr(97 + int(i)) for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(ch) - 97 for ch in text]

    def get_vocab(self) -> dict[str, int]:
        return {chr(97 + i): i for i in range(self.vocab_size)}


class UnicodeTokenizer(CharTokenizer):
    """Token i is the character chr(i) (a different vocabulary from the letters')."""

    def decode(self, ids) -> str:
        return "".join(chr(int(i)) for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(ch) for ch in text]

    def get_vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(self.vocab_size)}


class PairTokenizer(CharTokenizer):
    """The letters, plus one token (id V - 1) for the pair ``pair``: encoded greedily, longest first."""

    def __init__(self, vocab_size: int, pair: str = "ab") -> None:
        super().__init__(vocab_size)
        self.pair = pair

    def decode(self, ids) -> str:
        return "".join(self.pair if int(i) == self.vocab_size - 1 else chr(97 + int(i)) for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out, i = [], 0
        while i < len(text):
            if text.startswith(self.pair, i):
                out.append(self.vocab_size - 1)
                i += len(self.pair)
            else:
                out.append(ord(text[i]) - 97)
                i += 1
        return out

    def get_vocab(self) -> dict[str, int]:
        return {**{chr(97 + i): i for i in range(self.vocab_size - 1)}, self.pair: self.vocab_size - 1}


class ByteTokenizer(CharTokenizer):
    """Token i is the byte i of UTF-8 text (256 ids): a character can take several tokens."""

    def __init__(self) -> None:
        super().__init__(256)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def get_vocab(self) -> dict[str, int]:
        return {f"<0x{i:02X}>": i for i in range(256)}


class TableModel:
    """A bigram 'language model': the logits after token x are row x of a table."""

    def __init__(self, table: np.ndarray) -> None:
        import mlx.core as mx

        self.table = mx.array(table.astype(np.float32))
        self.layers = [None]  # make_prompt_cache builds one KVCache per layer

    def __call__(self, x, cache=None):
        import mlx.core as mx

        if cache is not None:  # advance the cache so offsets behave like a real model's
            B, n = x.shape
            z = mx.zeros((B, 1, n, 1))
            cache[0].update_and_fetch(z, z)
        return self.table[x]


def table_lm(table: np.ndarray, name: str = "table", tokenizer=None) -> LoadedModel:
    """Wrap a (V, V) logit table as a LoadedModel with a letter tokenizer (or ``tokenizer``)."""
    V = table.shape[0]
    return LoadedModel(
        name=name, spec=name, path=Path("."), model=TableModel(table), tokenizer=tokenizer or CharTokenizer(V),
        architecture="table", family="Test", vocab_size=V, bos_id=None, load_seconds=0.0, converted=False,
    )


def constant_lm(target: int, vocab: int = 6, name: str = "const", peak: float = 5.0) -> LoadedModel:
    """Always predicts ``target``, whatever came before."""
    table = np.zeros((vocab, vocab))
    table[:, target] = peak
    return table_lm(table, name)


def successor_lm(vocab: int = 6, name: str = "succ") -> LoadedModel:
    """Predicts (x + 1) mod V after x: the fixed point from any start is a counting sequence."""
    table = np.zeros((vocab, vocab))
    for x in range(vocab):
        table[x, (x + 1) % vocab] = 5.0
    return table_lm(table, name)


def experiment(mode, lms, start, **cfg) -> Experiment:
    """A prepared run of tiny models from a given start (shared token positions when the models
    share a vocabulary, else the shared text)."""
    config = RunConfig(mode=mode, model_a=lms[0].spec, model_b=lms[1].spec if len(lms) > 1 else None, length=len(start), **cfg)
    return prepare(config, lms, start=start)


def run_tiny(mode, lms, start, **cfg) -> RunResult:
    """Run tiny models to the end."""
    exp = experiment(mode, lms, start, **cfg)
    return collect(exp, exp.records())
