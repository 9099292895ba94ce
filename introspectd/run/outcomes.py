"""The light per-trial view an adaptive sweep decides from (run/adaptive_run.py): cell, index,
status and verdict, without answers. A part of `Store` (run/store.py), kept apart so each file
stays readable; it goes through the store's connection."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from introspectd.protocol.trials import Kind, Status


@dataclass(frozen=True)
class Outcome:
    cell: tuple[str, int, float]
    is_injected: bool
    trial: int
    is_confirmation: bool
    status: Status
    answer: str | None  # the judge's verdict; None until judged
    coherent: bool | None


class OutcomeQueries:
    """Mixed into `Store`, which provides the connection."""

    conn: sqlite3.Connection

    def outcomes(self) -> list[Outcome]:
        """Every trial's cell, index, status and verdict, lightly (no answers): what an
        adaptive sweep decides from (run/adaptive_run.py)."""
        sql = (
            "SELECT concept, layer, strength, kind, trial, is_confirmation, status, "
            "json_extract(judge_json, '$.answer') AS answer, "
            "json_extract(judge_json, '$.coherent') AS coherent FROM trials "
            # Decisions rest on the injection and control arms of the plan's own question.
            "WHERE question IS NULL AND COALESCE(arm, kind) != 'random'"
        )
        return [
            Outcome(
                (r["concept"], r["layer"], r["strength"]),
                r["kind"] == Kind.INJECTION.value,
                r["trial"],
                bool(r["is_confirmation"]),
                Status(r["status"]),
                str(r["answer"]) if r["answer"] is not None else None,
                bool(r["coherent"]) if r["coherent"] is not None else None,
            )
            for r in self.conn.execute(sql)
        ]
