"""The run's provenance rows (migrations/0009_provenance.sql): what made its generations, one
row per process that loaded the model. `Store.provenance` (run/db/store.py); it goes through
the store's connection and its one write path."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from introspectd.protocol.results import now_iso
from introspectd.text import loads_text


class ProvenanceLog:
    """`store.provenance`: append one process's facts; read the latest, or all."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        write: Callable[[], AbstractContextManager[sqlite3.Connection]],
    ) -> None:
        self.conn, self.write = conn, write

    def add(self, facts: dict[str, Any]) -> None:
        with self.write() as conn:
            conn.execute(
                "INSERT INTO provenance (recorded_at, data_json) VALUES (?, ?)",
                (now_iso(), json.dumps(facts, sort_keys=True)),
            )

    def all(self) -> list[dict[str, Any]]:
        """Every row, oldest first, each with its `recorded_at`."""
        rows = self.conn.execute("SELECT recorded_at, data_json FROM provenance ORDER BY seq")
        return [{"recorded_at": r["recorded_at"], **loads_text(r["data_json"])} for r in rows]

    def latest(self) -> dict[str, Any] | None:
        rows = self.all()
        return rows[-1] if rows else None
