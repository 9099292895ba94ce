"""The judge pool: generated rows stream to the run's `Grader` while the GPU works.

Rows left `generated` by an earlier run go first, and, once a judge is configured, rows an
earlier run recorded as failed only because judging was off then: setting the key and running
again grades them (not only `rejudge`). A run that decides trials from judged results
(adaptive, confirmation) sends every failed row again: its decisions wait for them. Results
are buffered and written in one short transaction per tick. A judge outage never blocks
generation: the queue is unbounded and a failed judgement is recorded with its reason, for
`rejudge` to finish later.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from introspectd.judge.budget import spend_usd
from introspectd.judge.client import JUDGING_OFF, judging_off
from introspectd.judge.grader import Grader, ToJudge
from introspectd.protocol.results import Judgement, TrialRow
from introspectd.protocol.trials import Status

if TYPE_CHECKING:
    from introspectd.judge.client import JudgeOutcome
    from introspectd.output.exporter import Exporter
    from introspectd.run.session import RunContext
    from introspectd.run.stats import RunStats

log = logging.getLogger("introspectd")


def to_judge(row: TrialRow) -> ToJudge:
    return ToJudge(row.id, row.spec.concept, row.spec.is_injected, row.response or "")


def make_grader(ctx: RunContext, in_child: bool) -> Grader | None:
    """The run's grader (in a child process when `in_child`), or None when no key and no
    base_url are configured."""
    cfg = ctx.plan.judge
    api_key = cfg.api_key()
    if not cfg.is_enabled(api_key):
        return None
    base_dir = ctx.plan.path.parent if isinstance(ctx.plan.path, Path) else None
    candidates = tuple(ctx.plan.sweep.concepts)
    spent = run_spend_usd(ctx)
    if in_child:
        from introspectd.judge.process import JudgeProcess

        return JudgeProcess(cfg, base_dir, candidates, spent)
    from introspectd.judge.client import Judge
    from introspectd.judge.grader import InProcessGrader

    return InProcessGrader(
        Judge(cfg, api_key, base_dir=base_dir, candidates=candidates, spent_usd=spent)
    )


def run_spend_usd(ctx: RunContext) -> float:
    """What the run's stored judgements cost at the plan's current prices."""
    totals = ctx.store.judge_totals()
    return spend_usd(ctx.plan.judge, totals["prompt_tokens"], totals["completion_tokens"])


class JudgePool:
    def __init__(
        self,
        ctx: RunContext,
        stats: RunStats,
        exporter: Exporter,
        rows: list[ToJudge] | None = None,
        in_child: bool = False,
    ) -> None:
        """`rows`: what to judge first; by default every row an earlier run left `generated`.
        `in_child`: grade in a child process (process.py), away from a decode loop."""
        self.ctx = ctx
        self.stats = stats
        self.exporter = exporter
        self.grader = make_grader(ctx, in_child)
        stats.judge = self.grader
        self._buffer: list[tuple[ToJudge, Judgement]] = []
        self.kept_grades = 0  # failed re-grades whose row kept its earlier grade (rejudge --all)
        send, receive = anyio.create_memory_object_stream[ToJudge](math.inf)
        self._send: MemoryObjectSendStream[ToJudge] = send
        self._receive: MemoryObjectReceiveStream[ToJudge] = receive
        self.requeued: set[str] = set()  # judge_failed rows judged again (not yet finished)
        if rows is None:
            rows = [to_judge(r) for r in self.ctx.store.trials(Status.GENERATED)]
            rows += self._left_without_judge()
        self.submit(rows)

    def _left_without_judge(self) -> list[ToJudge]:
        """Rows failed only because no judge was configured then, when one is now; in a run
        that decides trials from judged results (adaptive, confirmation), every failed row: its
        decisions wait for them (run/round_state.py), so a rerun must grade them again."""
        if self.grader is None:
            return []
        every_failure = self.ctx.plan.adds_trials_as_it_goes
        rows = [
            r
            for r in self.ctx.store.trials(Status.JUDGE_FAILED)
            if not r.is_read_out
            and (every_failure or (r.judge_error or "").startswith(JUDGING_OFF))
        ]
        if rows:
            why = "its decisions need them" if every_failure else "judging was off"
            log.info("judging again %d answers an earlier run left unjudged (%s)", len(rows), why)
        self.requeued = {r.id for r in rows}
        return [to_judge(r) for r in rows]

    def submit(self, items: list[ToJudge]) -> None:
        if self.grader is None:
            why = judging_off(self.ctx.plan.judge)
            reason = f"{why}; run `introspectd rejudge` (or run again) once one is set"
            for item in items:
                self._buffer.append(
                    (item, Judgement(item.trial_id, None, reason, "", "", "", 0, 0, 0))
                )
            return
        for item in items:
            self._send.send_nowait(item)

    def close_input(self) -> None:
        self._send.close()

    async def run(self) -> None:
        if self.grader is not None:
            await self.grader.serve(self._receive, self._record)

    def _record(self, item: ToJudge, outcome: JudgeOutcome) -> None:
        self._buffer.append((item, outcome.to_judgement(item.trial_id)))

    async def flush(self) -> None:
        """Write buffered judgements in one transaction and mark their files for export."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        self.kept_grades += self.ctx.store.record_judgements([j for _, j in batch])
        for item, j in batch:
            self.stats.on_judged(
                item.concept, item.is_injected, j.result, j.error, item.response, item.trial_id
            )
        self.exporter.mark_finished([item.trial_id for item, _ in batch])
