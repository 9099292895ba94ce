"""The run loop: generation in a worker thread, judging, export and uploads on one event loop.

All tasks live in one anyio task group. Anything escaping a task is a bug: the group is
cancelled and the process exits non-zero, and a restart resumes from the database.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import anyio

from introspectd.durability import FINAL_FLUSH_S, UploadTrigger
from introspectd.errors import EXIT_INTERRUPTED, Interrupted, sole_error
from introspectd.judging import JudgePool, ToJudge
from introspectd.outputs import Exporter
from introspectd.scheduler import Scheduler, Ticket
from introspectd.session import RunContext
from introspectd.stats import RunStats
from introspectd.store import Generation

log = logging.getLogger("introspectd")
DRAIN_JUDGES_S = 5.0


class Engine:
    def __init__(
        self,
        ctx: RunContext,
        stats: RunStats | None = None,
        on_tick: Callable[[RunStats, bool], None] | None = None,
        uploads: UploadTrigger | None = None,
    ) -> None:
        self.ctx = ctx
        self.stats = stats or RunStats()
        self.on_tick = on_tick
        self.scheduler = Scheduler(ctx.tickets)
        self.exporter = Exporter(ctx)
        self.judges = JudgePool(ctx, self.stats, self.exporter, in_child=True)
        self.uploads = uploads
        self.stop_requested = threading.Event()
        self._lock = threading.Lock()

    async def run(self) -> None:
        """Generate and judge every selected trial; raises Interrupted after a requested stop."""
        self.stats.start(self.ctx)
        self.exporter.export_all()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_signals)
                tg.start_soon(self._tick)
                if self.ctx.plan.upload.preemption_url:
                    tg.start_soon(self._watch_preemption, self.ctx.plan.upload.preemption_url)
                judging_done = anyio.Event()
                tg.start_soon(self._judge, judging_done)
                await self._generate()
                self.judges.close_input()
                with anyio.move_on_after(DRAIN_JUDGES_S if self.stop_requested.is_set() else None):
                    await judging_done.wait()
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise sole_error(group) from None
        await self.judges.flush()
        self.exporter.export_all()
        await self._final_upload()
        self.stats.finish()
        if self.on_tick is not None:
            self.on_tick(self.stats, True)  # the final figures, inside the loop (judge stats)
        if self.stop_requested.is_set():
            raise Interrupted(
                "stopped on request; everything finished so far is saved — "
                "run the same command again to resume"
            )

    async def _judge(self, done: anyio.Event) -> None:
        await self.judges.run()
        done.set()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stop_requested.is_set():
                    # A second signal means "now": every finished trial is already committed.
                    log.warning("received %s again: exiting now; rerun to resume", name)
                    os._exit(EXIT_INTERRUPTED)
                log.warning("received %s: finishing up (rerun the same command to resume)", name)
                self.stop_requested.set()

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(0.25)
            await self.judges.flush()
            self.exporter.maybe_flush()
            if self.uploads is not None:
                self.uploads.check()
                self.uploads.maybe_request(self.stats.num_done, self._finished_by_concept)
            if self.on_tick is not None:
                self.on_tick(self.stats, False)

    async def _watch_preemption(self, url: str) -> None:
        """Start the same drain as SIGTERM when the GCE metadata server says we are preempted."""
        import httpx

        async with httpx.AsyncClient(timeout=2.0) as client:
            while not self.stop_requested.is_set():
                try:
                    reply = await client.get(url, headers={"Metadata-Flavor": "Google"})
                    if reply.text.strip().upper() == "TRUE":
                        log.warning("preemption notice from %s: finishing up", url)
                        self.stop_requested.set()
                except httpx.HTTPError:
                    pass  # no metadata server (not on GCE) or a blip: keep polling
                await anyio.sleep(self.ctx.plan.upload.preemption_poll_s)

    def _finished_by_concept(self) -> dict[str, int]:
        return {
            concept: counts.get("judged", 0) + counts.get("judge_failed", 0)
            for concept, counts in self.ctx.store.counts().items()
        }

    async def _final_upload(self) -> None:
        if self.uploads is None:
            return
        self.uploads.check()
        self.uploads.request(self.stats.num_done, self._finished_by_concept())
        uploader = self.uploads.uploader
        is_flushed = await anyio.to_thread.run_sync(uploader.flush, FINAL_FLUSH_S)
        if is_flushed:
            log.info("final snapshot uploaded (#%s)", uploader.stats.last_seq)
        else:
            log.error(
                "final snapshot NOT uploaded: %s; local files are complete, rerun to retry",
                uploader.stats.last_error,
            )
        self.uploads.check()

    # --- generation --------------------------------------------------------------------------

    async def _generate(self) -> None:
        if not self.ctx.tickets:
            return
        from introspectd.generation import Generator  # torch loads only when there is work

        generator = await anyio.to_thread.run_sync(Generator, self.ctx)
        self.stats.batch_size = generator.batch_size
        needed = Scheduler.vectors_needed(self.ctx.tickets)
        missing = needed - self.ctx.store.vector_norms().keys()
        if missing:
            log.info("computing %d concept vectors", len(missing))
            table = await anyio.to_thread.run_sync(generator.compute_vectors, missing)
            self.ctx.store.put_vectors(table)
        stored = self.ctx.store.get_vectors()
        generator.load_vectors({key: stored[key] for key in needed})
        finished = await anyio.to_thread.run_sync(
            generator.run,
            self._take,
            self._on_generated_from_thread,
            self.stop_requested.is_set,
            self._requeue,
        )
        if finished:
            log.info("generation finished: %d trials", self.scheduler.num_done)

    def _take(self, n: int) -> list[Ticket]:
        with self._lock:
            return self.scheduler.take(n)

    def _requeue(self) -> int:
        with self._lock:
            return self.scheduler.requeue_in_flight()

    def _on_generated_from_thread(self, generations: list[Generation]) -> None:
        anyio.from_thread.run_sync(self._on_generated, generations)

    def _on_generated(self, generations: list[Generation]) -> None:
        self.ctx.store.record_generations(generations)
        with self._lock:
            tickets = self.scheduler.complete([g.trial_id for g in generations])
        self.stats.on_generated(generations, time.monotonic())
        texts = {g.trial_id: g.response for g in generations}
        self.judges.submit(
            [
                ToJudge(t.trial_id, t.spec.concept, t.spec.is_injected, texts[t.trial_id])
                for t in tickets
            ]
        )
