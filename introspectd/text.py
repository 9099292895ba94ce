"""Text from a model or a server made safe to show on one line (a terminal, a report). A
base module: it imports nothing from introspectd, so the live view and the report share it."""

from __future__ import annotations

import re
import unicodedata

# ANSI/VT escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and the
# two-character escapes. They are removed whole: replacing only the ESC would leave "[31m".
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x1b[@-Z\\-_]"  # two-character escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
REPLACEMENT = "\ufffd"


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
