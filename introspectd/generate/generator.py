"""The generation engine: the run's trials through a decode engine, as decoded text.

It composes the run's `ModelSession` (model, prompts, vectors, back-off) and adds what only
generation has: the decode path the model takes (`fallback.choose_path`) and its batcher.
"""

from __future__ import annotations

import time
from collections import deque

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
from introspectd.generate.session import ModelSession, PromptKey, as_bad_input
from introspectd.protocol.results import Generation, now_iso
from introspectd.protocol.trials import Arm, Trial, TrialSpec


class Generator:
    """Generation for one run (`session.TrialEngine`); every method is called from the run
    loop's worker thread."""

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        self.session = ModelSession(spec)
        # Every prompt the run may read, at its longest (the highest trial number): the
        # decode path is chosen on one and the automatic batch size fits the longest.
        last = max(spec.sweep.trials - 1, 0)
        keys = {self.session.prompt_key(_at_trial(name, last)) for name in self.session.prompts}
        longest = max((self.session.rendered(k)[0] for k in sorted(keys, key=str)), key=len)
        with as_bad_input(spec):
            one_row = self._config(1, None)
            self.path = choose_path(
                self.runner.model,
                longest,
                self.runner.eos_ids(),
                one_row,
                fast_path_refusal(self.runner.model),
            )
            self.session.choose_batch_size(lambda: self._auto_batch_size(len(longest), one_row))

    @property
    def runner(self) -> Runner:
        return self.session.runner

    def _auto_batch_size(self, prompt_len: int, one_row: BatcherConfig) -> int:
        if self.path == EnginePath.FAST:
            return self.runner.auto_batch_size(prompt_len, one_row)
        tokens = fallback_tokens_per_row(prompt_len, one_row)
        return self.runner.batch_size_for_tokens(tokens)

    def _batcher(self, key: PromptKey, batch_size: int) -> Batcher | CacheBatcher:
        kind = Batcher if self.path == EnginePath.FAST else CacheBatcher
        prompt_ids, steer_from = self.session.rendered(key)
        config = self._config(batch_size, steer_from)
        return kind(self.runner.model, prompt_ids, self.runner.eos_ids(), config)

    def _config(self, batch_size: int, prompt_steer_from: int | None) -> BatcherConfig:
        sweep = self.spec.sweep
        return BatcherConfig(
            batch_size=batch_size,
            max_new_tokens=sweep.max_new_tokens,
            temperature=sweep.temperature,
            prompt_steer_from=prompt_steer_from,
            # A stop check costs a device sync; on a CPU it is free.
            check_every=1 if self.runner.device.type == "cpu" else 4,
        )

    def run(self, work: WorkSource) -> bool:
        """Generate until `work` runs dry; False if it asked to stop first (the session backs
        off out of memory). A batcher holds one prompt, so trials are generated prompt by
        prompt: one prompt's batcher runs until its trials run out, then the next's."""
        rows = _Rows(self, work)
        layers = list(self.spec.layers)

        def attempt(batch_size: int) -> bool:
            rows.held.clear()  # out of memory, `work` took back every trial not done
            while (key := rows.next_key()) is not None:
                rows.key = key
                if not self._batcher(key, batch_size).run(rows, layers):
                    return False
            return True

        return self.session.run(work, attempt)

    def work_item(self, trial: Trial) -> WorkItem:
        seed = self.session.seed(trial)
        return WorkItem(trial.trial_id, seed, trial.spec.layer, self.session.delta(trial, seed))

    def generation(self, row: Finished, prefill: str) -> Generation:
        """The answer as the judge and the records read it: its prefill, then what the model
        wrote."""
        text = prefill + self.runner.decode(row.token_ids)
        return Generation(row.trial_id, text, len(row.token_ids), now_iso())


def _at_trial(prompt: str, trial: int) -> TrialSpec:
    """A stand-in trial of `prompt` at index `trial`, to name the prompt it reads."""
    return TrialSpec("", Arm.CONTROL, 0, 0.0, trial, prompt=prompt)


class _Rows:
    """The batcher's RowSource over a WorkSource: trials become rows, rows become answers.

    Rows are handed out for one prompt (`key`) at a time. Trials of other prompts that
    `work` hands out meanwhile are held here, in order, for their own prompt's turn; they stay
    in flight in the scheduler, so a stop or an out-of-memory requeue sees them."""

    PEEK_FACTOR = 4  # how far past the current prompt's trials one take may look

    def __init__(self, generator: Generator, work: WorkSource) -> None:
        self.generator = generator
        self.work = work
        self.key: PromptKey | None = None
        self.held: dict[PromptKey, deque[Trial]] = {}
        self.prefills: dict[str, str] = {}  # trial id → its prompt's prefill, while in flight

    def next_key(self) -> PromptKey | None:
        """The prompt to generate next: the first with trials held, else that of the next
        trial `work` hands out; None once it runs dry."""
        for key, trials in self.held.items():
            if trials:
                return key
        self._pull(1)
        return next((k for k, trials in self.held.items() if trials), None)

    def _pull(self, n: int) -> None:
        for trial in self.work.take(n):
            key = self.generator.session.prompt_key(trial.spec)
            self.held.setdefault(key, deque()).append(trial)

    def take(self, n: int) -> list[WorkItem]:
        assert self.key is not None
        mine = self.held.setdefault(self.key, deque())
        for _ in range(self.PEEK_FACTOR):
            if len(mine) >= n:
                break
            before = sum(len(t) for t in self.held.values())
            self._pull(n - len(mine))
            if sum(len(t) for t in self.held.values()) == before:
                break  # `work` ran dry
        chosen = [mine.popleft() for _ in range(min(n, len(mine)))]
        prefill = self.generator.session.prompts[self.key[0]].prefill
        self.prefills.update((t.trial_id, prefill) for t in chosen if prefill)
        return [self.generator.work_item(t) for t in chosen]

    def done(self, rows: list[Finished]) -> None:
        now = time.monotonic()
        prefills = [self.prefills.pop(f.trial_id, "") for f in rows]
        generations = [self.generator.generation(f, p) for f, p in zip(rows, prefills, strict=True)]
        self.generator.session.hand_over(self.work, generations, now)

    def should_stop(self) -> bool:
        return self.work.should_stop()
