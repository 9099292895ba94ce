"""The run's SQLite state: `Store`, the one object every other package reads and writes a run
through. Its query objects (`store.history`: judge_history.py, `store.outcomes`: outcomes.py,
`store.provenance`: provenance.py),
the explorer's queries (browse.py) and the file operations (file.py) share this package,
run/db/, the only place that holds SQL (an import contract in pyproject.toml checks it).

One writer connection in WAL mode; every write is a short `BEGIN IMMEDIATE` transaction, so a
crash loses at most what was not yet handed to `record_*`. Migrations in `migrations/NNNN_*.sql`
are applied in order, each recorded in the same transaction that applies it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from introspectd.protocol.results import (
    Generation,
    Judgement,
    RunRow,
    TrialRow,
    VectorTable,
    now_iso,
)
from introspectd.protocol.trials import Arm, Status, TrialSpec
from introspectd.run.db.file import (
    connect_read_only,
    migrate,
    migration_files,
    write_transaction,
)
from introspectd.run.db.judge_history import JudgeHistory
from introspectd.run.db.outcomes import Outcomes
from introspectd.run.db.provenance import ProvenanceLog
from introspectd.run.db.rows import TRIAL_COLUMNS, get_run, read_out_values, trial_row

# The store's errors, for callers that report them without touching SQLite themselves.
StoreError = sqlite3.Error
DatabaseError = sqlite3.DatabaseError


class Store:
    def __init__(self, path: Path, read_only: bool = False) -> None:
        """`read_only`: never write the file, nor migrate it (`status`, `export`; the run may
        sit on read-only storage)."""
        self.path = path
        if read_only:
            self.conn = connect_read_only(path)
            self.conn.row_factory = sqlite3.Row
            self._require_migrated()
            self._compose()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # The event loop thread is the only writer; worker threads never touch this connection.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        migrate(self.conn, migration_files())
        self._compose()

    def _compose(self) -> None:
        self.history = JudgeHistory(self.conn, self.write)
        self.outcomes = Outcomes(self.conn)
        self.provenance = ProvenanceLog(self.conn, self.write)

    def close(self) -> None:
        self.conn.close()

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        """The one write path: a short `BEGIN IMMEDIATE` transaction."""
        return write_transaction(self.conn)

    def _require_migrated(self) -> None:
        """A database from an older introspectd is read through a private in-memory copy,
        upgraded there: the file stays as it is (it may be read-only, or another version's),
        and every reader sees the columns it expects."""
        applied = {row[0] for row in self.conn.execute("SELECT version FROM schema_migrations")}
        if all(int(f.name[:4]) in applied for f in migration_files()):
            return
        copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.conn.backup(copy)
        self.conn.close()
        self.conn = copy
        self.conn.row_factory = sqlite3.Row
        migrate(self.conn, migration_files())

    # --- the run ---------------------------------------------------------------------------

    def get_run(self) -> RunRow | None:
        return get_run(self.conn)

    def save_run(self, run: RunRow) -> None:
        """Create the run, or replace its plan after a pure extension (stamp never changes)."""
        with self.write() as conn:
            conn.execute(
                "INSERT INTO run (id, stamp, experiment_id, model_name, plan_json, spec_json, "
                "spec_hash, baseline_json, created_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET plan_json = excluded.plan_json, "
                "spec_json = excluded.spec_json, spec_hash = excluded.spec_hash",
                (
                    run.stamp,
                    run.experiment_id,
                    run.model_name,
                    run.plan_json,
                    json.dumps(run.spec, sort_keys=True),
                    run.spec_hash,
                    json.dumps(run.baseline),
                    run.created_at,
                ),
            )

    def add_trials(self, stamp: str, specs: Iterable[TrialSpec]) -> int:
        """Insert trials not yet present (ordinals continue after the last); returns how many."""
        with self.write() as conn:
            known = {r[0] for r in conn.execute("SELECT id FROM trials")}
            start = conn.execute("SELECT COALESCE(MAX(ordinal), -1) + 1 FROM trials").fetchone()[0]
            rows = [
                (
                    s.trial_id(stamp),
                    s.concept,
                    # `legacy_kind`'s CHECK predates the random arm (0006_arm.sql).
                    Arm.INJECTION.value if s.is_injected else Arm.CONTROL.value,
                    s.layer,
                    s.strength,
                    s.trial,
                    s.arm.value,
                    s.question,
                    int(s.is_confirmation),
                    s.about,
                    s.prompt,
                )
                for s in specs
                if s.trial_id(stamp) not in known
            ]
            conn.executemany(
                "INSERT INTO trials (id, ordinal, concept, legacy_kind, layer, strength, trial, "
                "arm, question, is_confirmation, about, prompt) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r[0], start + i, *r[1:]) for i, r in enumerate(rows)],
            )
        return len(rows)

    # --- concept vectors -------------------------------------------------------------------

    def get_vectors(self) -> dict[tuple[str, int], tuple[bytes, float]]:
        rows = self.conn.execute("SELECT concept, layer, data, norm FROM vectors")
        return {(r["concept"], r["layer"]): (r["data"], r["norm"]) for r in rows}

    def vector_norms(self) -> dict[tuple[str, int], float]:
        rows = self.conn.execute("SELECT concept, layer, norm FROM vectors")
        return {(r["concept"], r["layer"]): r["norm"] for r in rows}

    def put_vectors(self, vectors: VectorTable) -> None:
        with self.write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO vectors (concept, layer, data, dim, norm) "
                "VALUES (?, ?, ?, ?, ?)",
                [(c, layer, data, dim, norm) for (c, layer), (data, dim, norm) in vectors.items()],
            )

    def residual_norms(self) -> dict[int, float]:
        """Each layer's mean residual norm (`strength_unit = "residual"`; 0010_residual_norm)."""
        rows = self.conn.execute("SELECT layer, norm FROM residual_norms")
        return {r["layer"]: r["norm"] for r in rows}

    def put_residual_norms(self, norms: dict[int, float]) -> None:
        with self.write() as conn:  # the first value stays: a resumed run scales as before
            conn.executemany(
                "INSERT OR IGNORE INTO residual_norms (layer, norm) VALUES (?, ?)",
                sorted(norms.items()),
            )

    # --- trials ----------------------------------------------------------------------------

    def trials(self, status: Status | None = None, concept: str | None = None) -> list[TrialRow]:
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if concept is not None:
            where.append("concept = ?")
            args.append(concept)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {TRIAL_COLUMNS} FROM trials {clause} ORDER BY ordinal"
        return [trial_row(r) for r in self.conn.execute(sql, args)]

    def completed(self, concept: str) -> list[TrialRow]:
        """Rows whose judging has ended, in plan order: what the JSONL files hold."""
        sql = (
            f"SELECT {TRIAL_COLUMNS} FROM trials WHERE concept = ? "
            "AND status IN ('judged', 'judge_failed') ORDER BY ordinal"
        )
        return [trial_row(r) for r in self.conn.execute(sql, (concept,))]

    def completed_by_id(self, trial_ids: list[str]) -> list[TrialRow]:
        """Those of `trial_ids` whose judging has ended, in plan order (one parameter, so
        any number of ids fits SQLite's limit on bound variables)."""
        sql = (
            f"SELECT {TRIAL_COLUMNS} FROM trials WHERE id IN (SELECT value FROM json_each(?)) "
            "AND status IN ('judged', 'judge_failed') ORDER BY ordinal"
        )
        return [trial_row(r) for r in self.conn.execute(sql, (json.dumps(trial_ids),))]

    def record_generations(self, generations: list[Generation]) -> int:
        """Pending → generated. A row already generated keeps its first answer.

        A read-out (logit or choice measure) has nothing to judge: its row goes straight from
        pending to judged (finished), with no judge result, in the same transaction."""
        texts = [g for g in generations if not g.is_read_out]
        readouts = [g for g in generations if g.is_read_out]
        num_written = 0
        with self.write() as conn:
            if texts:
                cur = conn.executemany(
                    "UPDATE trials SET status = 'generated', response = ?, num_new_tokens = ?, "
                    "generated_at = ? WHERE id = ? AND status = 'pending'",
                    [(g.response, g.num_new_tokens, g.generated_at, g.trial_id) for g in texts],
                )
                num_written += cur.rowcount
            if not readouts:
                return num_written
            cur = conn.executemany(
                "UPDATE trials SET status = 'judged', num_new_tokens = 0, generated_at = ?, "
                "judged_at = ?, p_yes = ?, prob_yes = ?, prob_no = ?, choice_json = ? "
                "WHERE id = ? AND status = 'pending'",
                [read_out_values(g) for g in readouts],
            )
            return num_written + cur.rowcount

    def record_judgements(self, judgements: list[Judgement]) -> int:
        """generated → judged | judge_failed, keeping every judgement in the history table.

        A failed re-grade of a judged row (`rejudge --all`) leaves the row and its grade as they
        were: the failure goes to the history only. Returns how many grades were kept so.
        """
        now = now_iso()
        kept = 0
        with self.write() as conn:
            for j in judgements:
                result_json = json.dumps(j.result) if j.result is not None else None
                status = Status.JUDGED if j.result is not None else Status.JUDGE_FAILED
                if j.attempts > 0:  # judging off or breaker open asks nothing: no history
                    conn.execute(
                        "INSERT INTO judgements (trial_id, judge_model, prompt_version, "
                        "fewshot_hash, result_json, error, attempts, prompt_tokens, "
                        "completion_tokens, created_at, judge_fingerprint) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            j.trial_id,
                            j.judge_model,
                            j.prompt_version,
                            j.fewshot_hash,
                            result_json,
                            j.error,
                            j.attempts,
                            j.prompt_tokens,
                            j.completion_tokens,
                            now,
                            j.judge_fingerprint,
                        ),
                    )
                if (
                    j.result is None
                    and conn.execute(
                        "SELECT 1 FROM trials WHERE id = ? AND status = 'judged'", (j.trial_id,)
                    ).fetchone()
                ):
                    kept += 1
                    continue
                conn.execute(
                    "UPDATE trials SET status = ?, judge_json = ?, judge_error = ?, judged_at = ? "
                    "WHERE id = ? AND status != 'pending'",
                    (status.value, result_json, j.error, now, j.trial_id),
                )
        return kept

    # --- summaries -------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """{concept: {status: n}} over every planned trial."""
        out: dict[str, dict[str, int]] = {}
        rows = self.conn.execute(
            "SELECT concept, status, COUNT(*) AS n FROM trials GROUP BY concept, status"
        )
        for r in rows:
            out.setdefault(r["concept"], {})[r["status"]] = r["n"]
        return out

    def judge_totals(self) -> dict[str, Any]:
        r = self.conn.execute(
            "SELECT COUNT(*) AS n, COALESCE(SUM(prompt_tokens), 0) AS p, "
            "COALESCE(SUM(completion_tokens), 0) AS c FROM judgements"
        ).fetchone()
        # Grading human labels (`calibrate`) is spent on the same judge account and budget.
        calibrations = self.conn.execute(
            "SELECT COALESCE(SUM(json_extract(calibration_json, '$.usage.prompt_tokens')), 0), "
            "COALESCE(SUM(json_extract(calibration_json, '$.usage.completion_tokens')), 0) "
            "FROM calibrations"
        ).fetchone()
        failures = {
            row["judge_error"]: row["n"]
            for row in self.conn.execute(
                "SELECT judge_error, COUNT(*) AS n FROM trials WHERE status = 'judge_failed' "
                "GROUP BY judge_error ORDER BY n DESC"
            )
        }
        return {
            "judgements": r["n"],
            "prompt_tokens": r["p"] + calibrations[0],
            "completion_tokens": r["c"] + calibrations[1],
            "failures_by_reason": failures,
        }

    def generated_tokens(self) -> int:
        row = self.conn.execute("SELECT COALESCE(SUM(num_new_tokens), 0) FROM trials").fetchone()
        return int(row[0])


def read_run(db: Path) -> RunRow | None:
    """The run row of a database file (None if none), read-only and without migrating it:
    for a look at other runs' databases. Raises sqlite3.DatabaseError when it is damaged."""
    conn = connect_read_only(db)
    try:
        conn.row_factory = sqlite3.Row
        return get_run(conn)
    finally:
        conn.close()
