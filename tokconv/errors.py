"""One exception type for every problem a user can cause or fix.

Each error carries the problem and the fix separately, so the CLI can print
them as two lines and the dashboard can show them without a stack trace.
"""

from __future__ import annotations


class TokconvError(Exception):
    """A problem the user can act on: what went wrong, and what to do about it."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)


class ModelNotFound(TokconvError):
    """The model spec names nothing we can load."""


class ModelNotInstalled(TokconvError):
    """A catalog model whose PyPI package is not installed."""


class CorruptModelFile(TokconvError):
    """A model file that is truncated, corrupt or not a GGUF file."""


class UnsupportedArchitecture(TokconvError):
    """A GGUF file of an architecture tokconv cannot convert."""


class InvalidTokens(TokconvError):
    """Token ids that the model cannot score (empty, out of vocabulary, too long)."""
