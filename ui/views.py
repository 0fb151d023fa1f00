"""Pieces of the result pages: token chips, the status line, charts with downloads, the run view, fingerprint comparison.

Text that comes from users or models (model names, token text, labels, file names) is never read as Markdown
or HTML: it goes through ``st.text``, through :func:`~tokconv.analysis.display.markdown_escape` where only a
Markdown element fits (headings, metric labels), or through :func:`esc` inside the chips' HTML.
"""

from __future__ import annotations

import math
import re

import altair as alt
import pandas as pd
import streamlit as st

from tokconv.analysis import charts, compare, frames
from tokconv.analysis.display import ENTROPY_NOTE, MARKS_NOTE, STATUS_WORDS, markdown_escape, token_repr, visible
from tokconv.experiments import RunResult


# Semi-transparent fills and borders read well on both the light and the dark theme.
_CHIP = "display:inline-block;margin:2px 1px;padding:0 4px;border-radius:4px;font-family:monospace;white-space:pre;"
_PLAIN = "background:rgba(128,128,128,0.12);border:1px solid rgba(128,128,128,0.35);"
_SIDE_STYLE = {
    0: "background:rgba(76,120,168,0.40);border:1px solid rgba(76,120,168,0.95);",  # model A, blue
    1: "background:rgba(245,133,24,0.40);border:1px solid rgba(245,133,24,0.95);",  # model B, orange
}
_BLOCKED = "outline:2px dashed rgba(128,128,128,0.9);outline-offset:-1px;"
# HTML's special characters, those Markdown or Streamlit could read as formatting, and line breaks (a blank
# line would end the HTML block and hand the rest to the Markdown parser): all as character references, in one pass.
_LITERAL = str.maketrans({ch: f"&#{ord(ch)};" for ch in "&<>\"'\\`*_{}[]()#+!|~$\n\r"})


def esc(text: str) -> str:
    """``text`` as literal HTML text or attribute value, safe inside ``st.markdown(..., unsafe_allow_html=True)``
    (what ``html.escape(text, quote=True)`` does, and more)."""
    return str(text).translate(_LITERAL)


def chips_html(
    pieces: list[str], changed: dict[int, int] | None = None, notes: dict[int, str] | None = None, blocked: set[int] | None = None
) -> str:
    """Tokens as chips with whitespace visible; ``changed`` maps position -> model index (0 A, 1 B) to highlight,
    ``blocked`` positions get a dashed outline. Every text is escaped: a token is shown, never interpreted."""
    changed, notes, blocked = changed or {}, notes or {}, blocked or set()
    out = []
    for i, text in enumerate(pieces):
        style = _CHIP + _SIDE_STYLE.get(changed.get(i, -1), _PLAIN) + (_BLOCKED if i in blocked else "")
        title = notes.get(i, f"position {i}: {token_repr(text)}") + (" (blocked)" if i in blocked else "")
        out.append(f'<span style="{style}" title="{esc(title)}">{esc(frames.chip_label(text))}</span>')
        if "\n" in text:
            out.append("<br>")
    return '<div style="line-height:1.9">' + "".join(out) + "</div>"


def legend_html(models: list[str], *, blocked: bool = False) -> str:
    """A one-line legend: which color stands for which model's change (and the blocked outline, if any)."""
    items = [f'<span style="{_CHIP}{_SIDE_STYLE[i]}">{esc(m)}</span>' for i, m in enumerate(models[:2])]
    extra = f' · <span style="{_CHIP}{_PLAIN}{_BLOCKED}">blocked</span>' if blocked else ""
    return '<div style="font-size:0.85em">changed by ' + " ".join(items) + extra + "</div>"


def file_stem(name: str) -> str:
    """A name safe as a file name on every system (a model name like org/model has a slash)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "chart"


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
    st.download_button(label, df.to_csv(index=False).encode(), f"{file_stem(name)}.csv", "text/csv", key=key, on_click="ignore",
                       help="The numbers behind this chart or table, for a spreadsheet.")


_CHART_FILES = (  # format, button label, help
    ("png", "Chart (PNG)", "The chart as a picture, for slides and documents."),
    ("svg", "Chart (SVG)", "The chart as a drawing that stays sharp at any size, for papers and editing."),
    ("html", "Chart (HTML)", "The chart as a web page you can open offline: hover for the numbers behind each mark."),
)


def _chart_file(chart: alt.TopLevelMixin, fmt: str):
    """The chart's file, made only when its button is pressed (rendering takes a second or two)."""
    return lambda: charts.chart_bytes(chart, fmt)


def chart_block(chart: alt.TopLevelMixin, df: pd.DataFrame, name: str, key: str) -> None:
    """An Altair chart with downloads of its data (CSV) and of the chart itself (PNG, SVG, offline HTML), made here."""
    st.altair_chart(chart, width="stretch")
    stem = file_stem(name)
    cols = st.columns(1 + len(_CHART_FILES))
    with cols[0]:
        download_csv(df, stem, f"{key}_csv", "Data (CSV)")
    for col, (fmt, label, help_text) in zip(cols[1:], _CHART_FILES):
        ext, mime = charts.CHART_FORMATS[fmt]
        col.download_button(label, _chart_file(chart, fmt), f"{stem}.{ext}", mime, key=f"{key}_{fmt}", on_click="ignore", help=help_text)


def summary(r: RunResult) -> None:
    """The status line and what ran."""
    st.subheader(status_sentence(r))
    c = r.cost
    cost = f" · {c.forward_passes} forward passes, {c.wall_seconds:.1f} s" if c.forward_passes else ""
    st.text(f"{r.config.mode} · {' vs '.join(r.models)} · {len(r.start_tokens)} start tokens · seed {r.config.seed}{cost}")
    if c.nonfinite_rows:
        st.warning(f"Numerics check: {c.nonfinite_rows} prediction(s) in this run came from broken numbers (NaN or "
                   "infinity in the model's scores); the moves made from them are flagged in the All steps tab.")
    if r.config.oov == "nan":
        st.caption("This run fed a NaN embedding wherever a model got a token id beyond its vocabulary: an emulation "
                   "of what an unchecked script can do, not normal behaviour.")


def sequence_scrubber(r: RunResult, key: str) -> None:
    """The sequence at any iteration (slider), with that iteration's changes highlighted."""
    n = len(r.iterations_log)
    if n == 0:
        st.markdown(chips_html([r.start_text]), unsafe_allow_html=True)
        st.caption(MARKS_NOTE)
        return
    k = st.slider("Iteration", 0, n, n, key=key, help="Step through the run: 0 is the random start; each step shows the sequence after that iteration, with the tokens it changed highlighted.")
    seq = frames.sequence_frame(r, k)
    changed = {int(p): (0 if side == "A" else 1) for p, side in zip(seq["position"], seq["side"]) if side}
    notes = {
        int(row.position): f"position {row.position}: {token_repr(row.old_text)} → {token_repr(row.text)} by {row.model}"
        for row in seq.itertuples() if row.changed
    }
    blocked, elsewhere = frames.blocked_positions(r, k)
    if k == 0:
        st.caption("The start sequence.")
    else:
        e = r.iterations_log[k - 1]
        st.text(f"After iteration {k}: {e.model} changed {e.changes} token(s){blocked_words(blocked, elsewhere)}.")
    st.markdown(chips_html(list(seq["text"]), changed, notes, set(blocked)), unsafe_allow_html=True)
    st.markdown(legend_html(r.models, blocked=bool(blocked)), unsafe_allow_html=True)
    st.caption(MARKS_NOTE)
    with st.expander("Start and final text"):
        st.code(f"start: {visible(r.start_text)}\nfinal: {visible(r.final_text)}", language=None)


def blocked_words(shown: list[int], elsewhere: int) -> str:
    """'; blocked positions: 3, 5 (and 2 more counted in the other model's tokens, past the end of these)'."""
    if not shown and not elsewhere:
        return ""
    words = f"; blocked positions: {', '.join(map(str, shown))}" if shown else "; blocked positions"
    if elsewhere:
        more = f"{'and ' if shown else ''}{elsewhere} {'more ' if shown else ''}counted in the other model's tokens, past the end of these"
        words += f" ({more})" if shown else f": {more}"
    return words


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
            heat = charts.flip_heatmap(steps, positions=frames.places(r), iterations=len(r.iterations_log), by_model=battle)
            chart_block(heat, steps, "flips", f"{key}_heat")
            st.caption(ENTROPY_NOTE + " Hover over a cell to see the entropy and what was replaced.")
            if frames.on_characters(r):
                st.caption("These two models split text into different tokens, so they share the text itself: a row is one "
                           "character of it, the same place for both models. A change covers the characters of the token it replaced.")
            chart_block(charts.flip_counts_chart(flips), flips, "flips_per_position", f"{key}_flips")
    with tabs[1]:
        fingerprint_view(r, ins, key, battle=battle)
    with tabs[2]:
        chart_block(charts.changes_chart(its), its, "iterations", f"{key}_its")
    with tabs[3]:
        st.dataframe(steps.drop(columns=["old_text", "new_text"]), hide_index=True, width="stretch")
        st.caption("The entropy column is in nats. " + ENTROPY_NOTE + " prob is the probability of the inserted token.")
        st.caption(MARKS_NOTE)
        download_csv(steps, "steps", f"{key}_steps_csv")
    st.download_button(
        "Download the whole run (JSON)", r.to_json(indent=1).encode(), "tokconv-run.json", "application/json",
        key=f"{key}_json", on_click="ignore", help="Every step and iteration in tokconv's versioned run format (also read by `tokconv report`).",
    )


def battle_metrics(r: RunResult) -> None:
    """A battle's headline numbers: turns, oscillation period, and how many tokens each model changed."""
    names = r.models if len(set(r.models)) == len(r.models) else [f"{m} ({side})" for m, side in zip(r.models, "AB")]
    by = {m: sum(1 for x in r.steps if x.model_index == i) for i, m in enumerate(names)}
    cols = st.columns(4)
    cols[0].metric("Iterations", r.iterations, help="Turns taken; the models alternate, A first.")
    cols[1].metric("Oscillation period", r.period or "none", help="How many iterations until the same state (and the same player to move) comes back; 'none' when no cycle was found.")
    for col, (m, n) in zip(cols[2:], by.items()):
        col.metric(f"Changes by {markdown_escape(m)}", n, help="Tokens this model replaced over the whole battle.")


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
        st.text("Shared: " + ", ".join(token_repr(t) for t in shared[:12]))
    names = (left, right) if left != right else (f"{left} (left)", f"{right} (right)")  # the legend needs two names
    table = compare.compare_frame(p, q, names, top=20)
    chart_block(charts.compare_chart(table), table, "fingerprint_comparison", key)
    st.caption(MARKS_NOTE)
    cols = st.columns(2)
    for col, name, counts in ((cols[0], left, p), (cols[1], right, q)):
        with col:
            st.caption(markdown_escape(name))
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
    flagged = int(ins["flagged"].sum())
    if flagged:
        st.warning(f"{flagged} of these insertions came from predictions the model made from broken numbers "
                   "(its scores held NaN or infinity). A model with broken numbers picks token 0 every time, so "
                   "these are an artifact of the computation, not the model's preference: see the All steps tab.")
    if not battle:
        chart_block(charts.insertions_chart(ins), ins, "insertions", f"{key}_ins")
        st.caption(MARKS_NOTE)
        return
    st.caption("A fingerprint is what each model keeps inserting while the other contests it. " + MARKS_NOTE)
    cols = st.columns(2)
    for col, side, model in zip(cols, "AB", r.models):
        with col:
            mine = ins[ins["side"] == side]  # by side, not name: a model may battle itself
            if mine.empty:
                st.text(f"{model} inserted nothing.")
                continue
            chart_block(charts.insertions_chart(mine, title=model), mine, f"fingerprint_{model}", f"{key}_fp_{side}")


def page_intro(title: str, text: str) -> None:
    st.title(title)
    st.markdown(text)


@st.cache_data(show_spinner=False, max_entries=16)
def _vocab_comparison(spec_a: str, spec_b: str) -> dict:
    """The two vocabularies compared (tokenizers only, no weights), cached per pair of specs."""
    from dataclasses import asdict

    from tokconv.models import load_vocabulary
    from tokconv.models.vocab import compare_vocabularies

    return asdict(compare_vocabularies(load_vocabulary(spec_a), load_vocabulary(spec_b)))


def vocab_panel(spec_a: str, spec_b: str) -> None:
    """How the two models' vocabularies relate: what passing token ids straight across would mean."""
    with st.expander("How these two vocabularies relate"):
        if st.button("Compare the vocabularies", key=f"vocab_{spec_a}_{spec_b}",
                     help="Reads both tokenizers (no model weights; a few seconds) and compares them id by id."):
            try:
                c = _vocab_comparison(spec_a, spec_b)
            except Exception as exc:  # a model that cannot be found or read: said in plain words
                from .running import show_error  # here: running imports this module

                show_error(exc)
                return
            st.text(f"{c['name_a']}: {c['size_a']:,} token ids. {c['name_b']}: {c['size_b']:,} token ids.")
            st.text(f"Token id 0 is {token_repr(c['id0_a'])} in {c['name_a']} and {token_repr(c['id0_b'])} in {c['name_b']}.")
            st.text(f"{c['same_text']:,} of the first {min(c['size_a'], c['size_b']):,} ids stand for the same text in both; "
                    + ("none differ." if c["first_divergent"] is None else f"the first that differs is id {c['first_divergent']:,}."))
            st.text(f"{100 * c['beyond_b']:.1f}% of {c['name_a']}'s ordinary vocabulary is past the end of {c['name_b']}'s, "
                    f"and {100 * c['beyond_a']:.1f}% of {c['name_b']}'s is past the end of {c['name_a']}'s.")
        st.caption("Two models with different vocabularies give the same number different meanings. tokconv shares the "
                   "text between them (each reads it with its own tokenizer). A script that passed the numbers straight "
                   "across would hand one model ids it has never seen: see 'Share' under More settings.")
