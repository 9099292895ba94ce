"""One judge interface and one worker pool.

`grade_all` is the only worker pool: `concurrency` workers take items from one stream and hand
each outcome on. Every grader uses it: the run's in-process grader (`InProcessGrader`), the
judge child (process.py) and `rejudge --input` (rejudge_file.py).

`Grader` is what the run's `JudgePool` hands its rows to; it does not care where grading
happens: in this process (`InProcessGrader`, used by `rejudge --plan`) or in a child process
(`process.JudgeProcess`, used by `run`, away from the decode loop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from introspectd.judge.client import Judge, JudgeOutcome, JudgeStats


class Gradable(Protocol):
    """What a judge needs of an item to grade it."""

    @property
    def concept(self) -> str: ...
    @property
    def is_injected(self) -> bool: ...
    @property
    def response(self) -> str: ...


@dataclass(frozen=True)
class ToJudge:
    """One trial's answer, on its way to the judge."""

    trial_id: str
    concept: str
    is_injected: bool
    response: str


G = TypeVar("G", bound=Gradable)
OnOutcome = Callable[[ToJudge, JudgeOutcome], None]


async def grade_all(
    judge: Judge, items: MemoryObjectReceiveStream[G], on_outcome: Callable[[G, JudgeOutcome], None]
) -> None:
    """Grade every item until `items` closes, `judge.cfg.concurrency` at a time, and call
    `on_outcome` with each as it comes back. Cancelling it drops the items in flight."""

    async def worker() -> None:
        async for item in items:  # workers share one stream: each item is taken once
            on_outcome(item, await judge.grade(item.concept, item.is_injected, item.response))

    async with anyio.create_task_group() as tg:
        for _ in range(judge.cfg.concurrency):
            tg.start_soon(worker)


class Grader(Protocol):
    """Grades the run's rows wherever it does it; `stats` are live figures for the progress
    view."""

    @property
    def stats(self) -> JudgeStats: ...

    async def serve(self, items: MemoryObjectReceiveStream[ToJudge], on_outcome: OnOutcome) -> None:
        """Grade every item until `items` closes, reporting each outcome; then let go of the
        judge."""
        ...


class InProcessGrader:
    """A `Grader` that grades in this process's event loop."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge

    @property
    def stats(self) -> JudgeStats:
        return self.judge.stats

    async def serve(self, items: MemoryObjectReceiveStream[ToJudge], on_outcome: OnOutcome) -> None:
        try:
            await grade_all(self.judge, items, on_outcome)
        finally:
            with anyio.CancelScope(shield=True):
                await self.judge.aclose()
