"""`confirm`: re-run a finished (or unfinished) run's K best cells on fresh trials.

The same engine as `run`, with `[adaptive] confirm_top` and `confirm_trials` set from the
command line: whatever exploration is left is finished first, then the K best cells (by the
lower bound of injection pass − control FP, run/adaptive_run.best_cells) get N confirmation
trials each (`…_c0` … `…_c{N-1}`), whose rates the report shows beside the exploration ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from introspectd.errors import BadInput
from introspectd.run.session import Narrowing

MAX_CONFIRM = 100_000


def cmd_confirm(args: argparse.Namespace, narrowing: Narrowing) -> int:
    from introspectd.app.plans import load_plan
    from introspectd.app.start import run_sweep
    from introspectd.app.summary import counts_words

    for flag, value in (("--top", args.top), ("--trials", args.trials)):
        if not 1 <= value <= MAX_CONFIRM:
            raise BadInput(f"{flag}: must be between 1 and {MAX_CONFIRM}, got {value}")
    plan = load_plan(args.plan)
    adaptive = dataclasses.replace(plan.adaptive, confirm_top=args.top, confirm_trials=args.trials)
    plan = dataclasses.replace(plan, adaptive=adaptive)
    live = not args.no_progress and sys.stderr.isatty()
    done = run_sweep(plan, narrowing, local=args.local, live=live)
    summary = done.summary()
    print(
        f"confirmed the {args.top} best cells with {args.trials} fresh trials each: "
        f"{counts_words(done.counts)}; results in {done.out_dir}"
    )
    print("\n".join(summary[1:]))  # the counts, the files and the next commands, as `run`
    return 0
