"""The generation engine: the run's trials through a decode engine, as decoded text.

It composes the run's `ModelSession` (model, prompts, vectors, back-off) and adds what only
generation has: the decode path the model takes (`fallback.choose_path`) and its batcher.
"""

from __future__ import annotations

import time

from introspectd.generate.attention import fast_path_refusal
from introspectd.generate.batcher import Batcher
from introspectd.generate.decoding import BatcherConfig, Finished, WorkItem
from introspectd.generate.fallback import (
    CacheBatcher,
    EnginePath,
    choose_path,
    fallback_tokens_per_row,
)
from introspectd.generate.interface import GeneratorSpec, WorkSource
from introspectd.generate.runner import Runner
from introspectd.generate.session import ModelSession, as_bad_input
from introspectd.protocol.prompts import introspection_messages
from introspectd.protocol.results import Generation, now_iso
from introspectd.protocol.trials import Trial


class Generator:
    """Generation for one run (`session.TrialEngine`); every method is called from the run
    loop's worker thread."""

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        self.session = ModelSession(spec)
        sweep = spec.sweep
        messages = introspection_messages(
            sweep.prompt_version, sweep.prompt_system, sweep.prompt_user
        )
        with as_bad_input(spec):
            self.prompt_ids = self.session.render(messages)
            self.prompt_steer_from = self.session.steer_from(messages)
            one_row = self._config(1)
            self.path = choose_path(
                self.runner.model,
                self.prompt_ids,
                self.runner.eos_ids(),
                one_row,
                fast_path_refusal(self.runner.model),
            )
            self.session.choose_batch_size(lambda: self._auto_batch_size(one_row))

    @property
    def runner(self) -> Runner:
        return self.session.runner

    def _auto_batch_size(self, one_row: BatcherConfig) -> int:
        if self.path == EnginePath.FAST:
            return self.runner.auto_batch_size(len(self.prompt_ids), one_row)
        tokens = fallback_tokens_per_row(len(self.prompt_ids), one_row)
        return self.runner.batch_size_for_tokens(tokens)

    def _batcher(self, batch_size: int) -> Batcher | CacheBatcher:
        kind = Batcher if self.path == EnginePath.FAST else CacheBatcher
        config = self._config(batch_size)
        return kind(self.runner.model, self.prompt_ids, self.runner.eos_ids(), config)

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

    def run(self, work: WorkSource) -> bool:
        """Generate until `work` runs dry; False if it asked to stop first (the session backs
        off out of memory)."""
        rows = _Rows(self, work)
        layers = list(self.spec.layers)
        return self.session.run(work, lambda n: self._batcher(n).run(rows, layers))

    def work_item(self, trial: Trial) -> WorkItem:
        seed = self.session.seed(trial)
        return WorkItem(trial.trial_id, seed, trial.spec.layer, self.session.delta(trial, seed))

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
        now = time.monotonic()
        generations = [self.generator.generation(f) for f in rows]
        self.generator.session.hand_over(self.work, generations, now)

    def should_stop(self) -> bool:
        return self.work.should_stop()
