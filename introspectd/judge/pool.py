"""The judge pool: generated rows stream to at most `concurrency` graders while the GPU works.

Rows left `generated` by an earlier run go first. Results are buffered and written in one short
transaction per tick. A judge outage never blocks generation: the queue is unbounded and a
failed judgement is recorded with its reason, for `rejudge` to finish later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from introspectd.protocol.trials import Status
from introspectd.run.store import Judgement, TrialRow

if TYPE_CHECKING:
    from introspectd.judge.client import JudgeOutcome
    from introspectd.output.exporter import Exporter
    from introspectd.run.session import RunContext
    from introspectd.run.stats import RunStats


@dataclass(frozen=True)
class ToJudge:
    trial_id: str
    concept: str
    is_injected: bool
    response: str


def to_judge(row: TrialRow) -> ToJudge:
    return ToJudge(row.id, row.spec.concept, row.spec.is_injected, row.response or "")


def make_judge(ctx: RunContext, in_child: bool) -> Any:
    """The run's judge client (in a child process when `in_child`), or None when no key and
    no base_url are configured."""
    cfg = ctx.plan.judge
    api_key = cfg.api_key()
    if not cfg.is_enabled(api_key):
        return None
    base_dir = ctx.plan.path.parent if isinstance(ctx.plan.path, Path) else None
    if in_child:
        from introspectd.judge.process import JudgeProcess

        return JudgeProcess(cfg, base_dir)
    from introspectd.judge.client import Judge

    return Judge(cfg, api_key, base_dir=base_dir)


def disabled_reason(api_key_env: str) -> str:
    return (
        f"judging not configured: no API key in ${api_key_env} and no [judge] base_url; "
        "run `introspectd rejudge` once one is set"
    )


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
        `in_child`: grade in a child process (`judge_process`), away from a decode loop."""
        self.ctx = ctx
        self.stats = stats
        self.exporter = exporter
        self.judge: Any = make_judge(ctx, in_child)
        self.in_child = in_child
        stats.judge = self.judge
        self._buffer: list[tuple[ToJudge, Judgement]] = []
        self.kept_grades = 0  # failed re-grades whose row kept its earlier grade (rejudge --all)
        send, receive = anyio.create_memory_object_stream[ToJudge](math.inf)
        self._send: MemoryObjectSendStream[ToJudge] = send
        self._receive: MemoryObjectReceiveStream[ToJudge] = receive
        if rows is None:
            rows = [to_judge(r) for r in self.ctx.store.trials(Status.GENERATED)]
        self._submit_rows(rows)

    def submit(self, items: list[ToJudge]) -> None:
        self._submit_rows(items)

    def _submit_rows(self, items: list[ToJudge]) -> None:
        if self.judge is None:
            reason = disabled_reason(self.ctx.plan.judge.api_key_env)
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
        if self.judge is None:
            return
        if self.in_child:  # a JudgeProcess: its child runs the graders
            await self.judge.serve(self._receive, self._record)
            return
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.ctx.plan.judge.concurrency):
                    tg.start_soon(self._worker)
        finally:
            with anyio.CancelScope(shield=True):
                await self.judge.aclose()

    async def _worker(self) -> None:
        async for item in self._receive:
            outcome = await self.judge.grade(item.concept, item.is_injected, item.response)
            self._record(item, outcome)

    def _record(self, item: ToJudge, outcome: JudgeOutcome) -> None:
        self._buffer.append(
            (
                item,
                Judgement(
                    item.trial_id,
                    outcome.result,
                    outcome.error,
                    outcome.judge_model,
                    outcome.prompt_version,
                    outcome.fewshot_hash,
                    outcome.attempts,
                    outcome.prompt_tokens,
                    outcome.completion_tokens,
                ),
            )
        )

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
