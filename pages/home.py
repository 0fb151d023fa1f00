"""Home: what the experiment is, what the original found, and a quick first run."""

import streamlit as st

from tokconv.experiments import RunConfig
from tokconv.models import DEFAULT_MODEL_A
from ui import frame, running, views

frame.inside_frame()

DEMO = RunConfig(mode="sequential", model_a=DEFAULT_MODEL_A, length=8, iterations=10, seed=0)

st.title("tokconv: watch language models converge, and fight")
st.markdown(
    """
A language model reads a sequence of **tokens** (pieces of words) and, at every position, predicts which token
should come next. tokconv starts from a handful of random tokens and asks the model where it disagrees most with
what is written. It replaces that token with the model's own favourite, and repeats.

- **Convergence**: after a while the model agrees with every token. The sequence is a *fixed point*: the model
  would write exactly this. One model on its own gets there fast.
- **Oscillation**: two different models taking turns never agree. One writes its token, the other writes its own
  back, and the sequence cycles forever; the *period* is how many turns until it repeats.
- **Blocking**: in the one-token-at-a-time modes, a position that has flipped 3 times is frozen, so a fight has
  to end somewhere.
- **Fingerprint**: the tokens a model keeps inserting while another model contests it. Under pressure a model
  falls back on what it can defend in the widest range of contexts, which says something about what it was trained on.
"""
)
st.subheader("What the original experiment found")
st.markdown(
    """
| mode | one model | two models |
|---|---|---|
| greedy left-to-right (*sequential*, *adversarial*) | 2 iterations | never converges (oscillates) |
| one token per iteration, with blocking (*single*, *adversarial-single*) | about 2.5 × length | about 3 × length |

Under adversarial pressure **Llama 3B collapsed to `!`** (100% of its insertions), a token it never used on its own;
**Qwen 1.5B fell back to spaces and Chinese characters** (输入, 错误, 的). The bundled models here are smaller
(SmolLM2, Qwen2.5-Coder, Gemma 3), so see for yourself what their fingerprints look like.
"""
)

st.subheader("Try it")
st.markdown(f"A small run: **{DEMO.model_a}**, sequential mode, {DEMO.length} random tokens. It takes a few seconds.")
if st.button("Run a small example", type="primary", key="home_run", help="Runs SmolLM2 on 8 random tokens in sequential mode."):
    result = running.safe_execute(lambda: DEMO, "home")
else:
    result = running.last_run("home")
if result is not None:
    views.summary(result)
    views.sequence_scrubber(result, f"home_scrub_{DEMO.key()}")
    if result.status == "converged":
        st.markdown(
            "Slide to 0 to see the random start. The model rewrote it into text it finds plausible, and its last pass "
            "changed nothing: a fixed point. Open **Solo** to try other modes and lengths."
        )

st.subheader("Where next")
c1, c2, c3, c4, c5 = st.columns(5)
c1.page_link("pages/solo.py", label="Solo: one model", icon=":material/person:", help="Run one model in any solo mode with your own settings.")
c2.page_link("pages/battle.py", label="Battle: two models", icon=":material/compare_arrows:", help="Two models take turns; see who changes what, and their fingerprints.")
c3.page_link("pages/fingerprints.py", label="Compare fingerprints", icon=":material/fingerprint:", help="Compare what models insert, solo vs under pressure, or model vs model.")
c4.page_link("pages/sweep.py", label="Sweep seeds and lengths", icon=":material/stacked_line_chart:", help="Iterations to convergence across many runs, against the original's claims.")
c5.page_link("pages/history.py", label="History: saved runs", icon=":material/history:", help="Every run is saved: filter, reopen, compare, export or delete them.")
