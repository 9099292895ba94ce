"""The explorer's one page, from package data (web/): HTML with its CSS and JS inlined, so the
server's page and the static explorer.html are the same source and the page needs no network.
The page's colour scale is the report's own (report/scale.py), handed to it as JSON."""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Any

from introspectd.report.scale import page_scale
from introspectd.text import json_text

# JavaScript numbers are doubles: integers past 2**53 arrive rounded (a trial's 63-bit seed
# 4723781911357945726 would show as 4723781911357946000), so those travel as strings.
MAX_SAFE_INTEGER = 2**53 - 1


def browser_json(value: Any) -> Any:
    """`value` with every integer a browser cannot hold exactly as a string, and NaN and
    infinities (not JSON) as null."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value) if abs(value) > MAX_SAFE_INTEGER else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: browser_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [browser_json(v) for v in value]
    return value


@cache
def _asset(name: str) -> str:
    return (resources.files("introspectd.explore") / "web" / name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON safe inside <script type="application/json">: no `<`, `>` or `&` can end the
    element or open a comment, and U+2028/2029 stay escaped."""
    text = json_text(browser_json(data), separators=(",", ":"))
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
    middle, rest = rest.split("/*SCALE*/", 1)
    after_scale, rest = rest.split("/*DATA*/", 1)
    before_script, tail = rest.split("/*SCRIPT*/", 1)
    return (
        head
        + _asset("explorer.css")
        + middle
        + embed_json(page_scale())
        + after_scale
        + data
        + before_script
        + _asset("local.js")  # what explorer.js reads from: ExplorerData
        + _asset("explorer.js")
        + tail
    )
