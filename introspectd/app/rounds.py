"""Between an adaptive sweep's rounds: the engine's side of run/round_state.py.

Once the GPU has nothing left to generate, every tick asks the database's judged results which
trials come next (`missing_trials`: the next round of the cells still open, then the
confirmation trials) and hands them to the scheduler; the generator's thread waits in `take`
meanwhile. The decisions are recomputed from the database, never carried in memory, so a
restart continues exactly where the judged results say.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from introspectd.app.status import not_judged_words
from introspectd.protocol.trials import Trial
from introspectd.run.round_state import blocked_by_failures, missing_trials
from introspectd.run.scheduler import Scheduler
from introspectd.run.session import RunContext
from introspectd.run.stats import RunStats

log = logging.getLogger("introspectd")
WAIT_S = 0.05  # the generator thread's poll while a round is being judged


class Rounds:
    def __init__(
        self, ctx: RunContext, scheduler: Scheduler, lock: threading.Lock, stats: RunStats
    ) -> None:
        self.ctx = ctx
        self.scheduler = scheduler
        self.lock = lock
        self.stats = stats
        self.finished = threading.Event()  # no more trials will be added
        self._seen: tuple[int, int] | None = None  # progress at the last look
        self.blocked = ""  # why the run cannot go on (answers the judge failed to grade)

    def has_work(self) -> bool:
        with self.lock:
            return not self.scheduler.is_finished

    def step(self) -> None:
        """On the event loop: add the trials the judged results call for, if any now."""
        if self.finished.is_set() or self.has_work():
            return
        seen = (self.stats.num_done, self.stats.num_generated)
        if seen == self._seen:
            return  # nothing judged since the last look: the answer cannot have changed
        self._seen = seen
        ctx = self.ctx
        outcomes = ctx.store.outcomes.all()
        add, is_last = missing_trials(ctx.plan, outcomes, ctx.cells, ctx.plan.adaptive.enabled)
        if add:
            ctx.store.add_trials(ctx.run.stamp, add)
            trials = [Trial(spec.trial_id(ctx.run.stamp), spec) for spec in add]
            ctx.selected_ids.update(t.trial_id for t in trials)
            self.stats.num_selected += len(trials)
            self.stats.num_to_generate += len(trials)
            self.stats.by_concept_total.update(t.spec.concept for t in trials)
            num_confirm = sum(t.spec.is_confirmation for t in trials)
            log.info(
                "adaptive: %d more trials (%d of them confirmation) for %d cells",
                len(trials),
                num_confirm,
                len({t.spec.cell for t in trials}),
            )
            with self.lock:
                self.scheduler.add(trials)
        elif is_last:
            log.info("adaptive: every cell has stopped; no more trials")
            self.finished.set()
        elif self.stats.judge_backlog == 0 and blocked_by_failures(outcomes, ctx.cells):
            self._block()

    def _block(self) -> None:
        """Stop adding trials: the next decision needs answers the judge failed to grade.
        Deciding without them would run cells to their cap or confirm arbitrary ones."""
        ctx = self.ctx
        counts = ctx.store.outcomes.judging_counts(ctx.selected_ids)
        what = "the next round" if ctx.plan.adaptive.enabled else "choosing the cells to confirm"
        self.blocked = (
            f"{what} needs judged results, and the judge could not grade some: "
            f"{not_judged_words(counts)}; nothing more was "
            f"generated — once the judge works, run the same command again: it re-judges them "
            "and goes on"
        )
        log.error("adaptive: %s", self.blocked)
        self.finished.set()

    def wait_for_work(self, should_stop: Callable[[], bool]) -> None:
        """In the generator's thread: until there is work, no more will come, or a stop."""
        while not (self.has_work() or self.finished.is_set() or should_stop()):
            self.finished.wait(WAIT_S)
