"""`introspectd rejudge` and `calibrate`: grading outside a run, with the judging display."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from introspectd.errors import EXIT_OK, BadInput


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
