"""The tokconv dashboard: the frame shared by every page (page config, navigation, sidebar).

Start it with ``bash scripts/dashboard.sh`` (or ``streamlit run streamlit_app.py``).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # the pages import the shared helpers in ui/
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

import tokconv  # noqa: E402  (sets up the fast path before MLX is imported)
from tokconv import models  # noqa: E402
from tokconv.analysis.display import markdown_escape  # noqa: E402
from ui import frame, running, runstore  # noqa: E402

st.set_page_config(page_title="tokconv", page_icon=frame.icon(), layout="wide")  # served by this server: no request leaves it
st.set_option("client.showErrorDetails", "none")  # also in .streamlit/config.toml, for runs from another folder

page = st.navigation(frame.pages())
if page.url_path != frame.HISTORY:  # History says it itself, every time
    runstore.show_problem()  # once per session: the run database cannot be used, so runs are not saved
running.settle_interrupted(page.url_path)  # a run cut short: by Cancel, a change, or leaving its page
sidebar = st.sidebar.container()
try:
    with frame.running():
        page.run()
except Exception as exc:  # Streamlit's rerun/stop signals are BaseExceptions and pass through
    running.show_error(exc)

with sidebar:
    loaded = models.loaded_specs()
    st.caption(
        "Models in memory: " + ", ".join(markdown_escape(m, 60) for m in loaded)  # a typed path is user text
        if loaded
        else "No model loaded yet: the first run loads one (seconds; a model's very first use converts it, 10-40 s)."
    )
    st.caption(f"Runs this session: {len(running.session_runs())}")
    st.caption(runstore.where())
    with st.expander("About this machine"):
        st.caption(tokconv.RUNTIME.notice())  # how the models run here (the fast path): for the curious
