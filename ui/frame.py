"""The page list and a guard that keeps every page inside the frame (streamlit_app.py).

Streamlit still knows its legacy ``pages/`` folder mode: in a fresh server
process, until some script run has called ``st.navigation``, a request for a
page URL (a shared link to /solo on a just-started server, or every AppTest run
after ``switch_page``) runs that page file on its own, without the frame.
``inside_frame()`` notices that and runs the frame in its place (which calls
``st.navigation``, switching the legacy mode off, and then runs this page).
It does not rerun, so a button click in that run is not lost.
"""

from __future__ import annotations

import runpy
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import streamlit as st

FRAME = Path(__file__).resolve().parents[1] / "streamlit_app.py"

PAGES = [  # (file, title, icon)
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/solo.py", "Solo", ":material/person:"),
    ("pages/battle.py", "Battle", ":material/compare_arrows:"),
    ("pages/fingerprints.py", "Fingerprints", ":material/fingerprint:"),
    ("pages/sweep.py", "Sweep", ":material/stacked_line_chart:"),
    ("pages/history.py", "History", ":material/history:"),
]
HISTORY = "history"  # the History page's URL path
_local = threading.local()  # each browser session's script runs in its own thread


def icon() -> Any:
    """The browser tab's icon, drawn here: a ':material/...:' icon makes the browser fetch it from fonts.gstatic.com.

    Two rings closing in on a dot (convergence), in the model colors of the token chips."""
    import numpy as np
    from PIL import Image  # a Streamlit dependency

    y, x = np.mgrid[0:32, 0:32]
    r = np.hypot(x - 15.5, y - 15.5)
    img = np.zeros((32, 32, 4), dtype=np.uint8)
    for (lo, hi), color in (((12, 15.5), (76, 120, 168)), ((6.5, 9.5), (245, 133, 24)), ((0, 3.5), (76, 120, 168))):
        ring = (r >= lo) & (r < hi)
        img[ring] = (*color, 255)
    return Image.fromarray(img, "RGBA")


def pages() -> list[st.Page]:
    return [st.Page(path, title=title, icon=icon, default=i == 0) for i, (path, title, icon) in enumerate(PAGES)]


@contextmanager
def running() -> Iterator[None]:
    """Mark this script run as going through the frame while the page runs."""
    _local.active = True
    try:
        yield
    finally:
        _local.active = False


def inside_frame() -> None:
    """Call first in every page: if Streamlit ran this page on its own, run the frame instead and stop."""
    if getattr(_local, "active", False):
        return
    runpy.run_path(str(FRAME), run_name="__main__")
    st.stop()
