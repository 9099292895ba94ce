"""Snapshots of a run (SQLite + JSONL) to GCS, and restore on a fresh VM.

Layout under `gs://bucket/prefix/{rel_dir}/` (rel_dir = the run's local relative layout, e.g.
`2026-01-23-sweep/3b` or `2026-01-23-sweep/3b/shard-0-of-3`):

    manifest.json                                    the commit marker, written last (CAS)
    objects/{seq:08d}-{writer}-{rand}/state.sqlite   snapshot of the database
    objects/{seq:08d}-{writer}-{rand}/{concept}.jsonl

Objects are *versioned names*: every upload attempt writes into a fresh
`objects/{seq}-{writer}-{rand}/` folder with `if_generation_match=0` (create only), so no data
object is ever replaced in place. Why: the previous manifest's objects must survive the next
upload for restore to fall back to them, and a zombie writer can then never clobber an object a
newer manifest points at. A JSONL file that has not changed since the last manifest is not
uploaded again; the new manifest points at the same object (after checking it is still there
with the recorded crc32c). The only object that is ever replaced is `manifest.json`, with
compare-and-swap on its generation: we write `if_generation_match` = the generation we last
read or wrote (0 when absent). If that fails and the object is not our own retried write,
another process owns the run and `StaleWriter` is raised; nothing of theirs is touched. After a
commit, objects that neither the new nor the previous manifest references, and that are older
than the previous manifest's seq, are deleted (best effort).

The manifest format is documented in `introspectd.cloud.manifest`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption

from introspectd.cloud import gcs
from introspectd.cloud.gcs import parse_gcs_uri
from introspectd.cloud.manifest import MANIFEST, FileSet, Manifest, ObjectRef
from introspectd.errors import RestoreError, SnapshotError, StaleWriter, UploadError, one_line
from introspectd.run.db import backup_database, integrity_check

__all__ = [
    "FileSet",
    "Manifest",
    "ObjectRef",
    "RestoreResult",
    "SnapshotStore",
    "make_db_snapshot",
    "parse_gcs_uri",
    "remove_stale_sidecars",
]

log = logging.getLogger("introspectd")
_STALE_SUFFIXES = ("-wal", "-shm", "-journal")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_db_snapshot(db_path: Path, dest: Path) -> None:
    """Copy a live (WAL-mode) SQLite database into `dest`, consistently, fsync'd and checked.

    The online backup API copies every page in one step inside a read transaction, so writers on
    other connections carry on and the copy is one committed state. The copy is switched to
    rollback-journal mode so it is a single self-contained file.
    """
    if not db_path.is_file():
        raise SnapshotError(f"no database to snapshot at {db_path}")
    dest.unlink(missing_ok=True)
    backup_database(db_path, dest)
    verdict = integrity_check(dest)
    if verdict != "ok":
        raise SnapshotError(f"snapshot of {db_path} failed integrity_check: {verdict}")
    _fsync(dest)
    _fsync(dest.parent)


@dataclass(frozen=True)
class RestoreResult:
    seq: int
    created_at: str
    counts: dict[str, int]
    plan_hash: str
    db_path: Path
    files: list[Path] = field(default_factory=list)  # every file written, the db included
    fell_back: bool = False  # True when the latest manifest was unusable and `previous` was used
    skipped: str = ""  # why the latest manifest's files were not used, when fell_back


class _BadObject(Exception):
    """An object of a file set is missing, truncated or corrupt."""


def _sweep_debris(folder: Path, min_age_s: float = 600.0) -> None:
    """Remove temp folders a killed process left behind (old enough not to be in use)."""
    cutoff = time.time() - min_age_s
    for tmp in [*folder.glob(".snapshot-*"), *folder.glob(".restore-*")]:
        with contextlib.suppress(OSError):
            if tmp.is_dir() and tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)


def _stage_jsonl(src: Path, dest: Path) -> None:
    """Copy a JSONL file, cut after its last newline: a half-written last line never uploads."""
    data = src.read_bytes()
    end = data.rfind(b"\n") + 1
    dest.write_bytes(data[:end])


class SnapshotStore:
    """Upload and restore one run's state under `{gcs_uri}/{rel_dir}/`.

    Uploads are serialised by a lock; call from one worker thread (see `cloud.uploader`).
    The first manifest this store reads (read_manifest, restore or the first upload) becomes its
    baseline; it then only ever moves to manifests it wrote itself. Call `read_manifest()` or
    `restore()` at start-up so a later rival write is detected as one.
    """

    def __init__(
        self,
        gcs_uri: str,
        rel_dir: str,
        *,
        client: storage.Client | None = None,
        retry_timeout_s: float = 60.0,
        retry_initial_s: float = 1.0,
        request_timeout_s: float = 60.0,
    ) -> None:
        bucket, prefix = parse_gcs_uri(gcs_uri)
        self.base = "/".join(p for p in (prefix, rel_dir.strip("/")) if p)
        self.uri = f"gs://{bucket}/{self.base}"
        self._bucket = (client or gcs.make_client()).bucket(bucket)
        self._retry = gcs.make_retry(retry_timeout_s, retry_initial_s)
        self._timeout = request_timeout_s
        self._lock = threading.Lock()
        self._baseline: Manifest | None = None  # CAS target: the manifest we last read/wrote
        self._good: FileSet | None = None  # what the next upload calls `previous` and reuses
        self._pinned = False
        self.writer = secrets.token_hex(4)  # names this process in manifests and object folders

    def _pin(self, manifest: Manifest | None) -> None:
        """Adopt `manifest` as the baseline (call with the lock held)."""
        self._baseline, self._pinned = manifest, True
        self._good = None if manifest is None else manifest.as_fileset()

    def _name(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def _fetch_manifest(self) -> Manifest | None:
        got = gcs.get_bytes(self._bucket, self._name(MANIFEST), self._retry, self._timeout)
        if got is None:
            return None
        try:
            return Manifest.from_json(*got)
        except (ValueError, KeyError, TypeError) as e:
            raise RestoreError(
                f"{self.uri}/{MANIFEST} is unreadable ({e}); fix or remove it by hand"
            ) from e

    def check_bucket(self) -> None:
        """Raises NotFound when the bucket does not exist (reading the manifest cannot tell),
        Forbidden when this account may not list it."""
        gcs.probe(self._bucket, self._name(""), self._retry, self._timeout)

    def read_manifest(self) -> Manifest | None:
        """The run's current manifest in GCS (None if there is none). Pins the baseline once."""
        manifest = self._fetch_manifest()
        if not self._pinned:  # checked again under the lock; never blocks once pinned
            with self._lock:
                if not self._pinned:
                    self._pin(manifest)
        return manifest

    # -- upload ----------------------------------------------------------------------------

    def upload(
        self, db_path: Path, files: list[Path], counts: dict[str, int], plan_hash: str
    ) -> Manifest:
        """Snapshot the database, upload it and `files`, then commit a new manifest.

        Files that do not exist (yet) are skipped. Raises StaleWriter when another process has
        written the manifest since our baseline; any other exception leaves the committed
        manifest unchanged and the upload may simply be retried.
        """
        with self._lock:
            _sweep_debris(db_path.parent)
            if not self._pinned:
                self._pin(self._fetch_manifest())
            base, good = self._baseline, self._good
            seq = (base.seq if base else 0) + 1
            # A fresh folder per attempt: a retried upload never meets its own half-done objects.
            folder = f"objects/{seq:08d}-{self.writer}-{secrets.token_hex(2)}"
            with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=db_path.parent) as tmp:
                staged = self._stage(db_path, files, Path(tmp))
                objects = {
                    name: self._put(folder, name, path, good) for name, path in staged.items()
                }
            manifest = Manifest(
                seq=seq,
                created_at=datetime.now(UTC).isoformat(),
                counts=dict(counts),
                db=db_path.name,
                objects=objects,
                plan_hash=plan_hash,
                writer=self.writer,
                previous=good,
            )
            committed = self._commit(manifest, base)
            self._pin(committed)
        self._collect_garbage(committed)
        return committed

    def _stage(self, db_path: Path, files: list[Path], tmp: Path) -> dict[str, Path]:
        staged = {db_path.name: tmp / db_path.name}
        make_db_snapshot(db_path, staged[db_path.name])
        for src in files:
            if src.name in staged:
                raise UploadError(f"two files named {src.name} in one snapshot")
            if src.is_file():
                staged[src.name] = tmp / src.name
                _stage_jsonl(src, staged[src.name])
        return staged

    def _put(self, folder: str, name: str, path: Path, good: FileSet | None) -> ObjectRef:
        crc, size = gcs.crc32c_of_file(path), path.stat().st_size
        old = good.objects.get(name) if good else None
        if old is not None and old.crc32c == crc and old.size == size:
            now = gcs.stat(self._bucket, self._name(old.object), self._retry, self._timeout)
            if now is not None and (now.generation, now.crc32c) == (old.generation, crc):
                return old  # unchanged since the last manifest, and still intact in GCS
        rel = f"{folder}/{name}"
        info = gcs.put_file(
            self._bucket,
            self._name(rel),
            path,
            crc,
            size,
            if_generation_match=0,
            retry=self._retry,
            timeout=self._timeout,
        )
        return ObjectRef(rel, info.crc32c, info.generation, info.size)

    def _commit(self, manifest: Manifest, base: Manifest | None) -> Manifest:
        data = manifest.to_json()
        try:
            info = gcs.put_bytes(
                self._bucket,
                self._name(MANIFEST),
                data,
                if_generation_match=base.generation if base else 0,
                retry=self._retry,
                timeout=self._timeout,
            )
        except gexc.PreconditionFailed:
            rival = self._fetch_manifest()
            theirs = f"seq {rival.seq} by writer {rival.writer}" if rival else "deleted"
            raise StaleWriter(
                f"{self.uri}/{MANIFEST} was changed by another process ({theirs}) since this one "
                f"saw seq {base.seq if base else 0}; this process must stop uploading"
            ) from None
        return Manifest.from_json(data, info.generation)

    def _collect_garbage(self, current: Manifest) -> None:
        """Delete objects no manifest we might restore from references (best effort)."""
        keep = {r.object for r in current.objects.values()}
        floor = current.seq
        if current.previous is not None:
            keep |= {r.object for r in current.previous.objects.values()}
            floor = current.previous.seq
        try:
            listed = gcs.list_objects(
                self._bucket, self._name("objects/"), self._retry, self._timeout
            )
            for obj in listed:
                rel = obj.name[len(self._name("")) :]
                try:
                    seq = int(rel.split("/")[1].split("-")[0])
                except (IndexError, ValueError):
                    continue  # not ours: leave it alone
                # Only strictly older than `floor`: newer folders may be a live rival's upload.
                if rel not in keep and seq < floor:
                    gcs.delete_quietly(
                        self._bucket, obj.name, obj.generation, self._retry, self._timeout
                    )
        except Exception as e:  # the commit already happened; the next commit retries the GC
            log.warning(
                "garbage collection under %s/objects failed (%s); old objects stay until the "
                "next upload retries it",
                self.uri,
                one_line(e),
            )

    # -- restore ---------------------------------------------------------------------------

    def restore(self, local_dir: Path, db_name: str = "state.sqlite") -> RestoreResult | None:
        """Install the latest good file set from GCS into `local_dir`; None if GCS has none.

        Every object is checked (size, crc32c; the database also with integrity_check) before
        anything in `local_dir` is touched. When the latest set is bad, the previous manifest's
        set is tried; when neither is good, RestoreError. Network errors propagate as they are
        (retry later) — they never cause a fallback or an empty start.
        """
        manifest = self.read_manifest()
        if manifest is None:
            return None
        sets = [manifest.as_fileset()] + ([manifest.previous] if manifest.previous else [])
        problems: list[str] = []
        for fs in sets:
            try:
                files = self._install(fs, local_dir, db_name)
            except _BadObject as e:
                problems.append(f"seq {fs.seq}: {e}")
                continue
            if fs is not sets[0]:
                self._rebase_on(manifest, fs)
            return RestoreResult(
                seq=fs.seq,
                created_at=fs.created_at,
                counts=dict(fs.counts),
                plan_hash=manifest.plan_hash,
                db_path=local_dir / db_name,
                files=files,
                fell_back=fs is not sets[0],
                skipped="; ".join(problems),
            )
        raise RestoreError(
            f"cannot restore {self.uri}: "
            + "; ".join(problems)
            + " — refusing to start over, which would duplicate trials"
        )

    def _rebase_on(self, manifest: Manifest, good: FileSet) -> None:
        """After a fallback, keep CAS on the latest manifest but build on the set that worked,
        so the next upload's `previous` (and reused objects) are known-good ones."""
        with self._lock:
            if self._baseline is not None and self._baseline.generation == manifest.generation:
                self._good = good

    def _install(self, fs: FileSet, local_dir: Path, db_name: str) -> list[Path]:
        local_dir.mkdir(parents=True, exist_ok=True)
        _sweep_debris(local_dir)
        with tempfile.TemporaryDirectory(prefix=".restore-", dir=local_dir) as tmp:
            fetched = {
                key: self._fetch_verified(ref, Path(tmp) / f"{i:03d}")
                for i, (key, ref) in enumerate(sorted(fs.objects.items()))
            }
            verdict = integrity_check(fetched[fs.db])
            if verdict != "ok":
                raise _BadObject(f"{fs.objects[fs.db].object} fails integrity_check ({verdict})")
            remove_stale_sidecars(local_dir / db_name)
            written = []
            for key, path in fetched.items():
                dest = local_dir / (db_name if key == fs.db else key)
                _fsync(path)
                os.replace(path, dest)
                written.append(dest)
            _fsync(local_dir)
        return written

    def _fetch_verified(self, ref: ObjectRef, dest: Path) -> Path:
        try:
            found = gcs.download(
                self._bucket, self._name(ref.object), dest, self._retry, self._timeout
            )
        except DataCorruption as e:  # the library's own end-to-end checksum check
            raise _BadObject(f"{ref.object} is corrupt in transit or at rest") from e
        if not found:
            raise _BadObject(f"{ref.object} is missing")
        size = dest.stat().st_size
        if size != ref.size or gcs.crc32c_of_file(dest) != ref.crc32c:
            raise _BadObject(
                f"{ref.object} does not match the manifest "
                f"({size} bytes, want {ref.size}; crc32c differs or size does)"
            )
        return dest


def remove_stale_sidecars(db_path: Path) -> None:
    """Delete `-wal`/`-shm`/`-journal` beside `db_path`; they would be replayed onto a restored
    database. Only call while no connection has it open."""
    for suffix in _STALE_SUFFIXES:
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
