"""The one JSONL reader: every input file of JSON lines (records, labels, few-shot examples) is
read here, with one wording of its errors ("FILE:LINE: malformed JSON (why, column N)").

Lines are split on "\\n" only: str.splitlines() would also split inside JSON strings that hold
a raw U+2028 or form feed, which json.dumps(ensure_ascii=False) writes unescaped. A line that
is not UTF-8 is named by its number, not by a byte offset into the whole file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.text import loads_text


@dataclass(frozen=True)
class JsonLine:
    lineno: int
    raw: str  # the line as read, without its newline (rejudge writes untouched lines back)
    value: dict[str, Any] | None  # None for a blank line


def read_jsonl(path: Path, what: str, flag: str = "", expect: str = "") -> list[JsonLine]:
    """Every line of `path`, a file of `what` (e.g. "labels file"; `flag` names the option or
    key that gave it). Each non-blank line must be a JSON object (`expect` says which kind);
    any fault is one BadInput line naming the file and line."""
    return parse_jsonl(read_bytes(path, what, flag), path, expect)


def parse_jsonl(data: bytes, path: Path, expect: str = "") -> list[JsonLine]:
    """The lines of `data`, read from `path` (for a caller that also hashes the bytes)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [_line(path, n, raw, expect) for n, raw in enumerate(lines, start=1)]


def read_bytes(path: Path, what: str, flag: str = "") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} not found{f' ({flag})' if flag else ''}") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: {what} is a directory; give a file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read {what} ({exc.strerror})") from None


def _line(path: Path, lineno: int, raw_bytes: bytes, expect: str) -> JsonLine:
    where = f"{path}:{lineno}"
    try:
        raw = raw_bytes.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError:
        raise BadInput(f"{where}: not UTF-8 text") from None
    if not raw.strip():
        return JsonLine(lineno, raw, None)
    try:
        value = loads_text(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: malformed JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(value, dict):
        kind = f" ({expect})" if expect else ""
        raise BadInput(f"{where}: expected a JSON object{kind}, got {_kind(value)}")
    return JsonLine(lineno, raw, value)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
