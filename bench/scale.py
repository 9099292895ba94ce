"""Scale benchmark: does the cost of a trial stay flat as a run grows?

Runs `introspectd run` as a user does, on `builtin:tiny` with 4 new tokens:
    plain   100,000 trials (5 concepts × 2 layers × 5 strengths × 1000 trials × 2), judging off
    judged   20,000 trials (the same grid, 200 trials), graded by a local judge server
and prints, for each: trials/s in each tenth of the run (from the rows' own `generated_at` /
`judged_at`, so the bench's polling does not blur them), event-loop lag p99 and max (the
engine's opt-in 10 ms heartbeat, INTROSPECTD_LOOP_LAG_FILE), the run process's peak RSS, the
database and JSONL sizes, and how long `introspectd status` takes while the run is going.
Goals (issue 12): last tenth ≥ 80% of the first tenth's rate; loop lag p99 < 50 ms;
peak RSS < 1 GB; status < 1 s.

    python bench/scale.py [--only plain|judged] [--trials 1000] [--judged-trials 200]
    python bench/scale.py --db-ab    # the loop's database writes: on the loop, in a thread, or
                                     # through aiosqlite (loop lag next to a decoding thread)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from judge_server import JudgeServer  # noqa: E402

CONCEPTS = ["ocean", "fear", "music", "bread", "silver"]
LAYERS, STRENGTHS, MAX_NEW = [1, 3], [1.0, 2.0, 3.0, 4.0, 5.0], 4
CELLS = len(CONCEPTS) * len(LAYERS) * len(STRENGTHS) * 2


def write_plan(tmp: Path, trials: int, judge_url: str | None, concurrency: int) -> Path:
    judge = (
        f'[judge]\nbase_url = "{judge_url}"\napi_key_env = "BENCH_JUDGE_KEY"\n'
        f"concurrency = {concurrency}\n"
        if judge_url
        else '[judge]\napi_key_env = "BENCH_NO_SUCH_KEY"\n'
    )
    plan = tmp / "plan.toml"
    plan.write_text(
        f'[run]\noutput_dir = "{tmp / "out"}"\nexperiment_id = "scale"\n'
        f'[model]\nname = "builtin:tiny"\n'
        f"[sweep]\nconcepts = {json.dumps(CONCEPTS)}\nlayers = {LAYERS}\n"
        f"strengths = {STRENGTHS}\ntrials = {trials}\nmax_new_tokens = {MAX_NEW}\n{judge}"
    )
    return plan


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "introspectd.cli", *args]


def tenths(stamps: list[str]) -> list[float]:
    """Trials/s in each tenth of the rows, ordered by their timestamps."""
    times = sorted(datetime.fromisoformat(s).timestamp() for s in stamps)
    n = len(times)
    edges = [times[0]] + [times[min(n - 1, (k * n) // 10 - 1)] for k in range(1, 11)]
    counts = [(k * n) // 10 - ((k - 1) * n) // 10 for k in range(1, 11)]
    return [c / max(edges[k + 1] - edges[k], 1e-6) for k, c in enumerate(counts)]


def timestamps(db: Path, column: str) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute(f"SELECT {column} FROM trials WHERE {column} NOT NULL")]
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_tenth(samples: list[tuple[int, float]], total: int) -> list[float]:
    """The run process's CPU milliseconds per trial in each tenth of the trials: unlike
    trials/s, this hardly moves when other processes share the cores."""
    out = []
    for k in range(10):
        lo, hi = k * total // 10, (k + 1) * total // 10
        inside = [(n, c) for n, c in samples if lo <= n <= hi and c > 0]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            out.append(float("nan"))
            continue
        (n0, c0), (n1, c1) = inside[0], inside[-1]
        out.append(round(1000 * (c1 - c0) / (n1 - n0), 3))
    return out


def progress(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(
                conn.execute("SELECT COUNT(*) FROM trials WHERE status != 'pending'").fetchone()[0]
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def run_variant(
    name: str, trials: int, judge_url: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"scale-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        plan = write_plan(tmp, trials, judge_url, args.judge_concurrency)
        db = tmp / "out" / "scale" / "tiny" / "state.sqlite"
        lag_file = tmp / "lag.json"
        env = {**os.environ, "INTROSPECTD_LOOP_LAG_FILE": str(lag_file), "BENCH_JUDGE_KEY": "bench"}
        env.pop("BENCH_NO_SUCH_KEY", None)
        started = time.perf_counter()
        with open(tmp / "run.log", "w") as log:
            proc = subprocess.Popen(
                cli("run", "--plan", str(plan), "--local", "--no-progress"),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
            )
        reaped: dict[str, Any] = {}

        def reap() -> None:  # wait4 gives this child's own peak RSS
            _, status, usage = os.wait4(proc.pid, 0)
            reaped.update(
                code=os.waitstatus_to_exitcode(status),
                maxrss_kb=usage.ru_maxrss,
                seconds=time.perf_counter() - started,
            )

        reaper = threading.Thread(target=reap)
        reaper.start()
        status_s: list[tuple[int, float]] = []
        cpu: list[tuple[int, float]] = []  # (trials past pending, CPU seconds of the run process)
        next_status = time.monotonic() + args.status_every
        while reaper.is_alive():
            reaper.join(0.5)
            done = progress(db) if db.exists() else 0
            if reaper.is_alive() and done > 0:
                cpu.append((done, cpu_seconds(proc.pid)))
            if reaper.is_alive() and 0 < done < CELLS * trials and time.monotonic() > next_status:
                next_status = time.monotonic() + args.status_every
                t0 = time.perf_counter()
                out = subprocess.run(
                    cli("status", "--plan", str(plan), "--json"),
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                )
                if out.returncode == 0:
                    status_s.append((done, time.perf_counter() - t0))
        proc.returncode = reaped["code"]
        if reaped["code"] != 0:
            raise SystemExit(
                f"{name}: run exited {reaped['code']}:\n" + (tmp / "run.log").read_text()[-3000:]
            )
        out_dir = db.parent
        result = {
            "variant": name,
            "trials": CELLS * trials,
            "wall_s": round(reaped["seconds"], 1),
            "generated_per_tenth": [round(r) for r in tenths(timestamps(db, "generated_at"))],
            "finished_per_tenth": [round(r) for r in tenths(timestamps(db, "judged_at"))],
            "loop_lag": json.loads(lag_file.read_text()),
            "peak_rss_mb": round(reaped["maxrss_kb"] / 1024),
            "db_mb": round(sum(p.stat().st_size for p in out_dir.glob("state.sqlite*")) / 2**20, 1),
            "jsonl_mb": round(sum(p.stat().st_size for p in out_dir.glob("*.jsonl")) / 2**20, 1),
            "jsonl_lines": sum(len(p.read_bytes().splitlines()) for p in out_dir.glob("*.jsonl")),
            "status_s": [(n, round(s, 2)) for n, s in status_s],
            "cpu_ms_per_trial_per_tenth": cpu_per_tenth(cpu, CELLS * trials),
        }
        return result


def report(r: dict[str, Any]) -> None:
    gen, fin = r["generated_per_tenth"], r["finished_per_tenth"]
    lag = r["loop_lag"]
    worst_status = max((s for _, s in r["status_s"]), default=float("nan"))
    print(f"\n== {r['variant']}: {r['trials']:,} trials in {r['wall_s']} s (whole process)")
    print(
        "generated trials/s per tenth:",
        " ".join(str(x) for x in gen),
        f"  last/first = {gen[-1] / gen[0]:.2f} (goal ≥ 0.80)",
    )
    print(
        "finished  trials/s per tenth:",
        " ".join(str(x) for x in fin),
        f"  last/first = {fin[-1] / fin[0]:.2f}",
    )
    print(
        f"loop lag: p50 {lag.get('p50_ms')} ms, p99 {lag.get('p99_ms')} ms (goal < 50), "
        f"max {lag.get('max_ms')} ms over {lag.get('samples')} beats; worst {lag.get('worst')}"
    )
    cpu = r["cpu_ms_per_trial_per_tenth"]
    print(
        "run process CPU ms/trial per tenth:",
        " ".join(str(x) for x in cpu),
        f"  last/first = {cpu[-1] / cpu[0]:.2f} (flat cost: ≤ 1.25)",
    )
    print(
        f"peak RSS {r['peak_rss_mb']} MB (goal < 1024); DB {r['db_mb']} MB; "
        f"JSONL {r['jsonl_mb']} MB in {r['jsonl_lines']:,} lines"
    )
    print(
        f"status during the run (trials done, seconds): {r['status_s']}; worst "
        f"{worst_status:.2f} s (goal < 1)"
    )
    print(f"load average at the end: {os.getloadavg()}")


async def _db_ab(mode: str, db: Path, rounds: int, batch: int) -> str:
    """Judging-off grades (`record_judgements`) of `batch` rows every 0.25 s, next to a thread
    that decodes (small torch ops), written three ways: on the loop, in a worker thread, or
    statement by statement through aiosqlite. Returns the loop lag and the write's duration."""
    import aiosqlite
    import anyio
    import torch

    from introspectd.protocol.results import Generation, Judgement, now_iso
    from introspectd.run.db import Store

    store = Store(db)
    ids = [
        r[0]
        for r in store.conn.execute(
            "SELECT id FROM trials WHERE status = 'pending' ORDER BY ordinal LIMIT ?",
            (rounds * batch,),
        )
    ]
    store.record_generations([Generation(i, "x", 4, now_iso()) for i in ids])
    adb = await aiosqlite.connect(db, isolation_level=None) if mode == "aiosqlite" else None
    lags: list[float] = []
    calls: list[float] = []
    stop = threading.Event()

    def decode() -> None:
        x = torch.randn(64, 64)
        while not stop.is_set():
            x = torch.tanh(x @ x) * 0.5

    async def heartbeat() -> None:
        while True:
            t = time.perf_counter()
            await anyio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    decoder = threading.Thread(target=decode)
    decoder.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        for k in range(rounds):
            await anyio.sleep(0.25)
            grades = [
                Judgement(i, None, "off", "", "", "", 0, 0, 0)
                for i in ids[k * batch : (k + 1) * batch]
            ]
            t = time.perf_counter()
            if adb is not None:  # store.record_judgements' statements, each one awaited
                await adb.execute("BEGIN IMMEDIATE")
                for j in grades:
                    cur = await adb.execute(
                        "SELECT 1 FROM trials WHERE id = ? AND status = 'judged'", (j.trial_id,)
                    )
                    await cur.fetchone()
                    await adb.execute(
                        "UPDATE trials SET status = 'judge_failed', judge_error = ?,"
                        " judged_at = ? WHERE id = ? AND status != 'pending'",
                        (j.error, now_iso(), j.trial_id),
                    )
                await adb.execute("COMMIT")
            elif mode == "to_thread":
                await anyio.to_thread.run_sync(store.record_judgements, grades)
            else:
                store.record_judgements(grades)
            calls.append(time.perf_counter() - t)
        tg.cancel_scope.cancel()
    stop.set()
    decoder.join()
    if adb is not None:
        await adb.close()
    store.close()
    lags.sort()
    calls.sort()
    return (
        f"{mode:<10} loop lag p50 {1000 * lags[len(lags) // 2]:.1f}, p99 "
        f"{1000 * lags[int(0.99 * len(lags))]:.1f}, max {1000 * lags[-1]:.1f} ms; write of "
        f"{batch} rows p50 {1000 * calls[len(calls) // 2]:.0f}, max {1000 * calls[-1]:.0f} ms"
    )


def db_ab(rounds: int = 40, batch: int = 1000) -> None:
    """Where the loop's database writes should run: the numbers behind not using aiosqlite."""
    import anyio

    from introspectd.protocol.plan import load_plan
    from introspectd.run.session import open_run

    with tempfile.TemporaryDirectory(prefix="scale-db-") as tmp_name:
        tmp = Path(tmp_name)
        plan = write_plan(tmp, 1000, None, 1)
        for mode in ("sync", "to_thread", "aiosqlite"):
            ctx = open_run(load_plan(str(plan)))  # a fresh 100,000-trial database each time
            ctx.close()
            print(anyio.run(_db_ab, mode, ctx.db_path, rounds, batch))
            shutil.rmtree(tmp / "out")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["plain", "judged"])
    parser.add_argument("--trials", type=int, default=1000, help="per cell, plain variant")
    parser.add_argument("--judged-trials", type=int, default=200, help="per cell, judged")
    parser.add_argument("--judge-concurrency", type=int, default=64)
    parser.add_argument("--status-every", type=float, default=5.0)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--db-ab", action="store_true", help="only compare where the loop's database writes run"
    )
    args = parser.parse_args()
    if args.db_ab:
        db_ab()
        return
    print(f"load average at the start: {os.getloadavg()}")
    results = []
    if args.only in (None, "plain"):
        results.append(run_variant("plain", args.trials, None, args))
        report(results[-1])
    if args.only in (None, "judged"):
        with JudgeServer() as server:
            results.append(run_variant("judged", args.judged_trials, server.base_url, args))
        report(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
