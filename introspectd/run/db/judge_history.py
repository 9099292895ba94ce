"""Queries on the judge history a run keeps: every judgement with its judge's fingerprint, and
the judge's calibrations (`introspectd calibrate`). `Store.history` (run/db/store.py); it goes
through the store's connection and its one write path."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from introspectd.protocol.results import now_iso
from introspectd.text import loads_text


class JudgeHistory:
    """`store.history`: the store's connection and its one write path, shared."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        write: Callable[[], AbstractContextManager[sqlite3.Connection]],
    ) -> None:
        self.conn, self.write = conn, write

    def graded_history(self) -> list[tuple[str, str, str, str, dict[str, Any]]]:
        """Every judgement that gave a grade, oldest first, as (trial_id, judge_model,
        prompt_version, fewshot_hash, result): what `report --judge` picks a judge's grades from."""
        rows = self.conn.execute(
            "SELECT trial_id, judge_model, prompt_version, fewshot_hash, result_json "
            "FROM judgements WHERE result_json IS NOT NULL ORDER BY id"
        )
        return [(r[0], r[1], r[2], r[3], loads_text(r[4])) for r in rows]

    def judge_fingerprints(self) -> list[str]:
        """The fingerprints of the judges that graded rows of this run, the most recently used
        last (so `[-1]` is the latest judge). Judgements made before fingerprints were stored
        are left out."""
        rows = self.conn.execute(
            "SELECT judge_fingerprint, MAX(id) AS last FROM judgements "
            "WHERE judge_fingerprint != '' AND result_json IS NOT NULL "
            "GROUP BY judge_fingerprint ORDER BY last"
        )
        return [r["judge_fingerprint"] for r in rows]

    def judgements_by(self, fingerprint: str) -> dict[str, dict[str, Any]]:
        """{trial_id: judge object}: the latest successful grade of each trial by that judge."""
        rows = self.conn.execute(
            "SELECT trial_id, result_json FROM judgements WHERE id IN ("
            "SELECT MAX(id) FROM judgements WHERE judge_fingerprint = ? "
            "AND result_json IS NOT NULL GROUP BY trial_id)",
            (fingerprint,),
        )
        return {r["trial_id"]: loads_text(r["result_json"]) for r in rows}

    def save_calibration(self, fingerprint: str, calibration: dict[str, Any]) -> None:
        with self.write() as conn:
            conn.execute(
                "INSERT INTO calibrations (judge_fingerprint, calibration_json, created_at) "
                "VALUES (?, ?, ?)",
                (fingerprint, json.dumps(calibration, sort_keys=True), now_iso()),
            )

    def latest_calibration(self, fingerprint: str) -> dict[str, Any] | None:
        """The judge's most recent calibration (`introspectd calibrate`), or None."""
        row = self.conn.execute(
            "SELECT calibration_json FROM calibrations WHERE judge_fingerprint = ? "
            "ORDER BY id DESC LIMIT 1",
            (fingerprint,),
        ).fetchone()
        return json.loads(row[0]) if row else None
