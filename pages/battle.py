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

linked = running.linked_run(battle=True)  # ?run=ID: a saved battle (fills in the settings the link does not give)
c1, c2, c3 = st.columns(3)
with c1:
    model_a = controls.model_picker("Model A", "model_a", DEFAULT_MODEL_A)
with c2:
    model_b = controls.model_picker("Model B", "model_b", DEFAULT_MODEL_B)
with c3:
    mode = controls.mode_picker(ADVERSARIAL_MODES, "battle_mode", "adversarial-single")
s = controls.run_settings(battle=True)
views.vocab_panel(model_a.choice if model_a.choice != controls.OTHER else model_a.other,
                  model_b.choice if model_b.choice != controls.OTHER else model_b.other)


def config() -> RunConfig:
    return RunConfig(
        mode=mode, model_a=model_a.spec(), model_b=model_b.spec(), length=s.length, iterations=s.iterations,
        seed=s.seed, start_text=s.start_text, block_after=s.block_after, dtype=s.dtype, share=s.share, oov=s.oov,
    )


clicked = st.button("Run", type="primary", key="battle_run", disabled=bool(s.problems),
                    help=s.run_help or "Run the battle (identical settings open the saved run instead of running again).")
if s.problems:
    st.caption("Run is off until the settings marked in red are in range.")
shown = running.run_or_show(config, "battle", clicked, linked)

if shown is not None:
    st.divider()
    running.show_header(shown, "battle")
    views.battle_metrics(shown.result)
    views.run_view(shown.result, f"battle_{shown.result.config.key()}", battle=True)
