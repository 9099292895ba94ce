"""What a person watching a run sees: a rich live view on a terminal, else a periodic log line.

The view only reads `RunStats`; it never drives work, and refreshes at most 4 times a second.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from introspectd.run.session import RunContext
from introspectd.run.stats import RunStats

log = logging.getLogger("introspectd")
LOG_EVERY_S = float(os.environ.get("INTROSPECTD_LOG_EVERY_S", "10"))


class _Reporter:
    def __init__(self, live: Live | None) -> None:
        self.stats = RunStats()
        self.live = live
        self._last_log = time.monotonic()
        self._bars = Progress(
            TextColumn("{task.description:>12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        self._tasks: dict[str, Any] = {}

    def update(self, stats: RunStats, is_final: bool = False) -> None:
        if self.live is not None:
            self.live.update(self._view(stats))
            return
        now = time.monotonic()
        if is_final or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.info("progress %s", json.dumps(snapshot(stats), sort_keys=True))

    def _view(self, stats: RunStats) -> Group:
        rows = [("all", stats.num_selected, stats.num_done)]
        rows += [
            (c, stats.by_concept_total[c], stats.by_concept_done[c])
            for c in sorted(stats.by_concept_total)
        ]
        for name, total, done in rows:
            if name not in self._tasks:
                self._tasks[name] = self._bars.add_task(name, total=total)
            self._bars.update(self._tasks[name], completed=done, total=total)
        figures = Table.grid(padding=(0, 2))
        snap = snapshot(stats)
        for section in ("generation", "judge", "uploads"):
            if snap.get(section):
                line = "  ".join(f"{k}={v}" for k, v in snap[section].items())
                figures.add_row(f"[bold]{section}[/]", escape(line))
        recent = Table.grid()
        recent.add_column(no_wrap=True, overflow="ellipsis")  # one line per answer
        for r in stats.recent:
            kind = "inj" if r.is_injected else "ctl"
            text = "".join(ch if ch.isprintable() else " " for ch in r.text[:100])
            recent.add_row(escape(f"{r.concept:<12} {kind} {r.verdict:<9} {text}"))
        return Group(self._bars, figures, recent)


def snapshot(stats: RunStats) -> dict[str, Any]:
    """The figures of the live view as plain data (also the structured log line)."""
    trials_per_s, tokens_per_s = stats.rates()
    eta = stats.eta_s()
    out: dict[str, Any] = {
        "done": stats.num_done,
        "total": stats.num_selected,
        "generation": {
            "generated": stats.num_generated,
            "trials_per_s": round(trials_per_s, 2),
            "tokens_per_s": round(tokens_per_s, 1),
            "batch_size": stats.batch_size,
            "eta_s": round(eta) if eta is not None else None,
        },
        "judge": {
            "judged": stats.num_judged,
            "failed": stats.num_judge_failed,
            "failed_by_reason": dict(stats.failed_by_reason),
        },
    }
    if stats.judge is not None:
        out["judge"].update(_public_fields(stats.judge.stats))
    if stats.uploads is not None:
        out["uploads"] = _public_fields(stats.uploads.stats)
    return out


def _public_fields(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = dataclasses.asdict(obj)
    else:
        fields = obj if isinstance(obj, dict) else getattr(obj, "__dict__", {})
    return {k: v for k, v in fields.items() if not k.startswith("_")}


@contextmanager
def progress_for(ctx: RunContext, live: bool) -> Iterator[_Reporter]:
    if not live:
        yield _Reporter(None)
        return
    console = Console(file=sys.stderr)
    with Live(console=console, refresh_per_second=4, transient=False) as view:
        reporter = _Reporter(view)
        yield reporter
