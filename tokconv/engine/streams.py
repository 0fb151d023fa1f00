"""How one model call is spread over the CPU: row groups, CPU streams, waves, and the logits budget.

MLX runs its non-BLAS ops on one thread per stream, so on a CPU a batch is split over two
streams (one BLAS thread each) and a single sequence gets one stream with every core
(:func:`tokconv.fastpath.threads.compute`). A call's logits are kept under
:data:`LOGITS_BUDGET_BYTES` by taking fewer rows; calls then run in waves of one per stream.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from .. import fastpath
from ..fastpath import threads

# Logits and the head's temporaries take up to ~12 bytes per forwarded token per vocabulary entry
# (MLX's head on a GPU; on CPU the numpy/C head adds only ~1 MB chunks to the 4-byte logits).
# One model call keeps them under this budget by taking fewer rows (unsplit, Qwen's 151,936-token
# vocabulary at 32 x 256 needed tens of GB).
LOGITS_BUDGET_BYTES = 512 << 20


def max_rows(n_tokens: int, vocab_size: int) -> int:
    """How many rows of ``n_tokens`` one model call may take within :data:`LOGITS_BUDGET_BYTES` (>= 1)."""
    return max(1, LOGITS_BUDGET_BYTES // max(1, 12 * n_tokens * vocab_size))


def n_streams() -> int:
    """Streams that run at once: two on CPU (one thread each for MLX's non-BLAS ops), one on a GPU."""
    return 2 if fastpath.setup().device == "cpu" else 1


def row_groups(batch: int, limit: int | None = None) -> list[slice]:
    """Split a batch into row groups: one per stream (a single sequence stays whole), more when
    a group would exceed ``limit`` rows."""
    n = min(batch, n_streams())
    if limit:
        n = max(n, -(-batch // limit))
    bounds = [round(k * batch / n) for k in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def streams(n: int) -> list[Any]:
    """``n`` streams to run calls on: the default stream for one, this thread's CPU streams for more."""
    return [mx.default_stream(mx.default_device())] if n == 1 else threads.cpu_streams(n)
