"""GCS snapshots and restore against a real fake-gcs-server, with real WAL-mode SQLite files."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gcs_emulator import BUCKET, FaultyProxy, GcsEmulator, gcs_emulator, gcs_proxy
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from introspectd.cloud.snapshot import SnapshotStore, make_db_snapshot, parse_gcs_uri
from introspectd.cloud.uploader import Uploader
from introspectd.errors import BadInput, RestoreError, SnapshotError, StaleWriter

__all__ = ["gcs_emulator", "gcs_proxy"]  # fixtures, imported for pytest

URI = f"gs://{BUCKET}/sweeps"
REL = "2026-01-23-sweep/3b"
CONCEPTS = ("fear", "ocean")


class Run:
    """A stand-in for the engine's local state: a WAL database and one JSONL per concept."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = self.dir / "state.sqlite"
        self.conn = sqlite3.connect(self.db, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS trials (id TEXT PRIMARY KEY, concept TEXT, response TEXT)"
        )
        self.n = int(self.conn.execute("SELECT count(*) FROM trials").fetchone()[0])

    @property
    def files(self) -> list[Path]:
        return [self.dir / f"{c}.jsonl" for c in CONCEPTS]

    def add(self, k: int, concept: str = "fear") -> None:
        with (self.dir / f"{concept}.jsonl").open("a") as f:
            for _ in range(k):
                self.n += 1
                self.conn.execute(
                    "INSERT INTO trials VALUES (?, ?, ?)", (f"t{self.n}", concept, "x" * 200)
                )
                f.write(f'{{"id": "t{self.n}", "concept": "{concept}"}}\n')

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT concept, count(*) FROM trials GROUP BY concept")
        return {c: int(n) for c, n in rows}


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path / "vm1" / REL)
    yield r
    r.conn.close()


def store(**kw: float) -> SnapshotStore:
    opts = {"retry_timeout_s": 3.0, "retry_initial_s": 0.05, "request_timeout_s": 10.0, **kw}
    return SnapshotStore(URI, REL, **opts)


def direct_bucket(emulator: GcsEmulator) -> storage.Bucket:
    """The bucket, reached without the faulty proxy, to inspect or damage objects."""
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    )
    return client.bucket(BUCKET)


def db_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return int(conn.execute("SELECT count(*) FROM trials").fetchone()[0])
    finally:
        conn.close()


def test_parse_gcs_uri() -> None:
    assert parse_gcs_uri("gs://b/some/prefix/") == ("b", "some/prefix")
    assert parse_gcs_uri("gs://b") == ("b", "")
    for bad in ("s3://b/p", "gs:///p", "b/p"):
        with pytest.raises(BadInput):
            parse_gcs_uri(bad)


def test_db_snapshot_is_consistent_with_a_writer_open(run: Run, tmp_path: Path) -> None:
    run.add(30)
    run.conn.execute("BEGIN IMMEDIATE")  # a writer mid-transaction: its rows must not appear
    run.conn.execute("INSERT INTO trials VALUES ('uncommitted', 'fear', '')")
    dest = tmp_path / "snap.sqlite"
    make_db_snapshot(run.db, dest)
    run.conn.execute("COMMIT")
    assert db_rows(dest) == 30
    assert not dest.with_name("snap.sqlite-wal").exists()
    with pytest.raises(SnapshotError):
        make_db_snapshot(tmp_path / "nope.sqlite", dest)


def test_periodic_uploads_mirror_local_files(gcs_emulator: GcsEmulator, run: Run) -> None:
    s, bucket = store(), direct_bucket(gcs_emulator)
    run.add(3, "ocean")  # ocean then stays unchanged: its object is reused, not re-uploaded
    seqs, ocean_objects = [], set()
    for _ in range(3):
        run.add(20)
        m = s.upload(run.db, run.files, run.counts(), "plan-1")
        seqs.append(m.seq)
        ocean_objects.add(m.objects["ocean.jsonl"].object)
        for f in run.files:  # the GCS JSONL equals the local JSONL
            ref = m.objects[f.name]
            assert bucket.blob(f"sweeps/{REL}/{ref.object}").download_as_bytes() == f.read_bytes()
    assert seqs == [1, 2, 3]
    assert len(ocean_objects) == 1
    latest = s.read_manifest()
    assert latest is not None and latest.seq == 3 and latest.counts == {"fear": 60, "ocean": 3}
    assert latest.previous is not None and latest.previous.seq == 2
    # Only the latest and previous sets remain after garbage collection.
    wanted = {r.object for fs in (latest, latest.previous) for r in fs.objects.values()}
    listed = {
        b.name.removeprefix(f"sweeps/{REL}/")
        for b in bucket.client.list_blobs(BUCKET, prefix=f"sweeps/{REL}/objects/")
    }
    assert listed == wanted


def test_partial_jsonl_line_is_not_uploaded(gcs_emulator: GcsEmulator, run: Run) -> None:
    run.add(2)
    with run.files[0].open("a") as f:
        f.write('{"id": "half-writ')  # an exporter caught mid-append
    m = store().upload(run.db, run.files, run.counts(), "p")
    blob = direct_bucket(gcs_emulator).blob(f"sweeps/{REL}/{m.objects['fear.jsonl'].object}")
    assert blob.download_as_bytes().endswith(b'"fear"}\n')


def test_restore_on_a_fresh_vm(gcs_emulator: GcsEmulator, run: Run, tmp_path: Path) -> None:
    assert store().restore(tmp_path / "empty") is None  # nothing uploaded yet
    run.add(25)
    run.add(5, "ocean")
    store().upload(run.db, run.files, run.counts(), "plan-1")
    fresh = tmp_path / "vm2" / REL
    fresh.mkdir(parents=True)
    for junk in ("state.sqlite-wal", "state.sqlite-shm"):  # left by some earlier life
        (fresh / junk).write_bytes(b"\x00garbage" * 100)
    result = store().restore(fresh)
    assert result is not None and result.seq == 1 and not result.fell_back
    assert result.counts == {"fear": 25, "ocean": 5} and result.plan_hash == "plan-1"
    assert not (fresh / "state.sqlite-wal").exists() and not (fresh / "state.sqlite-shm").exists()
    assert db_rows(result.db_path) == 30
    for f in run.files:
        assert (fresh / f.name).read_bytes() == f.read_bytes()
    assert sorted(p.name for p in fresh.iterdir()) == ["fear.jsonl", "ocean.jsonl", "state.sqlite"]


def test_zombie_cannot_replace_newer_manifest(
    gcs_emulator: GcsEmulator, run: Run, tmp_path: Path
) -> None:
    zombie = store()
    run.add(10)
    zombie.upload(run.db, run.files, run.counts(), "p")
    # The VM is "preempted" but keeps running; Cloud Batch starts a new one that restores.
    newer = store()
    restored = newer.restore(tmp_path / "vm2" / REL)
    assert restored is not None
    vm2 = Run(restored.db_path.parent)  # continues from the restored state
    assert vm2.n == 10
    vm2.add(15)
    assert newer.upload(vm2.db, vm2.files, vm2.counts(), "p").seq == 2
    vm2.conn.close()

    run.add(1)
    with pytest.raises(StaleWriter, match="seq 2"):
        zombie.upload(run.db, run.files, run.counts(), "p")
    uploader = Uploader(zombie, run.db, backoff_initial_s=0.05)
    uploader.request(run.files, run.counts(), "p")
    assert not uploader.flush(10)
    assert uploader.fatal is not None and "another process" in (uploader.stats.fatal or "")
    latest = newer.read_manifest()
    assert latest is not None and latest.seq == 2 and latest.writer == newer.writer
    again = store().restore(tmp_path / "vm3")
    assert again is not None and again.seq == 2 and db_rows(again.db_path) == 25


def test_truncated_snapshot_falls_back_to_previous(
    gcs_emulator: GcsEmulator, run: Run, tmp_path: Path
) -> None:
    s = store()
    run.add(10)
    s.upload(run.db, run.files, run.counts(), "p")
    run.add(40)
    m = s.upload(run.db, run.files, run.counts(), "p")
    blob = direct_bucket(gcs_emulator).blob(f"sweeps/{REL}/{m.objects['state.sqlite'].object}")
    data = blob.download_as_bytes()
    blob.upload_from_string(data[: len(data) // 2])
    s2 = store()
    result = s2.restore(tmp_path / "vm2")
    assert result is not None and result.fell_back and result.seq == 1
    assert "seq 2" in result.skipped and "state.sqlite" in result.skipped
    assert result.counts == {"fear": 10} and db_rows(result.db_path) == 10
    # The next upload from the restored state names the good set, not the bad one, as previous.
    vm2 = Run(result.db_path.parent)
    vm2.add(5)
    m3 = s2.upload(vm2.db, vm2.files, vm2.counts(), "p")
    vm2.conn.close()
    assert m3.seq == 3 and m3.previous is not None and m3.previous.seq == 1


def test_missing_object_without_fallback_is_a_clear_error(
    gcs_emulator: GcsEmulator, run: Run, tmp_path: Path
) -> None:
    run.add(10)
    m = store().upload(run.db, run.files, run.counts(), "p")
    direct_bucket(gcs_emulator).blob(f"sweeps/{REL}/{m.objects['fear.jsonl'].object}").delete()
    target = tmp_path / "vm2"
    with pytest.raises(RestoreError) as err:
        store().restore(target)
    message = str(err.value)
    assert "\n" not in message and "fear.jsonl is missing" in message and "seq 1" in message
    assert list(target.iterdir()) == []  # nothing half-restored


def test_own_retried_writes_are_recognised(
    gcs_proxy: FaultyProxy, run: Run, tmp_path: Path
) -> None:
    # Every other upload lands but its reply is lost; the client's retry then meets a 412.
    gcs_proxy.drop_reply_every_other_upload = True
    s = store()
    for i in range(2):
        run.add(10)
        assert s.upload(run.db, run.files, run.counts(), "p").seq == i + 1
    assert gcs_proxy.dropped_replies >= 4
    gcs_proxy.drop_reply_every_other_upload = False
    result = store().restore(tmp_path / "vm2")
    assert result is not None and result.seq == 2 and db_rows(result.db_path) == 20


def test_uploads_catch_up_after_503s(gcs_proxy: FaultyProxy, run: Run, tmp_path: Path) -> None:
    uploader = Uploader(
        store(retry_timeout_s=0.5), run.db, backoff_initial_s=0.05, backoff_max_s=0.2
    )
    gcs_proxy.down = True
    run.add(5)
    uploader.request(run.files, run.counts(), "p")
    deadline = time.monotonic() + 10
    while uploader.stats.failures < 2 and time.monotonic() < deadline:
        run.add(1)  # work goes on while uploads fail
        time.sleep(0.05)
    stats = uploader.stats
    assert stats.failures >= 2 and stats.uploads == 0 and stats.pending
    assert stats.last_error and "503" in stats.last_error
    assert not uploader.flush(0.2)
    gcs_proxy.down, gcs_proxy.fail_before = False, 0.2  # back, but flaky
    run.add(7)
    final = run.counts()
    uploader.request(run.files, final, "p")
    assert uploader.flush(20), uploader.stats
    assert uploader.stats.last_error is None and uploader.stats.last_success_at is not None
    uploader.close()
    gcs_proxy.fail_before = 0.0
    result = store().restore(tmp_path / "vm2")
    assert result is not None and result.counts == final
    assert db_rows(result.db_path) == run.n


def test_uploads_survive_emulator_restart(
    gcs_emulator: GcsEmulator, run: Run, tmp_path: Path
) -> None:
    uploader = Uploader(
        store(retry_timeout_s=0.5), run.db, backoff_initial_s=0.05, backoff_max_s=0.2
    )
    run.add(5)
    uploader.request(run.files, run.counts(), "p")
    assert uploader.flush(10)
    gcs_emulator.stop()
    run.add(5)
    uploader.request(run.files, run.counts(), "p")
    assert not uploader.flush(1.5) and uploader.stats.failures >= 1
    gcs_emulator.start()
    assert uploader.flush(15), uploader.stats
    assert uploader.stats.uploads == 2 and uploader.stats.last_seq == 2
    uploader.close()
    result = store().restore(tmp_path / "vm2")
    assert result is not None and result.seq == 2 and db_rows(result.db_path) == 10


def test_newer_request_supersedes_pending(gcs_proxy: FaultyProxy, run: Run, tmp_path: Path) -> None:
    uploader = Uploader(
        store(retry_timeout_s=0.3), run.db, backoff_initial_s=5.0, backoff_max_s=5.0
    )
    gcs_proxy.down = True
    run.add(3)
    uploader.request(run.files, run.counts(), "p")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (uploader.stats.failures < 1 or uploader.stats.in_flight):
        time.sleep(0.02)
    # The failed request now waits out its backoff; three newer ones replace it in turn.
    counts: dict[str, int] = {}
    for i in range(3):
        run.add(3)
        counts = {**run.counts(), "request": i}
        uploader.request(run.files, counts, "p")
    stats = uploader.stats
    assert (stats.requested, stats.superseded, stats.uploads) == (4, 3, 0) and stats.pending
    gcs_proxy.down = False
    assert uploader.flush(15), uploader.stats
    assert uploader.stats.uploads == 1  # one upload carried all four requests
    uploader.close()
    latest = store().read_manifest()
    assert latest is not None and latest.seq == 1 and latest.counts == counts
    restored = store().restore(tmp_path / "vm2")
    assert restored is not None and db_rows(restored.db_path) == run.n


def test_garbage_collection_failures_are_logged(
    gcs_proxy: FaultyProxy, gcs_emulator: GcsEmulator, run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting old objects is best effort, but a failure is said, not swallowed (issue 12)."""

    def seq1_objects() -> list[str]:
        listed = direct_bucket(gcs_emulator).list_blobs(prefix=f"sweeps/{REL}/objects/00000001-")
        return [b.name for b in listed]

    s = store(retry_timeout_s=0.3)
    gcs_proxy.fail_method = "DELETE"
    for seq in (1, 2, 3):  # the third commit leaves seq 1's objects to collect
        run.add(5)
        with caplog.at_level(logging.WARNING, logger="introspectd"):
            assert s.upload(run.db, run.files, run.counts(), "p").seq == seq
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "garbage collection" in warnings[0], warnings
    assert "503" in warnings[0] and "\n" not in warnings[0]
    assert seq1_objects()  # still there: nothing was deleted
    gcs_proxy.fail_method = None
    run.add(5)
    assert s.upload(run.db, run.files, run.counts(), "p").seq == 4  # this GC retries it
    assert seq1_objects() == []
