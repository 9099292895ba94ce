"""The machine's faults as one line: unusable paths checked up front, and a last-resort mapping.

Cheap checks of the paths a command will write (`require_writable_dir`, `require_output_file`)
run before any work. Whatever still fails later — the disk filling up mid-run, a directory made
read-only underneath a run — reaches `cli.main` as an `OSError` or `sqlite3.Error`, possibly
inside a task group's exception group, and `environment_failure` turns it into one line and an
exit code instead of a traceback. Anything it does not recognise is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from introspectd.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, BadInput

# Disk full exits 75, "interrupted, safe to resume": every finished trial is committed (a
# failed SQLite transaction rolls back whole, a JSONL append cut short is repaired from the
# database at the next start), so after space is freed the same command continues where it
# stopped; on a spot VM it is often transient (logs, caches), and Cloud Batch retries it a
# bounded number of times.
# EFBIG (a file-size limit, `ulimit -f`) is the same fault one level down.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Paths the user can fix: exit 2, like every other bad input.
_BAD_PATH = {
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
    errno.ENOENT,
    errno.ELOOP,
}
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_READONLY, _SQLITE_CANTOPEN = 10, 13, 8, 14
NO_CREDENTIALS = (
    "no Google Cloud credentials (run `gcloud auth application-default login`, "
    "or set GOOGLE_APPLICATION_CREDENTIALS)"
)
DISK_FULL_HINT = "nothing finished is lost; free space and run the same command again to resume"


def environment_failure(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for a fault of the machine rather than of introspectd, else None."""
    leaves = _leaves(exc)
    lines = [_describe(leaf) for leaf in leaves]
    if not lines or any(line is None for line in lines):
        return None  # a bug among them: keep the traceback
    return lines[0]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _describe(exc: BaseException) -> tuple[str, int] | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        where = ": ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or os.strerror(exc.errno)
        text = f"{where}: {reason}" if where else reason
        if exc.errno in _DISK_FULL:
            return f"disk full: {text} ({DISK_FULL_HINT})", EXIT_INTERRUPTED
        if exc.errno in _BAD_PATH:
            return f"cannot use {text}", EXIT_BAD_INPUT
        return None
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL:
            return f"disk full: the run's database: {exc} ({DISK_FULL_HINT})", EXIT_INTERRUPTED
        if code == _SQLITE_IOERR:  # SQLite reports EFBIG and EIO alike; transactions are atomic
            return (
                f"the run's database: {exc} (a full disk, a file-size limit or a failing disk; "
                f"{DISK_FULL_HINT})",
                EXIT_INTERRUPTED,
            )
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
            return f"cannot write the run's database: {exc}", EXIT_BAD_INPUT
        return None
    if type(exc).__name__ == "DefaultCredentialsError":  # google.auth: a setup step, not a bug
        return f"Google Cloud Storage: {NO_CREDENTIALS}", EXIT_BAD_INPUT
    return None


def require_writable_dir(path: Path, where: str) -> None:
    """`path` is a directory we may write, or one we could create (checked on its nearest
    existing ancestor), before any work starts."""
    existing = next(p for p in (path, *path.absolute().parents) if os.path.lexists(p))
    if not existing.is_dir():
        inside = "" if existing == path else f" ({existing} is a file)"
        raise BadInput(f"{where}: {path} is not a directory{inside}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"{where}: {existing} is not writable (read-only or no permission)")


def require_output_file(path: Path, where: str) -> None:
    """`path` can be written as a file: not a directory, in a directory we may write."""
    if path.is_dir():
        raise BadInput(f"{where}: {path} is a directory; give a file name")
    require_writable_dir(path.parent, where)
