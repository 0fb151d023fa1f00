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

c1, c2 = st.columns(2)
with c1:
    model = controls.model_picker("Model", "model", DEFAULT_MODEL_A)
with c2:
    mode = controls.mode_picker(SOLO_MODES, "mode", "sequential")
s = controls.run_settings()


def config() -> RunConfig:
    return RunConfig(
        mode=mode, model_a=model.spec(), length=s.length, iterations=s.iterations, seed=s.seed,
        start_text=s.start_text, block_after=s.block_after,
    )


if st.button("Run", type="primary", key="solo_run", help="Run with these settings (identical settings reuse the earlier result)."):
    result, current = running.safe_execute(config, "solo"), True
else:
    result, current = running.shown_run(config, "solo")

if result is not None:
    st.divider()
    if not current:
        st.caption("This is your last solo run; the settings above have changed since. Press Run to run them.")
    views.run_view(result, f"solo_{result.config.key()}")
