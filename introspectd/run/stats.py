"""Live figures of a run, for the progress view and the periodic log line. Pure Python."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from introspectd.protocol.trials import Arm, Status
from introspectd.run.pass_grid import PassGrid

if TYPE_CHECKING:
    from introspectd.protocol.results import Generation
    from introspectd.run.session import RunContext


@dataclass
class RecentAnswer:
    concept: str
    is_injected: bool
    verdict: str
    text: str
    detected: str | None = None  # the concept the judge says the model named


@dataclass
class RunStats:
    started_at: float = 0.0
    finished_at: float | None = None
    num_selected: int = 0
    num_done_before: int = 0  # selected trials already judged (or failed) when this run began
    num_to_generate: int = 0  # selected trials still pending when this run began
    by_concept_total: Counter[str] = field(default_factory=Counter)
    by_concept_done: Counter[str] = field(default_factory=Counter)
    num_generated: int = 0
    num_new_tokens: int = 0
    num_judged: int = 0
    num_judge_failed: int = 0
    num_read_out: int = 0  # logit-mode trials: finished as generated, nothing to judge
    num_left_generated: int = 0  # rows an earlier run left `generated`: judged first
    num_rejudging: int = 0  # failed rows an earlier run left, sent to the judge again
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    batch_size: int = 0
    device: str = ""  # where generation runs, once the model is loaded ("cuda:0", "cpu")
    grid: PassGrid = field(default_factory=PassGrid)  # pass rate per (layer, strength)
    judge: Any = None  # the Judge (its `.stats` are live figures), when judging is on
    uploads: Any = None  # the Uploader (its `.stats` are live figures), when uploads are on
    # When generation began (the model loaded, vectors ready) and ended: after the end the view
    # shows the totals and averages, not the last window's rates frozen in place.
    generation_started_at: float | None = None
    generation_finished_at: float | None = None
    recent: deque[RecentAnswer] = field(default_factory=lambda: deque(maxlen=5))
    _rate_window: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=64))
    _num_done_now: int = 0  # selected trials finished by this run
    _selected: set[str] | None = None  # None before start(): every judgement counts

    def start(self, ctx: RunContext, rejudging: Collection[str] = ()) -> None:
        """Counts what is finished already. A row an earlier run left `generated` is not, nor
        one in `rejudging` (failed for want of a judge, sent again): it is judged now and
        counted then (counting it twice gave "done: 1413/720")."""
        self.started_at = time.monotonic()
        self._rate_window.append((self.started_at, 0, 0))
        self._selected = ctx.selected_ids
        self.num_selected = len(ctx.selected_ids)
        self.num_to_generate = len(ctx.pending)
        self.num_rejudging = len(rejudging)
        finished = (Status.JUDGED, Status.JUDGE_FAILED)
        for row in ctx.store.trials():
            # The grid is the injection pass rate: random-arm and factual-question trials
            # have their own measures (report/controls.py) and stay out of it.
            # A pooled control belongs to no cell of the grid (it has no layer or strength).
            if (
                row.spec.arm is not Arm.RANDOM
                and row.spec.question is None
                and not row.spec.is_pooled
            ):
                self.grid.place(row.id, row.spec.layer, row.spec.strength)
            if row.status is Status.GENERATED:
                self.num_left_generated += 1  # the judge pool takes every one, selected or not
            if row.status is Status.JUDGED:
                self.grid.add(row.id, row.spec.is_injected, row.judge)
            if row.id in ctx.selected_ids:
                self.by_concept_total[row.spec.concept] += 1
                if row.status in finished and row.id not in rejudging:
                    self.num_done_before += 1
                    self.by_concept_done[row.spec.concept] += 1

    def finish(self) -> None:
        self.finished_at = time.monotonic()

    def on_generated(self, generations: list[Generation], now: float) -> None:
        self.num_generated += len(generations)
        self.num_new_tokens += sum(g.num_new_tokens for g in generations)
        self._rate_window.append((now, self.num_generated, self.num_new_tokens))

    def on_judged(
        self,
        concept: str,
        is_injected: bool,
        result: dict[str, Any] | None,
        error: str | None,
        response: str,
        trial_id: str | None = None,
    ) -> None:
        # The judge also takes rows outside this process's selection (left `generated` by an
        # earlier, wider run): they are judge figures, not this run's progress.
        if self._selected is None or trial_id is None or trial_id in self._selected:
            self._num_done_now += 1
            self.by_concept_done[concept] += 1
        detected = None
        if trial_id is not None:
            self.grid.add(trial_id, is_injected, result)
        if result is not None:
            self.num_judged += 1
            verdict = str(result.get("answer", "?"))
            detected = result.get("detected_concept")
        else:
            self.num_judge_failed += 1
            self.failed_by_reason[error or "unknown"] += 1
            verdict = "unjudged"
        self.recent.append(
            RecentAnswer(
                concept,
                is_injected,
                verdict,
                " ".join(response.split()),
                detected if isinstance(detected, str) else None,
            )
        )

    def on_read_out(self, concept: str, trial_id: str) -> None:
        """A logit-mode trial finished without a judge (see `on_judged` for the selection)."""
        self.num_read_out += 1
        if self._selected is None or trial_id in self._selected:
            self._num_done_now += 1
            self.by_concept_done[concept] += 1

    @property
    def judge_backlog(self) -> int:
        """Generated answers still waiting for (or at) the judge."""
        handed = (
            self.num_left_generated + self.num_rejudging + self.num_generated - self.num_read_out
        )
        return max(0, handed - self.num_judged - self.num_judge_failed)

    def elapsed_s(self, now: float | None = None) -> float:
        """Seconds since the run began (until it finished)."""
        if not self.started_at:
            return 0.0
        end = self.finished_at or (now if now is not None else time.monotonic())
        return end - self.started_at

    @property
    def num_done(self) -> int:
        return self.num_done_before + self._num_done_now

    def rates(self) -> tuple[float, float]:
        """(trials/s, new tokens/s) over the recent window."""
        if len(self._rate_window) < 2:
            return 0.0, 0.0
        (t0, g0, k0), (t1, g1, k1) = self._rate_window[0], self._rate_window[-1]
        span = max(t1 - t0, 1e-9)
        return (g1 - g0) / span, (k1 - k0) / span

    def eta_s(self) -> float | None:
        trials_per_s, _ = self.rates()
        remaining = self.num_to_generate - self.num_generated
        return remaining / trials_per_s if trials_per_s > 0 else None
