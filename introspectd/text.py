"""Untrusted text (from a model, a judge, an input file) made safe. A base module: it imports
nothing from introspectd, so the live view, the report, the store and every writer share it.

- `printable`: safe to show on one line (a terminal, a report).
- `valid_text` and friends: valid Unicode for every writer of JSONL, HTML and the database.
  JSON may escape a lone UTF-16 surrogate (`"\\ud800"`): `json.loads` accepts it and returns a
  Python string that no UTF-8 writer can encode (UnicodeEncodeError), nor SQLite store. A judge
  reply, an input file or a row stored by an older version can hold one. `valid_text` replaces
  each lone surrogate with U+FFFD (and joins a split pair into its character), so judge
  replies are made valid where they enter (judge/redact.py) and readers and writers never
  raise on it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

REPLACEMENT = "\ufffd"
# ANSI/VT escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and the
# two-character escapes. They are removed whole: replacing only the ESC would leave "[31m".
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x1b[@-Z\\-_]"  # two-character escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)


def printable(text: str) -> str:
    """`text` safe to put on one terminal line: escape sequences removed, every whitespace run
    (newlines, tabs, \\r) one space, and any other unprintable character (controls, format
    characters such as bidi overrides, unpaired surrogates) shown as U+FFFD."""
    out = []
    for ch in _ESCAPES.sub("", text):
        if ch.isspace():
            out.append(" ")
        elif ch.isprintable() and unicodedata.category(ch) != "Co":
            out.append(ch)
        else:
            out.append(REPLACEMENT)
    return " ".join("".join(out).split())


_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# A raw surrogate, or the JSON escape of one (\uD800-\uDFFF): only then is there work to do.
_MAYBE_SURROGATE_RE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")


def valid_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD; `text` itself when it has none."""
    if _SURROGATE_RE.search(text) is None:
        return text
    # UTF-16 round trip: a high + low pair becomes its character, a lone half U+FFFD.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def valid(value: Any) -> Any:
    """A JSON value with every string in it (keys too) made `valid_text`."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_text(k) if isinstance(k, str) else k: valid(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid(v) for v in value]
    return value


# No record, reply or config nests deeper; a value within it leaves the recursive code that
# handles it later (json.dumps, valid, the explorer's browser_json) far from Python's limit.
MAX_DEPTH = 100


def loads_text(data: str | bytes) -> Any:
    """`json.loads`, with lone surrogates in the result replaced (see module doc). Every way
    the text can fail to load is a `json.JSONDecodeError`, which each reader turns into its
    "malformed JSON" line: json's parser recurses per nesting level (100000 `[` would be a
    RecursionError), a value nested past MAX_DEPTH would be one later, and an integer of over
    4300 digits is a plain ValueError."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        value = json.loads(text)
        # Counting brackets is cheap; only a text with more than MAX_DEPTH is walked.
        if text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
            raise RecursionError
        return valid(value) if _MAYBE_SURROGATE_RE.search(text) else value
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise json.JSONDecodeError("number too long", text, 0) from None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels in `value` (walked without
    recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False


def json_text(value: Any, **kwargs: Any) -> str:
    """`json.dumps(value, ensure_ascii=False, **kwargs)` that is always valid text."""
    return valid_text(json.dumps(value, ensure_ascii=False, **kwargs))


def utf8(text: str) -> bytes:
    """`text` as UTF-8 bytes; never raises (a lone surrogate becomes U+FFFD)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return valid_text(text).encode("utf-8")
