"""The run loop: generation in a worker thread, judging, export and uploads on one event loop.

All tasks live in one anyio task group. Anything escaping a task is a bug: the group is
cancelled and the process exits non-zero, and a restart resumes from the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio

from introspectd import stopping
from introspectd.app.looplag import LoopLag
from introspectd.app.provenance import collect_provenance
from introspectd.app.rounds import Rounds
from introspectd.cloud.durability import FINAL_FLUSH_S, UploadTrigger
from introspectd.errors import Interrupted, Transient, sole_error
from introspectd.generate.interface import GeneratorSpec
from introspectd.generate.session import ModelSession, TrialEngine
from introspectd.judge.grader import ToJudge
from introspectd.judge.pool import JudgePool
from introspectd.output.exporter import Exporter
from introspectd.protocol import user_vectors
from introspectd.protocol.results import Generation, VectorTable
from introspectd.protocol.trials import Trial
from introspectd.run.scheduler import Scheduler
from introspectd.run.session import RunContext
from introspectd.run.stats import RunStats

log = logging.getLogger("introspectd")
T = TypeVar("T")
# After SIGTERM the drain has one deadline: judges get DRAIN_JUDGES_S from the signal, and the
# final upload what is left of DRAIN_S (at least MIN_FINAL_FLUSH_S), so a preempted VM (30 s)
# exits 75 with its snapshot uploaded whatever the judge backlog.
DRAIN_JUDGES_S = 5.0
DRAIN_S = 20.0
MIN_FINAL_FLUSH_S = 5.0


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in a worker thread that is abandoned (left to finish alone) if cancelled."""
    return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


def _new_generator(spec: GeneratorSpec) -> TrialEngine:
    """Runs in a worker thread: importing torch takes seconds, which the loop must not wait."""
    if spec.sweep.measure in ("logit", "choice"):
        from introspectd.generate.logit import LogitEngine  # torch loads only when there is work

        return LogitEngine(spec)
    from introspectd.generate.generator import Generator

    return Generator(spec)


def _file_vectors(ctx: RunContext, pairs: set[tuple[str, int]]) -> VectorTable:
    """[sweep] vectors_file's tensors for `pairs`, stored as computed ones would be."""
    sweep = ctx.plan.sweep
    where = user_vectors.where(str(ctx.plan.path))
    log.info("using %d concept vectors from %s", len(pairs), sweep.vectors_file)
    return user_vectors.VectorFile(Path(sweep.vectors_file), where).table(pairs)


class Engine:
    """The run loop; also the generator's `WorkSource` (take, done, requeue, should_stop)."""

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
        self.scheduler = Scheduler(ctx.pending)
        self.exporter = Exporter(ctx)
        self.judges = JudgePool(ctx, self.stats, self.exporter, in_child=True)
        self.uploads = uploads
        self.stop_requested = threading.Event()  # read by the generation thread
        self._stopping = anyio.Event()  # the same, for tasks to wait on
        self._stop_at = 0.0  # anyio.current_time() of the stop request
        self._lock = threading.Lock()
        self.loop_lag = LoopLag.from_env()  # opt-in heartbeat for bench/scale.py
        self.rounds: Rounds | None = None  # adaptive sweeps and confirmation add trials
        if ctx.plan.adds_trials_as_it_goes:
            self.rounds = Rounds(ctx, self.scheduler, self._lock, self.stats)

    async def run(self) -> None:
        """Generate and judge every selected trial; raises Interrupted after a requested stop,
        Transient when the final snapshot could not be uploaded."""
        self.stats.start(self.ctx, rejudging=self.judges.requeued)
        self.exporter.reconcile()  # repairs what a crash or a hand left in the files
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_signals)
                tg.start_soon(self._tick)
                if self.loop_lag is not None:
                    tg.start_soon(self.loop_lag.run)
                if self.ctx.plan.upload.preemption_url:
                    tg.start_soon(self._watch_preemption, self.ctx.plan.upload.preemption_url)
                judging_done = anyio.Event()
                tg.start_soon(self._judge, judging_done)
                await self._generate()
                self.stats.generation_finished_at = time.monotonic()
                self.judges.close_input()
                # Trials the judges still hold when the drain time is up stay `generated`.
                await self._unless_stopped(judging_done.wait, DRAIN_JUDGES_S)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise sole_error(group) from None
        await self.judges.flush()
        if self.stop_requested.is_set():
            self.exporter.flush()  # appends only: the drain's deadline; the next start reorders
        else:
            self.exporter.export_all()  # plan order, once
        self.exporter.close()
        upload_error = await self._final_upload()
        self.stats.finish()
        if self.loop_lag is not None:
            self.loop_lag.write()
        if self.on_tick is not None:
            self.on_tick(self.stats, True)  # the final figures, inside the loop (judge stats)
        if self.stop_requested.is_set():
            raise Interrupted(
                "stopped on request; everything finished so far is saved"
                + ("" if upload_error is None else " locally (the final upload failed)")
                + " — run the same command again to resume"
            )
        if self.rounds is not None and self.rounds.blocked:
            raise Transient(self.rounds.blocked)  # 75: Cloud Batch retries; a rerun re-judges
        if upload_error is not None:
            # Exit 0 here would let Cloud Batch delete the VM with GCS behind the local files.
            raise Transient(
                f"final snapshot NOT uploaded ({upload_error}); the local files are complete "
                "— run the same command again to upload them"
            )

    def _request_stop(self) -> None:
        """Start the drain; its deadlines count from now (call on the event loop)."""
        if not self.stop_requested.is_set():
            self._stop_at = anyio.current_time()
            self.stop_requested.set()
            self._stopping.set()

    async def _unless_stopped(self, fn: Callable[[], Awaitable[T]], grace_s: float) -> list[T]:
        """`[await fn()]`, or `[]` when `fn` was cancelled `grace_s` after a requested stop."""
        result: list[T] = []
        async with anyio.create_task_group() as tg:

            async def work() -> None:
                result.append(await fn())
                tg.cancel_scope.cancel()

            async def deadline() -> None:
                await self._stopping.wait()
                await anyio.sleep_until(self._stop_at + grace_s)
                tg.cancel_scope.cancel()

            tg.start_soon(work)
            tg.start_soon(deadline)
        return result

    async def _judge(self, done: anyio.Event) -> None:
        await self.judges.run()
        done.set()

    async def _watch_signals(self) -> None:
        """Turn a SIGTERM/SIGINT recorded by `stopping` (deferred mode) into a drain."""
        while not self.stop_requested.is_set():
            name = stopping.received()
            if name is not None:
                log.warning("received %s: finishing up (rerun the same command to resume)", name)
                self._request_stop()
            await anyio.sleep(0.05)

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(0.25)
            await self.judges.flush()
            await self.exporter.maybe_flush_in_thread()
            if self.uploads is not None:
                self.uploads.check()
                self.uploads.maybe_request(self.stats.num_done, self._finished_by_concept)
            if self.rounds is not None:
                self.rounds.step()
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
                        self._request_stop()
                except httpx.HTTPError:
                    pass  # no metadata server (not on GCE) or a blip: keep polling
                await anyio.sleep(self.ctx.plan.upload.preemption_poll_s)

    def _finished_by_concept(self) -> dict[str, int]:
        return {
            concept: counts.get("judged", 0) + counts.get("judge_failed", 0)
            for concept, counts in self.ctx.store.counts().items()
        }

    async def _final_upload(self) -> str | None:
        """Upload the final snapshot; None when done (or no GCS), else why it failed."""
        if self.uploads is None:
            return None
        self.uploads.check()
        self.uploads.request(self.stats.num_done, self._finished_by_concept())
        uploader = self.uploads.uploader
        budget = FINAL_FLUSH_S
        if self.stop_requested.is_set():  # one deadline for the whole drain
            left = self._stop_at + DRAIN_S - anyio.current_time()
            budget = min(FINAL_FLUSH_S, max(MIN_FINAL_FLUSH_S, left))
        is_flushed = await anyio.to_thread.run_sync(uploader.flush, budget)
        self.uploads.check()
        if is_flushed:
            log.info("final snapshot uploaded (#%s)", uploader.stats.last_seq)
            return None
        error = uploader.stats.last_error or f"still uploading after {budget:.0f} s"
        log.error("final snapshot NOT uploaded: %s", error)
        return error

    # --- generation --------------------------------------------------------------------------

    async def _generate(self) -> None:
        if self.rounds is not None:  # a model loads only once a round has trials to generate
            while not (self.rounds.has_work() or self.rounds.finished.is_set()):
                if self.stop_requested.is_set():
                    return
                await anyio.sleep(0.05)
        if not (self.ctx.pending or (self.rounds is not None and self.rounds.has_work())):
            return
        ctx = self.ctx
        spec = GeneratorSpec.of(ctx.plan, ctx.ref, ctx.layers, ctx.run.stamp, ctx.run.baseline)
        # Loading weights and computing vectors cannot be interrupted, and a preempted VM has
        # about 30 s: on a stop, abandon them (nothing of theirs is committed yet).
        loaded = await self._unless_stopped(lambda: _in_thread(_new_generator, spec), 0.0)
        if not loaded:
            return
        generator = loaded[0]
        facts = await _in_thread(collect_provenance, ctx.plan, ctx.ref, generator.session)
        ctx.store.provenance.add(facts)
        self.stats.batch_size = generator.session.batch_size
        self.stats.device = generator.session.device
        needed = Scheduler.vectors_needed(ctx.pending)
        if self.rounds is not None:  # later rounds may need any selected cell's vector
            needed |= {(concept, layer) for concept, layer, _ in ctx.cells}
        missing = needed - ctx.store.vector_norms().keys()
        if missing and ctx.plan.sweep.vectors_file:  # the plan's own (checked at claim)
            ctx.store.put_vectors(_file_vectors(ctx, missing))
            missing = set()
        if missing:
            log.info("computing %d concept vectors", len(missing))
            computed = await self._unless_stopped(
                lambda: _in_thread(generator.session.compute_vectors, missing), 0.0
            )
            if not computed:
                return
            ctx.store.put_vectors(computed[0])
        is_ready, residual = await self._residual_norms(
            generator.session, {layer for _, layer in needed}
        )
        if not is_ready:
            return
        stored = ctx.store.get_vectors()
        generator.session.load_vectors({key: stored[key] for key in needed}, residual)
        self.stats.generation_started_at = time.monotonic()
        if await anyio.to_thread.run_sync(generator.run, self):
            log.info("generation finished: %d trials", self.scheduler.num_done)

    async def _residual_norms(
        self, session: ModelSession, layers: set[int]
    ) -> tuple[bool, dict[int, float] | None]:
        """Under `strength_unit = "residual"`, the layers' mean residual norms: computed once
        and kept in the database, so a resumed run scales as before (None in raw units); and
        False first when a stop came before they were computed."""
        if self.ctx.plan.sweep.strength_unit != "residual":
            return True, None
        missing = layers - self.ctx.store.residual_norms().keys()
        if missing:
            computed = await self._unless_stopped(
                lambda: _in_thread(session.compute_residual_norms, missing), 0.0
            )
            if not computed:
                return False, None
            self.ctx.store.put_residual_norms(computed[0])
        stored = self.ctx.store.residual_norms()
        return True, {layer: stored[layer] for layer in layers}

    # The WorkSource the generator's thread calls.

    def take(self, n: int) -> list[Trial]:
        if self.rounds is not None:  # between rounds: wait for the next one's decision
            self.rounds.wait_for_work(self.should_stop)
        with self._lock:
            return self.scheduler.take(n)

    def done(self, generations: list[Generation]) -> None:
        anyio.from_thread.run_sync(self._on_generated, generations)

    def requeue(self) -> int:
        with self._lock:
            return self.scheduler.requeue_in_flight()

    def should_stop(self) -> bool:
        return self.stop_requested.is_set()

    def _on_generated(self, generations: list[Generation]) -> None:
        self.ctx.store.record_generations(generations)
        with self._lock:
            trials = self.scheduler.complete([g.trial_id for g in generations])
        self.stats.on_generated(generations, time.monotonic())
        texts = {g.trial_id: g.response for g in generations if not g.is_read_out}
        # A read-out (logit or choice measure) is finished as it is recorded: nothing to judge.
        read_out = [t for t in trials if t.trial_id not in texts]
        for t in read_out:
            self.stats.on_read_out(t.spec.concept, t.trial_id)
        self.exporter.mark_finished([t.trial_id for t in read_out])
        self.judges.submit(
            [
                ToJudge(t.trial_id, t.spec.concept, t.spec.is_injected, texts[t.trial_id])
                for t in trials
                if t.trial_id in texts
            ]
        )
