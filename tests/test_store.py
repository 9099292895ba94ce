"""The run database's transactions and migrations, on real SQLite files (issue 12, item 5).

- a write that SQLite already rolled back (a full database) reports the real error, and the
  store stays usable: test_full_database_reports_the_real_error_and_stays_usable
- a migration is split where SQLite says a statement ends, not at every `;`:
  test_migration_with_trigger_and_semicolons_in_strings
- a failing migration leaves no partial schema and no schema_migrations row:
  test_failing_migration_leaves_no_partial_schema_and_no_row
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from introspectd.failures import environment_failure
from introspectd.protocol.trials import Arm, TrialSpec
from introspectd.run.db import Store, migrate

STAMP = "20260101_000000"


def _specs(n: int) -> list[TrialSpec]:
    return [TrialSpec("fear", Arm.INJECTION, 1, 2.0, i) for i in range(n)]


def test_full_database_reports_the_real_error_and_stays_usable(tmp_path: Path) -> None:
    """SQLite rolls a transaction back itself on SQLITE_FULL; a second ROLLBACK failed with
    "no transaction is active", which hid the disk-full error (exit 75, safe to resume) behind
    one that maps to nothing (a traceback, exit 1)."""
    store = Store(tmp_path / "state.sqlite")
    try:
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")  # a real limit: the disk is full
        with pytest.raises(sqlite3.OperationalError) as caught:
            store.add_trials(STAMP, _specs(2000))
        assert caught.value.sqlite_errorname == "SQLITE_FULL", caught.value
        failure = environment_failure(caught.value)
        assert failure is not None and failure[1] == 75, failure
        assert not store.conn.in_transaction
        store.conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
        assert store.add_trials(STAMP, _specs(2000)) == 2000
    finally:
        store.close()


def _write(folder: Path, name: str, sql: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(sql, encoding="utf-8")
    return path


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _versions(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_migration_with_trigger_and_semicolons_in_strings(tmp_path: Path) -> None:
    sql = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE notes (body TEXT NOT NULL DEFAULT 'a;b', edits INTEGER DEFAULT 0);\n"
        "CREATE TRIGGER notes_edited AFTER UPDATE OF body ON notes BEGIN\n"
        "    UPDATE notes SET edits = edits + 1 WHERE rowid = NEW.rowid;\n"
        "    SELECT 'still; the trigger';\n"
        "END;\n"
        "INSERT INTO notes DEFAULT VALUES"  # the last statement without its `;`
    )
    files = [_write(tmp_path / "m", "0001_notes.sql", sql)]
    with closing(sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)) as conn:
        migrate(conn, files)
        migrate(conn, files)  # applied once
        conn.execute("UPDATE notes SET body = 'c'")
        assert conn.execute("SELECT body, edits FROM notes").fetchall() == [("c", 1)]
        assert _versions(conn) == [1]


def test_failing_migration_leaves_no_partial_schema_and_no_row(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    good = _write(folder, "0001_a.sql", "CREATE TABLE a (x INTEGER);")
    bad_sql = "CREATE TABLE b (x INTEGER);\nCREATE INDEX b_y ON b (no_such_column);\n"
    bad = _write(folder, "0002_b.sql", bad_sql)
    db = tmp_path / "db.sqlite"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        with pytest.raises(sqlite3.OperationalError, match="no_such_column"):
            migrate(conn, [good, bad])
        assert not conn.in_transaction
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:  # what reached the disk
        assert _tables(conn) == {"schema_migrations", "a"}
        assert _versions(conn) == [1]
        _write(folder, "0002_b.sql", bad_sql.replace("no_such_column", "x"))
        migrate(conn, [good, bad])  # fixed: applies whole
        assert _tables(conn) == {"schema_migrations", "a", "b"}
        assert _versions(conn) == [1, 2]


def test_a_run_from_before_the_arm_column_reads_its_arms_after_upgrade(tmp_path: Path) -> None:
    """0006_arm.sql: rows written before 0004 (no `arm`) get theirs from the old `kind`, and the
    store reads `arm` alone — a control stays a control, an injection an injection."""
    from introspectd.run.db.file import migration_files

    db = tmp_path / "state.sqlite"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        migrate(conn, migration_files()[:3])  # a database as 0.1 before the control arms
        for i, kind in enumerate(("injection", "control")):
            conn.execute(
                "INSERT INTO trials (id, ordinal, concept, kind, layer, strength, trial) "
                "VALUES (?, ?, 'fear', ?, 1, 2.0, 0)",
                (f"{STAMP}_fear_{kind}_L1_S2.0_t0", i, kind),
            )
    store = Store(db)
    try:
        assert [t.spec.arm for t in store.trials()] == [Arm.INJECTION, Arm.CONTROL]
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(trials)")}
        assert "arm" in columns and "legacy_kind" in columns and "kind" not in columns
    finally:
        store.close()


def test_a_read_only_open_of_an_older_database_upgrades_a_copy_not_the_file(
    tmp_path: Path,
) -> None:
    """`status`, `report`, `explore` and `export` open the run database read-only: after an
    upgrade of introspectd they read an older schema through an upgraded in-memory copy, and
    the file keeps every byte (it may be on read-only storage, or shared with the old version)."""
    from introspectd.run.db.file import migration_files

    db = tmp_path / "state.sqlite"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        migrate(conn, migration_files()[:6])  # through 0006_arm.sql: no about/choice/prompt
        conn.execute(
            "INSERT INTO trials (id, ordinal, concept, legacy_kind, arm, layer, strength, trial) "
            f"VALUES ('{STAMP}_fear_control_L1_S2.0_t0', 0, 'fear', 'control', 'control', 1, "
            "2.0, 0)"
        )
    before = db.read_bytes()
    store = Store(db, read_only=True)
    try:
        (row,) = store.trials()
        assert row.spec.arm is Arm.CONTROL and row.spec.about is None and row.spec.prompt is None
    finally:
        store.close()
    assert db.read_bytes() == before
