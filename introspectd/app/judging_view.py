"""What `calibrate` and `rejudge` show while they grade (issue 22 item 8): on a terminal, one
live line on stderr (done of total, failures, requests in flight, spend, elapsed, time left);
otherwise a progress line every $INTROSPECTD_LOG_EVERY_S on stdout, one JSON object, in the
form the run's progress lines take (app/progress.py), so Cloud Logging files it as jsonPayload.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from introspectd.app.live_figures import duration
from introspectd.judge.progress import JudgingDisplay, JudgingFigures
from introspectd.logs import log_every_s


def figures_words(f: JudgingFigures) -> str:
    """ "judging 120/512 labelled records · 3 failed · 8 in flight · 45 s, about 2 min left"."""
    parts = [f"judging {f.done}/{f.total} {f.what}"]
    if f.failed:
        parts.append(f"{f.failed} failed")
    parts.append(f"{f.in_flight} in flight")
    if f.budget_usd > 0:
        parts.append(f"${f.spend_usd:,.4f} of ${f.budget_usd:,.2f} budget")
    eta = f.eta_s()
    left = f", about {duration(eta)} left" if eta is not None and f.done < f.total else ""
    parts.append(f"{duration(f.elapsed_s)}{left}")
    return " · ".join(parts)


class LiveLine:
    """One line on the terminal, redrawn in place; left on screen when done."""

    def __init__(self) -> None:
        self._live = Live(
            Text(""), console=Console(stderr=True), auto_refresh=False, transient=False
        )

    def __enter__(self) -> LiveLine:
        self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.stop()

    def update(self, figures: JudgingFigures, is_final: bool = False) -> None:
        self._live.update(Text(figures_words(figures)), refresh=True)


class LogLines:
    """A JSON progress line every $INTROSPECTD_LOG_EVERY_S, and one at the end."""

    def __init__(self) -> None:
        self._every_s = log_every_s()
        self._last = time.monotonic()

    def update(self, figures: JudgingFigures, is_final: bool = False) -> None:
        now = time.monotonic()
        if is_final or now - self._last >= self._every_s:
            self._last = now
            sys.stdout.write(judging_line(figures) + "\n")
            sys.stdout.flush()


def judging_line(f: JudgingFigures) -> str:
    eta = f.eta_s()
    entry: dict[str, Any] = {
        "severity": "INFO",
        "message": f"{f.command}: {f.done}/{f.total} {f.what}",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "command": f.command,
        "done": f.done,
        "total": f.total,
        "judged": f.judged,
        "failed": f.failed,
        "failed_by_reason": f.failed_by_reason,
        "in_flight": f.in_flight,
        "elapsed_s": round(f.elapsed_s, 1),
        "eta_s": round(eta) if eta is not None else None,
        "spend_usd": round(f.spend_usd, 6),
    }
    return json.dumps(entry, sort_keys=True)


@contextmanager
def judging_display(live: bool) -> Iterator[JudgingDisplay]:
    """The live line when `live` (stderr is a terminal), else the JSON progress lines."""
    if not live:
        yield LogLines()
        return
    with LiveLine() as line:
        yield line
