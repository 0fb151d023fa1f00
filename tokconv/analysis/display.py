"""Text for people: whitespace made visible, fingerprints formatted like the original."""

from __future__ import annotations

STATUS_WORDS = {
    "converged": "converged",
    "oscillating": "oscillating",
    "all-blocked": "stopped: every remaining disagreement is at a blocked position",
    "max-iterations": "stopped at the iteration limit without converging",
    "interrupted": "interrupted",
}

_VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(text: str, *, spaces: bool = False) -> str:
    """``text`` with newlines, tabs (and, if asked, spaces) shown as visible marks."""
    out = "".join(_VISIBLE.get(ch, ch) for ch in text)
    return out.replace(" ", "·") if spaces else out


def token_repr(text: str) -> str:
    """A token quoted so whitespace shows, as the original printed it: ' ', '\\n\\n', '!'."""
    return repr(text)


def fingerprint_block(fingerprints: dict[str, dict[str, int]], *, top: int = 10) -> str:
    """The MODEL FINGERPRINTS block: each model's top insertions as ``27x ' '``."""
    lines = ["MODEL FINGERPRINTS (tokens each model compulsively inserts)", "=" * 60]
    for side, (label, counts) in zip("ABCDEFG", fingerprints.items()):
        total = sum(counts.values())
        lines.append(f"Model {side} ({label}) top insertions ({total} total):")
        if not counts:
            lines.append("    (none)")
        for text, n in list(counts.items())[:top]:
            lines.append(f"  {n:4d}x {token_repr(text)}  ({100 * n / total:.0f}%)")
    return "\n".join(lines)
