"""Event-loop lag: how late a 10 ms heartbeat wakes up, while the run loop's tasks run.

Opt-in: with INTROSPECTD_LOOP_LAG_FILE set, the engine runs the heartbeat and writes a JSON
summary (p50, p99, max in ms, and when the worst ones happened) to that file at the end of the
run. `bench/scale.py` reads it. A call that blocks the loop shows up here as lateness.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio

ENV = "INTROSPECTD_LOOP_LAG_FILE"
PERIOD_S = 0.01


class LoopLag:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[float, float]] = []  # (seconds since start, lateness s)
        self._started = 0.0

    @classmethod
    def from_env(cls) -> LoopLag | None:
        value = os.environ.get(ENV, "")
        return cls(Path(value)) if value else None

    async def run(self) -> None:
        self._started = anyio.current_time()
        while True:
            before = anyio.current_time()
            await anyio.sleep(PERIOD_S)
            now = anyio.current_time()
            self.samples.append((now - self._started, max(0.0, now - before - PERIOD_S)))

    def summary(self) -> dict[str, Any]:
        lags = sorted(lag for _, lag in self.samples)
        if not lags:
            return {"samples": 0}

        def pct(q: float) -> float:
            return round(1000 * lags[min(len(lags) - 1, int(q * len(lags)))], 2)

        worst = sorted(self.samples, key=lambda s: s[1], reverse=True)[:5]
        return {
            "samples": len(lags),
            "period_ms": PERIOD_S * 1000,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(1000 * lags[-1], 2),
            "worst": [{"at_s": round(t, 2), "lag_ms": round(1000 * lag, 2)} for t, lag in worst],
        }

    def write(self) -> None:
        self.path.write_text(json.dumps(self.summary(), indent=2) + "\n")
