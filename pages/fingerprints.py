"""Fingerprints: compare what models insert, solo vs under pressure, or model vs model."""

import streamlit as st

from tokconv import charts, compare
from tokconv.display import token_repr
from tokconv.records import RunResult
from ui import engine, frame, views

frame.inside_frame()

views.page_intro(
    "Compare fingerprints",
    "A fingerprint is the mix of tokens a model inserted during a run. Compare one model alone with the same model "
    "under adversarial pressure (a Solo run and a Battle run), or model A with model B of one battle. "
    "The runs come from this browser session; you can also add runs saved as JSON.",
)

uploads = st.file_uploader(
    "Add saved runs (JSON)", type="json", accept_multiple_files=True, key="fp_upload",
    help="Run files downloaded from the Solo or Battle page ('Download the whole run'), or written by `tokconv run --json`.",
)
sources: dict[str, dict[str, int]] = {}  # "model in run" -> token -> insertions
of_run: dict[str, str] = {}  # "model in run" -> run key
for entry in engine.session_runs():
    if entry["origin"] == "sweep":
        continue
    cut = " (interrupted)" if entry["result"]["status"] == "interrupted" else ""
    for model, counts in entry["result"]["fingerprints"].items():
        name = f"{model} in {entry['label']}{cut}"
        sources[name], of_run[name] = counts, entry["key"]
for f in uploads or []:
    try:
        r = RunResult.from_json(f.getvalue().decode("utf-8", errors="replace"))
    except Exception as exc:
        st.caption(f"{f.name} could not be read:")
        engine.show_error(exc)
        continue
    for model, counts in r.fingerprints.items():
        sources[f"{model} in {f.name}"] = counts

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
p, q = sources[left], sources[right]

js, common = compare.js_divergence(p, q), compare.overlap(p, q)
shared = compare.shared_tokens(p, q)
m1, m2, m3 = st.columns(3)
m1.metric("Jensen-Shannon divergence", "n/a" if js != js else f"{js:.2f} bits", help="0 bits: the same token mix; 1 bit: no token in common. Symmetric.")
m2.metric("Overlap", f"{100 * common:.0f}%", help="The share of insertions the two have in common (sum over tokens of the smaller share).")
m3.metric("Tokens both inserted", len(shared), help="How many distinct tokens appear in both fingerprints.")
st.markdown(compare.describe(js, common))
if shared:
    st.caption("Shared: " + ", ".join(token_repr(t) for t in shared[:12]))

table = compare.compare_frame(p, q, ("left", "right"), top=20)
views.chart_block(charts.compare_chart(table), table, "fingerprint_comparison", "fp_cmp")
cols = st.columns(2)
for col, name, counts in ((cols[0], left, p), (cols[1], right, q)):
    with col:
        st.caption(name)
        total = sum(counts.values()) or 1
        st.dataframe(
            [{"token": token_repr(t), "times": n, "share": f"{100 * n / total:.0f}%"} for t, n in counts.items()],
            hide_index=True, width="stretch",
        )
