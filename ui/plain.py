"""User strings shown as plain text inside Streamlit elements that read markdown.

Streamlit renders markdown in captions, messages (st.error, st.info...), subheaders,
st.status labels and widget labels. A start text, a typed model path or an imported
run's model name such as ``![](//evil.example/x)`` would otherwise become an image
that the browser fetches. :func:`md` backslash-escapes every character that can start
markdown (and Streamlit's ``:color[...]`` / ``:material/...:`` directives and ``$`` math),
so the text reads exactly as typed.
"""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that can
# start a construct mid-line. '-', '+', '.' and '=' matter only at the start of a line.
_SPECIAL = re.compile(r"([\\`*_\[\](){}<>#!|~$:&])")
_LINE_START = re.compile(r"^(\s*)([-+=]|\d+\.)")


def md(text: object, limit: int | None = None) -> str:
    """``text`` escaped for a markdown element, on one line, cut to ``limit`` characters (with '…')."""
    s = " ".join(str(text).split()) if "\n" in str(text) or "\r" in str(text) else str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    s = _SPECIAL.sub(r"\\\1", s)
    return _LINE_START.sub(lambda m: m[1] + ("\\" + m[2] if not m[2][0].isdigit() else m[2][:-1] + "\\."), s)
