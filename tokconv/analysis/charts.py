"""Altair charts of runs, built by pure functions from the DataFrames of :mod:`tokconv.frames`.

Each function takes DataFrames and returns an ``alt.Chart`` (or layered chart)
with tooltips; nothing is rendered here, so the specs can be tested with
``chart.to_dict()``. Model A is always blue and model B orange, as in the chips,
with the model names in the legend. :func:`chart_bytes` renders a chart to a PNG,
SVG or standalone HTML file locally (vl-convert: no browser, no internet).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

__all__ = [
    "CHART_FORMATS",
    "MODEL_COLORS",
    "STATUS_COLORS",
    "chart_bytes",
    "changes_chart",
    "compare_chart",
    "flip_counts_chart",
    "flip_heatmap",
    "insertions_chart",
    "sweep_chart",
]

MODEL_COLORS = ("#4c78a8", "#f58518")  # Vega's tableau10 blue and orange: readable on light and dark themes
_SIDE_INDEX = {"A": 0, "B": 1}


def count_axis(top: float) -> alt.Axis:
    """An axis for counts up to ``top``: whole-number ticks only.

    ``tickMinStep`` alone still lets Vega put a tick at 0.5 when the counts only reach 1 (it asks for two
    ticks, and d3 splits 0..1 in halves), so the tick count is also capped at ``top``: d3 then never
    picks a step below 1.
    """
    top = float(top) if pd.notna(top) else 1.0
    return alt.Axis(tickMinStep=1, format="d", tickCount=max(1, min(8, int(top))))


FLAT_LABELS = alt.Axis(labelAngle=0, labelOverlap="greedy")  # iteration/position labels upright; crowded ones thinned


def _model_color(df: pd.DataFrame, field: str = "model", title: str = "model") -> alt.Color:
    """Color by model: model A's name in blue and model B's in orange, whichever of them the frame holds.

    The colour follows the ``side`` column (A or B), so a chart of model B alone is orange too.
    """
    if "side" in df:
        pairs = df[["side", field]].drop_duplicates().sort_values("side")
        domain = pairs[field].tolist()
        colors = [MODEL_COLORS[_SIDE_INDEX.get(side, 0)] for side in pairs["side"]]
    else:
        domain = sorted(df[field].unique().tolist())
        colors = list(MODEL_COLORS[: len(domain)])
    if not domain:
        domain, colors = ["A", "B"], list(MODEL_COLORS)
    return alt.Color(f"{field}:N", title=title, scale=alt.Scale(domain=domain, range=colors), legend=alt.Legend(labelLimit=280))


def _place_title(df: pd.DataFrame) -> str:
    """The axis title of a frame's places: characters of the shared text, or token positions."""
    return "character of the shared text" if df.attrs.get("axis") == "character" else "position"


def flip_heatmap(
    steps: pd.DataFrame,
    *,
    positions: int | None = None,
    iterations: int | None = None,
    by_model: bool | None = None,
    title: str = "Which position changed in which iteration",
) -> alt.Chart:
    """Position x iteration grid with a cell per replacement: colored by model when two models act, else by entropy.

    With ``positions`` (``iterations``) the axis shows every position 0..positions-1 (iteration 1..iterations),
    not just those with a change. ``by_model`` (default: when both sides acted) colors by model even when only
    one model of a battle changed anything.
    """
    two = (steps["side"].nunique() > 1 or steps["model"].nunique() > 1) if by_model is None else by_model
    where = _place_title(steps)
    color = _model_color(steps) if two else alt.Color("entropy:Q", title="entropy (nats)", scale=alt.Scale(scheme="viridis"))
    y_scale = alt.Scale(domain=list(range(positions))) if positions else alt.Undefined
    x_scale = alt.Scale(domain=list(range(1, iterations + 1))) if iterations else alt.Undefined
    return (
        alt.Chart(steps, title=title)
        .mark_rect()
        .encode(
            x=alt.X("iteration:O", title="iteration", scale=x_scale, axis=FLAT_LABELS),
            y=alt.Y("position:O", title=where, sort="ascending", scale=y_scale),
            color=color,
            tooltip=[
                alt.Tooltip("iteration:O"),
                alt.Tooltip("position:O", title=where),
                alt.Tooltip("model:N"),
                alt.Tooltip("old:N", title="replaced"),
                alt.Tooltip("new:N", title="inserted"),
                alt.Tooltip("entropy:Q", format=".2f", title="entropy (nats)"),
                alt.Tooltip("prob:Q", format=".2f", title="probability"),
            ],
        )
    )


def flip_counts_chart(flips: pd.DataFrame, *, title: str = "How often each position was changed") -> alt.Chart:
    """Bars of flips per position, stacked by model."""
    return (
        alt.Chart(flips, title=title)
        .mark_bar()
        .encode(
            x=alt.X("position:O", title=_place_title(flips), axis=FLAT_LABELS),
            y=alt.Y("sum(flips):Q", title="changes", axis=count_axis(flips.groupby("position")["flips"].sum().max())),
            color=_model_color(flips),
            tooltip=[alt.Tooltip("position:O", title=_place_title(flips)), alt.Tooltip("model:N"),
                     alt.Tooltip("flips:Q", title="changes")],
        )
    )


def insertions_chart(insertions: pd.DataFrame, *, top: int = 15, title: str = "Tokens inserted") -> alt.Chart:
    """Horizontal bars of the most inserted tokens (per model, ``top`` each), most frequent on top."""
    df = insertions.sort_values(["side", "count"], ascending=[True, False]).groupby("model", sort=False).head(top)
    return (
        alt.Chart(df, title=title)
        .mark_bar()
        .encode(
            y=alt.Y("token:N", sort="-x", title="token"),
            x=alt.X("count:Q", title="times inserted", axis=count_axis(df["count"].max())),
            color=_model_color(df),
            tooltip=[
                alt.Tooltip("model:N"),
                alt.Tooltip("token:N"),
                alt.Tooltip("count:Q", title="times"),
                alt.Tooltip("share:Q", format=".0%", title="share of its insertions"),
            ],
        )
    )


def changes_chart(iterations: pd.DataFrame, *, title: str = "Tokens changed per iteration") -> alt.Chart:
    """Bars of changes per iteration, colored by the model that acted."""
    return (
        alt.Chart(iterations, title=title)
        .mark_bar()
        .encode(
            x=alt.X("iteration:O", title="iteration", axis=FLAT_LABELS),
            y=alt.Y("changes:Q", title="tokens changed", axis=count_axis(iterations.groupby("iteration")["changes"].sum().max())),
            color=_model_color(iterations),
            tooltip=[
                alt.Tooltip("iteration:O"),
                alt.Tooltip("model:N"),
                alt.Tooltip("changes:Q"),
                alt.Tooltip("blocked:Q", title="blocked positions"),
                alt.Tooltip("text:N", title="text after"),
            ],
        )
    )


CLAIM_COLORS = ("#8c8c8c", "#a0a000", "#e377c2")  # the original's claims: grey, olive, pink; dashed
TREND = "measured: mean iterations of these runs"
TREND_COLOR = "#17becf"  # cyan, solid: the measured trend, apart from the grey "2 iterations" claim
# How a run ended: green, red, violet, yellow, brown; none of them the model blue or orange, nor close to each other.
STATUS_COLORS = {
    "converged": "#54a24b",
    "oscillating": "#e45756",
    "all-blocked": "#8e44ad",
    "max-iterations": "#eeca3b",
    "interrupted": "#8c564b",
}


def sweep_chart(sweep: pd.DataFrame, reference: pd.DataFrame, *, title: str = "Iterations to the end of the run vs length") -> alt.LayerChart:
    """Runs as points (colored by how they ended), their mean per length as a solid line, the original's claims dashed.

    The measured mean and the claims share one legend ("lines"); the run colors have their own ("how the run ended").
    Layers: ``[[claims, mean], points]``.
    """
    x = alt.X("length:Q", title="start length (tokens)", axis=alt.Axis(tickMinStep=1, format="d", labelAngle=0))
    y_axis = count_axis(max(sweep["iterations"].max(), reference["iterations"].max() if len(reference) else 0))
    trend = sweep.groupby("length", as_index=False)["iterations"].mean().assign(claim=TREND)[["claim", "length", "iterations"]]
    claims = reference["claim"].drop_duplicates().tolist()
    domain = [TREND, *claims]
    legend = alt.Legend(title="lines", labelLimit=320, orient="bottom", direction="vertical", symbolStrokeWidth=2.5)
    line_encoding = dict(  # one shared scale for the measured line and the claims, so they share one legend
        x=x,
        y=alt.Y("iterations:Q", title="iterations", axis=y_axis),
        color=alt.Color("claim:N", title="lines", scale=alt.Scale(domain=domain, range=[TREND_COLOR, *CLAIM_COLORS[: len(claims)]]), legend=legend),
        strokeDash=alt.StrokeDash("claim:N", title="lines", scale=alt.Scale(domain=domain, range=[[1, 0], *([[6, 4]] * len(claims))]), legend=legend),
        tooltip=[alt.Tooltip("claim:N", title="line"), alt.Tooltip("length:Q"), alt.Tooltip("iterations:Q", format=".1f")],
    )
    lines = alt.layer(
        alt.Chart(reference).mark_line(strokeWidth=1.5).encode(**line_encoding),  # the original's claims, dashed
        alt.Chart(trend).mark_line(strokeWidth=2.5).encode(**line_encoding),  # what these runs measured, solid
    )
    statuses = [st for st in STATUS_COLORS if st in set(sweep["status"])] + sorted(set(sweep["status"]) - set(STATUS_COLORS))
    points = (
        alt.Chart(sweep)
        .mark_circle(size=80, opacity=0.85)
        .encode(
            x=x,
            y=alt.Y("iterations:Q", title="iterations", axis=y_axis),
            color=alt.Color(
                "status:N", title="how the run ended",
                scale=alt.Scale(domain=statuses, range=[STATUS_COLORS.get(st, "#79706e") for st in statuses]),
            ),
            tooltip=[
                alt.Tooltip("length:Q"),
                alt.Tooltip("seed:Q"),
                alt.Tooltip("status:N"),
                alt.Tooltip("iterations:Q"),
                alt.Tooltip("period:Q", title="oscillation period"),
            ],
        )
    )
    return alt.layer(lines, points, title=title).resolve_scale(color="independent", strokeDash="independent")


def compare_chart(compare: pd.DataFrame, *, title: str = "Share of insertions per token") -> alt.Chart:
    """Grouped horizontal bars: each token's share of insertions on each side."""
    order = compare["side"].drop_duplicates().tolist()
    return (
        alt.Chart(compare, title=title)
        .mark_bar()
        .encode(
            y=alt.Y("token:N", sort=None, title="token"),
            yOffset=alt.YOffset("side:N", sort=order),
            x=alt.X("share:Q", axis=alt.Axis(format="%", labelAngle=0), title="share of insertions"),
            color=alt.Color(
                "side:N", title="fingerprint", scale=alt.Scale(domain=order, range=list(MODEL_COLORS[: len(order)])),
                legend=alt.Legend(labelLimit=320, orient="bottom", direction="vertical"),
            ),
            tooltip=[
                alt.Tooltip("side:N", title="fingerprint"),
                alt.Tooltip("token:N"),
                alt.Tooltip("count:Q", title="times"),
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
    )


CHART_FORMATS = {  # format -> (file extension, MIME type)
    "png": ("png", "image/png"),
    "svg": ("svg", "image/svg+xml"),
    "html": ("html", "text/html"),
}
EXPORT_WIDTH = 640  # pixels, for charts that take the page's width on screen


def _vl_version() -> str | None:
    """The Vega-Lite version Altair writes (e.g. '6.4'), if vl-convert has it; None lets vl-convert pick its latest."""
    import vl_convert

    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vl_convert.get_vegalite_versions() else None


def chart_bytes(chart: alt.TopLevelMixin, fmt: str, *, scale: float = 2.0) -> bytes:
    """The chart as a file, rendered here by vl-convert without a browser or internet.

    ``fmt``: "png" (at ``scale`` times the size, for sharp prints), "svg", or "html" (a standalone page with
    the Vega libraries bundled in, so it opens offline).
    """
    import vl_convert  # deferred: a few MB of JavaScript engine, only needed when a file is made

    if fmt not in CHART_FORMATS:
        raise ValueError(f"unknown chart format {fmt!r}: choose one of {', '.join(CHART_FORMATS)}")
    spec = chart.to_dict()
    if "width" not in spec and ("mark" in spec or "layer" in spec):
        spec["width"] = EXPORT_WIDTH
    version = _vl_version()
    if fmt == "png":
        return vl_convert.vegalite_to_png(spec, vl_version=version, scale=scale)
    if fmt == "svg":
        return vl_convert.vegalite_to_svg(spec, vl_version=version).encode("utf-8")
    return vl_convert.vegalite_to_html(spec, vl_version=version, bundle=True).encode("utf-8")
