"""Altair charts of runs, built by pure functions from the DataFrames of :mod:`tokconv.frames`.

Each function takes DataFrames and returns an ``alt.Chart`` (or layered chart)
with tooltips; nothing is rendered here, so the specs can be tested with
``chart.to_dict()``. Model A is always blue and model B orange, as in the chips.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

__all__ = [
    "MODEL_COLORS",
    "changes_chart",
    "compare_chart",
    "flip_counts_chart",
    "flip_heatmap",
    "insertions_chart",
    "sweep_chart",
]

MODEL_COLORS = ("#4c78a8", "#f58518")  # Vega's tableau10 blue and orange: readable on light and dark themes


def _model_color(df: pd.DataFrame, field: str = "model", title: str = "model") -> alt.Color:
    """Color by model with A blue and B orange, whatever the model names are."""
    order = df.sort_values("side")[field].drop_duplicates().tolist() if "side" in df else sorted(df[field].unique())
    return alt.Color(f"{field}:N", title=title, scale=alt.Scale(domain=order, range=list(MODEL_COLORS[: len(order)] or MODEL_COLORS)))


def flip_heatmap(
    steps: pd.DataFrame,
    *,
    positions: int | None = None,
    iterations: int | None = None,
    title: str = "Which position changed in which iteration",
) -> alt.Chart:
    """Position x iteration grid with a cell per replacement: colored by model when two models act, else by entropy.

    With ``positions`` (``iterations``) the axis shows every position 0..positions-1 (iteration 1..iterations),
    not just those with a change.
    """
    two = steps["model"].nunique() > 1
    color = _model_color(steps) if two else alt.Color("entropy:Q", title="entropy (nats)", scale=alt.Scale(scheme="viridis"))
    y_scale = alt.Scale(domain=list(range(positions))) if positions else alt.Undefined
    x_scale = alt.Scale(domain=list(range(1, iterations + 1))) if iterations else alt.Undefined
    return (
        alt.Chart(steps, title=title)
        .mark_rect()
        .encode(
            x=alt.X("iteration:O", title="iteration", scale=x_scale),
            y=alt.Y("position:O", title="position", sort="ascending", scale=y_scale),
            color=color,
            tooltip=[
                alt.Tooltip("iteration:O"),
                alt.Tooltip("position:O"),
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
            x=alt.X("position:O", title="position"),
            y=alt.Y("sum(flips):Q", title="changes"),
            color=_model_color(flips),
            tooltip=[alt.Tooltip("position:O"), alt.Tooltip("model:N"), alt.Tooltip("flips:Q", title="changes")],
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
            x=alt.X("count:Q", title="times inserted"),
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
            x=alt.X("iteration:O", title="iteration"),
            y=alt.Y("changes:Q", title="tokens changed"),
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


CLAIM_COLORS = ("#8c8c8c", "#bcbd22", "#e377c2")  # muted, distinct from the run status colors


def sweep_chart(sweep: pd.DataFrame, reference: pd.DataFrame, *, title: str = "Iterations to the end of the run vs length") -> alt.LayerChart:
    """Runs as points (colored by how they ended), their mean per length, and the original's claims as dashed lines."""
    x = alt.X("length:Q", title="start length (tokens)", axis=alt.Axis(tickMinStep=1, format="d"))
    points = (
        alt.Chart(sweep)
        .mark_circle(size=80, opacity=0.8)
        .encode(
            x=x,
            y=alt.Y("iterations:Q", title="iterations"),
            color=alt.Color("status:N", title="how the run ended"),
            tooltip=[
                alt.Tooltip("length:Q"),
                alt.Tooltip("seed:Q"),
                alt.Tooltip("status:N"),
                alt.Tooltip("iterations:Q"),
                alt.Tooltip("period:Q", title="oscillation period"),
            ],
        )
    )
    mean = (
        alt.Chart(sweep)
        .mark_line(color="#888888")
        .encode(x=x, y="mean(iterations):Q", tooltip=[alt.Tooltip("length:Q"), alt.Tooltip("mean(iterations):Q", format=".1f", title="mean iterations")])
    )
    claims = (
        alt.Chart(reference)
        .mark_line(strokeWidth=1.5, strokeDash=[6, 4])
        .encode(
            x=x,
            y="iterations:Q",
            color=alt.Color(
                "claim:N", title="the original's claims",
                scale=alt.Scale(domain=reference["claim"].drop_duplicates().tolist(), range=list(CLAIM_COLORS)),
                legend=alt.Legend(labelLimit=320, orient="bottom", direction="vertical"),
            ),
            tooltip=[alt.Tooltip("claim:N"), alt.Tooltip("length:Q"), alt.Tooltip("iterations:Q", format=".1f")],
        )
    )
    return alt.layer(claims, mean, points, title=title).resolve_scale(color="independent")


def compare_chart(compare: pd.DataFrame, *, title: str = "Share of insertions per token") -> alt.Chart:
    """Grouped horizontal bars: each token's share of insertions on each side."""
    order = compare["side"].drop_duplicates().tolist()
    return (
        alt.Chart(compare, title=title)
        .mark_bar()
        .encode(
            y=alt.Y("token:N", sort=None, title="token"),
            yOffset=alt.YOffset("side:N", sort=order),
            x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share of insertions"),
            color=alt.Color("side:N", title="fingerprint", scale=alt.Scale(domain=order, range=list(MODEL_COLORS[: len(order)]))),
            tooltip=[
                alt.Tooltip("side:N", title="fingerprint"),
                alt.Tooltip("token:N"),
                alt.Tooltip("count:Q", title="times"),
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
    )
