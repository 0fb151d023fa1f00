"""Chart downloads are real files made here, offline: a PNG, an SVG, and an HTML page with no CDN."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET

import pytest
from tiny import constant_lm

from test_charts import _run
from tokconv.analysis import charts, frames


@pytest.fixture(scope="module")
def chart():
    battle = _run("adversarial-single", [constant_lm(1, name="A"), constant_lm(2, name="B")], [0, 0, 0], block_after=3)
    return charts.changes_chart(frames.iterations_frame(battle))


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_is_a_real_decodable_image(chart):
    data = charts.chart_bytes(chart, "png")
    width, height = _png_size(data)
    assert width >= 400 and height >= 100  # drawn at twice the size for print
    from PIL import Image
    import io

    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.size == (width, height)
    assert len(img.convert("RGB").getcolors(maxcolors=1 << 22)) > 2  # something was drawn, not a blank page


def test_svg_parses_as_xml_with_an_svg_root_and_the_chart_text(chart):
    data = charts.chart_bytes(chart, "svg")
    root = ET.fromstring(data)
    assert root.tag.endswith("svg")
    assert b"tokens changed" in data  # the axis title is in the drawing


def test_html_bundles_its_libraries_and_loads_nothing_from_a_cdn(chart):
    page = charts.chart_bytes(chart, "html").decode("utf-8")
    assert not re.search(r"<script[^>]+src=", page)
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page
    assert "vegaEmbed" in page or "vega-embed" in page


def test_layered_charts_render_too():
    sweep = frames.sweep_frame([])
    sweep.loc[0] = ["single", "m", 4, 0, "converged", 3, None, True, False]
    svg = charts.chart_bytes(charts.sweep_chart(sweep, frames.reference_frame([4, 8])), "svg")
    assert ET.fromstring(svg).tag.endswith("svg")


def test_an_unknown_format_is_refused(chart):
    with pytest.raises(ValueError, match="png, svg, html"):
        charts.chart_bytes(chart, "gif")


def test_chart_block_offers_png_and_svg_made_by_chart_bytes(chart):
    from ui import views

    formats = [fmt for fmt, _, _ in views._CHART_FILES]
    assert formats[:2] == ["png", "svg"] and "html" in formats
    assert _png_size(views._chart_file(chart, "png")())[0] > 0
    assert views.file_stem("HuggingFaceTB/SmolLM2 135M") == "HuggingFaceTB_SmolLM2_135M"


def _axis_labels(chart) -> list[list[str]]:
    """The labels of each axis as Vega draws them (its scenegraph: no browser needed)."""
    import vl_convert

    found: list[list[str]] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("role") == "axis-label":
                found.append([item.get("text") for item in node.get("items", [])])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(vl_convert.vegalite_to_scenegraph(chart.to_dict()))
    return found


def test_count_axes_are_drawn_with_whole_numbers_only_even_when_counts_reach_one(chart):
    # every iteration of this battle changes one token: Vega's own ticks would be 0, 0.5, 1 (drawn "0", "1", "1")
    x_labels, y_labels = _axis_labels(chart)
    assert x_labels == [str(i) for i in range(1, len(x_labels) + 1)]
    assert y_labels == ["0", "1"]
