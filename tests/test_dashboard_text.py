"""Text on the result pages: user and model strings are shown, never interpreted as HTML or Markdown."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from ui import views

EVIL = ["<img src=x onerror=alert(1)>", "![](//evil.example/)", "a\n\nb **bold** [link](http://x)"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, [name for name, _ in attrs]))

    def handle_data(self, data):
        self.text.append(data)


def _parse(markup: str) -> _Tags:
    parser = _Tags()
    parser.feed(markup)
    return parser


def _visible_text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_chips_escape_token_text_that_looks_like_html_or_markdown():
    out = views.chips_html(EVIL, changed={1: 1}, notes={2: "by <b>model</b>"})
    parsed = _parse(out)
    assert {tag for tag, _ in parsed.tags} == {"div", "span", "br"}  # the <img> is text, not an element
    assert {a for _, attrs in parsed.tags for a in attrs} <= {"style", "title"}  # no onerror handler
    assert "<b>" not in out
    assert "![" not in out and "](" not in out and "**" not in out  # no Markdown left to parse, even outside HTML
    assert "\n" not in out  # a blank line would end the HTML block and let Markdown read the rest
    labels = _visible_text(out)
    assert "<img·src=x·onerror=alert(1)>" in labels and "![](//evil.example/)" in labels
    for i, text in enumerate(EVIL[:2]):  # each chip's tooltip holds the token exactly, quoted
        assert f'title="{views.esc(f"position {i}: {text!r}")}"' in out


def test_esc_is_html_escape_plus_markdown_and_line_breaks():
    for text in EVIL + ["it's \"quoted\" & <tagged>"]:
        escaped = views.esc(text)
        assert html.unescape(escaped) == text
        assert html.unescape(html.escape(text, quote=True)) == html.unescape(escaped)  # at least html.escape's safety
        assert all(ch not in escaped for ch in "<>\"'\n[]()!*")


def test_the_model_legend_escapes_model_names():
    out = views.legend_html(["<script>x</script>", "![](//evil.example/)"], blocked=True)
    assert "<script>" not in out and "![" not in out
    assert {tag for tag, _ in _parse(out).tags} == {"div", "span"}
    assert "<script>x</script>" in "".join(_parse(out).text) and "blocked" in out


def test_blocked_words_mention_positions_outside_the_sequence_without_listing_them():
    assert views.blocked_words([], 0) == ""
    assert views.blocked_words([1, 2], 0) == "; blocked positions: 1, 2"
    words = views.blocked_words([1], 2)
    assert words.startswith("; blocked positions: 1 (and 2 more") and "8" not in words
    assert views.blocked_words([], 2).startswith("; blocked positions: 2 counted")
