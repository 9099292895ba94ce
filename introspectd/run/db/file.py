"""The run database as a file: read-only connections, migrations, integrity checks, backup.

Part of run/db/, the package that holds all SQL (store.py holds the queries). Nothing here
knows the schema beyond `schema_migrations` and the `trials` status counts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from introspectd.protocol.results import now_iso


def migrations_dir() -> Path:
    package = Path(__file__).resolve().parents[2]  # introspectd/ (a wheel ships them there)
    packaged = package / "migrations"
    return packaged if packaged.is_dir() else package.parent / "migrations"


def migration_files() -> list[Path]:
    return sorted(migrations_dir().glob("[0-9][0-9][0-9][0-9]_*.sql"))


def _read_only_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes `path` (SQLite may still leave an empty -wal/-shm).

    On read-only storage SQLite cannot create the -shm a WAL database needs and refuses to
    open; with no -wal the main file alone is the whole database, so it is opened
    `immutable` then (no locks, no -shm). With a -wal but no -shm it still refuses."""
    conn = sqlite3.connect(_read_only_uri(path), uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError as e:
        conn.close()
        wal = Path(f"{path}-wal")
        if e.sqlite_errorname != "SQLITE_CANTOPEN" or (wal.exists() and wal.stat().st_size):
            raise
    uri = f"{path.resolve().as_uri()}?immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One `BEGIN IMMEDIATE` transaction on an autocommit connection: committed on success,
    rolled back on any error. SQLite has often rolled back already (a full disk, `INSERT OR
    ROLLBACK`, a failed COMMIT): a second ROLLBACK would fail and hide the real error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def sql_statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, each whole. A statement ends where SQLite's own parser
    says it does (`sqlite3.complete_statement`), so a `;` inside a string, a comment or a
    trigger body never splits one. Text left after the last `;` is yielded as it is (SQLite
    rejects it if it is not a whole statement)."""
    *pieces, last = script.split(";")
    pending = ""
    for piece in pieces:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if (pending + last).strip():
        yield pending + last


def migrate(conn: sqlite3.Connection, files: Sequence[Path]) -> None:
    """Apply the migration files not yet recorded in `schema_migrations`, in order. Each one
    commits together with its `schema_migrations` row, or not at all; the check for "already
    applied" is repeated inside the transaction, so two processes opening a new database at
    once apply each migration once."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for sql_file in files:
        version = int(sql_file.name[:4])
        if version in applied:
            continue
        with write_transaction(conn):
            if conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
            ).fetchone():
                continue
            for statement in sql_statements(sql_file.read_text(encoding="utf-8")):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                (version, sql_file.stem, now_iso()),
            )


def count_progress(db_path: Path) -> int:
    """Trials past `pending` in a database file, read without migrating or writing it."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT COUNT(*) FROM trials WHERE status != 'pending'").fetchone()
        return int(row[0])
    except sqlite3.DatabaseError:
        return 0
    finally:
        conn.close()


def backup_database(db_path: Path, dest: Path) -> None:
    """Copy a live (WAL-mode) database into `dest` as one self-contained file.

    The online backup API copies every page inside one read transaction, so writers on other
    connections carry on and the copy is one committed state.
    """
    src = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def integrity_check(db: Path) -> str:
    """'ok' or SQLite's first complaint. Opened read-only so a check never writes a -wal."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    return "ok" if rows == [("ok",)] else str(rows[0][0])


def checkpoint_wal(db: Path) -> None:
    """Fold the WAL into the main file, so the file alone holds every commit."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def database_damage(db: Path) -> str | None:
    """None when `db` is a sound SQLite file (PRAGMA quick_check), else what is wrong with it.

    Read-only, so a check never writes into a damaged file. quick_check reads every page once
    (about a second per 100 MB, once per start). Errors that are not damage (a missing or
    locked file, no permission) propagate as sqlite3.OperationalError."""
    try:
        conn = connect_read_only(db)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as e:
        if e.sqlite_errorname not in _CORRUPT_CODES:
            raise
        return str(e)
    except sqlite3.DatabaseError as e:  # SQLITE_CORRUPT, SQLITE_NOTADB
        return str(e)
    return None if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:3])
