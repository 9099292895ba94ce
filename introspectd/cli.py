"""`introspectd` command line. Exit codes: 0 done, 2 bad input, 75 interrupted (resume), 1 other.

Commands that need no model (status, export, report, batch) never import torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from introspectd import stopping
from introspectd.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, BadInput, IntrospectdError
from introspectd.logs import configure_logging

if TYPE_CHECKING:
    from introspectd.run.session import Narrowing


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line and exit code 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="introspectd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run (or resume) a sweep")
    run.add_argument("--plan", required=True)
    run.add_argument(
        "--concept", action="append", default=[], help="only this concept (repeatable)"
    )
    run.add_argument("--trials", type=int, help="only trials 0..N-1 of each cell")
    run.add_argument("--local", action="store_true", help="no GCS uploads or restores")
    run.add_argument("--shard", help="I/N: run shard I of N (default: Cloud Batch task variables)")
    run.add_argument("--no-progress", action="store_true", help="log lines instead of a live view")

    confirm = sub.add_parser("confirm", help="re-run a run's K best cells on fresh trials")
    confirm.add_argument("--plan", required=True)
    confirm.add_argument("--top", type=int, required=True, help="how many best cells (K)")
    confirm.add_argument("--trials", type=int, required=True, help="fresh trials per cell")
    confirm.add_argument("--local", action="store_true", help="no GCS uploads or restores")
    confirm.add_argument("--shard", help="I/N: confirm shard I of N's best cells")
    confirm.add_argument("--no-progress", action="store_true")

    status = sub.add_parser("status", help="counts of a run by status and concept")
    status.add_argument("--plan", required=True)
    status.add_argument("--json", action="store_true")
    status.add_argument("--shard")
    status.add_argument("--from", dest="from_uri", help="read the run from gs://bucket/prefix")

    export = sub.add_parser("export", help="write seed-format JSONL files of a run")
    export.add_argument("--plan", required=True)
    export.add_argument("--out", help="directory (default: the run's own directory)")
    export.add_argument("--from", dest="from_uri", help="gather shards from gs://bucket/prefix")

    rejudge = sub.add_parser("rejudge", help="judge rows whose judge is null")
    rejudge.add_argument("--plan")
    rejudge.add_argument("--input")
    rejudge.add_argument("--output")
    rejudge.add_argument("--all", action="store_true", help="re-grade every row")

    calibrate = sub.add_parser("calibrate", help="measure the plan's judge against human labels")
    calibrate.add_argument("--plan", required=True)
    calibrate.add_argument("--labels", required=True, help="labelled JSONL (../shared/data form)")
    calibrate.add_argument("--split", help="only records of this split (train, dev, test)")
    calibrate.add_argument("--out", help="calibration JSON (default: in the run's directory)")

    report = sub.add_parser("report", help="metrics, tables and figures from JSONL results")
    report.add_argument("inputs", nargs="+")
    report.add_argument("--out", required=True)
    report.add_argument("--calibration", help="calibration JSON of the judge: corrected rates")
    report.add_argument("--judge", help="count this judge fingerprint's grades (default: latest)")
    report.add_argument("--explorer", action="store_true", help="also write explorer.html")

    explore = sub.add_parser("explore", help="browse a run's transcripts in a web browser")
    explore.add_argument("inputs", nargs="*", help="seed-format JSONL files or folders")
    explore.add_argument("--plan", help="the run's plan (its database is opened read-only)")
    explore.add_argument("--host", default="127.0.0.1")
    explore.add_argument("--port", type=int, default=8765, help="0: any free port")

    batch = sub.add_parser("batch", help="Google Cloud Batch helpers")
    batch_sub = batch.add_subparsers(dest="batch_command", required=True, parser_class=_Parser)
    render = batch_sub.add_parser("render", help="print a Cloud Batch job as JSON")
    render.add_argument("--plan", required=True, help="gs:// URI of the plan the tasks read")
    render.add_argument("--tasks", type=int, required=True)
    render.add_argument("--image", required=True)
    render.add_argument("--secret", default="", help="Secret Manager path of the judge API key")
    render.add_argument("--machine-type", default="g2-standard-8")
    render.add_argument("--gpu-type", default="nvidia-l4")
    render.add_argument("--gpu-count", type=int, default=1)
    render.add_argument("--standard", action="store_true", help="standard VMs instead of spot")
    render.add_argument("--region", default="us-central1")
    render.add_argument("--zones", default="", help="comma-separated zones of the region")
    render.add_argument("--max-run-duration", type=int, default=24 * 3600, help="seconds")
    render.add_argument("--max-retries", type=int, default=3)
    render.add_argument("--parallelism", type=int)
    render.add_argument("--cpu-milli", type=int)
    render.add_argument("--memory-mib", type=int)
    render.add_argument("--boot-disk-gib", type=int, default=100)
    render.add_argument("--stamp", default="")
    render.add_argument("--env", action="append", default=[], metavar="K=V")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # First of all, so a SIGTERM/SIGINT at any moment is one line and exit 75 (stopping.py).
        with stopping.handled():
            configure_logging()
            args = build_parser().parse_args(argv)
            return _dispatch(args)
    except IntrospectdError as exc:
        print(f"introspectd: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        reason = _transient_reason(exc)
        if reason is not None:
            print(
                f"introspectd: a transient failure ({reason}); nothing was lost — run the same "
                "command again later",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        from introspectd.fs_errors import environment_failure

        failure = environment_failure(exc)
        if failure is None:
            raise  # a bug: its traceback is the report
        line, code = failure
        print(f"introspectd: {line}", file=sys.stderr)
        return code


def _transient_reason(exc: Exception) -> str | None:
    """Why `exc` is an outage (GCS, reading a gs:// plan...) that a retry may not meet (exit 75,
    so Cloud Batch retries), or None."""
    if "google.api_core" not in sys.modules:  # no GCS client was ever used
        return None
    from introspectd.cloud.gcs import transient_reason

    return transient_reason(exc)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return cmd_run(args)
    if args.command == "status":
        return cmd_status(args)
    if args.command == "confirm":
        from introspectd.app.confirm import cmd_confirm

        return cmd_confirm(args, _narrowing(argparse.Namespace(shard=args.shard)))
    if args.command == "export":
        return cmd_export(args)
    if args.command == "rejudge":
        return cmd_rejudge(args)
    if args.command == "calibrate":
        return cmd_calibrate(args)
    if args.command == "report":
        from introspectd.report.writer import write_report

        calibration = Path(args.calibration) if args.calibration else None
        paths = write_report(
            [Path(p) for p in args.inputs], Path(args.out), calibration, args.judge
        )
        print(f"report written to {paths.report_md}")
        if args.explorer:
            from introspectd.explore.static import write_static_explorer

            print(write_static_explorer([Path(p) for p in args.inputs], Path(args.out)).line())
        return EXIT_OK
    if args.command == "explore":
        return cmd_explore(args)
    return cmd_batch_render(args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from introspectd.app.calibrate import calibrate, render_calibration
    from introspectd.app.plans import load_plan

    if args.out:  # before any grading, not after it
        from introspectd.fs_errors import require_output_file

        require_output_file(Path(args.out), "--out")
    done = calibrate(load_plan(args.plan), Path(args.labels), args.split,
                     Path(args.out) if args.out else None)
    render_calibration(done.calibration, Console(width=160))
    print(f"calibration written to {done.out} and stored in {done.db}")
    return EXIT_OK


def cmd_rejudge(args: argparse.Namespace) -> int:
    from introspectd.app.plans import load_plan
    from introspectd.judge.rejudge import rejudge

    if args.output:  # before any grading, not after it
        from introspectd.fs_errors import require_output_file

        require_output_file(Path(args.output), "--output")
    if bool(args.input) != bool(args.output):
        raise BadInput("rejudge: --input and --output go together")
    if not (args.plan or args.input):
        raise BadInput("rejudge: give --plan P, or --input IN.jsonl --output OUT.jsonl")
    plan = load_plan(args.plan) if args.plan else None
    print(
        rejudge(
            plan,
            include_judged=args.all,
            input=Path(args.input) if args.input else None,
            output=Path(args.output) if args.output else None,
        )
    )
    return EXIT_OK


def cmd_explore(args: argparse.Namespace) -> int:
    from introspectd.explore.command import explore

    plan = None
    if args.plan:
        from introspectd.app.plans import load_plan

        plan = load_plan(args.plan)
    explore(plan, [Path(p) for p in args.inputs], args.host, args.port)
    return EXIT_OK


def cmd_batch_render(args: argparse.Namespace) -> int:
    from introspectd.app.plans import load_plan
    from introspectd.cloud.batchjob import JobOptions, job_json, render_job, render_warnings

    env = dict(item.split("=", 1) for item in args.env if "=" in item)
    if len(env) != len(args.env):
        raise BadInput("--env: expected K=V")
    plan = load_plan(args.plan)
    options = JobOptions(
        machine_type=args.machine_type,
        gpu_type=args.gpu_type,
        gpu_count=args.gpu_count,
        spot=not args.standard,
        region=args.region,
        zones=tuple(z for z in args.zones.split(",") if z),
        secret=args.secret,
        max_run_duration_s=args.max_run_duration,
        max_retry_count=args.max_retries,
        cpu_milli=args.cpu_milli,
        memory_mib=args.memory_mib,
        boot_disk_gib=args.boot_disk_gib,
        parallelism=args.parallelism,
        stamp=args.stamp,
        env=env,
    )
    job = render_job(args.plan, plan, args.tasks, args.image, options)
    for warning in render_warnings(plan, options):
        print(f"introspectd: warning: {warning}", file=sys.stderr)
    sys.stdout.write(job_json(job))
    return EXIT_OK


def _narrowing(args: argparse.Namespace) -> Narrowing:
    from introspectd.run.session import Narrowing

    shard = None
    if args.shard or "BATCH_TASK_INDEX" in os.environ:
        from introspectd.run.shard import parse_shard, shard_from_env

        shard = parse_shard(args.shard) if args.shard else shard_from_env(os.environ)
    concepts = tuple(getattr(args, "concept", []) or ())
    return Narrowing(concepts=concepts, num_trials=getattr(args, "trials", None), shard=shard)


def cmd_run(args: argparse.Namespace) -> int:
    from introspectd.app.plans import load_plan
    from introspectd.app.start import run_sweep

    live = not args.no_progress and sys.stderr.isatty()
    done = run_sweep(load_plan(args.plan), _narrowing(args), local=args.local, live=live)
    print(done.line())
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from introspectd.app.plans import load_plan
    from introspectd.app.status import render_status, status_summary
    from introspectd.run.session import open_run

    if args.from_uri:
        from introspectd.cloud.gather import status_from_gcs, status_line

        gathered = status_from_gcs(load_plan(args.plan), args.from_uri)
        print(json.dumps(gathered, indent=2) if args.json else status_line(gathered))
        return _gathered_exit(gathered, show_gaps=not args.json)
    ctx = open_run(
        load_plan(args.plan), _narrowing(args), create=False, read_only=True, with_trials=False
    )
    try:
        summary = status_summary(ctx)
    finally:
        ctx.store.close()
    print(json.dumps(summary, indent=2) if args.json else render_status(summary))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from introspectd.app.plans import load_plan

    plan = load_plan(args.plan)
    if args.from_uri:
        from introspectd.cloud.gather import export_from_gcs

        exported = export_from_gcs(plan, args.from_uri, Path(args.out) if args.out else None)
        print(exported.line())
        return _gathered_exit(exported.summary, show_gaps=True)
    from introspectd.output.exporter import export_run

    out = export_run(plan, Path(args.out) if args.out else None)
    print(f"exported to {out}")
    return EXIT_OK


def _gathered_exit(summary: dict[str, object], show_gaps: bool) -> int:
    """Exit 1 unless the run gathered from GCS is complete; its gaps go to stderr."""
    from introspectd.cloud.gather import gap_lines

    for line in gap_lines(summary) if show_gaps else []:
        print(line, file=sys.stderr)
    return EXIT_OK if summary["is_complete"] else EXIT_FAILURE


def entrypoint() -> None:
    """The console command: `main`, then exit without unloading torch module by module.

    Every file is written, flushed and closed by the time `main` returns; the interpreter's
    own teardown of torch and transformers adds about 0.7 s to every run on a 2-vCPU VM.
    Commands that never imported torch exit normally.
    """
    code = main()
    if "torch" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entrypoint()
