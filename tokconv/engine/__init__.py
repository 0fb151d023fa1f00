"""The engine: the scoring primitive. Token ids in; argmax, its probability and entropy out.

It knows nothing about text or experiments. :class:`Scorer` scores from scratch or opens a
KV-cached :class:`ScoringSession` (one offset for the batch); :class:`RowPool` re-scores rows of
their own lengths, each from its own change (sweeps), and :class:`RowSession` a rectangular batch
so. :mod:`.forward` is one compiled model call, :mod:`.head` the entropy head, :mod:`.streams`
how a call is spread over the CPU.
"""

from .arithmetic import arithmetic
from .rows import RowPool, RowRequest, RowSession
from .scores import Cost, Scores
from .session import Scorer, ScoringSession, score, validate_tokens

__all__ = ["Cost", "arithmetic", "RowPool", "RowRequest", "RowSession", "Scorer", "Scores", "ScoringSession", "score", "validate_tokens"]
