"""`introspectd status` and `export`: a run's progress and its files, from disk or from GCS."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from introspectd._cli.run import narrowing
from introspectd.errors import EXIT_FAILURE, EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from introspectd.app.plans import load_plan
    from introspectd.app.status import render_status, status_summary
    from introspectd.run.session import open_run

    if args.from_uri:
        from introspectd.cloud.gather import status_from_gcs, status_line

        gathered = status_from_gcs(load_plan(args.plan), args.from_uri)
        print(json.dumps(gathered, indent=2) if args.json else status_line(gathered))
        return gathered_exit(gathered, show_gaps=not args.json)
    ctx = open_run(
        load_plan(args.plan), narrowing(args), create=False, read_only=True, with_trials=False
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
        return gathered_exit(exported.summary, show_gaps=True)
    from introspectd.output.exporter import export_run

    print(export_run(plan, Path(args.out) if args.out else None).line())
    return EXIT_OK


def gathered_exit(summary: dict[str, object], show_gaps: bool) -> int:
    """Exit 1 unless the run gathered from GCS is complete; its gaps go to stderr."""
    from introspectd.cloud.gather import gap_lines

    for line in gap_lines(summary) if show_gaps else []:
        print(line, file=sys.stderr)
    return EXIT_OK if summary["is_complete"] else EXIT_FAILURE
