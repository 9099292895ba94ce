"""Keeping the API key out of everything a judge sends back.

Servers echo keys, whole or in part: OpenAI's "Incorrect API key provided: sk-...", a proxy's
masked `ADVSEC****fXYZ`, a model that copies the Authorization header into its `reasoning`, or
the key split into groups ("ADVS ECRE T123 ..."). `redact` is the one function that every judge
text goes through before it is stored or logged (`scrub` for error lines, `redact_judgement`
for the fields of a judgement), so it is also where judge text is made valid Unicode: a reply
may JSON-escape a lone surrogate ("\\ud800"), which no UTF-8 writer could encode (text.py).
"""

from __future__ import annotations

import re
from typing import Any

from introspectd.text import valid, valid_text

REDACTED = "[redacted]"
MAX_ERROR_CHARS = 200
# A judgement's text fields are "one or two short sentences"; 8 KiB keeps a long-winded judge's
# reasoning whole while bounding what one row stores and sends over the judge child's pipe.
MAX_JUDGEMENT_CHARS = 8192
TRUNCATED = " [truncated]"
# Any run of this many of the key's letters and digits, in order, is taken as a piece of it:
# random keys share no 8-character run with prose, and fewer would redact ordinary words.
WINDOW = 8

_KEYLIKE_RE = re.compile(r"\bsk-[A-Za-z0-9_*.\-]{3,}|(?i:bearer)\s+\S+")
# Tokens that may be a masked key: some of its characters next to a run of mask stars
# ("ADVSEC****fXYZ"); `_masked` decides. (Matching the stars inside the pattern would backtrack
# quadratically over long runs of letters.)
_TOKEN_RE = re.compile(r"[\w.*\-]+")


def redact(text: str, secret: str = "") -> str:
    """`text` with anything that looks like (a piece of) the key replaced by [redacted];
    everything else, whitespace included, is kept; lone surrogates become U+FFFD."""
    text = valid_text(text)
    text = _TOKEN_RE.sub(_masked, _KEYLIKE_RE.sub(REDACTED, text))
    if secret:
        text = _redact_runs(text.replace(secret, REDACTED), secret)
    return text


def _redact_runs(text: str, secret: str) -> str:
    """Redact every WINDOW-long run of the key's letters and digits found among the text's
    letters and digits, whatever separates them there (spaces, dashes, dots...)."""
    key = "".join(ch for ch in secret if ch.isalnum())
    windows = {key[i : i + WINDOW] for i in range(len(key) - WINDOW + 1)}
    where = [i for i, ch in enumerate(text) if ch.isalnum()]  # compact index → text index
    compact = "".join(text[i] for i in where)
    spans: list[list[int]] = []
    for window in windows:
        at = compact.find(window)
        while at != -1:
            spans.append([where[at], where[at + WINDOW - 1] + 1])
            at = compact.find(window, at + 1)
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, done = [], 0
    for start, end in merged:
        out += [text[done:start], REDACTED]
        done = end
    return "".join(out) + text[done:]


def _masked(match: re.Match[str]) -> str:
    token = match.group()
    return REDACTED if "***" in token and any(ch.isalnum() for ch in token) else token


def scrub(text: str, secret: str = "") -> str:
    """One short line with nothing that looks like (a piece of) the key: for error reasons."""
    text = redact(" ".join(text[: 20 * MAX_ERROR_CHARS].split()), secret)  # cut: see _bounded
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def redact_judgement(result: dict[str, Any], secret: str) -> dict[str, Any]:
    """A judgement with its text fields bounded and redacted, as it may be stored."""
    return {
        valid_text(key): _bounded(value, secret) if isinstance(value, str) else valid(value)
        for key, value in result.items()
    }


def _bounded(text: str, secret: str) -> str:
    if len(text) > MAX_JUDGEMENT_CHARS:  # cut first: redacting megabytes would be slow
        text = text[: MAX_JUDGEMENT_CHARS - len(TRUNCATED)] + TRUNCATED
    return redact(text, secret)
