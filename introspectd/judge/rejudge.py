"""`introspectd rejudge`: grade again the rows whose judge is null (or all, with `--all`).

With `--plan`, rows of the run's database are judged and the JSONL files re-exported; a row
keeps its status (and its old grade, in the judgement history) until its new grade arrives,
so an interrupted rejudge loses nothing, and a failed re-grade leaves the old grade in place.
The run directory's lock is held throughout, so a `run` judging the same rows cannot overlap.
With `--input/--output`, seed-format files are judged in place of the database.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from introspectd import stopping
from introspectd.errors import EXIT_OK, BadInput, Interrupted
from introspectd.judge.pool import JudgePool, to_judge
from introspectd.output.exporter import Exporter
from introspectd.protocol.plan import JudgeConfig, Plan, load_plan
from introspectd.protocol.trials import Status
from introspectd.run.session import _lock_run_dir, open_run
from introspectd.run.stats import RunStats


def cmd_rejudge(args: argparse.Namespace) -> int:
    if args.input or args.output:
        if not (args.input and args.output):
            raise BadInput("rejudge: --input and --output go together")
        plan = load_plan(args.plan) if args.plan else None
        return _rejudge_file(Path(args.input), Path(args.output), plan, args.all)
    if not args.plan:
        raise BadInput("rejudge: give --plan P, or --input IN.jsonl --output OUT.jsonl")
    return _rejudge_run(load_plan(args.plan), args.all)


def _require_judge(cfg: JudgeConfig) -> str | None:
    api_key = cfg.api_key()
    if not cfg.is_enabled(api_key):
        raise BadInput(f"rejudge: no judge configured: set ${cfg.api_key_env} or [judge] base_url")
    return api_key


def _rejudge_run(plan: Plan, include_judged: bool) -> int:
    _require_judge(plan.judge)
    ctx = open_run(plan, create=False)
    try:
        # Taken before any row is read: a `run` (or another rejudge) on this directory would
        # judge the same rows at the same time, each paying for every request.
        ctx.lock_fd = _lock_run_dir(ctx.out_dir)
        statuses = [Status.JUDGE_FAILED, Status.GENERATED]
        if include_judged:
            statuses.append(Status.JUDGED)
        rows = [to_judge(r) for status in statuses for r in ctx.store.trials(status)]
        stats = RunStats()
        exporter = Exporter(ctx)
        pool = JudgePool(ctx, stats, exporter, rows=rows)
        pool.close_input()

        async def judge_all() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_flush_periodically, pool, exporter, tg.cancel_scope)
                await pool.run()
                tg.cancel_scope.cancel()
            await pool.flush()
            exporter.export_all()

        with stopping.deferred():  # SIGTERM/SIGINT: keep every grade received, then exit 75
            anyio.run(judge_all)
    finally:
        ctx.close()
    if stopping.received() is not None:
        raise Interrupted(f"stopped by {stopping.received()}: {stats.num_judged} rows graded and "
                          "saved; run the same command again to grade the rest")
    failed = stats.num_judge_failed
    print(f"rejudged {len(rows)} rows: {stats.num_judged} judged, {failed} failed"
          + (f" ({', '.join(f'{n}× {r}' for r, n in stats.failed_by_reason.items())})"
             if failed else ""))
    if pool.kept_grades:
        print(f"{pool.kept_grades} re-grades failed; their previous grades are kept")
    return EXIT_OK


async def _flush_periodically(pool: JudgePool, exporter: Exporter, scope: anyio.CancelScope
                              ) -> None:
    while stopping.received() is None:
        await anyio.sleep(0.5)
        await pool.flush()
        exporter.maybe_flush()
    scope.cancel()   # grades in flight are lost; their rows keep their status for the next run


def _rejudge_file(src: Path, dest: Path, plan: Plan | None, include_judged: bool) -> int:
    from introspectd.judge.client import Judge
    from introspectd.judge.rejudge_file import rejudge_file

    cfg = plan.judge if plan is not None else JudgeConfig()
    api_key = _require_judge(cfg)
    base_dir = plan.path.parent if plan is not None and isinstance(plan.path, Path) else None

    async def run() -> object:
        judge = Judge(cfg, api_key, base_dir=base_dir)
        try:
            return await rejudge_file(src, dest, judge, all_records=include_judged)
        finally:
            await judge.aclose()

    counts = anyio.run(run)
    print(f"{dest}: {counts}")
    return EXIT_OK
