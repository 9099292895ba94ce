"""Seed-format JSONL records and their files: whole rewrites (tmp + fsync + rename) and appends.

An append is one `write` of whole lines to an O_APPEND descriptor, then fsync; a crash can cut
it short, which the exporter's reconciliation at the next start repairs."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from introspectd.output.control_keys import control_keys, direction
from introspectd.protocol.lexicon import Lexicon
from introspectd.protocol.plan import SweepConfig
from introspectd.protocol.prompt_battery import prompt_prefill
from introspectd.protocol.results import SeedRecord, TrialRow
from introspectd.protocol.trials import TrialSpec
from introspectd.run.db import Store
from introspectd.text import json_text, utf8

# Read once at import, before any thread starts: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass(frozen=True)
class Norms:
    """What the records' sizes are computed from: each (concept, layer) vector's norm, and
    under `strength_unit = "residual"` each layer's mean residual norm (run/db: the vectors)."""

    vectors: dict[tuple[str, int], float] = field(default_factory=dict)
    residual: dict[int, float] = field(default_factory=dict)


def norms_of(store: Store) -> Norms:
    return Norms(store.vector_norms(), store.residual_norms())


def sizes(
    spec: TrialSpec, vector_norm: float, residual_norm: float | None, sweep: SweepConfig
) -> dict[str, Any]:
    """`config`'s layer, strength, magnitude (‖delta‖) and norms. Residual units: magnitude =
    strength × residual_norm (generate/arms.py scales the delta so), and `residual_norm` is
    added, so the strength can be read either way. A pooled control has none of these."""
    if spec.is_pooled:
        return {"layer": None, "strength": None, "magnitude": None, "vector_norm": None}
    out: dict[str, Any] = {"layer": spec.layer, "strength": spec.strength}
    if sweep.strength_unit != "residual":
        return out | {"magnitude": spec.strength * vector_norm, "vector_norm": vector_norm}
    scale = residual_norm or 0.0
    return out | {
        "magnitude": spec.strength * scale,
        "vector_norm": vector_norm,
        "residual_norm": scale,
    }


def record(
    row: TrialRow,
    model_name: str,
    vector_norm: float,
    sweep: SweepConfig,
    lexicon: Lexicon,
    residual_norm: float | None = None,
) -> SeedRecord:
    """One trial as docs/output.md's record (format `RECORD_FORMAT`): keys may be added, never
    renamed or dropped. A generated answer carries where it first mentions its concept by
    `lexicon` (the plan's `[mentions]` or the built-in lists); a logit read-out has no text."""
    spec = row.spec
    rec: SeedRecord = {
        "id": row.id,
        "timestamp": row.generated_at,
        "concept": None if spec.is_pooled else spec.concept,
        "was_injected": spec.is_injected,
        "response": row.response,
    }
    if not row.is_read_out and row.response is not None and not spec.is_pooled:
        rec["mention"] = lexicon.first_mention(row.response, spec.concept).as_record()
    rec |= {
        "config": {
            "model": model_name,
            **sizes(spec, vector_norm, residual_norm, sweep),  # type: ignore[typeddict-item]
            "prompt_version": spec.prompt or sweep.prompt_version,  # a battery's: the trial's
            "inject_style": sweep.inject_style,
            "trial": spec.trial,
            "direction": direction(row),
        },
        "judge": row.judge,
        "judge_error": row.judge_error,
        **control_keys(row),
    }
    prefill = prompt_prefill(sweep, spec.prompt)
    if prefill:  # the answer (`response`) starts with it
        rec["config"] = {**rec["config"], "prefill": prefill}
    if spec.is_pooled:  # shared by every cell's false-positive rate (report/pooled.py)
        rec["config"] = {**rec["config"], "controls": "pooled"}
    if spec.is_confirmation:  # fresh trials of a chosen cell (report/adaptive_section.py)
        rec["config"] = {**rec["config"], "confirmation": True}
    return rec


def record_line(
    row: TrialRow,
    model_name: str,
    norms: Norms | dict[tuple[str, int], float],
    sweep: SweepConfig,
    lexicon: Lexicon,
) -> str:
    """One row as a JSONL line, newline included. `norms`: a Norms, or the vectors' norms
    alone (raw units)."""
    known = norms if isinstance(norms, Norms) else Norms(norms)
    return json_text(row_record(row, model_name, known, sweep, lexicon)) + "\n"


def row_record(
    row: TrialRow, model_name: str, norms: Norms, sweep: SweepConfig, lexicon: Lexicon
) -> SeedRecord:
    norm = norms.vectors.get((row.spec.concept, row.spec.layer), 0.0)
    residual = norms.residual.get(row.spec.layer)
    return record(row, model_name, norm, sweep, lexicon, residual)


def without_mention(line: str) -> str | None:
    """A JSONL line with its `mention` key dropped, or None when it is no record. The
    exporter's reconciliation compares lines so: a line that differs only there was written
    before records had `mention`, or under another `[mentions]` list, and is not damage."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    obj.pop("mention", None)
    return json_text(obj) + "\n"


def completed_records(
    store: Store, model_name: str, sweep: SweepConfig, concepts: list[str], lexicon: Lexicon
) -> dict[str, list[SeedRecord]]:
    """Each concept's finished trials as output records, in the store's plan order."""
    norms = norms_of(store)
    return {
        concept: [
            row_record(row, model_name, norms, sweep, lexicon) for row in store.completed(concept)
        ]
        for concept in concepts
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers and crashes see the old or the new file only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates 0600; results are for sharing, so give them the user's umask.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write names no file; the one-line report should
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_jsonl(path: Path, records: list[SeedRecord]) -> None:
    write_atomic(path, utf8("".join(json_text(r) + "\n" for r in records)))


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines to `path` (created with the user's umask if missing)."""
    data = utf8("".join(lines))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)  # a failed write names no file; the one-line report should
        raise
