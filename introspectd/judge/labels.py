"""Human-labelled records (the format of ../shared/data/, see its README) for `calibrate`.

Each line is a seed-format record (`id`, `concept`, `was_injected`, `response`, `config.model`)
with a human `label` (`answer` pass/fail, ...) and an optional `split` (train/dev/test). Every
fault is one BadInput line naming the file and line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.jsonl import parse_jsonl, read_bytes

UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True)
class Labelled:
    id: str
    concept: str
    is_injected: bool
    response: str
    is_human_pass: bool
    model: str
    split: str | None


@dataclass(frozen=True)
class LabelFile:
    path: Path
    sha256: str
    records: tuple[Labelled, ...]  # of the chosen split, in file order


def load_labels(path: Path, split: str | None = None) -> LabelFile:
    """The labelled records of `path` (those of `split` when given)."""
    data = read_bytes(path, "labels file", "--labels")
    records: list[Labelled] = []
    seen: dict[str, int] = {}
    for line in parse_jsonl(data, path, expect="a labelled record"):
        if line.value is None:
            continue
        record = _labelled(f"{path}:{line.lineno}", line.value)
        if record.id in seen:
            raise BadInput(
                f"{path}:{line.lineno}: duplicate id {record.id!r} "
                f"(first on line {seen[record.id]})"
            )
        seen[record.id] = line.lineno
        records.append(record)
    if not records:
        raise BadInput(f"{path}: labels file has no records")
    chosen = [r for r in records if split is None or r.split == split]
    if not chosen:
        splits = ", ".join(sorted({r.split for r in records if r.split})) or "none"
        raise BadInput(f"--split: no record of {path} has split {split!r} (splits: {splits})")
    return LabelFile(path, hashlib.sha256(data).hexdigest(), tuple(chosen))


def _labelled(where: str, record: dict[str, Any]) -> Labelled:
    for key, kind in (
        ("id", str),
        ("concept", str),
        ("was_injected", bool),
        ("response", str),
        ("label", dict),
    ):
        if key not in record:
            raise BadInput(f"{where}: labelled record lacks {key!r}")
        if not isinstance(record[key], kind):
            raise BadInput(f"{where}: {key!r} must be {_KIND_NAMES[kind]}")
    answer = record["label"].get("answer")
    if answer not in ("pass", "fail"):
        raise BadInput(f'{where}: label.answer must be "pass" or "fail", got {answer!r:.40}')
    split = record.get("split")
    if split is not None and not isinstance(split, str):
        raise BadInput(f"{where}: 'split' must be a string")
    return Labelled(
        record["id"],
        record["concept"],
        record["was_injected"],
        record["response"],
        answer == "pass",
        _model(record),
        split,
    )


_KIND_NAMES: dict[type, str] = {str: "a string", bool: "a boolean", dict: "an object"}


def _model(record: dict[str, Any]) -> str:
    config = record.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    return model if isinstance(model, str) and model else UNKNOWN_MODEL
