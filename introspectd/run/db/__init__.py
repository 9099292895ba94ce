"""The run database: all SQL of the package lives in run/db/ (the import contract in
pyproject.toml forbids sqlite3 everywhere else but failures, which names its errors).

Other packages import from here: `Store` (the run's state and its query objects), the file
operations the cloud and the run directory need, and the light value types of the outcome
queries. The explorer's queries are `introspectd.run.db.browse`.
"""

from introspectd.run.db.file import (
    backup_database,
    checkpoint_wal,
    count_progress,
    database_damage,
    integrity_check,
    migrate,
)
from introspectd.run.db.outcomes import WAITING, JudgingCounts, Outcome
from introspectd.run.db.store import DatabaseError, Store, StoreError, read_run

__all__ = [
    "WAITING",
    "DatabaseError",
    "JudgingCounts",
    "Outcome",
    "Store",
    "StoreError",
    "backup_database",
    "checkpoint_wal",
    "count_progress",
    "database_damage",
    "integrity_check",
    "migrate",
    "read_run",
]
