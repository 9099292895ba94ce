"""The live view's words and numbers: plain strings with units, built from `RunStats`.

Nothing here draws; live_view.py lays these out. Every figure is worded for a person ("3 rate
limited, 1 timed out"), never a Python repr (`failed_by_reason={}`, `tripped=False`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from introspectd.protocol.plan import JudgeConfig
from introspectd.run.session import RunContext
from introspectd.run.stats import RunStats
from introspectd.text import printable

if TYPE_CHECKING:
    from introspectd.judge.client import JudgeStats  # loads the openai SDK

# The judge client's failure kinds (judge/retry.py `describe`), in words.
_REASON_WORDS = {
    "rate_limited": "rate limited",
    "quota": "quota exhausted",
    "too_large": "reply too large",
    "timeout": "timed out",
    "connection": "connection error",
    "refused": "judge refused",
    "invalid_json": "invalid JSON",
    "schema": "bad judgement format",
    "bad_response": "malformed reply",
    "unexpected": "unexpected error",
    "judge process": "judge process died",
}


def reason_words(kind: str) -> str:
    """A judge failure kind as words: "rate_limited" -> "rate limited", "http_503" -> "HTTP 503"."""
    if kind.startswith("http_"):
        return f"HTTP {kind[5:]}"
    return _REASON_WORDS.get(kind, printable(kind.replace("_", " ")))


def failures_in_words(by_kind: Mapping[str, int], num_failed: int) -> str:
    """ "none", or "4: 3 rate limited, 1 timed out" (largest first; the rest as "other")."""
    if num_failed == 0:
        return "none"
    parts = [f"{n} {reason_words(k)}" for k, n in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    rest = num_failed - sum(by_kind.values())
    if rest > 0:
        parts.append(f"{rest} other")
    return f"{num_failed}: " + ", ".join(parts)


def duration(seconds: float | None) -> str:
    """ "–" when unknown, else "45 s", "3 min 12 s", "2 h 05 min"."""
    if seconds is None:
        return "–"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def count(n: float) -> str:
    """1234 -> "1,234"; 1234567 -> "1.23 M" (token totals grow large)."""
    if n >= 10_000_000:
        return f"{n / 1e6:.1f} M"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    return f"{round(n):,}"


def spend_figure(judge_cfg: JudgeConfig, spent_usd: float, budget_usd: float) -> str | None:
    """Judge spend so far (judge/budget.py counts it from the stored token counts), or None
    when the plan sets no prices: introspectd ships none, so tokens are all it can show."""
    if judge_cfg.price_in_per_mtok == 0 and judge_cfg.price_out_per_mtok == 0:
        return None
    cap = f" of ${budget_usd:,.2f} budget" if budget_usd > 0 else ""
    return f"spend ${spent_usd:,.2f}{cap}"


@dataclass(frozen=True)
class Header:
    run_id: str
    model: str
    planned_device: str  # the plan's [model] device, until the loaded model says where it runs
    output_dir: str
    gcs: str  # the upload target, or "" when uploads are off

    @classmethod
    def of(cls, ctx: RunContext) -> Header:
        plan = ctx.plan
        return cls(
            run_id=ctx.run.stamp,
            model=plan.model.name,
            planned_device=plan.model.device,
            output_dir=str(ctx.out_dir),
            gcs=plan.upload.gcs,
        )

    def fields(self, stats: RunStats) -> list[tuple[str, str]]:
        device = stats.device or f"{self.planned_device} (loading)"
        return [
            ("run", printable(self.run_id)),
            ("model", printable(self.model)),
            ("device", device),
            ("trials", f"{stats.num_selected:,} in this run"),
            ("output", printable(self.output_dir)),
            ("GCS", printable(self.gcs) if self.gcs else "off (local only)"),
        ]


def generation_figures(stats: RunStats, now: float | None = None) -> list[str]:
    """Rates while generating; once generation has ended, its totals and averages (the last
    window's rates would stay on screen, frozen, while the judge finishes)."""
    now = time.monotonic() if now is None else now
    if stats.num_to_generate == 0:
        return ["nothing to generate: every selected trial was generated earlier"]
    if stats.generation_started_at is None:
        if stats.generation_finished_at is not None:
            return ["stopped before the model had loaded"]
        return [f"loading the model · {count(stats.num_to_generate)} trials to generate"]
    done = f"{count(stats.num_generated)}/{count(stats.num_to_generate)} generated"
    if stats.generation_finished_at is None:
        trials_per_s, tokens_per_s = stats.rates()
        return [
            done,
            f"ETA {duration(stats.eta_s())}",
            f"{trials_per_s:.1f} trials/s",
            f"{tokens_per_s:,.0f} tokens/s",
            f"batch {stats.batch_size}" if stats.batch_size else "batch –",
        ]
    took = max(stats.generation_finished_at - stats.generation_started_at, 1e-9)
    ended = "finished" if stats.num_generated >= stats.num_to_generate else "stopped"
    return [
        f"{ended}: {done} in {duration(took)}",
        f"on average {stats.num_generated / took:.1f} trials/s",
        f"{stats.num_new_tokens / took:,.0f} tokens/s",
        f"batch {stats.batch_size}" if stats.batch_size else "batch –",
    ]


def judge_figures(stats: RunStats, judge_cfg: JudgeConfig) -> list[list[str]]:
    """Lines of judge figures; one line saying judging is off when it is. The first line holds
    what a person watches (judged, waiting, in flight); the counters that only explain it come
    second, where a narrow terminal cuts them first."""
    if stats.judge is None:
        return [["off (no API key and no [judge] base_url)"]]
    js = stats.judge.stats
    first = [
        f"{count(stats.num_judged)} judged",
        f"{count(stats.judge_backlog)} waiting",
        f"{js.in_flight} in flight (limit {js.current_concurrency} of {js.max_concurrency})",
    ]
    if js.tripped:
        first.append("STOPPED: quota exhausted")
    elif js.paused_s > 0:
        # Rounded up: a pause with 0.3 s left read "paused 0 s".
        first.append(f"paused by Retry-After, {math.ceil(js.paused_s)} s left")
    second = [
        f"failed {failures_in_words(js.failed_by_reason, stats.num_judge_failed)}",
        f"{count(js.num_429)} × 429",
        f"{count(js.retries)} {'retry' if js.retries == 1 else 'retries'}",
        f"tokens {count(js.prompt_tokens)} in / {count(js.completion_tokens)} out",
    ]
    spend = spend_figure(judge_cfg, js.spend_usd, js.budget_usd)
    if spend is not None:
        second.append(spend)
    low = low_limit_figure(js)
    return [first, second] + ([[low]] if low else [])


def low_limit_figure(js: JudgeStats) -> str | None:
    """Why judging is slow, when the limiter holds the limit far below `concurrency`: a line
    of its own, so a narrow terminal does not cut it off."""
    if js.limit_low_s <= 0:
        return None
    return (
        f"SLOW: limit {js.current_concurrency} of {js.max_concurrency} for "
        f"{duration(js.limit_low_s)}: bursts of 429s ({js.share_429:.0%} of recent requests); "
        "[judge] min_concurrency sets a floor"
    )


def snapshot_figure(stats: RunStats, now: float | None = None) -> str:
    """The last GCS snapshot's age, or why there is none."""
    if stats.uploads is None:
        return "off (no [upload] gcs, or --local)"
    us = stats.uploads.stats
    if us.fatal:
        return f"STOPPED: {printable(us.fatal)}"
    if us.last_success_at is None:
        state = "uploading the first" if us.in_flight else "none yet"
        text = state
    else:
        age = (now if now is not None else time.time()) - us.last_success_at
        text = f"#{us.last_seq} uploaded {duration(age)} ago"
    if us.last_error:
        text += f"; last attempt failed ({us.consecutive_failures}×): {printable(us.last_error)}"
    return text


class ConceptRates:
    """The run's recent completion rate, from the done counts seen at each draw, for the ETAs
    of the run, of each concept, and of the concepts a narrow view folds into one row."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._seen: deque[tuple[float, dict[str, int]]] = deque()

    def observe(self, stats: RunStats, now: float) -> None:
        self._seen.append((now, dict(stats.by_concept_done)))
        while len(self._seen) > 2 and now - self._seen[1][0] >= self.window_s:
            self._seen.popleft()

    def eta_s(self, stats: RunStats, concepts: list[str] | None) -> float | None:
        """Seconds until `concepts` (None: the whole run) are all done; 0 when done, None while
        there is no rate.

        The run's ETA is its trials left at its recent rate, and no sooner than generation's.
        A concept's is NOT its own recent rate: the scheduler gives every unfinished concept an
        equal share of each batch (trial index first, scheduler.py), so per-concept rates over
        a few seconds are noise (8 min vs 3 min at equal progress). A concept with L trials
        left gets 1/U of the run's rate (U unfinished concepts) and cannot finish after the
        run: min(run ETA, L·U / rate). Equal progress, equal ETA; fewer trials left, sooner."""
        left_all = stats.num_selected - stats.num_done
        total, done = stats.by_concept_total, stats.by_concept_done
        lefts = [left_all] if concepts is None else [total[c] - done[c] for c in concepts]
        if max(lefts, default=0) <= 0:
            return 0.0
        rate = self._rate()
        if not rate:
            return None
        # Nothing is done before it is generated: the run ends no sooner than generation.
        run_eta = max(max(left_all, max(lefts)) / rate, stats.eta_s() or 0.0)
        if concepts is None:
            return run_eta
        num_unfinished = max(1, sum(1 for c in total if done[c] < total[c]))
        return min(run_eta, max(lefts) * num_unfinished / rate)

    def _rate(self) -> float:
        """Trials finished per second over the window (0 without two samples)."""
        if len(self._seen) < 2:
            return 0.0
        (t0, done0), (t1, done1) = self._seen[0], self._seen[-1]
        num_done = sum(done1.get(c, 0) - done0.get(c, 0) for c in done1)
        return max(num_done, 0) / max(t1 - t0, 1e-9)
