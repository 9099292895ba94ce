"""Background snapshot uploads that never stall the event loop.

The engine calls `request(...)` (cheap, non-blocking, safe from the event loop) whenever a
snapshot is due; one worker thread performs `SnapshotStore.upload`. The backlog is one request:
a newer request replaces a pending older one, because each upload snapshots the database as it
is *when it runs*, so the newest request covers everything the older one would have. A failed
upload is retried with exponential backoff (the failed request stays pending unless a newer one
replaced it) while the engine keeps working. `StaleWriter` is final: another process owns the
run, so the uploader stops and reports it in `fatal`; the engine should stop too.

From asyncio:

    uploader.request(files, counts, plan_hash)                      # no await needed
    ok = await anyio.to_thread.run_sync(uploader.flush, 20.0)        # at SIGTERM / the end
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from introspectd.cloud.manifest import Manifest
from introspectd.errors import StaleWriter, one_line

# While flushing, a failed attempt is retried after this pause instead of the full backoff.
_URGENT_RETRY_S = 0.5


class _Store(Protocol):
    def upload(
        self, db_path: Path, files: list[Path], counts: dict[str, int], plan_hash: str
    ) -> Manifest: ...


@dataclass(frozen=True)
class _Request:
    id: int
    files: tuple[Path, ...]
    counts: dict[str, int]
    plan_hash: str


@dataclass(frozen=True)
class UploaderStats:
    requested: int  # requests accepted so far
    uploads: int  # uploads committed
    superseded: int  # pending requests replaced by a newer one before they ran
    failures: int  # failed attempts, all told
    consecutive_failures: int
    pending: bool  # a request is waiting (new, or a failed one awaiting its retry)
    in_flight: bool
    last_success_at: float | None  # time.time() of the last commit
    last_seq: int | None  # seq of the last manifest this uploader committed
    last_error: str | None  # one line; cleared by the next success
    fatal: str | None  # set when uploads stopped for good (StaleWriter)


class Uploader:
    """Runs `store.upload(db_path, ...)` in one daemon thread; see the module docstring."""

    def __init__(
        self,
        store: _Store,
        db_path: Path,
        *,
        backoff_initial_s: float = 2.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        self._store = store
        self._db_path = db_path
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pending: _Request | None = None
        self._in_flight: _Request | None = None
        self._retry_at = 0.0  # monotonic time before which no attempt starts (backoff)
        self._failed_at = 0.0  # monotonic time of the last failed attempt
        self._urgent = 0  # > 0 while someone is flushing: skip the backoff wait
        self._closing = False
        self._fatal: StaleWriter | None = None
        self._requested = self._uploads = self._superseded = 0
        self._failures = self._consecutive = 0
        self._last_success_at: float | None = None
        self._last_seq: int | None = None
        self._last_error: str | None = None

    # -- called by the engine --------------------------------------------------------------

    def request(self, files: list[Path], counts: dict[str, int], plan_hash: str) -> None:
        """Ask for a snapshot of the current state; returns at once."""
        with self._cond:
            if self._fatal is not None or self._closing:
                return
            self._requested += 1
            if self._pending is not None:
                self._superseded += 1
            self._pending = _Request(self._requested, tuple(files), dict(counts), plan_hash)
            self._ensure_thread()
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Block until every request so far is committed (True) or the time is up (False).

        While flushing, the backoff between failed attempts shrinks to half a second: at shutdown
        there is no later to wait for.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._urgent += 1
            self._cond.notify_all()
            try:
                while True:
                    if self._fatal is not None:
                        return False
                    if self._pending is None and self._in_flight is None:
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._urgent -= 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker after its current attempt; pending work is dropped (flush first)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    @property
    def fatal(self) -> StaleWriter | None:
        return self._fatal

    @property
    def stats(self) -> UploaderStats:
        with self._cond:
            return UploaderStats(
                requested=self._requested,
                uploads=self._uploads,
                superseded=self._superseded,
                failures=self._failures,
                consecutive_failures=self._consecutive,
                pending=self._pending is not None,
                in_flight=self._in_flight is not None,
                last_success_at=self._last_success_at,
                last_seq=self._last_seq,
                last_error=self._last_error,
                fatal=None if self._fatal is None else one_line(self._fatal),
            )

    # -- the worker thread -----------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="snapshot-uploader", daemon=True)
            self._thread.start()

    def _next(self) -> _Request | None:
        """Wait for a request whose backoff has passed; None when closing."""
        with self._cond:
            while not self._closing:
                ready_at = self._retry_at
                if self._urgent:
                    ready_at = min(ready_at, self._failed_at + _URGENT_RETRY_S)
                now = time.monotonic()
                if self._pending is not None and now >= ready_at:
                    req, self._pending = self._pending, None
                    self._in_flight = req
                    return req
                self._cond.wait(ready_at - now if self._pending is not None else None)
            return None

    def _run(self) -> None:
        while (req := self._next()) is not None:
            try:
                manifest = self._store.upload(
                    self._db_path, list(req.files), req.counts, req.plan_hash
                )
            except StaleWriter as e:
                self._finish(req, fatal=e)
                return
            except Exception as e:  # any other failure is worth another try later
                self._finish(req, error=e)
            else:
                self._finish(req, manifest=manifest)

    def _finish(
        self,
        req: _Request,
        *,
        manifest: Manifest | None = None,
        error: Exception | None = None,
        fatal: StaleWriter | None = None,
    ) -> None:
        with self._cond:
            self._in_flight = None
            if fatal is not None:
                self._fatal, self._pending = fatal, None
                self._last_error = one_line(fatal)
            elif error is not None:
                self._failures += 1
                self._consecutive += 1
                self._last_error = one_line(error)
                if self._pending is None:
                    self._pending = req  # nothing newer arrived: retry this one
                delay = min(self._backoff[1], self._backoff[0] * 2 ** (self._consecutive - 1))
                self._failed_at = time.monotonic()
                self._retry_at = self._failed_at + delay
            elif manifest is not None:
                self._uploads += 1
                self._consecutive = 0
                self._retry_at = 0.0
                self._last_error = None
                self._last_success_at = time.time()
                self._last_seq = manifest.seq
            self._cond.notify_all()
