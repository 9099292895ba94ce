"""How a command ends when something fails: the one place that maps an exception to one line
and an exit code (`exit_line`, called by `cli.main` alone), and the up-front path checks.

Our own errors (errors.py) carry their line and code; foreign ones are translated where they
arise (GCS in `cloud.gcs.gcs_errors`, the judge's in judge/retry.py), so what reaches here
besides ours is the machine's: the disk filling up mid-run, a directory made read-only under a
run — an `OSError` or `sqlite3.Error`, possibly inside a task group's exception group.
Anything it does not recognise is a bug and keeps its traceback. Cheap checks of the paths a
command will write (`require_writable_dir`, `require_output_file`) run before any work.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from introspectd.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, BadInput, IntrospectdError, leaves

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
DISK_FULL_HINT = "nothing finished is lost; free space and run the same command again to resume"


def exit_line(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for an exception that ends a command, else None (a bug: keep its
    traceback). Ours carry their own; a group is described by its first leaf, as long as no
    leaf is a bug."""
    lines = [_describe(leaf) for leaf in leaves(exc)]
    if not lines or any(line is None for line in lines):
        return None
    return lines[0]


def environment_failure(exc: BaseException) -> tuple[str, int] | None:
    """`exit_line` for a fault of the machine (OSError, sqlite3.Error) alone, else None."""
    return None if isinstance(exc, IntrospectdError) else exit_line(exc)


def _describe(exc: BaseException) -> tuple[str, int] | None:
    if isinstance(exc, IntrospectdError):
        return str(exc), exc.exit_code
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
