"""Which arithmetic a model's calls run on, for run records: results computed with int16 inputs
can take other moves at near-ties than float32 ones (BENCHMARKS.md, FINDINGS.md), so a stored run
says which it had."""

from __future__ import annotations

from ..fastpath import compact
from ..models.loading import LoadedModel


def arithmetic(lm: LoadedModel) -> str:
    """``"int16 inputs"`` where ``lm``'s short products run on compact weights with inputs rounded
    to int16 (the default on CPUs with AVX-512 VNNI, ``TOKCONV_NO_INT16=1`` turns it off), else
    ``"float32"``."""
    has_compact = lm.compact is not None and lm.compact.compact > 0
    return "int16 inputs" if has_compact and compact.active() and compact.int16_inputs() else "float32"
