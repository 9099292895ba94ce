"""`introspectd rejudge`: grade again the rows whose judge is null (or all, with `--all`).

With a plan alone, rows of the run's database are judged and the JSONL files re-exported; a row
keeps its status (and its old grade, in the judgement history) until its new grade arrives,
so an interrupted rejudge loses nothing, and a failed re-grade leaves the old grade in place.
The run directory's lock is held throughout, so a `run` judging the same rows cannot overlap.
With input and output files, seed-format files are judged in place of the database.

`rejudge` returns what was done (the CLI prints it) and raises `BadInput` or `Interrupted`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anyio

from introspectd import stopping
from introspectd.errors import BadInput, Interrupted
from introspectd.judge.client import Judge, judging_off
from introspectd.judge.pool import JudgePool, run_spend_usd, to_judge
from introspectd.judge.progress import JudgingDisplay, Progress, nothing_graded
from introspectd.judge.rejudge_file import RejudgeCounts, file_concepts, rejudge_file
from introspectd.output.exporter import Exporter
from introspectd.protocol.plan import JudgeConfig, Plan
from introspectd.protocol.trials import Status
from introspectd.run.rundir import lock_run_dir
from introspectd.run.session import open_run
from introspectd.run.stats import RunStats


@dataclass(frozen=True)
class RunRejudged:
    """What `rejudge` did to a run's database."""

    rows: int  # rows sent to the judge
    judged: int
    failed: int
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    kept_grades: int = 0  # failed re-grades whose row kept its previous grade

    def __str__(self) -> str:
        reasons = ", ".join(f"{n}× {why}" for why, n in self.failed_by_reason.items())
        text = f"rejudged {self.rows} rows: {self.judged} judged, {self.failed} failed" + (
            f" ({reasons})" if self.failed else ""
        )
        if self.kept_grades:
            text += f"\n{self.kept_grades} re-grades failed; their previous grades are kept"
        return text


@dataclass(frozen=True)
class FileRejudged:
    """What `rejudge` did to a seed-format file."""

    output: Path
    counts: RejudgeCounts

    def __str__(self) -> str:
        return f"{self.output}: {self.counts}"


def rejudge(
    plan: Plan | None,
    include_judged: bool = False,
    input: Path | None = None,
    output: Path | None = None,
    display: JudgingDisplay | None = None,
) -> RunRejudged | FileRejudged:
    """Grade the unjudged (with `include_judged`: all) rows of `plan`'s run, or, given `input`
    and `output`, the records of a seed-format file (judged with `plan`'s [judge], if any).
    Raises `nothing_graded`'s error when rows were sent and not one came back graded."""
    if input is not None and output is not None:
        file_done = _rejudge_file(input, output, plan, include_judged, display)
        counts = file_done.counts
        sent, judged, what = counts.selected, counts.judged, "records"
        failed = counts.failed_by_reason
        done: RunRejudged | FileRejudged = file_done
    elif plan is None or input is not None or output is not None:
        raise BadInput("rejudge: give a plan, or an input and an output file")
    else:
        done = _rejudge_run(plan, include_judged, display)
        sent, judged, failed, what = done.rows, done.judged, done.failed_by_reason, "rows"
    if sent and not judged:
        raise nothing_graded("rejudge", sent, what, failed)
    return done


def _require_judge(cfg: JudgeConfig) -> str | None:
    api_key = cfg.api_key()
    if not cfg.is_enabled(api_key):
        raise BadInput(f"rejudge: {judging_off(cfg)}")
    return api_key


def _rejudge_run(plan: Plan, include_judged: bool, display: JudgingDisplay | None) -> RunRejudged:
    _require_judge(plan.judge)
    ctx = open_run(plan, create=False, with_trials=False)  # rows are read by status below
    try:
        # Taken before any row is read: a `run` (or another rejudge) on this directory would
        # judge the same rows at the same time, each paying for every request.
        ctx.lock_fd = lock_run_dir(ctx.out_dir)
        statuses = [Status.JUDGE_FAILED, Status.GENERATED]
        if include_judged:
            statuses.append(Status.JUDGED)
        rows = [
            to_judge(r)
            for status in statuses
            for r in ctx.store.trials(status)
            if not r.is_read_out  # read-outs have no text to judge
        ]
        stats = RunStats()
        exporter = Exporter(ctx)
        pool = JudgePool(ctx, stats, exporter, rows=rows)
        pool.close_input()
        grader = pool.grader
        assert grader is not None  # _require_judge: judging is on
        progress = Progress("rejudge", "rows", len(rows), lambda: grader.stats, display)

        async def judge_all() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_flush_periodically, pool, exporter, tg.cancel_scope)
                tg.start_soon(progress.show)
                try:
                    await pool.run()
                finally:
                    progress.finish()  # the judge's figures are read in its event loop
                tg.cancel_scope.cancel()
            await pool.flush()
            exporter.export_all()

        with stopping.deferred():  # SIGTERM/SIGINT: keep every grade received, then exit 75
            anyio.run(judge_all)
    finally:
        ctx.close()
    if stopping.received() is not None:
        raise Interrupted(
            f"stopped by {stopping.received()}: {stats.num_judged} rows graded and "
            "saved; run the same command again to grade the rest"
        )
    return RunRejudged(
        rows=len(rows),
        judged=stats.num_judged,
        failed=stats.num_judge_failed,
        failed_by_reason=dict(stats.failed_by_reason),
        kept_grades=pool.kept_grades,
    )


async def _flush_periodically(
    pool: JudgePool, exporter: Exporter, scope: anyio.CancelScope
) -> None:
    while stopping.received() is None:
        await anyio.sleep(0.5)
        await pool.flush()
        exporter.maybe_flush()
    scope.cancel()  # grades in flight are lost; their rows keep their status for the next run


def _rejudge_file(
    src: Path, dest: Path, plan: Plan | None, include_judged: bool, display: JudgingDisplay | None
) -> FileRejudged:
    cfg = plan.judge if plan is not None else JudgeConfig()
    api_key = _require_judge(cfg)
    base_dir = plan.path.parent if plan is not None and isinstance(plan.path, Path) else None

    concepts = set(file_concepts(src)) | set(plan.sweep.concepts if plan is not None else ())
    spent = _run_spend(plan) if plan is not None else 0.0

    async def run() -> RejudgeCounts:
        async with Judge(
            cfg, api_key, base_dir=base_dir, candidates=tuple(sorted(concepts)), spent_usd=spent
        ) as judge:
            return await rejudge_file(src, dest, judge, all_records=include_judged, display=display)

    return FileRejudged(dest, anyio.run(run))


def _run_spend(plan: Plan) -> float:
    """What the plan's run has spent on its judge (0 without a run): a file judged with the
    plan's [judge] shares its budget_usd. (The file's own spend is not stored in the run.)"""
    try:
        ctx = open_run(plan, create=False, read_only=True, with_trials=False)
    except BadInput:
        return 0.0  # no run of this plan yet
    try:
        return run_spend_usd(ctx)
    finally:
        ctx.store.close()
