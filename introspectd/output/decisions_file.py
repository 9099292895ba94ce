"""`adaptive.json` beside an adaptive run's JSONL files: each cell's trials and why it stopped
(the JSONL records carry the trials, not the decisions), for `introspectd report`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from introspectd.output.records import write_atomic
from introspectd.run.round_state import decisions_summary

if TYPE_CHECKING:
    from introspectd.run.session import RunContext

FILE_NAME = "adaptive.json"


def write_decisions(ctx: RunContext) -> None:
    cells = ctx.cells or {r.spec.cell for r in ctx.store.trials()}
    summary = decisions_summary(ctx.plan, ctx.store.outcomes.all(), cells)
    write_atomic(ctx.out_dir / FILE_NAME, (json.dumps(summary, indent=2) + "\n").encode())
