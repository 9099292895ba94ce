"""Bridges scheduler tickets and the torch batcher: vectors, seeds, deltas and decoded text."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import torch

from introspectd.errors import BadInput
from introspectd.generate.batcher import BatcherConfig, Finished, WorkItem
from introspectd.generate.runner import Runner
from introspectd.protocol.prompts import introspection_messages
from introspectd.protocol.trials import trial_seed
from introspectd.run.scheduler import Ticket
from introspectd.run.session import RunContext
from introspectd.run.store import Generation, VectorTable, now_iso

log = logging.getLogger("introspectd")


JUDGE_CPU_S_PER_TRIAL = 0.002  # client CPU per judged trial (bench/judge_cpu.py: 1.7-2.0 ms)


class CoreSharing:
    """On a CPU run, leaves one core to the judge child once it needs a quarter of one.

    The judge child grades every trial as it is generated, so its CPU need grows with the
    generation rate. With every core in torch's intra-op pool, the pool's spinning threads and
    the judge fight over the CPU: on the 2-vCPU VM a judged tiny-model run (~180 trials/s
    while judging, ~0.35 of a core for the judge) went 25% faster with one thread fewer, while
    a 37M-parameter model (~15 trials/s) lost a third of its speed with one thread fewer.
    """

    WINDOW_S = 1.0
    THRESHOLD_CORES = 0.25

    def __init__(self, is_active: bool) -> None:
        self.is_active = is_active
        self._window_start: float | None = None
        self._num_finished = 0

    def on_finished(self, num_trials: int, now: float) -> None:
        if not self.is_active:
            return
        if self._window_start is None:
            self._window_start = now
            return
        self._num_finished += num_trials
        elapsed = now - self._window_start
        if elapsed < self.WINDOW_S:
            return
        rate = self._num_finished / elapsed
        if rate * JUDGE_CPU_S_PER_TRIAL >= self.THRESHOLD_CORES:
            torch.set_num_threads(max(1, torch.get_num_threads() - 1))
            self.is_active = False  # once: the lower rate that follows is not a reason to undo it
            log.info(
                "generating with %d CPU threads: one core left to the judge",
                torch.get_num_threads(),
            )
        self._window_start, self._num_finished = now, 0


class Generator:
    """Owns the model for one run; every method is called from the engine's worker thread."""

    def __init__(self, ctx: RunContext) -> None:
        plan = ctx.plan
        self.ctx = ctx
        self.runner = Runner(ctx.ref, plan.model.dtype, plan.model.device)
        judge = plan.judge
        self.core_sharing = CoreSharing(
            self.runner.device.type == "cpu"
            and judge.is_enabled(judge.api_key())
            and "OMP_NUM_THREADS" not in os.environ
        )
        sweep = plan.sweep
        messages = introspection_messages(
            sweep.prompt_version, sweep.prompt_system, sweep.prompt_user
        )
        self.prompt_ids = self.runner.render(messages)
        # PROTOCOL.md: "from_marker" starts at the token just before the question marker.
        self.prompt_steer_from = {"generation": None, "all": 0}.get(sweep.inject_style)
        if sweep.inject_style == "from_marker":
            marker_at = self.runner.marker_position(messages, sweep.marker)
            self.prompt_steer_from = max(marker_at - 1, 0)
        one_row = self._config(1)
        self.batch_size = (
            sweep.batch_size
            if isinstance(sweep.batch_size, int)
            else self.runner.auto_batch_size(len(self.prompt_ids), one_row)
        )
        try:
            self.runner.batcher(self.prompt_ids, one_row).check_against_plain_forward()
        except ValueError as exc:
            raise BadInput(f"[model] name = {plan.model.name!r}: {exc}") from None
        self.vectors: dict[tuple[str, int], torch.Tensor] = {}
        self.stamp_prefix = f"{ctx.run.stamp}_"

    def compute_vectors(self, pairs: set[tuple[str, int]]) -> VectorTable:
        """(concept, layer) → (float32 bytes, dim, norm), in one batched pass per chunk of words."""
        concepts = sorted({c for c, _ in pairs})
        layers = sorted({layer for _, layer in pairs})
        use_chat = self.ctx.plan.sweep.vector_prompt == "chat"
        vectors = self.runner.concept_vectors(concepts, self.ctx.run.baseline, layers, use_chat)
        return {
            key: (v.numpy().astype("<f4").tobytes(), int(v.numel()), float(v.norm()))
            for key, v in vectors.items()
            if key in pairs
        }

    def load_vectors(self, table: dict[tuple[str, int], tuple[bytes, float]]) -> None:
        self.vectors = {
            key: torch.frombuffer(bytearray(data), dtype=torch.float32)
            for key, (data, _) in table.items()
        }

    def run(
        self,
        take: Callable[[int], list[Ticket]],
        sink: Callable[[list[Generation]], None],
        should_stop: Callable[[], bool],
        requeue: Callable[[], int],
    ) -> bool:
        """Generate until `take` runs dry. Out of GPU memory, the rows in flight go back to the
        queue (`requeue`) and the batch halves, down to one row."""
        while True:
            try:
                return self._run_batches(take, sink, should_stop)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                num_requeued = requeue()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning(
                    "out of GPU memory: batch size now %d (%d trials requeued)",
                    self.batch_size,
                    num_requeued,
                )

    def _run_batches(
        self,
        take: Callable[[int], list[Ticket]],
        sink: Callable[[list[Generation]], None],
        should_stop: Callable[[], bool],
    ) -> bool:
        batcher = self.runner.batcher(self.prompt_ids, self._config(self.batch_size))

        def source(n: int) -> list[WorkItem]:
            return [self._work_item(t) for t in take(n)]

        def finished(rows: list[Finished]) -> None:
            self.core_sharing.on_finished(len(rows), time.monotonic())
            sink(
                [
                    Generation(
                        f.trial_id, self.runner.decode(f.token_ids), len(f.token_ids), now_iso()
                    )
                    for f in rows
                ]
            )

        return batcher.run(source, finished, should_stop, self.ctx.layers)

    def _config(self, batch_size: int) -> BatcherConfig:
        sweep = self.ctx.plan.sweep
        return BatcherConfig(
            batch_size=batch_size,
            max_new_tokens=sweep.max_new_tokens,
            temperature=sweep.temperature,
            prompt_steer_from=self.prompt_steer_from,
            # A stop check costs a device sync; on a CPU it is free.
            check_every=1 if self.runner.device.type == "cpu" else 4,
        )

    def _work_item(self, ticket: Ticket) -> WorkItem:
        spec = ticket.spec
        seed = trial_seed(self.ctx.plan.run.seed, ticket.trial_id.removeprefix(self.stamp_prefix))
        delta = None
        if spec.is_injected:
            delta = self.vectors[(spec.concept, spec.layer)] * spec.strength
        return WorkItem(ticket.trial_id, seed, spec.layer, delta)
