"""`introspectd` command line. Exit codes: 0 done, 2 bad input, 75 interrupted (resume), 1 other.

Commands that need no model (status, export, report, batch) never import torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from introspectd import __version__, stopping
from introspectd.cli_help import COMMANDS, DESCRIPTION, EPILOG, PROG, HelpFormatter, command_texts
from introspectd.errors import BadInput
from introspectd.failures import exit_line
from introspectd.logs import configure_logging

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
    """The command's module is imported only when it runs: `status` never loads torch."""
    from importlib import import_module

    module, function = _COMMANDS.get(args.command, ("batch", "cmd_batch_render"))
    command: Callable[[argparse.Namespace], int] = getattr(
        import_module(f"introspectd._cli.{module}"), function
    )
    return command(args)


_COMMANDS = {
    "run": ("run", "cmd_run"),
    "confirm": ("run", "cmd_confirm"),
    "status": ("status", "cmd_status"),
    "export": ("status", "cmd_export"),
    "rejudge": ("judging", "cmd_rejudge"),
    "calibrate": ("judging", "cmd_calibrate"),
    "report": ("explore", "cmd_report"),
    "explore": ("explore", "cmd_explore"),
}


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
