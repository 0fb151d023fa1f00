"""History: every saved run, to filter, open, compare, export, delete, or import from elsewhere."""

import datetime as dt

import streamlit as st

from ui import frame, history, running, runstore, views

frame.inside_frame()

SHOWN = 1000  # at most this many runs in the table and the pickers (newest first)
ANY = None

views.page_intro(
    "History: saved runs",
    "Every run made in the dashboard (Solo, Battle, the Home example, Sweep) and by the `tokconv` command line is saved "
    "in a local database. Filter the runs, open one, compare their fingerprints, export them, or delete them.",
)
store = runstore.store()
if store is None:
    runstore.show_problem(always=True)
    st.stop()
st.caption(f"Database: `{store.path}` (set the TOKCONV_DB variable to use another one).")
history.show_flash()

everything = store.list(limit=10**9)
with st.expander("Import runs from a JSON file", expanded=not everything):
    st.file_uploader(
        "Run files (JSON)", type="json", accept_multiple_files=True, key="hist_import",
        on_change=history.import_uploads, args=(store, "hist_import"),
        help="Files from 'Export' here, `tokconv runs export --format json`, `tokconv run --json`, or a Solo/Battle page's "
             "'Download the whole run'. Each file is imported once, whole or not at all; runs already saved are skipped, "
             "and a file with a bad run is refused with the field at fault (the other files are still imported).",
    )
if not everything:
    st.info("No saved runs yet. Runs you make on the other pages, and with `tokconv run` or `tokconv sweep`, appear here.")
    c1, c2, c3 = st.columns(3)
    c1.page_link("pages/solo.py", label="Solo", icon=":material/person:")
    c2.page_link("pages/battle.py", label="Battle", icon=":material/compare_arrows:")
    c3.page_link("pages/sweep.py", label="Sweep", icon=":material/stacked_line_chart:")
    st.stop()


def _any(v) -> str:
    return "any" if v is ANY else str(v)


f1, f2, f3, f4, f5 = st.columns(5)
model = f1.selectbox("Model", [ANY, *sorted({m for r in everything for m in (r.model_a, r.model_b) if m})], format_func=_any,
                     key="hist_model", help="Runs in which this model took part, as model A or model B.")
mode = f2.selectbox("Mode", [ANY, *sorted({r.mode for r in everything})], format_func=_any, key="hist_mode",
                    help="Only runs of this convergence mode.")
length = f3.selectbox("Length", [ANY, *sorted({r.length for r in everything})], format_func=_any, key="hist_length",
                      help="Only runs that started from this many tokens.")
status = f4.selectbox("Status", [ANY, *sorted({r.status for r in everything})], format_func=_any, key="hist_status",
                      help="How the run ended: converged, oscillating, all-blocked, max-iterations, or interrupted (cancelled part way).")
since = f5.date_input("Saved on or after", value=None, key="hist_since", format="YYYY-MM-DD",
                      help="Only runs saved on this day (UTC) or later. Leave empty for all dates.")
rows = store.list(model=model, mode=mode, length=length, status=status,
                  since=since.isoformat() if isinstance(since, dt.date) else None, limit=SHOWN)
if not rows:
    st.info(f"None of the {len(everything)} saved runs matches these filters.")
    st.stop()
by_id = {r.id: r for r in rows}
note = f" (the newest {SHOWN}: narrow the filters to see older ones)" if len(rows) == SHOWN else ""
st.caption(f"{len(rows)} of {len(everything)} saved run(s){note}.")
st.dataframe(history.table(rows), hide_index=True, width="stretch", key="hist_table")

history.keep_valid(history.SELECTED, list(by_id))
c1, c2, c3 = st.columns([6, 1, 1], vertical_alignment="bottom")
selected = c1.multiselect(
    "Selected runs", list(by_id), format_func=lambda i: history.label(by_id[i]), key=history.SELECTED,
    placeholder="Pick runs to export or delete", help="The runs that Export and Delete below work on.",
)
c2.button("Select all", key="hist_all", on_click=lambda: st.session_state.update({history.SELECTED: list(by_id)}),
          help="Select every run shown in the table (after the filters).", width="stretch")
c3.button("Clear", key="hist_none", on_click=lambda: st.session_state.update({history.SELECTED: []}),
          help="Select no run.", width="stretch")

tab_open, tab_compare, tab_export, tab_delete = st.tabs(["Open a run", "Compare fingerprints", "Export", "Delete"])
with tab_open:
    history.open_linked(by_id)  # ?run=ID: the link's run is the one opened
    rid = st.selectbox("Run", list(by_id), format_func=lambda i: history.label(by_id[i]), key="hist_open",
                       help="The run to show: a solo run in the Solo view, a battle in the Battle view. "
                            "The page's address names it (?run=…), so a copied link opens this run.")
    history.link_to(rid)
    try:
        result = store.get(rid)
    except Exception as exc:
        running.show_error(exc)
    else:
        st.caption(f"Run #{rid}, saved {history.saved_at(by_id[rid])}.")
        if result.config.adversarial:
            views.battle_metrics(result)
        views.run_view(result, f"hist_{rid}", battle=result.config.adversarial)

with tab_compare:
    options = history.sides(rows)
    keys = list(options)
    history.keep_valid("hist_left", keys, keys[:1])
    history.keep_valid("hist_right", keys, keys[1:2])
    c1, c2 = st.columns(2)
    left = c1.multiselect("Left: fingerprint(s)", keys, format_func=options.get, key="hist_left",
                          help="One model in one run, or several: their insertions are added up into one fingerprint (e.g. the same model over many seeds).")
    right = c2.multiselect("Right: fingerprint(s)", keys, format_func=options.get, key="hist_right",
                           help="What to compare the left side with: another model, or the same model in other runs or modes.")
    if not left or not right:
        st.info("Pick at least one fingerprint on each side.")
    else:
        try:
            p, q = history.group_fingerprint(store, left), history.group_fingerprint(store, right)
        except Exception as exc:
            running.show_error(exc)
        else:
            names = [options[g[0]] if len(g) == 1 else f"{len(g)} fingerprints added up" for g in (left, right)]
            views.fingerprint_comparison(p, q, *names, "hist_cmp")

with tab_export:
    if not selected:
        st.info("Select runs above (or press 'Select all') to export them.")
    else:
        st.caption(f"{len(selected)} selected run(s). JSON keeps whole runs; CSV and Parquet hold one row per token replacement.")
        cols = st.columns(len(history.FORMATS))
        for col, (fmt, (name, mime, help_text)) in zip(cols, history.FORMATS.items()):
            col.download_button(
                name, history.exporter(store, list(selected), fmt), f"tokconv-runs.{fmt}", mime, key=f"hist_export_{fmt}",
                on_click="ignore", help=help_text, icon=":material/download:",
            )

with tab_delete:
    if not selected:
        st.info("Select runs above to delete them.")
    else:
        st.warning(f"Deleting removes {len(selected)} run(s) from the database for good: " + ", ".join(f"#{i}" for i in selected) + ".")
        sure = st.checkbox(f"Yes, delete these {len(selected)} run(s)", key=f"hist_confirm_{'_'.join(map(str, sorted(selected)))}",
                           help="A second step, so that a click cannot delete runs by accident.")
        st.button(f"Delete {len(selected)} run(s)", key="hist_delete", type="primary", disabled=not sure,
                  on_click=history.delete_runs, args=(store, list(selected)),
                  help="Delete the selected runs (tick the box first). Exports made earlier keep their copies.")
