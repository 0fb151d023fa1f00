"""What scoring returns and what it costs: per-position predictions, their buffers, and cost counters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Per-position predictions for a batch: each array is (B, L)."""

    argmax: np.ndarray  # int64, -1 where there is no (valid) prediction
    prob: np.ndarray  # float32 probability of the argmax token, NaN where none
    entropy: np.ndarray  # float32 entropy in nats, NaN where none

    def row(self, b: int = 0) -> "Scores":
        """Scores of one sequence, still 2-D (1, L)."""
        return Scores(self.argmax[b : b + 1], self.prob[b : b + 1], self.entropy[b : b + 1])

    @staticmethod
    def blank(B: int, L: int) -> "Scores":
        """Scores with no predictions yet (-1 / NaN), to be filled in place by a session."""
        return Scores(np.full((B, L), -1, np.int64), np.full((B, L), np.nan, np.float32), np.full((B, L), np.nan, np.float32))

    def fill(self, rows, cols, argmax: np.ndarray, prob: np.ndarray, entropy: np.ndarray) -> None:
        """Write predictions for ``rows`` x ``cols`` in place (a session's buffer)."""
        self.argmax[rows, cols] = argmax
        self.prob[rows, cols] = prob
        self.entropy[rows, cols] = entropy

    def copy(self) -> "Scores":
        """An independent copy (sessions hand out copies of their buffers)."""
        return Scores(self.argmax.copy(), self.prob.copy(), self.entropy.copy())


@dataclass
class Cost:
    """What scoring cost: model calls, tokens pushed through the model, wall time."""

    forward_passes: int = 0
    forwarded_tokens: float = 0
    seconds: float = 0.0

    def add(self, other: "Cost") -> None:
        """Add ``other``'s counts to these."""
        self.forward_passes += other.forward_passes
        self.forwarded_tokens += other.forwarded_tokens
        self.seconds += other.seconds
