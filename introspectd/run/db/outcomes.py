"""Light views of the trials, without answers: what an adaptive sweep decides from
(run/round_state.py), and how much of a run is generated and judged (the end of `run`,
`status`). `Store.outcomes` (run/db/store.py); it reads through the store's connection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass, field

from introspectd.protocol.trials import Arm, Status


@dataclass(frozen=True)
class Outcome:
    cell: tuple[str, int, float]
    is_injected: bool
    trial: int
    is_confirmation: bool
    status: Status
    answer: str | None  # the judge's verdict; None until judged
    coherent: bool | None


@dataclass(frozen=True)
class JudgingCounts:
    """Trials by how far they got: generated (or read out), then graded by a judge or not."""

    total: int
    generated: int  # answered (or read out): no longer pending
    judged: int  # graded by a judge
    read_out: int  # logit-mode read-outs: finished, with nothing to judge
    not_judged: dict[str, int] = field(default_factory=dict)  # reason → trials answered, ungraded

    @property
    def num_not_judged(self) -> int:
        return sum(self.not_judged.values())


WAITING = "waiting for the judge"  # the reason of a row left `generated`


class Outcomes:
    """`store.outcomes`: read-only queries on the store's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def all(self) -> list[Outcome]:
        """Every trial's cell, index, status and verdict, lightly (no answers): what an
        adaptive sweep decides from (run/round_state.py)."""
        sql = (
            "SELECT concept, layer, strength, arm, trial, is_confirmation, status, "
            "json_extract(judge_json, '$.answer') AS answer, "
            "json_extract(judge_json, '$.coherent') AS coherent FROM trials "
            # Decisions rest on the injection and control arms of the plan's own question.
            "WHERE question IS NULL AND about IS NULL AND arm != 'random'"
        )
        return [
            Outcome(
                (r["concept"], r["layer"], r["strength"]),
                r["arm"] == Arm.INJECTION.value,
                r["trial"],
                bool(r["is_confirmation"]),
                Status(r["status"]),
                str(r["answer"]) if r["answer"] is not None else None,
                bool(r["coherent"]) if r["coherent"] is not None else None,
            )
            for r in self.conn.execute(sql)
        ]

    def judging_counts(self, trial_ids: Collection[str] | None = None) -> JudgingCounts:
        """How many of `trial_ids` (default: every trial) are generated, judged, read out, or
        answered and not judged, by stored reason."""
        where, args = "", []
        if trial_ids is not None:  # one parameter, whatever the number of ids
            where, args = (
                "WHERE id IN (SELECT value FROM json_each(?))",
                [json.dumps(list(trial_ids))],
            )
        rows = self.conn.execute(
            "SELECT status, judge_error, p_yes IS NOT NULL AS read_out, COUNT(*) AS n "
            f"FROM trials {where} GROUP BY status, judge_error, read_out",
            args,
        ).fetchall()
        total = generated = judged = read_out = 0
        not_judged: dict[str, int] = {}
        for r in rows:
            status, n = Status(r["status"]), r["n"]
            total += n
            if status is Status.PENDING:
                continue
            generated += n
            if status is Status.JUDGED:
                read_out += n if r["read_out"] else 0
                judged += 0 if r["read_out"] else n
                continue
            reason = WAITING if status is Status.GENERATED else r["judge_error"] or "unknown"
            not_judged[reason] = not_judged.get(reason, 0) + n
        ordered = dict(sorted(not_judged.items(), key=lambda item: -item[1]))
        return JudgingCounts(total, generated, judged, read_out, ordered)
