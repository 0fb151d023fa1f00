"""Pieces of the result pages: token chips, the status line, charts with downloads, the run view, fingerprint comparison."""

from __future__ import annotations

import html
import math

import altair as alt
import pandas as pd
import streamlit as st

from tokconv.analysis import charts, compare, frames
from tokconv.analysis.display import STATUS_WORDS, token_repr, visible
from tokconv.experiments import RunResult

from .plain import md  # model names (typed paths, imported runs) in markdown elements

# Semi-transparent fills and borders read well on both the light and the dark theme.
_CHIP = "display:inline-block;margin:2px 1px;padding:0 4px;border-radius:4px;font-family:monospace;white-space:pre;"
_PLAIN = "background:rgba(128,128,128,0.12);border:1px solid rgba(128,128,128,0.35);"
_SIDE_STYLE = {
    0: "background:rgba(76,120,168,0.40);border:1px solid rgba(76,120,168,0.95);",  # model A, blue
    1: "background:rgba(245,133,24,0.40);border:1px solid rgba(245,133,24,0.95);",  # model B, orange
}


def chips_html(pieces: list[str], changed: dict[int, int] | None = None, notes: dict[int, str] | None = None) -> str:
    """Tokens as chips with whitespace visible; ``changed`` maps position -> model index (0 A, 1 B) to highlight."""
    changed, notes = changed or {}, notes or {}
    out = []
    for i, text in enumerate(pieces):
        style = _CHIP + _SIDE_STYLE.get(changed.get(i, -1), _PLAIN)
        title = html.escape(notes.get(i, f"position {i}: {token_repr(text)}"), quote=True)
        out.append(f'<span style="{style}" title="{title}">{html.escape(frames.chip_label(text))}</span>')
        if "\n" in text:
            out.append("<br>")
    return '<div style="line-height:1.9">' + "".join(out) + "</div>"


def legend_html(models: list[str]) -> str:
    """A one-line legend: which color stands for which model's change."""
    items = [f'<span style="{_CHIP}{_SIDE_STYLE[i]}">{html.escape(m)}</span>' for i, m in enumerate(models[:2])]
    return '<div style="font-size:0.85em">changed by ' + " ".join(items) + "</div>"


def status_sentence(r: RunResult) -> str:
    """How the run ended, in words."""
    n = r.iterations
    its = f"{n} iteration{'s' if n != 1 else ''}"
    if r.status == "converged":
        return f"Converged after {its}."
    if r.status == "oscillating":
        return f"Oscillating: the same state comes back every {r.period} iterations (detected after {its})."
    if r.status == "all-blocked":
        blocked = len(r.iterations_log[-1].blocked) if r.iterations_log else 0
        return f"Blocked {blocked} position{'s' if blocked != 1 else ''} and stopped after {its}: every remaining disagreement is at a blocked position."
    if r.status == "max-iterations":
        return f"Stopped at the iteration limit ({its}) without converging."
    if r.status == "interrupted":
        return f"Interrupted after {its}; below is how far it got."
    return f"{STATUS_WORDS.get(r.status, r.status).capitalize()} after {its}."


def download_csv(df: pd.DataFrame, name: str, key: str, label: str = "Download the table (CSV)") -> None:
    st.download_button(label, df.to_csv(index=False).encode(), f"{name}.csv", "text/csv", key=key, on_click="ignore",
                       help="The numbers behind this chart or table, for a spreadsheet.")


def chart_block(chart: alt.TopLevelMixin, df: pd.DataFrame, name: str, key: str) -> None:
    """An Altair chart with downloads of its data (CSV) and of the chart itself (HTML with SVG/PNG export)."""
    st.altair_chart(chart, width="stretch")
    c1, c2 = st.columns(2)
    with c1:
        download_csv(df, name, f"{key}_csv", "Data (CSV)")
    with c2:
        st.download_button(
            "Chart (HTML)", chart.to_html().encode(), f"{name}.html", "text/html", key=f"{key}_html", on_click="ignore",
            help="A standalone page with this chart; its ⋯ menu saves it as SVG or PNG (opening it needs internet for the chart library).",
        )


def summary(r: RunResult) -> None:
    """The status line and what ran."""
    st.subheader(status_sentence(r))
    c = r.cost
    cost = f" · {c.forward_passes} forward passes, {c.wall_seconds:.1f} s" if c.forward_passes else ""
    st.caption(f"{r.config.mode} · {md(' vs '.join(r.models))} · {len(r.start_tokens)} start tokens · seed {r.config.seed}{cost}")


def sequence_scrubber(r: RunResult, key: str) -> None:
    """The sequence at any iteration (slider), with that iteration's changes highlighted."""
    n = len(r.iterations_log)
    if n == 0:
        st.markdown(chips_html([r.start_text]), unsafe_allow_html=True)
        return
    k = st.slider("Iteration", 0, n, n, key=key, help="Step through the run: 0 is the random start; each step shows the sequence after that iteration, with the tokens it changed highlighted.")
    seq = frames.sequence_frame(r, k)
    changed = {int(p): (0 if side == "A" else 1) for p, side in zip(seq["position"], seq["side"]) if side}
    notes = {
        int(row.position): f"position {row.position}: {token_repr(row.old_text)} → {token_repr(row.text)} by {row.model}"
        for row in seq.itertuples() if row.changed
    }
    if k == 0:
        st.caption("The start sequence.")
    else:
        e = r.iterations_log[k - 1]
        blocked = f"; blocked positions: {', '.join(map(str, e.blocked))}" if e.blocked else ""
        st.caption(f"After iteration {k}: {md(e.model)} changed {e.changes} token(s){blocked}.")
    st.markdown(chips_html(list(seq["text"]), changed, notes), unsafe_allow_html=True)
    st.markdown(legend_html(r.models), unsafe_allow_html=True)
    with st.expander("Start and final text"):
        st.code(f"start: {visible(r.start_text)}\nfinal: {visible(r.final_text)}", language=None)


def run_view(r: RunResult, key: str, *, battle: bool = False) -> None:
    """Everything about one run: status, scrubber, charts, fingerprints, tables and downloads."""
    summary(r)
    sequence_scrubber(r, f"scrub_{key}")
    steps, flips, ins, its = frames.steps_frame(r), frames.flips_frame(r), frames.insertions_frame(r), frames.iterations_frame(r)
    tabs = st.tabs(["Changes", "Fingerprints" if battle else "Inserted tokens", "Per iteration", "All steps"])
    with tabs[0]:
        if steps.empty:
            st.info("No token was changed: the start already agreed with the model everywhere.")
        else:
            longest = max(len(e.tokens) for e in r.iterations_log)
            chart_block(charts.flip_heatmap(steps, positions=longest, iterations=len(r.iterations_log)), steps, "flips", f"{key}_heat")
            if battle:
                st.caption("Positions are token indices in the acting model's own tokenization; two models with different tokenizers split the same text differently, so their positions line up only roughly.")
            chart_block(charts.flip_counts_chart(flips), flips, "flips_per_position", f"{key}_flips")
    with tabs[1]:
        fingerprint_view(r, ins, key, battle=battle)
    with tabs[2]:
        chart_block(charts.changes_chart(its), its, "iterations", f"{key}_its")
    with tabs[3]:
        st.dataframe(steps.drop(columns=["old_text", "new_text"]), hide_index=True, width="stretch")
        download_csv(steps, "steps", f"{key}_steps_csv")
    st.download_button(
        "Download the whole run (JSON)", r.to_json(indent=1).encode(), "tokconv-run.json", "application/json",
        key=f"{key}_json", on_click="ignore", help="Every step and iteration in tokconv's versioned run format (also read by `tokconv report`).",
    )


def battle_metrics(r: RunResult) -> None:
    """A battle's headline numbers: turns, oscillation period, and how many tokens each model changed."""
    by = {m: sum(1 for x in r.steps if x.model == m) for m in r.models}
    cols = st.columns(4)
    cols[0].metric("Iterations", r.iterations, help="Turns taken; the models alternate, A first.")
    cols[1].metric("Oscillation period", r.period or "none", help="How many iterations until the same state (and the same player to move) comes back; 'none' when no cycle was found.")
    for col, (m, n) in zip(cols[2:], by.items()):
        col.metric(f"Changes by {md(m)}", n, help="Tokens this model replaced over the whole battle.")


def fingerprint_comparison(p: dict[str, int], q: dict[str, int], left: str, right: str, key: str) -> None:
    """Two fingerprints side by side: divergence, overlap, shared tokens, a chart and both token tables."""
    js, common = compare.js_divergence(p, q), compare.overlap(p, q)
    shared = compare.shared_tokens(p, q)
    m1, m2, m3 = st.columns(3)
    m1.metric("Jensen-Shannon divergence", "n/a" if math.isnan(js) else f"{js:.2f} bits", help="0 bits: the same token mix; 1 bit: no token in common. Symmetric.")
    m2.metric("Overlap", f"{100 * common:.0f}%", help="The share of insertions the two have in common (sum over tokens of the smaller share).")
    m3.metric("Tokens both inserted", len(shared), help="How many distinct tokens appear in both fingerprints.")
    st.markdown(compare.describe(js, common))
    if shared:
        st.caption("Shared: " + md(", ".join(token_repr(t) for t in shared[:12])))
    table = compare.compare_frame(p, q, ("left", "right"), top=20)
    chart_block(charts.compare_chart(table), table, "fingerprint_comparison", key)
    cols = st.columns(2)
    for col, name, counts in ((cols[0], left, p), (cols[1], right, q)):
        with col:
            st.caption(md(name))  # names carry model names and start texts
            total = sum(counts.values()) or 1
            st.dataframe(
                [{"token": token_repr(t), "times": n, "share": f"{100 * n / total:.0f}%"} for t, n in counts.items()],
                hide_index=True, width="stretch",
            )


def fingerprint_view(r: RunResult, ins: pd.DataFrame, key: str, *, battle: bool) -> None:
    """The inserted-token bar chart(s): one per model side by side in a battle."""
    if ins.empty:
        st.info("No token was inserted in this run.")
        return
    if not battle:
        chart_block(charts.insertions_chart(ins), ins, "insertions", f"{key}_ins")
        return
    st.caption("A fingerprint is what each model keeps inserting while the other contests it.")
    cols = st.columns(2)
    for col, model in zip(cols, r.models):
        with col:
            mine = ins[ins["model"] == model]
            if mine.empty:
                st.info(f"{md(model)} inserted nothing.")
                continue
            chart_block(charts.insertions_chart(mine, title=model), mine, f"fingerprint_{model}", f"{key}_fp_{model}")


def page_intro(title: str, text: str) -> None:
    st.title(title)
    st.markdown(text)
