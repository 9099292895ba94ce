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
from typing import TYPE_CHECKING, NoReturn

from introspectd import __version__, stopping
from introspectd.cli_help import COMMANDS, DESCRIPTION, EPILOG, PROG, HelpFormatter, command_texts
from introspectd.errors import EXIT_FAILURE, EXIT_OK, BadInput
from introspectd.failures import exit_line
from introspectd.logs import configure_logging

if TYPE_CHECKING:
    from introspectd.run.session import Narrowing

COMMANDS_IN_ORDER = [name for name in COMMANDS if " " not in name]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line and exit code 2, like every other bad input.
    `main` prefixes "introspectd: "; the line names the subcommand and where its help is."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        raise BadInput(f"{where}{message} (see `{self.prog} --help`)")


def _command(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Subcommand `name` ("batch render": render under batch), with its help texts."""
    line, description, epilog = command_texts(name)
    return sub.add_parser(
        name.split()[-1],
        help=line,
        description=description,
        epilog=epilog,
        formatter_class=HelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(
        dest="command", title="commands", metavar="COMMAND", parser_class=_Parser
    )
    plan_help = "the plan file (TOML), or gs://bucket/plan.toml"

    run = _command(sub, "run")
    run.add_argument("--plan", required=True, help=plan_help)
    run.add_argument(
        "--concept", action="append", default=[], metavar="NAME", help="only this concept (repeat)"
    )
    run.add_argument("--trials", type=int, metavar="N", help="only trials 0..N-1 of each cell")
    run.add_argument("--local", action="store_true", help="no GCS uploads or restores")
    run.add_argument(
        "--shard", metavar="I/N", help="run shard I of N (default: Cloud Batch task variables)"
    )
    run.add_argument(
        "--no-progress", action="store_true", help="progress lines (JSON) instead of a live view"
    )

    confirm = _command(sub, "confirm")
    confirm.add_argument("--plan", required=True, help=plan_help)
    confirm.add_argument("--top", type=int, required=True, metavar="K", help="how many best cells")
    confirm.add_argument(
        "--trials", type=int, required=True, metavar="N", help="fresh trials per cell"
    )
    confirm.add_argument("--local", action="store_true", help="no GCS uploads or restores")
    confirm.add_argument("--shard", metavar="I/N", help="confirm shard I of N's best cells")
    confirm.add_argument(
        "--no-progress", action="store_true", help="progress lines (JSON) instead of a live view"
    )

    status = _command(sub, "status")
    status.add_argument("--plan", required=True, help=plan_help)
    status.add_argument("--json", action="store_true", help="the counts as JSON")
    status.add_argument("--shard", metavar="I/N", help="I/N: only shard I of N")
    status.add_argument(
        "--from", dest="from_uri", metavar="GS_URI", help="read the run from gs://bucket/prefix"
    )

    export = _command(sub, "export")
    export.add_argument("--plan", required=True, help=plan_help)
    export.add_argument("--out", help="directory (default: the run's own directory)")
    export.add_argument(
        "--from", dest="from_uri", metavar="GS_URI", help="gather shards from gs://bucket/prefix"
    )

    rejudge = _command(sub, "rejudge")
    rejudge.add_argument("--plan", help=f"{plan_help}: its run and its [judge]")
    rejudge.add_argument("--input", help="a seed-format JSONL file to judge instead of a run")
    rejudge.add_argument("--output", help="where the judged copy of --input goes (a new file)")
    rejudge.add_argument("--all", action="store_true", help="re-grade every row")

    calibrate = _command(sub, "calibrate")
    calibrate.add_argument("--plan", required=True, help=f"{plan_help}: its [judge]")
    calibrate.add_argument("--labels", required=True, help="labelled JSONL (../shared/data form)")
    calibrate.add_argument("--split", help="only records of this split (train, dev, test)")
    calibrate.add_argument("--out", help="calibration JSON (default: in the run's directory)")

    report = _command(sub, "report")
    report.add_argument("inputs", nargs="+", help="seed-format JSONL files or folders")
    report.add_argument("--out", required=True, help="directory for the report")
    report.add_argument("--calibration", help="calibration JSON of the judge: corrected rates")
    report.add_argument("--judge", help="count this judge fingerprint's grades (default: latest)")
    report.add_argument("--explorer", action="store_true", help="also write explorer.html")

    explore = _command(sub, "explore")
    explore.add_argument("inputs", nargs="*", help="seed-format JSONL files or folders")
    explore.add_argument("--plan", help="the run's plan (its database is opened read-only)")
    explore.add_argument("--host", default="127.0.0.1", help="address to listen on")
    explore.add_argument("--port", type=int, default=8765, help="port to listen on; 0: any free")

    batch = _command(sub, "batch")
    batch_sub = batch.add_subparsers(
        dest="batch_command",
        title="commands",
        metavar="COMMAND",
        required=True,
        parser_class=_Parser,
    )
    render = _command(batch_sub, "batch render")
    render.add_argument("--plan", required=True, help="gs:// URI of the plan the tasks read")
    render.add_argument("--tasks", type=int, required=True, help="how many shards (tasks)")
    render.add_argument("--image", required=True, help="the container image the tasks run")
    render.add_argument("--secret", default="", help="Secret Manager path of the judge API key")
    render.add_argument("--machine-type", default="g2-standard-8", help="Compute Engine type")
    render.add_argument("--gpu-type", default="nvidia-l4", help="accelerator type")
    render.add_argument("--gpu-count", type=int, default=1, help="GPUs per task")
    render.add_argument("--standard", action="store_true", help="standard VMs instead of spot")
    render.add_argument("--region", default="us-central1", help="where the job runs")
    render.add_argument("--zones", default="", help="comma-separated zones of the region")
    render.add_argument(
        "--max-run-duration", type=int, default=24 * 3600, help="seconds a task may run"
    )
    render.add_argument("--max-retries", type=int, default=3, help="retries of a failed task")
    render.add_argument("--parallelism", type=int, help="tasks at once (default: all)")
    render.add_argument("--cpu-milli", type=int, help="CPU per task (default: the machine's)")
    render.add_argument("--memory-mib", type=int, help="memory per task (default: the machine's)")
    render.add_argument("--boot-disk-gib", type=int, default=100, help="boot disk size")
    render.add_argument("--stamp", default="", help="the run's stamp (default: a new one)")
    render.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="an environment variable"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # First of all, so a SIGTERM/SIGINT at any moment is one line and exit 75 (stopping.py).
        with stopping.handled():
            configure_logging()
            args, extra = build_parser().parse_known_args(argv)
            if extra:  # argparse would blame the top level, not the command that was given
                words = [PROG, args.command, getattr(args, "batch_command", None)]
                command = " ".join(w for w in words if w)
                _Parser(prog=command).error(f"unrecognized arguments: {' '.join(extra)}")
            if args.command is None:
                raise BadInput(
                    f"give a command: {', '.join(COMMANDS_IN_ORDER)} "
                    f"(see `{PROG} --help`, or `{PROG} COMMAND --help`)"
                )
            return _dispatch(args)
    except Exception as exc:
        failure = exit_line(exc)  # the one mapping of exceptions to a line and an exit code
        if failure is None:
            raise  # a bug: its traceback is the report
        line, code = failure
        print(f"introspectd: {line}", file=sys.stderr)
        return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return cmd_run(args)
    if args.command == "status":
        return cmd_status(args)
    if args.command == "confirm":
        return cmd_confirm(args)
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
        from introspectd.failures import require_output_file
        from introspectd.run.rundir import refuse_run_file

        refuse_run_file(Path(args.out), "--out")
        require_output_file(Path(args.out), "--out")
    from introspectd.app.judging_view import judging_display

    with judging_display(live=sys.stderr.isatty()) as display:
        done = calibrate(
            load_plan(args.plan),
            Path(args.labels),
            args.split,
            Path(args.out) if args.out else None,
            display,
        )
    render_calibration(done.calibration, Console(width=160))
    print(f"calibration written to {done.out} and stored in {done.db}")
    return EXIT_OK


def cmd_rejudge(args: argparse.Namespace) -> int:
    from introspectd.app.plans import load_plan
    from introspectd.judge.rejudge import rejudge

    if args.output:  # before any grading, not after it
        from introspectd.failures import require_output_file
        from introspectd.run.rundir import refuse_run_file

        refuse_run_file(Path(args.output), "--output")
        require_output_file(Path(args.output), "--output")
    if bool(args.input) != bool(args.output):
        raise BadInput("rejudge: --input and --output go together")
    if not (args.plan or args.input):
        raise BadInput("rejudge: give --plan P, or --input IN.jsonl --output OUT.jsonl")
    from introspectd.app.judging_view import judging_display

    plan = load_plan(args.plan) if args.plan else None
    with judging_display(live=sys.stderr.isatty()) as display:
        done = rejudge(
            plan,
            include_judged=args.all,
            input=Path(args.input) if args.input else None,
            output=Path(args.output) if args.output else None,
            display=display,
        )
    print(done)
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
    print("\n".join(done.summary()))
    return EXIT_OK


def cmd_confirm(args: argparse.Namespace) -> int:
    from introspectd.app.confirm import check_counts, confirm
    from introspectd.app.plans import load_plan

    check_counts(args.top, args.trials)  # before the plan is read: the first thing to say
    live = not args.no_progress and sys.stderr.isatty()
    narrowing = _narrowing(argparse.Namespace(shard=args.shard))
    lines = confirm(load_plan(args.plan), narrowing, args.top, args.trials, args.local, live)
    print("\n".join(lines))
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

    print(export_run(plan, Path(args.out) if args.out else None).line())
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
