"""`confirm`: re-run a finished (or unfinished) run's K best cells on fresh trials.

The same engine as `run`, with `[adaptive] confirm_top` and `confirm_trials` set from the
command line: whatever exploration is left is finished first, then the K best cells (by the
lower bound of injection pass − control FP, run/round_state.best_cells) get N confirmation
trials each (`…_c0` … `…_c{N-1}`), whose rates the report shows beside the exploration ones.
"""

from __future__ import annotations

import dataclasses

from introspectd.errors import BadInput
from introspectd.protocol.plan import Plan
from introspectd.run.session import Narrowing

MAX_CONFIRM = 100_000


def check_counts(top: int, trials: int) -> None:
    for flag, value in (("--top", top), ("--trials", trials)):
        if not 1 <= value <= MAX_CONFIRM:
            raise BadInput(f"{flag}: must be between 1 and {MAX_CONFIRM}, got {value}")


def confirm(
    plan: Plan, narrowing: Narrowing, top: int, trials: int, local: bool, live: bool
) -> list[str]:
    """Run `plan` with its `top` best cells confirmed on `trials` fresh trials each; the lines
    that say what was done (the command line prints them)."""
    from introspectd.app.start import run_sweep
    from introspectd.app.summary import counts_words

    check_counts(top, trials)
    if plan.sweep.controls == "pooled":  # confirmation adds each cell its own controls
        raise BadInput(
            f'{plan.path}: [sweep] controls: "pooled" cannot be confirmed: a confirmed cell '
            "runs fresh controls of its own"
        )
    adaptive = dataclasses.replace(plan.adaptive, confirm_top=top, confirm_trials=trials)
    done = run_sweep(dataclasses.replace(plan, adaptive=adaptive), narrowing, local, live)
    return [
        f"confirmed the {top} best cells with {trials} fresh trials each: "
        f"{counts_words(done.counts)}; results in {done.out_dir}",
        *done.summary()[1:],  # the counts, the files and the next commands, as `run`
    ]
