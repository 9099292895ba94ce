"""`introspectd run` and `confirm`: the sweep itself (app/start.py), on the whole plan or a part."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from introspectd.errors import EXIT_OK

if TYPE_CHECKING:
    from introspectd.run.session import Narrowing


def narrowing(args: argparse.Namespace) -> Narrowing:
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
    done = run_sweep(load_plan(args.plan), narrowing(args), local=args.local, live=live)
    print("\n".join(done.summary()))
    return EXIT_OK


def cmd_confirm(args: argparse.Namespace) -> int:
    from introspectd.app.confirm import check_counts, confirm
    from introspectd.app.plans import load_plan

    check_counts(args.top, args.trials)  # before the plan is read: the first thing to say
    live = not args.no_progress and sys.stderr.isatty()
    part = narrowing(argparse.Namespace(shard=args.shard))
    lines = confirm(load_plan(args.plan), part, args.top, args.trials, args.local, live)
    print("\n".join(lines))
    return EXIT_OK
