"""Spot safety around a run: restore from GCS at start, upload snapshots as work finishes.

At start, with `[upload] gcs` set: a fresh VM (no local database) restores the latest good
snapshot; when both exist, the run continues from whichever has more finished trials, and the
one not chosen is kept beside it under a `.bak` name — never overwritten silently.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from introspectd.errors import BadInput
from introspectd.run.db import StoreError, count_progress, database_damage
from introspectd.run.rundir import DB_NAME

if TYPE_CHECKING:
    from introspectd.cloud.snapshot import SnapshotStore
    from introspectd.cloud.uploader import Uploader
    from introspectd.protocol.plan import Plan

log = logging.getLogger("introspectd")
FINAL_FLUSH_S = 15.0


def snapshot_store(plan: Plan, out_dir: Path) -> SnapshotStore | None:
    if not plan.upload.gcs:
        return None
    from introspectd.cloud.snapshot import SnapshotStore

    rel_dir = out_dir.relative_to(Path(plan.run.output_dir)).as_posix()
    return SnapshotStore(plan.upload.gcs, rel_dir, retry_timeout_s=15.0, request_timeout_s=20.0)


def require_fixed_experiment(plan: Plan, experiment_id_from_env: str | None) -> None:
    if plan.upload.gcs and not (plan.run.experiment_id or experiment_id_from_env):
        raise BadInput(
            f"{plan.path}: [run] experiment_id: required when [upload] gcs is set, so a "
            "fresh VM can find its snapshot"
        )


def restore_at_start(snapshots: SnapshotStore, out_dir: Path) -> str | None:
    """Bring `out_dir` to the furthest of local state and GCS; says what was done, if anything.

    GCS unreachable (after the client's own retries) raises `Transient` (exit 75): Cloud Batch
    then retries the task, where exit 1 would fail it for good over a blip. A missing bucket or
    no permission is `BadInput` (exit 2), found before any work. A snapshot that is there but
    cannot be trusted stays a `RestoreError`.
    """
    from introspectd.cloud.gcs import gcs_errors

    with gcs_errors(snapshots.uri, outage=f"cannot reach {snapshots.uri} to restore the run"):
        return _restore_at_start(snapshots, out_dir)


def _restore_at_start(snapshots: SnapshotStore, out_dir: Path) -> str | None:
    local_db = out_dir / DB_NAME
    snapshots.check_bucket()  # a missing bucket would otherwise look like a run not yet saved
    set_aside_if_damaged(snapshots, local_db)
    if not local_db.is_file():
        result = snapshots.restore(out_dir, DB_NAME)
        if result is None:
            snapshots.read_manifest()
            return None
        how = ""
        if result.fell_back:
            how = f" (the latest was bad: {result.skipped}; used the previous one)"
        return (
            f"restored snapshot #{result.seq} from GCS{how}: {sum(result.counts.values())} trials"
        )
    if snapshots.read_manifest() is None:
        return None
    scratch = Path(tempfile.mkdtemp(prefix=".restore-check-", dir=out_dir))
    try:
        result = snapshots.restore(scratch, DB_NAME)
        if result is None:
            return None
        local_done, remote_done = count_progress(local_db), count_progress(scratch / DB_NAME)
        if remote_done <= local_done:
            return (
                f"continuing from the local database ({local_done} trials done; GCS snapshot "
                f"#{result.seq} has {remote_done})"
            )
        backup = out_dir / f"{DB_NAME}.local-{int(time.time())}.bak"
        _close_and_move(local_db, backup)
        for path in result.files:
            shutil.move(str(path), out_dir / path.name)
        return (
            f"continuing from GCS snapshot #{result.seq} ({remote_done} trials done; the local "
            f"database had {local_done} and is kept as {backup.name})"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def set_aside_if_damaged(snapshots: SnapshotStore, local_db: Path) -> None:
    """A damaged local database with a snapshot in GCS: move it (and its -wal) to
    `state.sqlite.bak`, so the restore below treats this like a fresh VM.

    Checked before anything else reads it: comparing progress or checkpointing a damaged
    file fails halfway (or, worse, trusts it). Without a snapshot the file stays where it is
    and opening the run reports it (one line, exit 2).
    """
    if not local_db.is_file():
        return
    try:
        damage = database_damage(local_db)
    except StoreError:
        return  # not damage (locked, unreadable): opening the run reports it
    if damage is None or snapshots.read_manifest() is None:
        return
    backup = local_db.with_name(f"{local_db.name}.bak")
    if backup.exists():
        backup = local_db.with_name(f"{local_db.name}.damaged-{int(time.time())}.bak")
    wal = Path(f"{local_db}-wal")
    if wal.exists():  # kept with it: SQLite reads `X.bak-wal` together with `X.bak`
        os.replace(wal, f"{backup}-wal")
    Path(f"{local_db}-shm").unlink(missing_ok=True)  # an index of that -wal, rebuilt on open
    os.replace(local_db, backup)
    log.warning(
        "local database %s is damaged (%s); kept it as %s and restoring the GCS snapshot",
        local_db,
        " ".join(damage.split())[:200],
        backup.name,
    )


def _close_and_move(db: Path, dest: Path) -> None:
    from introspectd.run.db import checkpoint_wal

    checkpoint_wal(db)  # so the backup is one self-contained file
    shutil.move(str(db), dest)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


class UploadTrigger:
    """Asks the uploader for a snapshot every `every_trials` finished trials, at most every
    `min_interval_s`, and once more at the end (or on a requested stop)."""

    def __init__(self, uploader: Uploader, plan: Plan, files: list[Path], plan_hash: str) -> None:
        self.uploader = uploader
        self.every_trials = plan.upload.every_trials
        self.min_interval_s = plan.upload.min_interval_s
        self.files = files
        self.plan_hash = plan_hash
        self._done_at_last = 0
        self._last_request = float("-inf")

    def maybe_request(self, num_done: int, counts: Callable[[], dict[str, int]]) -> None:
        is_due = num_done - self._done_at_last >= self.every_trials
        if is_due and time.monotonic() - self._last_request >= self.min_interval_s:
            self.request(num_done, counts())

    def request(self, num_done: int, counts: dict[str, int]) -> None:
        self._done_at_last = num_done
        self._last_request = time.monotonic()
        self.uploader.request([f for f in self.files if f.exists()], counts, self.plan_hash)

    def check(self) -> None:
        if self.uploader.fatal is not None:
            raise self.uploader.fatal
