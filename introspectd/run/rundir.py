"""The run directory on disk: its lock, its database file, and results without a database.

Used by session.py before a run opens, and by `rejudge --plan`, which takes the same lock.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from introspectd.errors import EXIT_INTERRUPTED, BadInput
from introspectd.failures import environment_failure
from introspectd.protocol.plan import Plan
from introspectd.run.db import Store, StoreError, database_damage, read_run

DB_NAME = "state.sqlite"
LOCK_NAME = ".introspectd.lock"
DECISIONS_NAME = "adaptive.json"  # an adaptive run's decisions (output/decisions_file.py)
# SQLite's companions of the database: a file written over any of them damages the run.
_DB_COMPANIONS = ("-wal", "-shm", "-journal")
RUN_FILE_NAMES = (DB_NAME, *(DB_NAME + s for s in _DB_COMPANIONS), LOCK_NAME, DECISIONS_NAME)


def no_run_found(file: str, out_dir: Path) -> BadInput:
    return BadInput(f"{file}: no run found at {out_dir / DB_NAME}; start it with `introspectd run`")


def open_store(db: Path, read_only: bool) -> Store:
    """The run's database, checked first: a damaged file is one line (exit 2), never a
    traceback halfway through a run. (With [upload] gcs, durability.py has already swapped a
    damaged file for the last good snapshot by now.)"""
    try:
        damage = database_damage(db) if db.is_file() and db.stat().st_size else None
        if damage is not None:
            raise BadInput(
                f"{db}: the run database is damaged ({' '.join(damage.split())[:200]}); replace "
                "it with a backup (with [upload] gcs, `run` restores its last snapshot itself)"
            )
        return Store(db, read_only=read_only)
    except (StoreError, OSError) as e:
        failure = environment_failure(e)
        if failure is not None and failure[1] == EXIT_INTERRUPTED:
            raise  # a full disk is transient, not the user's input: cli.main says so, exit 75
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise BadInput(f"{db}: cannot open the run database ({reason})") from None


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a run's directory: it holds a run database (or one of its files)."""
    return any((path / name).exists() for name in RUN_FILE_NAMES[:4])


def refuse_run_file(path: Path, flag: str) -> None:
    """BadInput when writing `path` would overwrite a run's own file: its database (or the
    database's -wal/-shm/-journal), its lock, its adaptive.json, or a JSONL file in a run's
    directory (the run's results). Symbolic links are followed: the target is what is written.
    An output of another name in a run's directory (a calibration JSON) is allowed."""
    target = path.resolve()
    name = target.name
    in_run_dir = is_run_dir(target.parent)
    if name in RUN_FILE_NAMES or (in_run_dir and name.endswith(".jsonl")):
        what = "a run's results" if name.endswith(".jsonl") else f"a run's {name}"
        raise BadInput(
            f"{flag} {path}: is {what} (in {target.parent}); writing it would damage the run — "
            "choose a path outside the run's files"
        )


def refuse_other_run_dir(out: Path, own_dir: Path | None, flag: str) -> None:
    """BadInput when directory `out` is a run's directory other than `own_dir`: files written
    there would replace that run's results."""
    if is_run_dir(out) and (own_dir is None or out.resolve() != own_dir.resolve()):
        raise BadInput(
            f"{flag} {out}: is another run's directory; its result files would be overwritten "
            "— choose an empty or new directory"
        )


def result_files(plan: Plan, out_dir: Path) -> list[str]:
    names = [f"{c}.jsonl" for c in plan.sweep.concepts]
    return [n for n in names if (out_dir / n).is_file() and (out_dir / n).stat().st_size > 0]


def _holds_run(db: Path) -> bool:
    """False when `db` is missing, empty or holds no run; True otherwise, damaged included
    (open_store reports damage)."""
    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        return read_run(db) is not None
    except StoreError:
        try:
            return database_damage(db) is not None
        except StoreError:
            return True


def refuse_orphaned_results(plan: Plan, out_dir: Path) -> None:
    """Results on disk but no run database (deleted, 0 bytes, or never holding a run).

    Starting over would give the run a new stamp and rewrite these files without the finished
    trials. We refuse rather than move the files aside: the trials were judged and are often
    the only copy, a fresh run beside them would leave two stamps for `report` to mix, and
    the user knows best whether to restore the database or really start again.
    """
    if _holds_run(out_dir / DB_NAME):
        return
    found = result_files(plan, out_dir)
    if found:
        raise BadInput(
            f"{out_dir}: holds results ({', '.join(found)}) but no run database ({DB_NAME} is "
            "missing or empty); restore the database, or move the results elsewhere to start "
            "a new run"
        )


def lock_holder(out_dir: Path) -> str | None:
    """The pid of the process holding `out_dir`'s run lock (a `run` or `rejudge` writing it),
    or None when none does. Reads the lock file only; never creates or takes it."""
    try:
        fd = os.open(out_dir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        return None
    finally:
        os.close(fd)  # releases the shared lock, if taken


def lock_run_dir(out_dir: Path) -> int:
    """Hold an exclusive lock on the run directory for this process's lifetime.

    Two processes on one run would generate the same trials twice (the database keeps one
    answer each, but the GPU time is wasted) and could race a GCS restore.
    """
    lock = out_dir / LOCK_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlink planted here must not make us truncate its target. O_NONBLOCK
        # only so a FIFO cannot hang the open; it is refused just below.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        why = "is a symbolic link; remove it" if os.path.islink(lock) else e.strerror or str(e)
        raise BadInput(f"{lock}: cannot take the run lock: {why}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(f"{lock}: cannot take the run lock: not a regular file; remove it")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise BadInput(
            f"{out_dir}: another introspectd process (pid {holder}) is running this "
            "run; wait for it or stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
