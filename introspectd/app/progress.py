"""What a person watching a run sees: a `Display`. On a terminal it is the rich live view
(live_view.py); otherwise a periodic progress line, one JSON object, whose fields tools and
tests read, so it does not change with the live view.

A display only reads `RunStats`; it never drives work. The engine calls `update` on its tick
(4 times a second) and once more with `is_final` at the end.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from introspectd.logs import log_every_s
from introspectd.run.session import RunContext
from introspectd.run.stats import RunStats


class Display(Protocol):
    """Shows a run's progress; `stats` is the object the engine fills in."""

    stats: RunStats

    def update(self, stats: RunStats, is_final: bool = False) -> None: ...


class LogDisplay:
    """No terminal: one progress line every $INTROSPECTD_LOG_EVERY_S (logs.py), and one at the end.

    Each line is one JSON object and nothing else, so Cloud Logging (Cloud Batch's task logs,
    GKE, Cloud Run) stores it as a structured entry, `jsonPayload`, with `severity` and
    `message` as its own fields. A JSON object after a timestamp and a level in a text log
    line, as before, is a `textPayload` nobody can filter on.

    Why stdout: Cloud Logging's convention files an unstructured stderr line as an error (GKE
    gives it severity ERROR), and a progress line is the run's output, not an error; a pipe
    (`| jq`) reads stdout too. `severity` is set all the same, so the stream cannot matter to
    a reader that honours it. The human log lines (warnings, "computing 12 concept vectors")
    stay on stderr; stdout otherwise carries only the end-of-run summary (summary.py), as
    text, after the last progress line.
    """

    def __init__(self) -> None:
        self.stats = RunStats()
        self._every_s = log_every_s()
        self._last_log = time.monotonic()

    def update(self, stats: RunStats, is_final: bool = False) -> None:
        now = time.monotonic()
        if is_final or now - self._last_log >= self._every_s:
            self._last_log = now
            sys.stdout.write(progress_line(stats) + "\n")
            sys.stdout.flush()  # a pipe is block-buffered: the line is due now, not at exit


def progress_line(stats: RunStats) -> str:
    """The progress line: `snapshot`'s figures with the fields Cloud Logging reads itself."""
    figures = snapshot(stats)
    entry = {
        "severity": "INFO",
        "message": f"progress {stats.num_done}/{stats.num_selected} trials",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        **figures,
    }
    return json.dumps(entry, sort_keys=True)


def snapshot(stats: RunStats) -> dict[str, Any]:
    """The figures of the live view as plain data (also the structured log line)."""
    trials_per_s, tokens_per_s = stats.rates()
    eta = stats.eta_s()
    out: dict[str, Any] = {
        "done": stats.num_done,
        "total": stats.num_selected,
        "elapsed_s": round(stats.elapsed_s()),
        "generation": {
            "generated": stats.num_generated,
            "trials_per_s": round(trials_per_s, 2),
            "tokens_per_s": round(tokens_per_s, 1),
            "batch_size": stats.batch_size,
            "eta_s": round(eta) if eta is not None else None,
            "finished": stats.generation_finished_at is not None,
        },
        "judge": {
            "judged": stats.num_judged,
            "waiting": stats.judge_backlog,
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
def progress_for(ctx: RunContext, live: bool) -> Iterator[Display]:
    """The live view when `live` (stderr is a terminal), else the log line."""
    if not live:
        yield LogDisplay()
        return
    from introspectd.app.live_figures import Header
    from introspectd.app.live_view import LiveDisplay

    with LiveDisplay(Header.of(ctx), ctx.plan.judge) as display:
        yield display
