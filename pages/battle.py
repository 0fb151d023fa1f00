"""Battle: two models take turns rewriting the same sequence."""

import streamlit as st

from tokconv.experiments import ADVERSARIAL_MODES, RunConfig
from tokconv.models import DEFAULT_MODEL_A, DEFAULT_MODEL_B
from ui import controls, frame, running, views

frame.inside_frame()

views.page_intro(
    "Battle: two models, one sequence",
    "Two models take turns replacing tokens with their own predictions. Models with different training rarely agree, "
    "so the sequence **oscillates**; the tokens each keeps inserting under this pressure are its **fingerprint**. "
    "Every change below is colored by the model that made it: model A blue, model B orange.",
)

c1, c2, c3 = st.columns(3)
with c1:
    model_a = controls.model_picker("Model A", "model_a", DEFAULT_MODEL_A)
with c2:
    model_b = controls.model_picker("Model B", "model_b", DEFAULT_MODEL_B)
with c3:
    mode = controls.mode_picker(ADVERSARIAL_MODES, "battle_mode", "adversarial-single")
s = controls.run_settings()


def config() -> RunConfig:
    return RunConfig(
        mode=mode, model_a=model_a.spec(), model_b=model_b.spec(), length=s.length, iterations=s.iterations,
        seed=s.seed, start_text=s.start_text, block_after=s.block_after,
    )


if st.button("Run", type="primary", key="battle_run", help="Run the battle (identical settings reuse the earlier result)."):
    result, current = running.safe_execute(config, "battle"), True
else:
    result, current = running.shown_run(config, "battle")

if result is not None:
    st.divider()
    if not current:
        st.caption("This is your last battle; the settings above have changed since. Press Run to run them.")
    views.battle_metrics(result)
    views.run_view(result, f"battle_{result.config.key()}", battle=True)
