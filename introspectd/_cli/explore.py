"""`introspectd explore` and `report`: reading results."""

from __future__ import annotations

import argparse
from pathlib import Path

from introspectd.errors import EXIT_OK


def cmd_explore(args: argparse.Namespace) -> int:
    from introspectd.explore.command import explore

    plan = None
    if args.plan:
        from introspectd.app.plans import load_plan

        plan = load_plan(args.plan)
    explore(plan, [Path(p) for p in args.inputs], args.host, args.port)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from introspectd.report.writer import write_report

    calibration = Path(args.calibration) if args.calibration else None
    paths = write_report([Path(p) for p in args.inputs], Path(args.out), calibration, args.judge)
    print(f"report written to {paths.report_md}")
    if args.explorer:
        from introspectd.explore.static import write_static_explorer

        print(write_static_explorer([Path(p) for p in args.inputs], Path(args.out)).line())
    return EXIT_OK
