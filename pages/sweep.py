"""Sweep: iterations to convergence across seeds and lengths, against the original's claims."""

import streamlit as st

from tokconv import charts, frames
from tokconv.catalog import DEFAULT_MODEL_A, DEFAULT_MODEL_B
from tokconv.records import MAX_ITERATIONS, MODES, RunConfig
from ui import controls, engine, frame, views

frame.inside_frame()

LENGTHS = [2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64]
KEYS = "sweep_keys"  # session state: the run keys of the latest sweep

views.page_intro(
    "Sweep: how long until it settles?",
    "Run one mode many times, over several start lengths and seeds, and see how many iterations each run takes. "
    "The dashed lines are the original's claims: sequential solo in **2 iterations**, single-token solo in "
    "**about 2.5 × length**, adversarial-single in **about 3 × length**. Runs go one after another; keep it small at first.",
)

c1, c2 = st.columns(2)
with c2:
    mode = controls.mode_picker(MODES, "sweep_mode", "sequential")
with c1:
    model = controls.model_picker("Model" if mode not in ("adversarial", "adversarial-single") else "Model A", "sweep_model", DEFAULT_MODEL_A)
    model_b = controls.model_picker("Model B", "sweep_model_b", DEFAULT_MODEL_B) if mode.startswith("adversarial") else None
c3, c4, c5, c6 = st.columns([2, 1, 1, 1])
lengths = c3.multiselect(
    "Lengths (tokens)", LENGTHS, default=[4, 8], key="sweep_lengths", bind="query-params",
    help="Start lengths to try. Each length runs once per seed; long single-token runs take about 3 iterations per token.",
)
n_seeds = c4.number_input("Seeds", 1, 50, 3, key="sweep_seeds", bind="query-params", help="How many random starts per length (seeds first seed, first seed + 1, ...).")
first = c5.number_input("First seed", 0, 2**31 - 1, 0, key="sweep_first_seed", bind="query-params", help="The seed of the first start; the others count up from it.")
iterations = c6.number_input("Max iterations", 1, MAX_ITERATIONS, 100, step=10, key="sweep_iterations", bind="query-params", help="Each run stops here if it has not converged.")
plan = [(n, seed) for n in sorted(lengths) for seed in range(int(first), int(first) + int(n_seeds))]
st.caption(f"{len(plan)} run(s). Identical runs made earlier (here or on other pages) are reused.")

if st.button("Run sweep", type="primary", key="sweep_run", disabled=not plan, help="Run every length × seed one after another."):
    cancel = st.empty()
    cancel.button("Cancel", key="sweep_cancel", help="Stop after the current step; finished runs stay in the chart.")
    bar, line = st.progress(0.0), st.empty()
    keys: list[str] = []
    st.session_state[KEYS] = keys
    for i, (n, seed) in enumerate(plan):
        bar.progress(i / len(plan), text=f"Run {i + 1} of {len(plan)}: length {n}, seed {seed}")

        def config(n=n, seed=seed) -> RunConfig:
            return RunConfig(mode=mode, model_a=model.spec(), model_b=model_b.spec() if model_b else None, length=n, iterations=int(iterations), seed=seed)

        result = engine.safe_execute(config, "sweep", live=False, tick=line.caption)
        if result is None:
            break
        keys.append(engine.run_key(result.config))
    bar.progress(1.0, text=f"{len(keys)} of {len(plan)} run(s) done")
    line.empty()
    cancel.empty()

runs = [r for r in (engine.find_run(k) for k in st.session_state.get(KEYS, [])) if r is not None]
if runs:
    st.divider()
    sweep = frames.sweep_frame(runs)
    summary = frames.sweep_summary(sweep)
    first_run = runs[0]
    st.subheader(f"{len(runs)} run(s): {first_run['mode']} · {' vs '.join(first_run['models'])}")
    rates = st.columns(3)
    rates[0].metric("Converged", f"{100 * sweep['converged'].mean():.0f}%", help="Runs that reached a fixed point.")
    rates[1].metric("Oscillating", f"{100 * sweep['oscillating'].mean():.0f}%", help="Runs where a state came back: a cycle that would go on forever.")
    rates[2].metric("Mean iterations", f"{sweep['iterations'].mean():.1f}", help="Over all runs, however they ended.")
    ref = frames.reference_frame(sweep["length"])
    views.chart_block(charts.sweep_chart(sweep, ref), sweep, "sweep_runs", "sweep_chart")
    st.caption("Per length: the share of runs that converged or oscillated, and their iterations.")
    st.dataframe(summary, hide_index=True, width="stretch", column_config={
        "converged_rate": st.column_config.NumberColumn("converged", format="percent"),
        "oscillating_rate": st.column_config.NumberColumn("oscillating", format="percent"),
        "mean_iterations": st.column_config.NumberColumn("mean iterations", format="%.1f"),
    })
    views.download_csv(summary, "sweep_summary", "sweep_summary_csv", "Download the summary (CSV)")
