"""Keeps `{concept}.jsonl` in step with the database: whole-file atomic rewrites of what changed.

The database is the truth; the files are a view of its finished rows in plan order. Rewriting a
file whole (tmp + fsync + rename) means a crash can never leave a torn or doubled line, and
any earlier damage is repaired at the next start.
"""

from __future__ import annotations

import time
from pathlib import Path

from introspectd.errors import BadInput
from introspectd.output.records import completed_records, write_jsonl
from introspectd.protocol.plan import Plan
from introspectd.run.session import RunContext, open_run

FLUSH_INTERVAL_S = 2.0


class Exporter:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._dirty: set[str] = set()
        self._last_flush = 0.0
        self.num_exported = 0

    def path(self, concept: str) -> Path:
        return self.ctx.out_dir / f"{concept}.jsonl"

    def mark_dirty(self, concepts: set[str]) -> None:
        self._dirty |= concepts

    def maybe_flush(self) -> None:
        if self._dirty and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        by_concept = completed_records(
            self.ctx.store, self.ctx.run.model_name, self.ctx.plan.sweep, sorted(self._dirty)
        )
        for concept, records in by_concept.items():
            write_jsonl(self.path(concept), records)
        self._dirty.clear()
        self._last_flush = time.monotonic()

    def export_all(self) -> None:
        self.mark_dirty(set(self.ctx.plan.sweep.concepts) | set(self.ctx.store.counts()))
        self.flush()


def export_run(plan: Plan, out: Path | None) -> Path:
    """Write every finished trial of a run to `out` (default: the run's own directory).

    Reads the database read-only, so a run on read-only storage exports to `--out`."""
    ctx = open_run(plan, create=False, read_only=True)
    try:
        if out is not None:
            ctx.out_dir = out
        try:
            Exporter(ctx).export_all()
        except OSError as e:
            raise BadInput(
                f"{ctx.out_dir}: cannot write the export ({e.strerror or e}); choose another --out"
            ) from None
        return ctx.out_dir
    finally:
        ctx.store.close()
