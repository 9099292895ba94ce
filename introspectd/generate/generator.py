"""Bridges the run's trials and the torch batcher: vectors, seeds, deltas and decoded text."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from introspectd.errors import BadInput
from introspectd.generate.arms import arm_delta
from introspectd.generate.attention import fast_path_refusal
from introspectd.generate.batcher import Batcher, BatcherConfig, Finished, WorkItem
from introspectd.generate.fallback import (
    CacheBatcher,
    EnginePath,
    choose_path,
    fallback_tokens_per_row,
    one_line,
)
from introspectd.generate.interface import GeneratorSpec, WorkSource
from introspectd.generate.placement import Placement
from introspectd.generate.runner import Runner
from introspectd.protocol.prompts import introspection_messages
from introspectd.protocol.results import Generation, VectorTable, now_iso
from introspectd.protocol.trials import Trial, trial_seed

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
    """Owns the model for one run; every method is called from the run loop's worker thread."""

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        sweep = spec.sweep
        messages = introspection_messages(
            sweep.prompt_version, sweep.prompt_system, sweep.prompt_user
        )
        with _as_bad_input(spec):
            placement = Placement(spec.device_map, spec.max_memory, spec.offload_folder)
            self.runner = Runner(spec.model, spec.dtype, spec.device, placement)
            self.prompt_ids = self.runner.render(messages)
            self.prompt_steer_from = self._steer_from(messages)
            one_row = self._config(1)
            self.path = choose_path(
                self.runner.model,
                self.prompt_ids,
                self.runner.eos_ids(),
                one_row,
                fast_path_refusal(self.runner.model),
            )
            self.batch_size = (
                sweep.batch_size
                if isinstance(sweep.batch_size, int)
                else self._auto_batch_size(one_row)
            )
        self.core_sharing = CoreSharing(
            self.runner.device.type == "cpu"
            and spec.shares_cpu_with_judge
            and "OMP_NUM_THREADS" not in os.environ
        )
        self.vectors: dict[tuple[str, int], torch.Tensor] = {}
        self.num_done = 0  # answers handed over: after the first, a fault is not the model's
        self.stamp_prefix = f"{spec.stamp}_"

    def _auto_batch_size(self, one_row: BatcherConfig) -> int:
        if self.path == EnginePath.FAST:
            return self.runner.auto_batch_size(len(self.prompt_ids), one_row)
        tokens = fallback_tokens_per_row(len(self.prompt_ids), one_row)
        return self.runner.batch_size_for_tokens(tokens)

    def _batcher(self, batch_size: int) -> Batcher | CacheBatcher:
        kind = Batcher if self.path == EnginePath.FAST else CacheBatcher
        config = self._config(batch_size)
        return kind(self.runner.model, self.prompt_ids, self.runner.eos_ids(), config)

    def _steer_from(self, messages: list[dict[str, str]]) -> int | None:
        """The first prompt position the injection covers (BatcherConfig.prompt_steer_from)."""
        sweep = self.spec.sweep
        if sweep.inject_style != "from_marker":
            return {"generation": None, "all": 0}[sweep.inject_style]
        marker_at = self.runner.marker_position(messages, sweep.marker)
        if marker_at is None:
            # The plan checked that the user prompt holds the marker: the chat template
            # changed that text, and steering from a guessed position would be silently wrong.
            raise BadInput(
                f"{self.spec.plan_file}: [sweep] marker: {sweep.marker!r} is not in the user "
                f"turn as {self.spec.model.name}'s chat template renders it (the template "
                "rewrites the user text, e.g. trims its whitespace); change prompt_user, or "
                'use inject_style = "all"'
            )
        # PROTOCOL.md: "from_marker" starts at the token just before the question marker.
        return max(marker_at - 1, 0)

    def compute_vectors(self, pairs: set[tuple[str, int]]) -> VectorTable:
        """(concept, layer) → (float32 bytes, dim, norm), in one batched pass per chunk of words."""
        concepts = sorted({c for c, _ in pairs})
        layers = sorted({layer for _, layer in pairs})
        use_chat = self.spec.sweep.vector_prompt == "chat"
        with _as_bad_input(self.spec, "computing concept vectors"):
            vectors = self.runner.concept_vectors(
                concepts, list(self.spec.baseline), layers, use_chat
            )
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

    def run(self, work: WorkSource) -> bool:
        """Generate until `work` runs dry; False if it asked to stop first. Out of GPU memory,
        the rows in flight go back to `work` and the batch halves, down to one row."""
        rows = _Rows(self, work)
        while True:
            try:
                batcher = self._batcher(self.batch_size)
                # Until a first answer is recorded, a fault is this model's, not the machine's.
                with _as_bad_input(
                    self.spec, "generating the first batch", unless=lambda: self.num_done > 0
                ):
                    return batcher.run(rows, list(self.spec.layers))
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                num_requeued = work.requeue()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning(
                    "out of GPU memory: batch size now %d (%d trials requeued)",
                    self.batch_size,
                    num_requeued,
                )

    def _config(self, batch_size: int) -> BatcherConfig:
        sweep = self.spec.sweep
        return BatcherConfig(
            batch_size=batch_size,
            max_new_tokens=sweep.max_new_tokens,
            temperature=sweep.temperature,
            prompt_steer_from=self.prompt_steer_from,
            # A stop check costs a device sync; on a CPU it is free.
            check_every=1 if self.runner.device.type == "cpu" else 4,
        )

    def work_item(self, trial: Trial) -> WorkItem:
        spec = trial.spec
        seed = trial_seed(self.spec.seed, trial.trial_id.removeprefix(self.stamp_prefix))
        delta = arm_delta(spec, self.vectors, seed)
        return WorkItem(trial.trial_id, seed, spec.layer, delta)

    def generation(self, row: Finished) -> Generation:
        return Generation(
            row.trial_id, self.runner.decode(row.token_ids), len(row.token_ids), now_iso()
        )


class _Rows:
    """The batcher's RowSource over a WorkSource: trials become rows, rows become answers."""

    def __init__(self, generator: Generator, work: WorkSource) -> None:
        self.generator = generator
        self.work = work

    def take(self, n: int) -> list[WorkItem]:
        return [self.generator.work_item(t) for t in self.work.take(n)]

    def done(self, rows: list[Finished]) -> None:
        self.generator.core_sharing.on_finished(len(rows), time.monotonic())
        self.work.done([self.generator.generation(f) for f in rows])
        self.generator.num_done += len(rows)

    def should_stop(self) -> bool:
        return self.work.should_stop()


@contextmanager
def _as_bad_input(
    spec: GeneratorSpec, doing: str = "", unless: Callable[[], bool] | None = None
) -> Iterator[None]:
    """A model that does not load as a chat decoder, that introspectd cannot steer or
    reproduce (layers.decoder_layers, fallback.choose_path), or that fails computing vectors
    or its first batch is the plan's choice: one line naming it and the cause, exit 2, never a
    traceback. Out of memory is the machine's: it passes, as does anything once `unless()`."""
    try:
        yield
    except (torch.OutOfMemoryError, BadInput):
        raise
    except Exception as exc:
        if unless is not None and unless():
            raise
        where = f" ({doing})" if doing else ""
        raise BadInput(
            f"{spec.plan_file}: [model] name = {spec.model.name!r}{where}: {one_line(exc)}"
        ) from None
