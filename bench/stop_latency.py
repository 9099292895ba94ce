"""How fast the tool gives up where waiting would stall it: the figures the fault tests once
asserted as wall-clock bounds (tests never assert timings; these are measured here).

1. SIGTERM during a drain whose judge hangs: seconds from the signal to exit 75.
2. A judge that answers every request with `Retry-After: 3600`: seconds until 4 rows fail.

    .venv/bin/python bench/stop_latency.py [--repeats 3]

Runs `builtin:tiny` (random weights) against the local scripted judge server (tests/).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import start_run
from judge_server import JudgeServer, hang, rate_limited
from test_faults_signals import StderrLines, judged_plan

from introspectd.judge.client import Judge
from introspectd.protocol.plan import JudgeConfig


def drain_seconds() -> float:
    """SIGTERM once generation is done and the judge holds every request: signal → exit."""
    with tempfile.TemporaryDirectory() as tmp, JudgeServer(default=hang(60)) as server:
        proc = start_run(judged_plan(Path(tmp), server), "--local", env={"INTROSPECTD_LOG": "INFO"})
        err = StderrLines(proc)
        err.wait_for("generation finished")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        err.rest(timeout_s=120)
        assert proc.returncode == 75, proc.returncode
        return time.monotonic() - sent


def long_retry_after_seconds() -> float:
    """4 rows against `Retry-After: 3600`: until all four have failed."""
    with JudgeServer(default=rate_limited(retry_after_s=3600)) as server:
        cfg = JudgeConfig(model="judge-test", base_url=server.base_url, concurrency=4, timeout_s=5)

        async def main() -> None:
            async with Judge(cfg, "bench-key") as judge, anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(judge.grade, "ocean", i % 2 == 0, f"response {i}")

        started = time.monotonic()
        anyio.run(main)
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, measure in (("drain with a hanging judge", drain_seconds),
                          ("4 rows vs Retry-After 3600", long_retry_after_seconds)):  # fmt: skip
        runs = [measure() for _ in range(args.repeats)]
        print(f"{name}: median {statistics.median(runs):.1f} s, max {max(runs):.1f} s "
              f"over {len(runs)} runs")  # fmt: skip


if __name__ == "__main__":
    main()
