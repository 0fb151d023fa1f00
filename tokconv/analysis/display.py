"""Text for people: whitespace made visible, fingerprints formatted like the original, and the sentences that
explain the marks and units the dashboard shows (kept here once, reused by every page)."""

from __future__ import annotations

import re

STATUS_WORDS = {
    "converged": "converged",
    "oscillating": "oscillating",
    "all-blocked": "stopped: every remaining disagreement is at a blocked position",
    "max-iterations": "stopped at the iteration limit without converging",
    "interrupted": "interrupted",
}

_VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}

MARKS_NOTE = (
    "In tokens, · is a space, ↵ a new line (\\n in quotes), ⇥ a tab (\\t), ∅ an empty token, and � a piece of "
    "a character that is not complete on its own (one character split over several tokens)."
)
ENTROPY_NOTE = (
    "Entropy measures how unsure the model is: 0 means certain; 1 bit = two equally likely choices; "
    "nats use the natural log, 1 nat ≈ 1.44 bits."
)

# CommonMark lets a backslash escape any ASCII punctuation; these can start a construct mid-line
# (and Streamlit's :color[...] / :material/...: directives and $ math). '-', '+', '.' and '=' matter
# only at the start of a line.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\](){}<>#!|~$:&])")
_LINE_START = re.compile(r"^(\s*)([-+=]|\d+\.)")


def markdown_escape(text: object, limit: int | None = None) -> str:
    """``text`` made literal where Streamlit reads Markdown (captions, messages, headings, status and
    metric labels): on one line, cut to ``limit`` characters (with '…'), and every character that could
    format, link or embed an image backslash-escaped, so it reads exactly as typed."""
    s = " ".join(str(text).splitlines())  # one line: a line break could start a heading or a list
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    s = _MARKDOWN_SPECIAL.sub(r"\\\1", s)
    return _LINE_START.sub(lambda m: m[1] + ("\\" + m[2] if not m[2][0].isdigit() else m[2][:-1] + "\\."), s)


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
