"""CPU time the judge client spends per judged request, with the server in another process.

In a run the judge client has its own process (judge/process.py), but on a CPU-only machine it
still takes cores from generation: every millisecond it burns per request is one the decode
loop may miss (generate/session.py's JUDGE_CPU_S_PER_TRIAL is this figure). Here the server
(tests/judge_server.py, fixed latency) runs in a child process, so `time.process_time()` in
this process counts only the client: `concurrency` workers call Judge.grade back to back, as
the pipeline's pool does, until N responses are graded. We report wall seconds and client CPU
milliseconds per request.

    .venv/bin/python bench/judge_cpu.py --n 400
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from judge_server import JudgeServer

from introspectd.judge.client import Judge
from introspectd.protocol.plan import JudgeConfig


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=400, help="responses to grade")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.3, help="server time per request, s")
    p.add_argument("--api", choices=("chat", "responses"), default="chat")
    p.add_argument("--profile", metavar="FILE", help="also write a cProfile of the client")
    return p.parse_args()


def serve(latency_s: float, conn: Connection) -> None:
    """Child process: run the server until the parent sends anything (or goes away)."""
    with JudgeServer(latency_s=latency_s) as server:
        conn.send(server.base_url)
        with contextlib.suppress(EOFError):
            conn.recv()


async def grade_all(args: argparse.Namespace, base_url: str) -> tuple[float, float]:
    """(wall s, client CPU s) for grading N responses; the Judge is built outside the clock."""
    cfg = JudgeConfig(base_url=base_url, concurrency=args.concurrency, api=args.api)
    left = args.n
    async with Judge(cfg, None) as judge:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                outcome = await judge.grade(
                    "ocean", left % 2 == 0, f"I notice something about waves ({left})."
                )
                if outcome.error:
                    raise SystemExit(f"judge failed: {outcome.error}")

        wall, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for _ in range(args.concurrency):
                tg.start_soon(worker)
        return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    args = parse_args()
    # spawn, not fork: the child must not inherit this process's imports or threads.
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=serve, args=(args.latency, theirs), daemon=True)
    child.start()
    try:
        base_url = ours.recv()
        if args.profile:
            import cProfile

            with cProfile.Profile() as prof:
                wall, cpu = anyio.run(grade_all, args, base_url)
            prof.dump_stats(args.profile)
        else:
            wall, cpu = anyio.run(grade_all, args, base_url)
    finally:
        ours.send("stop")
        child.join(timeout=5)
    print(
        json.dumps(
            {
                "n": args.n,
                "concurrency": args.concurrency,
                "api": args.api,
                "latency_s": args.latency,
                "wall_s": round(wall, 3),
                "client_cpu_ms_per_request": round(cpu / args.n * 1000, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
