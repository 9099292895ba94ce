"""`run`: from a plan to a finished or stopped sweep.

The order is the promise: settings that name directories are checked before any directory is
created; the run's directory is locked before anything in it is read; the last GCS snapshot is
restored into it before the database opens; only then does the engine start.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from introspectd import stopping
from introspectd.app.summary import run_summary
from introspectd.cloud.durability import (
    UploadTrigger,
    require_fixed_experiment,
    restore_at_start,
    snapshot_store,
)
from introspectd.errors import BadInput
from introspectd.failures import require_writable_dir
from introspectd.protocol.plan import Plan, check_env_overrides, env_experiment_id
from introspectd.protocol.plan_judge import BASE_URL_ENV
from introspectd.protocol.trials import POOLED_CONCEPT
from introspectd.run.db import JudgingCounts
from introspectd.run.session import Narrowing, RunContext, claim_run

if TYPE_CHECKING:
    from introspectd.cloud.snapshot import SnapshotStore  # loads the GCS client

log = logging.getLogger("introspectd")


@dataclass(frozen=True)
class SweepDone:
    counts: JudgingCounts  # of this process's selected trials, from the store
    out_dir: Path
    plan: Plan
    files: tuple[Path, ...]  # the run's JSONL files
    database: Path

    def summary(self) -> list[str]:
        return run_summary(self.counts, self.plan, self.out_dir, self.files, self.database)


def run_sweep(plan: Plan, narrowing: Narrowing, local: bool, live: bool) -> SweepDone:
    """Run (or resume) the sweep; raises Interrupted after a requested stop, Transient when the
    final snapshot could not be uploaded. `local`: no GCS uploads or restores; `live`: a live
    view instead of log lines."""
    import anyio

    from introspectd.app.engine import Engine
    from introspectd.app.progress import progress_for

    ctx, snapshots = open_for_run(plan, narrowing, local)
    names = [*ctx.plan.sweep.concepts]
    if ctx.plan.sweep.controls == "pooled":  # the control pool's own file (protocol/trials.py)
        names.append(POOLED_CONCEPT)
    files = [ctx.out_dir / f"{c}.jsonl" for c in names]
    uploads = None
    if snapshots is not None:
        from introspectd.cloud.uploader import Uploader

        uploads = UploadTrigger(
            Uploader(snapshots, ctx.db_path), ctx.plan, files, ctx.run.spec_hash
        )
    with progress_for(ctx, live=live) as progress:
        if uploads is not None:
            progress.stats.uploads = uploads.uploader
        engine = Engine(ctx, stats=progress.stats, on_tick=progress.update, uploads=uploads)
        # From here a signal starts the engine's drain instead of unwinding the stack.
        with stopping.deferred():
            try:
                anyio.run(engine.run)
                counts = ctx.store.outcomes.judging_counts(ctx.selected_ids)
            finally:
                if uploads is not None:
                    uploads.uploader.close()
                ctx.close()
    return SweepDone(
        counts, ctx.out_dir, ctx.plan, tuple(f for f in files if f.is_file()), ctx.db_path
    )


def require_judge_for_adaptive(plan: Plan) -> None:
    """Adaptive rounds and confirmation are decided from judged results: no judge, no run."""
    judge = plan.judge
    if plan.adds_trials_as_it_goes and not judge.is_enabled(judge.api_key()):
        what = "[adaptive] enabled" if plan.adaptive.enabled else "confirmation"
        raise BadInput(
            f"{plan.path}: {what} needs online judging, which is off "
            f"(set [judge] base_url, or the key in ${judge.api_key_env})"
        )


def open_for_run(
    plan: Plan, narrowing: Narrowing, local: bool
) -> tuple[RunContext, SnapshotStore | None]:
    """The run, opened for writing after its GCS restore, and where its snapshots go (None
    without [upload] gcs, or with `local`)."""
    check_env_overrides()  # they name directories: checked before any is created
    require_judge_for_adaptive(plan)
    if plan.judge.is_enabled(plan.judge.api_key()):
        plan.judge.endpoint()  # a malformed $OPENAI_BASE_URL is one line, before any work
    require_writable_dir(Path(plan.run.output_dir), f"{plan.path}: [run] output_dir")
    if local:
        plan = dataclasses.replace(plan, upload=dataclasses.replace(plan.upload, gcs=""))
    require_fixed_experiment(plan, env_experiment_id())
    claim = claim_run(plan, narrowing)
    try:
        snapshots = snapshot_store(plan, claim.out_dir)
        if snapshots is not None:
            # Restore before the database opens: a damaged or missing local file is replaced
            # by the last good snapshot, or the furthest state wins (durability.py).
            outcome = restore_at_start(snapshots, claim.out_dir)
            if outcome:
                log.info("%s", outcome)
    except BaseException:
        claim.release()
        raise
    ctx = claim.open()
    for note in ctx.notes:
        log.info("%s", note)
    log.info(
        "run %s: %d of %d selected trials to generate; output in %s",
        ctx.run.stamp,
        len(ctx.pending),
        len(ctx.selected_ids),
        ctx.out_dir,
    )
    log_judging(ctx.plan)
    return ctx, snapshots


def log_judging(plan: Plan) -> None:
    """Say at start where answers are sent to be graded, or that judging is off and why: a run
    that grades nothing must not look like one that grades everything."""
    cfg = plan.judge
    api_key = cfg.api_key()
    if not cfg.is_enabled(api_key):
        from introspectd.judge.client import judging_off

        also = (
            f" (${BASE_URL_ENV} alone does not turn it on)" if os.environ.get(BASE_URL_ENV) else ""
        )
        log.warning(
            "judging is OFF: %s%s; answers are generated but not graded — set $%s (or [judge] "
            "base_url) and run again, or `introspectd rejudge --plan %s`",
            judging_off(cfg).split(": ", 1)[1],
            also,
            cfg.api_key_env,
            plan.path,
        )
        return
    key = f"key from ${cfg.api_key_env}" if api_key else f"no key (${cfg.api_key_env} unset)"
    log.info(
        "judge: %s at %s (%s; %s API, %s, up to %d requests in flight)",
        cfg.model,
        cfg.endpoint_host(),
        cfg.endpoint_source(),
        cfg.api,
        key,
        cfg.concurrency,
    )
