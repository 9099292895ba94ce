"""Judge throughput against a rate-limited local server, as a fraction of the limit.

The server (tests/judge_server.py) admits R requests/s through a token bucket and answers 429
with `retry-after-ms` beyond that; each admitted request takes `latency` seconds. `concurrency`
workers call Judge.grade back to back for `seconds`, as the pipeline's pool would. We report
the rate of successful judgements after a warm-up, as a fraction of R, and the share of all
requests answered 429. Goal (issue 3): >= 90% of R with at most a few percent 429s.

With `--random-429 P` the server has no bucket: it answers a share P of requests 429 at random
(`retry-after: --retry-after`), as a shared endpoint does whatever one sends, and the ideal is
`concurrency / mean latency`. Goal (issue 22 item 9): the limit stays near `concurrency`.

    .venv/bin/python bench/judge_throughput.py --rate 50
    .venv/bin/python bench/judge_throughput.py --random-429 0.08 --concurrency 8 \
        --latency 0.5 1.1 --seconds 60
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from judge_server import Action, JudgeServer, Recorded, ok, rate_limited

from introspectd.judge.client import Judge
from introspectd.protocol.plan import JudgeConfig


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=50.0, help="server limit R, requests/s")
    p.add_argument("--burst", type=float, default=5.0, help="token bucket capacity")
    p.add_argument(
        "--latency",
        type=float,
        nargs=2,
        default=(0.15, 0.35),
        metavar=("LO", "HI"),
        help="service time of an admitted request, uniform",
    )
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="excluded from the throughput: slow start and the first probe",
    )
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--trace", action="store_true", help="print the limit every 0.1 s")
    p.add_argument("--api", choices=("chat", "responses"), default="chat")
    p.add_argument(
        "--random-429",
        type=float,
        default=0.0,
        metavar="P",
        help="no bucket: answer this share of requests 429 at random",
    )
    p.add_argument("--retry-after", type=float, default=0.5, help="seconds, with --random-429")
    return p.parse_args()


def make_server(args: argparse.Namespace) -> JudgeServer:
    if not args.random_429:
        return JudgeServer(rate_limit=args.rate, burst=args.burst, latency_s=tuple(args.latency))
    rng = random.Random(0)

    def respond(_: Recorded) -> Action:
        # One server thread per request: random.Random is safe enough for a share.
        if rng.random() < args.random_429:
            return rate_limited(retry_after_s=args.retry_after)
        return ok()

    return JudgeServer(responder=respond, latency_s=tuple(args.latency))


async def run(args: argparse.Namespace) -> None:
    server = make_server(args)
    cfg = JudgeConfig(
        model="bench",
        base_url=server.base_url,
        api=args.api,
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        backoff_s=0.05,
        timeout_s=10.0,
    )
    failures: Counter[str] = Counter()
    limits: list[int] = []
    with server:
        judge = Judge(cfg, "bench-key")
        start = time.monotonic()
        deadline = start + args.seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                outcome = await judge.grade("ocean", True, "I notice something about waves.")
                if outcome.error:
                    failures[outcome.error_kind or "?"] += 1

        async def sample() -> None:
            while time.monotonic() < deadline:
                limits.append(judge.stats.current_concurrency)
                if args.trace:
                    print(
                        f"t={time.monotonic() - start:4.1f} limit={limits[-1]} "
                        f"in_flight={judge.stats.in_flight} 429s={judge.stats.num_429}"
                    )
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            for _ in range(args.concurrency):
                tg.start_soon(worker)
        await judge.aclose()
    report(args, server, start, deadline, failures, limits)


def report(
    args: argparse.Namespace,
    server: JudgeServer,
    start: float,
    deadline: float,
    failures: Counter[str],
    limits: list[int],
) -> None:
    t0 = start + args.warmup
    ok = sum(1 for r in server.requests if r.status == 200 and t0 <= r.arrival < deadline)
    total = len(server.requests)
    n429 = sum(1 for r in server.requests if r.status == 429)
    rate = ok / (deadline - t0)
    ok_all = sum(1 for r in server.requests if r.status == 200 and r.arrival < deadline)
    late = [r for r in server.requests if r.arrival >= t0]
    late429 = sum(1 for r in late if r.status == 429)
    ideal = args.rate  # R, or what `concurrency` slots allow at the mean latency
    if args.random_429:
        ideal = args.concurrency / (sum(args.latency) / 2)
        print(
            f"random 429s: {args.random_429:.0%} (retry-after {args.retry_after:g} s), "
            f"so R = concurrency / mean latency = {ideal:.1f} req/s"
        )
    print(
        f"limit R={ideal:g} req/s, burst {args.burst:g}, latency {args.latency[0]:g}-"
        f"{args.latency[1]:g} s, concurrency {args.concurrency}, api {args.api}"
    )
    print(
        f"sustained throughput: {rate:.1f} req/s = {rate / ideal:.1%} of R "
        f"(after {args.warmup:g} s warm-up, {args.seconds:g} s run); whole run incl. warm-up "
        f"{ok_all / args.seconds / ideal:.1%}"
    )
    print(
        f"429 share: {n429}/{total} = {n429 / max(total, 1):.1%} of requests; "
        f"after warm-up {late429}/{len(late)} = {late429 / max(len(late), 1):.1%}"
    )
    print(
        f"judge failures: {dict(failures) or 'none'}; "
        f"concurrency limit seen: min {min(limits, default=0)}, "
        f"mean {sum(limits) / max(len(limits), 1):.1f}, max {max(limits, default=0)}"
    )


if __name__ == "__main__":
    anyio.run(run, parse_args())
