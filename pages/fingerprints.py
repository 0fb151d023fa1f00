"""Fingerprints: compare what models insert, solo vs under pressure, or model vs model."""

import streamlit as st

from tokconv.store import runs_from_json
from ui import frame, running, views

frame.inside_frame()

views.page_intro(
    "Compare fingerprints",
    "A fingerprint is the mix of tokens a model inserted during a run. Compare one model alone with the same model "
    "under adversarial pressure (a Solo run and a Battle run), or model A with model B of one battle. "
    "The runs come from this browser session; you can also add runs saved as JSON, and compare any saved runs, "
    "or groups of them, on the History page.",
)

uploads = st.file_uploader(
    "Add saved runs (JSON)", type="json", accept_multiple_files=True, key="fp_upload",
    help="Run files downloaded from the Solo or Battle page ('Download the whole run'), written by `tokconv run --json`, "
         "or exported from History. A file that is not a valid run file is reported, naming the field at fault; the others are used.",
)
sources: dict[str, dict[str, int]] = {}  # "model in run" -> token -> insertions
of_run: dict[str, str] = {}  # "model in run" -> run key
for entry in running.session_runs():
    if entry["origin"] == "sweep":
        continue
    cut = " (interrupted)" if entry["result"].status == "interrupted" else ""
    for model, counts in entry["result"].fingerprints.items():
        name = f"{model} in {entry['label']}{cut}"
        sources[name], of_run[name] = counts, entry["key"]
for f in uploads or []:  # a bad file is reported (naming the field at fault) and skipped; the others are used
    try:
        runs = runs_from_json(f.getvalue(), f.name)
    except Exception as exc:
        st.caption(f"{f.name} could not be read:")
        running.show_error(exc)
        continue
    for i, r in enumerate(runs, 1):
        where = f.name if len(runs) == 1 else f"{f.name} (run {i})"  # an export holds several runs
        for model, counts in r.fingerprints.items():
            sources[f"{model} in {where}"] = counts

if len(sources) < 2:
    st.info("Run something first: a battle gives two fingerprints at once, and a solo run of the same model gives a third to compare with.")
    c1, c2 = st.columns(2)
    c1.page_link("pages/solo.py", label="Solo", icon=":material/person:")
    c2.page_link("pages/battle.py", label="Battle", icon=":material/compare_arrows:")
    st.stop()

names = list(sources)
battle = [n for n in names if of_run.get(n) == st.session_state.get("battle_last")]
default_left, default_right = battle[:2] if len(battle) >= 2 else names[:2]  # the latest battle's two sides
c1, c2 = st.columns(2)
left = c1.selectbox("Left fingerprint", names, index=names.index(default_left), key="fp_left", help="A model in one of your runs.")
right = c2.selectbox("Right fingerprint", names, index=names.index(default_right), key="fp_right", help="Another model, or the same model in another run.")
views.fingerprint_comparison(sources[left], sources[right], left, right, "fp_cmp")
