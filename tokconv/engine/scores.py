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
    finite: np.ndarray  # bool: False where the prediction came from logits holding NaN or inf

    def row(self, b: int = 0) -> "Scores":
        """Scores of one sequence, still 2-D (1, L)."""
        return Scores(*(a[b : b + 1] for a in self.arrays()))

    @staticmethod
    def blank(B: int, L: int) -> "Scores":
        """Scores with no predictions yet (-1 / NaN), to be filled in place by a session."""
        return Scores(np.full((B, L), -1, np.int64), np.full((B, L), np.nan, np.float32),
                      np.full((B, L), np.nan, np.float32), np.ones((B, L), np.bool_))

    def fill(self, rows, cols, argmax, prob, entropy, finite=True) -> None:
        """Write predictions for ``rows`` x ``cols`` in place (a session's buffer)."""
        self.argmax[rows, cols] = argmax
        self.prob[rows, cols] = prob
        self.entropy[rows, cols] = entropy
        self.finite[rows, cols] = finite

    def copy(self) -> "Scores":
        """An independent copy (sessions hand out copies of their buffers)."""
        return Scores(*(a.copy() for a in self.arrays()))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """argmax, prob, entropy and finite, in that order."""
        return self.argmax, self.prob, self.entropy, self.finite


@dataclass
class Cost:
    """What scoring cost: model calls, tokens pushed through the model, wall time."""

    forward_passes: int = 0
    forwarded_tokens: float = 0
    seconds: float = 0.0
    nonfinite_rows: int = 0  # predicted positions whose logits held NaN or inf

    def add(self, other: "Cost") -> None:
        """Add ``other``'s counts to these."""
        self.forward_passes += other.forward_passes
        self.forwarded_tokens += other.forwarded_tokens
        self.seconds += other.seconds
        self.nonfinite_rows += other.nonfinite_rows
