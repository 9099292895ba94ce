"""The one JSONL reader (introspectd/jsonl.py): one wording for every input file's faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from introspectd.errors import BadInput
from introspectd.jsonl import read_jsonl


def test_lines_split_on_newline_only_and_keep_their_raw_text(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_bytes('{"a": "x\u2028y\u0085z"}\r\n\n{"b": 1}\n'.encode())
    lines = read_jsonl(f, "records file")
    assert [(line.lineno, line.value) for line in lines] == [
        (1, {"a": "x\u2028y\u0085z"}),
        (2, None),
        (3, {"b": 1}),
    ]
    assert lines[0].raw == '{"a": "x\u2028y\u0085z"}'
    assert [line.value for line in lines if line.value is not None] == [
        {"a": "x\u2028y\u0085z"},
        {"b": 1},
    ]


@pytest.mark.parametrize(
    "data, message",
    [
        (b'{"a": 1}\n{"a": \n', "r.jsonl:2: malformed JSON (Expecting value, column 7)"),
        (b'{"a": 1}\n\xff\n', "r.jsonl:2: not UTF-8 text"),
        (b"[1, 2]\n", "r.jsonl:1: expected a JSON object (a seed-format record), got a list"),
        (b"[" * 100_000 + b"\n", "r.jsonl:1: malformed JSON (nested too deeply, column 1)"),
    ],
)
def test_every_fault_is_one_line_naming_file_and_line(
    tmp_path: Path, data: bytes, message: str
) -> None:
    f = tmp_path / "r.jsonl"
    f.write_bytes(data)
    with pytest.raises(BadInput) as caught:
        read_jsonl(f, "records file", expect="a seed-format record")
    assert str(caught.value) == f"{tmp_path}/{message}"


def test_a_missing_file_names_what_it_is_and_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"nope.jsonl: labels file not found \(--labels\)$"):
        read_jsonl(tmp_path / "nope.jsonl", "labels file", "--labels")
    with pytest.raises(BadInput, match=r"labels file is a directory; give a file$"):
        read_jsonl(tmp_path, "labels file")
