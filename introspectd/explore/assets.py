"""The explorer's one page, from package data (web/): HTML with its CSS and JS inlined, so the
server's page and the static explorer.html are the same source and the page needs no network."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from introspectd.text import json_text


@cache
def _asset(name: str) -> str:
    return (resources.files("introspectd.explore") / "web" / name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON safe inside <script type="application/json">: no `<`, `>` or `&` can end the
    element or open a comment, and U+2028/2029 stay escaped."""
    text = json_text(data, separators=(",", ":"))
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def page_html(embedded: Any | None) -> str:
    """The page; with `embedded` data it runs without a server (explorer.html)."""
    data = "null" if embedded is None else embed_json(embedded)
    # Split once per marker (not str.replace): an answer quoting a marker stays data.
    head, rest = _asset("explorer.html").split("/*STYLE*/", 1)
    middle, rest = rest.split("/*DATA*/", 1)
    before_script, tail = rest.split("/*SCRIPT*/", 1)
    return (
        head + _asset("explorer.css") + middle + data + before_script + _asset("explorer.js") + tail
    )
