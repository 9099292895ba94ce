"""`introspectd rejudge --input IN.jsonl --output OUT.jsonl`: grade a seed-format file again.

Records whose `judge` is null (or every record, with `all_records`) are sent to the judge, up
to the judge's concurrency at once (grader.py's worker pool). Every other line is written back
exactly as it was read, in the same order. A record that already had a judgement keeps it when
its new grading fails: a re-grade must never lose a judgement. The output is replaced
atomically, so it may be the input.
On SIGTERM/SIGINT the output is written with what was graded so far, then `Interrupted` (75).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from introspectd import stopping
from introspectd.errors import BadInput, Interrupted
from introspectd.jsonl import JsonLine, read_jsonl
from introspectd.judge.client import Judge, JudgeOutcome
from introspectd.judge.grader import grade_all
from introspectd.judge.progress import JudgingDisplay, Progress
from introspectd.output.records import write_atomic
from introspectd.text import json_text, utf8


@dataclass(frozen=True)
class RejudgeCounts:
    total: int  # records in the file
    selected: int  # records sent to the judge
    judged: int  # ... that came back with a judgement
    failed: int  # ... that did not (reason in judge_error, or old judgement kept)
    failed_by_reason: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        reasons = "".join(f"; {n}× {why}" for why, n in self.failed_by_reason.items())
        return (
            f"{self.total} records, {self.selected} sent to the judge: {self.judged} judged, "
            f"{self.failed} failed{reasons}"
        )


async def rejudge_file(
    input: Path,
    output: Path,
    judge: Judge,
    all_records: bool = False,
    display: JudgingDisplay | None = None,
) -> RejudgeCounts:
    lines = _read(input)
    todo = [
        i
        for i, line in enumerate(lines)
        if line.value is not None and (all_records or line.value.get("judge") is None)
    ]
    for i in todo:  # check every record before the first request is sent
        _check_judgeable(input, lines[i])
    progress = Progress("rejudge", "records", len(todo), lambda: judge.stats, display)
    with stopping.deferred():  # SIGTERM/SIGINT: keep what was graded (below), then exit 75
        outcomes = await _grade_all(judge, [lines[i] for i in todo], progress)
    progress.finish()
    out_lines = [line.raw for line in lines]
    failures: Counter[str] = Counter()
    for i, outcome in zip(todo, outcomes, strict=True):
        record = lines[i].value
        assert record is not None
        if outcome is None:
            continue  # not graded before a stop: the line stays as it was
        if outcome.error is not None:
            failures[outcome.error] += 1
            if record.get("judge") is not None:
                continue  # keep the old judgement rather than replace it with nothing
        out_lines[i] = json_text(_updated(record, outcome))
    write_atomic(output, utf8("".join(f"{line}\n" for line in out_lines)))
    failed = sum(failures.values())
    graded = sum(1 for outcome in outcomes if outcome is not None)
    counts = RejudgeCounts(
        total=sum(1 for line in lines if line.value is not None),
        selected=len(todo),
        judged=graded - failed,
        failed=failed,
        failed_by_reason=dict(failures),
    )
    if graded < len(todo):
        raise Interrupted(
            f"stopped by {stopping.received()}: {output} holds what was graded "
            f"({counts}; {len(todo) - graded} not sent or in flight) — run "
            f"rejudge again with --input {output} to grade the rest"
        )
    return counts


def _updated(record: dict[str, Any], outcome: JudgeOutcome) -> dict[str, Any]:
    """Same keys in the same order; only judge and judge_error change."""
    new = dict(record)
    new["judge"] = outcome.result
    new["judge_error"] = outcome.error
    return new


@dataclass(frozen=True)
class _Todo:
    position: int  # in the list of records to grade
    concept: str
    is_injected: bool
    response: str


async def _grade_all(
    judge: Judge, lines: list[JsonLine], progress: Progress
) -> list[JudgeOutcome | None]:
    """One outcome per line, None for those not graded when a SIGTERM/SIGINT came."""
    results: list[JudgeOutcome | None] = [None] * len(lines)
    send, receive = anyio.create_memory_object_stream[_Todo](math.inf)
    with send:
        for i, line in enumerate(lines):
            record = line.value
            assert record is not None
            send.send_nowait(
                _Todo(i, record["concept"], record["was_injected"], record["response"])
            )

    def keep(todo: _Todo, outcome: JudgeOutcome) -> None:
        results[todo.position] = outcome

    async def until_stopped(scope: anyio.CancelScope) -> None:
        while stopping.received() is None:
            await anyio.sleep(0.05)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(until_stopped, tg.cancel_scope)
        tg.start_soon(progress.show)
        await grade_all(judge, receive, keep)
        tg.cancel_scope.cancel()
    return results


def file_concepts(path: Path) -> tuple[str, ...]:
    """The concepts of a seed-format file's records: the blind prompt's candidates."""
    return tuple(
        sorted(
            {
                line.value["concept"]
                for line in _read(path)
                if line.value and isinstance(line.value.get("concept"), str)
            }
        )
    )


def _read(path: Path) -> list[JsonLine]:
    return read_jsonl(path, "input file", expect="a seed-format record")


def _check_judgeable(path: Path, line: JsonLine) -> None:
    record = line.value or {}
    for key, kind in (("concept", str), ("was_injected", bool), ("response", str)):
        if key not in record:
            raise BadInput(f"{path}:{line.lineno}: record lacks {key!r}")
        if not isinstance(record[key], kind):
            raise BadInput(
                f"{path}:{line.lineno}: {key!r} must be a {'boolean' if kind is bool else 'string'}"
            )
