"""Solo: one model converges on a sequence by itself."""

import streamlit as st

from tokconv.experiments import SOLO_MODES, RunConfig
from tokconv.models import DEFAULT_MODEL_A
from ui import controls, frame, running, views

frame.inside_frame()

views.page_intro(
    "Solo: one model on its own",
    "Start from random tokens and let one model rewrite them with its own predictions until it agrees with itself. "
    "A single model usually settles quickly: the greedy left-to-right mode needs just **2 iterations**.",
)

linked = running.linked_run(battle=False)  # ?run=ID: a saved solo run (fills in the settings the link does not give)
c1, c2 = st.columns(2)
with c1:
    model = controls.model_picker("Model", "model", DEFAULT_MODEL_A)
with c2:
    mode = controls.mode_picker(SOLO_MODES, "mode", "sequential")
s = controls.run_settings()


def config() -> RunConfig:
    return RunConfig(
        mode=mode, model_a=model.spec(), length=s.length, iterations=s.iterations, seed=s.seed,
        start_text=s.start_text, block_after=s.block_after, dtype=s.dtype,
    )


clicked = st.button("Run", type="primary", key="solo_run", disabled=bool(s.problems),
                    help=s.run_help or "Run with these settings (identical settings open the saved run instead of running again).")
if s.problems:
    st.caption("Run is off until the settings marked in red are in range.")
shown = running.run_or_show(config, "solo", clicked, linked)

if shown is not None:
    st.divider()
    running.show_header(shown, "solo run")
    views.run_view(shown.result, f"solo_{shown.result.config.key()}")
