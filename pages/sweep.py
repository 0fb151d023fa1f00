"""Sweep: iterations to convergence across seeds and lengths, against the original's claims.

The grid runs through ``tokconv.experiments.sweep.run_sweep``, as ``tokconv sweep`` does: each run is saved to
the run store as it finishes, runs of one mode and length go in lockstep batches, and runs already saved
are skipped, so running a stopped sweep again resumes it.
"""

import streamlit as st

from tokconv.analysis import charts, frames
from tokconv.analysis.display import markdown_escape
from tokconv.experiments import MODES, SweepSpec
from tokconv.experiments.config import MAX_ITERATIONS
from tokconv.models import DEFAULT_MODEL_A, DEFAULT_MODEL_B
from ui import controls, frame, running, sweeping, views

frame.inside_frame()

LENGTHS = [2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64]

views.page_intro(
    "Sweep: how long until it settles?",
    "Run one mode many times, over several start lengths and seeds, and see how many iterations each run takes. "
    "Each dot is one run, colored by how it ended; the solid line is the mean of your runs at each length. "
    "The dashed lines are the original's claims: sequential solo in **2 iterations**, single-token solo in "
    "**about 2.5 × length**, adversarial-single in **about 3 × length**. Each run is saved as it finishes; running "
    "the same sweep again skips the runs already saved, so a stopped sweep picks up where it left off.",
)

c1, c2 = st.columns(2)
with c2:
    mode = controls.mode_picker(tuple(MODES), "sweep_mode", "sequential")
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
st.caption(f"{len(plan)} run(s). Runs already saved with the same settings (by an earlier sweep, another page or `tokconv sweep`) are skipped.")
stopped = sweeping.was_cut_short()


def spec() -> SweepSpec:
    return SweepSpec(
        model=model.spec(), mode=mode, model_b=model_b.spec() if model_b else None, lengths=tuple(sorted(lengths)),
        seeds=tuple(range(int(first), int(first) + int(n_seeds))), iterations=int(iterations),
    )


if st.button("Run sweep", type="primary", key="sweep_run", disabled=not plan, help="Run every length × seed, skipping runs already saved."):
    sweeping.run(spec)

last, runs = sweeping.last_sweep(), []
from_store = last is None and bool(plan)
if from_store:  # no sweep in this session (a shared link, a restarted server): what the database holds
    last = sweeping.grid_of(spec)
if last is not None:
    try:
        runs = sweeping.grid_runs(last)
    except Exception as exc:
        running.show_error(exc)
    message = sweeping.stopped_info(last, len(runs)) if stopped else None
    if message:
        st.info(message)
if runs:
    st.divider()
    if from_store:
        st.caption(f"{len(runs)} of the {len(last.keys)} run(s) of these settings are saved already (shown from the run "
                   "database). Press Run sweep to run the rest; the saved ones are skipped.")
    sweep = frames.sweep_frame(runs)
    summary = frames.sweep_summary(sweep)
    first_run = frames.as_result(runs[0])
    st.subheader(f"{len(runs)} run(s): {first_run.config.mode} · {markdown_escape(' vs '.join(first_run.models))}")
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
