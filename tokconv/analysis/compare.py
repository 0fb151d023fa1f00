"""Compare two fingerprints (token -> insertion count): overlap and Jensen-Shannon divergence.

    js_divergence({"!": 43}, {" ": 27, "-": 5})   # 1.0 bit: nothing in common
    overlap({"!": 3, ",": 1}, {"!": 1})           # 0.75: three quarters of the insertions coincide
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from .display import token_repr

__all__ = ["compare_frame", "describe", "distribution", "js_divergence", "overlap", "shared_tokens"]

Counts = Mapping[str, float]


def distribution(counts: Counts) -> dict[str, float]:
    """Counts normalised to shares that sum to 1 (empty for no insertions)."""
    total = float(sum(v for v in counts.values() if v > 0))
    return {k: v / total for k, v in counts.items() if v > 0} if total > 0 else {}


def js_divergence(p: Counts, q: Counts, *, base: float = 2.0) -> float:
    """Jensen-Shannon divergence of two count distributions.

    Symmetric; 0 for the same shares, log_base(2) for disjoint ones (1 bit with the default
    base 2, ln 2 with ``base=math.e``). NaN when either side inserted nothing.
    """
    P, Q = distribution(p), distribution(q)
    if not P or not Q:
        return math.nan
    js = 0.0
    for t in set(P) | set(Q):
        a, b = P.get(t, 0.0), Q.get(t, 0.0)
        m = (a + b) / 2
        if a > 0:
            js += 0.5 * a * math.log(a / m)
        if b > 0:
            js += 0.5 * b * math.log(b / m)
    return max(0.0, js / math.log(base))


def overlap(p: Counts, q: Counts) -> float:
    """The share of insertions the two have in common: the sum over tokens of min(share in p, share in q), 0..1."""
    P, Q = distribution(p), distribution(q)
    return sum(min(v, Q[t]) for t, v in P.items() if t in Q)


def shared_tokens(p: Counts, q: Counts) -> list[str]:
    """Tokens both inserted, most inserted (p + q shares) first."""
    P, Q = distribution(p), distribution(q)
    return sorted(set(P) & set(Q), key=lambda t: (-(P[t] + Q[t]), t))


def compare_frame(p: Counts, q: Counts, labels: tuple[str, str] = ("A", "B"), *, top: int | None = None) -> pd.DataFrame:
    """Long table of both distributions over the union of their tokens: token, text, side, count, share.

    With ``top``, only the ``top`` tokens by combined share are kept.
    """
    P, Q = distribution(p), distribution(q)
    union = sorted(set(P) | set(Q), key=lambda t: (-(P.get(t, 0) + Q.get(t, 0)), t))[:top]
    rows = [
        {"token": token_repr(t), "text": t, "side": label, "count": counts.get(t, 0), "share": shares.get(t, 0.0)}
        for t in union
        for label, counts, shares in ((labels[0], p, P), (labels[1], q, Q))
    ]
    return pd.DataFrame(rows, columns=["token", "text", "side", "count", "share"])


def describe(js_bits: float, common: float) -> str:
    """One sentence on what a divergence (in bits) and an overlap mean."""
    if math.isnan(js_bits):
        return "One side inserted no tokens, so there is nothing to compare yet."
    if js_bits < 0.1:
        verdict = "nearly the same fingerprint"
    elif js_bits < 0.5:
        verdict = "related fingerprints with clear differences"
    elif js_bits < 0.9:
        verdict = "mostly different fingerprints"
    else:
        verdict = "almost completely different fingerprints"
    return (
        f"Jensen-Shannon divergence {js_bits:.2f} bits (0 = identical token mix, 1 = no token in common) "
        f"and {100 * common:.0f}% overlap: {verdict}."
    )
