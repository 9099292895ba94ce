"""What a judging-only command (`calibrate`, `rejudge`) shows while it grades: its figures, the
display it hands them to, and the task that hands them over. The displays themselves (a live
bar on a terminal, a JSON progress line otherwise) are the app's (app/judging_view.py); the
judge only says how far it is.

Failures of a whole command live here too: a command whose every grade failed has produced
nothing, and must not end as if it had (`nothing_graded`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from introspectd.errors import BadInput, IntrospectdError, Transient
from introspectd.judge.budget import BUDGET_REACHED
from introspectd.judge.client import JudgeStats

REFRESH_S = 0.25  # how often the figures are read; a display decides how often it shows them


@dataclass(frozen=True)
class JudgingFigures:
    """How far a judging-only command is; `what` names its items ("labelled records")."""

    command: str
    what: str
    total: int
    judged: int
    failed: int
    in_flight: int
    elapsed_s: float
    spend_usd: float = 0.0
    budget_usd: float = 0.0
    failed_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.judged + self.failed

    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None before the first grade."""
        if self.done == 0 or self.elapsed_s <= 0:
            return None
        return (self.total - self.done) * self.elapsed_s / self.done


class JudgingDisplay(Protocol):
    def update(self, figures: JudgingFigures, is_final: bool = False) -> None: ...


class Progress:
    """Reads a judge's live counters into `JudgingFigures` for a display. The counters are the
    judge's own (`JudgeStats`), less what it had graded before this command began."""

    def __init__(
        self,
        command: str,
        what: str,
        total: int,
        stats: Callable[[], JudgeStats],
        display: JudgingDisplay | None,
    ) -> None:
        self.command, self.what, self.total = command, what, total
        self._stats, self._display = stats, display
        self._started = time.monotonic()

    def figures(self) -> JudgingFigures:
        s = self._stats()
        return JudgingFigures(
            command=self.command,
            what=self.what,
            total=self.total,
            judged=s.judged,
            failed=s.failed,
            in_flight=s.in_flight,
            elapsed_s=time.monotonic() - self._started,
            spend_usd=s.spend_usd,
            budget_usd=s.budget_usd,
            failed_by_reason=dict(s.failed_by_reason),
        )

    async def show(self) -> None:
        """Hand the figures to the display until cancelled (then `finish`)."""
        if self._display is None:
            return
        while True:
            self._display.update(self.figures())
            await anyio.sleep(REFRESH_S)

    def finish(self) -> None:
        if self._display is not None:
            self._display.update(self.figures(), is_final=True)


def nothing_graded(
    command: str, n: int, what: str, failed_by_reason: dict[str, int]
) -> IntrospectdError:
    """The error of a command that sent `n` items and got no grade back: exit 2 when the
    spending cap stopped them all (the user must raise it), else 75 (an outage: rerun later)."""
    reasons = "; ".join(f"{k}× {why}" for why, k in failed_by_reason.items()) or "no reply"
    if failed_by_reason and all(why.startswith(BUDGET_REACHED) for why in failed_by_reason):
        return BadInput(f"{command}: the judge graded none of {n} {what}: {reasons}")
    return Transient(
        f"{command}: the judge graded none of {n} {what} ({reasons}); no grade "
        "was stored or lost — run the same command again when the judge answers"
    )
