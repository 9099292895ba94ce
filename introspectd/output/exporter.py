"""Keeps `{concept}.jsonl` in step with the database, at a cost in proportion to what is new.

The database is the truth; each file is a view of its concept's finished rows. `export_all`
(a run's start and end, `export`, the end of `rejudge`) and a file's first flush in a process
rewrite it whole and atomically (tmp + fsync + rename), in plan order. After that, rows that
finish are appended in the order they finished, so a flush costs what is new, not the file.
A row whose line is already in the file and changed (a re-grade) has its file rewritten again,
no more often than keeps those rewrites to a tenth of the time.

A run's start reconciles (`reconcile`): whatever a crash or a hand left (a torn last line from
an append cut short, a doubled or edited line, a line missing because the crash came between
the database commit and the append) is replaced by the database's records, and lines that did
not match are logged. Between a crash and the next start, a file may end in a torn line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from introspectd.errors import BadInput
from introspectd.output.records import (
    Norms,
    append_lines,
    norms_of,
    record_line,
    without_mention,
    write_atomic,
)
from introspectd.protocol.plan import Plan
from introspectd.protocol.results import TrialRow
from introspectd.protocol.trials import Status
from introspectd.run.db import Store
from introspectd.run.rundir import lock_holder, refuse_other_run_dir
from introspectd.run.session import RunContext, open_run
from introspectd.text import utf8

log = logging.getLogger("introspectd")
FLUSH_INTERVAL_S = 2.0
REWRITE_SHARE = 0.1  # whole rewrites of re-graded files take at most this share of the time


class Exporter:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._finished: list[str] = []  # trial ids whose judging ended since the last flush
        self._in_file: dict[str, set[str]] = {}  # per concept rewritten here, the ids it holds
        self._stale: set[str] = set()  # concepts whose file must be rewritten whole
        self._last_flush = 0.0
        self._next_rewrite = 0.0
        self._reader: Store | None = None  # a connection of its own, for flushes in a thread
        self._lexicon = ctx.plan.mentions.lexicon()  # records' `mention` (compiled once)

    def path(self, concept: str) -> Path:
        return self.ctx.out_dir / f"{concept}.jsonl"

    def mark_finished(self, trial_ids: list[str]) -> None:
        self._finished.extend(trial_ids)

    def _is_due(self) -> bool:
        pending = self._finished or self._stale
        return bool(pending) and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S

    def maybe_flush(self) -> None:
        if self._is_due():
            self.flush()

    async def maybe_flush_in_thread(self) -> None:
        """`maybe_flush` in a worker thread, reading through a second (read-only) connection:
        the event loop keeps running, and never shares its connection mid-transaction."""
        if not self._is_due():
            return
        if self._reader is None:
            self._reader = Store(self.ctx.store.path, read_only=True)
        ids, self._finished = self._finished, []
        # Not abandoned on cancel: export_all must not overlap a flush still writing.
        await anyio.to_thread.run_sync(self._flush, ids, self._reader)

    def flush(self) -> None:
        ids, self._finished = self._finished, []
        self._flush(ids, self.ctx.store)

    def _flush(self, trial_ids: list[str], store: Store) -> None:
        norms = norms_of(store)
        new: dict[str, list[tuple[str, str]]] = {}
        for row in store.completed_by_id(trial_ids):
            concept = row.spec.concept
            held = self._in_file.get(concept)
            if held is None or row.id in held:  # not reconciled here yet, or a re-grade
                self._stale.add(concept)
            else:
                line = self._line(row, norms)
                new.setdefault(concept, []).append((row.id, line))
        for concept, items in new.items():
            append_lines(self.path(concept), [line for _, line in items])
            self._in_file[concept].update(trial_id for trial_id, _ in items)
        started = time.monotonic()
        if self._stale and started >= self._next_rewrite:
            for concept in sorted(self._stale):
                self._rewrite(concept, store, norms, reconciling=False)
            self._stale.clear()
            self._next_rewrite = started + (time.monotonic() - started) / REWRITE_SHARE
        self._last_flush = time.monotonic()

    def _line(self, row: TrialRow, norms: Norms) -> str:
        return record_line(row, self.ctx.run.model_name, norms, self.ctx.plan.sweep, self._lexicon)

    def _concepts(self) -> list[str]:
        return sorted(set(self.ctx.plan.sweep.concepts) | set(self.ctx.store.counts()))

    def export_all(self) -> None:
        """Every file rewritten whole, in plan order, from the database."""
        self._export_all(reconciling=False)
        if self.ctx.plan.adds_trials_as_it_goes:
            from introspectd.output.decisions_file import write_decisions

            write_decisions(self.ctx)

    def reconcile(self) -> None:
        """`export_all` at a run's start: a file already equal to the database's records is
        left alone, and lines the database does not hold are logged."""
        self._export_all(reconciling=True)

    def _export_all(self, reconciling: bool) -> None:
        self._finished.clear()  # the rewrite holds them
        norms = norms_of(self.ctx.store)
        for concept in self._concepts():
            self._rewrite(concept, self.ctx.store, norms, reconciling)
        self._stale.clear()
        self._last_flush = time.monotonic()

    def _rewrite(self, concept: str, store: Store, norms: Norms, reconciling: bool) -> None:
        rows = store.completed(concept)
        lines = [self._line(r, norms) for r in rows]
        data = utf8("".join(lines))
        path = self.path(concept)
        old = _read_or_none(path) if reconciling else None
        if old != data or not reconciling:  # `export` always writes: read-only storage says so
            unmatched = _unmatched_lines(old or b"", set(lines)) if reconciling else 0
            if unmatched:
                log.warning(
                    "%s: %d line(s) torn, doubled or not as in the run database; "
                    "rewritten from the database",
                    path,
                    unmatched,
                )
            write_atomic(path, data)
        self._in_file[concept] = {r.id for r in rows}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None  # missing (or unreadable: writing it reports why)


def _unmatched_lines(old: bytes, expected: set[str]) -> int:
    """Lines of `old` that are not records the database holds, or repeat one. A line that
    differs only in `mention` (written before records had it, or under another `[mentions]`
    list: it is left out of the plan hash) is rewritten without counting as damage."""
    seen: set[str] = set()
    bare: set[str] | None = None  # the expected lines without `mention`, once one is needed
    unmatched = 0
    for raw in old.splitlines(keepends=True):
        line = raw.decode("utf-8", errors="replace")
        known = line in expected
        if not known:
            bare = {without_mention(e) or e for e in expected} if bare is None else bare
            stripped = without_mention(line)
            known = stripped is not None and stripped in bare
        unmatched += not known or line in seen
        seen.add(line)
    return unmatched


@dataclass(frozen=True)
class LocalExport:
    """What `export` wrote: where, how many of the planned trials were finished, and the pid
    of a process still writing the run (its files are then a partial set)."""

    out: Path
    finished: int
    planned: int
    writer_pid: str | None

    def line(self) -> str:
        text = f"exported {self.finished} of {self.planned} planned trials to {self.out}"
        if self.writer_pid is not None:
            return text + (
                f" — partial: a process (pid {self.writer_pid}) is still running "
                "this run; export again when it ends"
            )
        if self.finished < self.planned:
            left = self.planned - self.finished
            return text + f" — partial: {left} not finished; `introspectd run` finishes them"
        return text


def export_run(plan: Plan, out: Path | None) -> LocalExport:
    """Write every finished trial of a run to `out` (default: the run's own directory).

    Reads the database read-only, so a run on read-only storage exports to `--out`."""
    ctx = open_run(plan, create=False, read_only=True, with_trials=False)
    try:
        if out is not None:
            refuse_other_run_dir(out, ctx.out_dir, "--out")
        writer = lock_holder(ctx.out_dir)
        if out is not None:
            ctx.out_dir = out
        try:
            Exporter(ctx).export_all()
        except OSError as e:
            raise BadInput(
                f"{ctx.out_dir}: cannot write the export ({e.strerror or e}); choose another --out"
            ) from None
        counts = ctx.store.counts().values()
        planned = sum(sum(by_status.values()) for by_status in counts)
        pending = sum(by_status.get(Status.PENDING.value, 0) for by_status in counts)
        return LocalExport(ctx.out_dir, planned - pending, planned, writer)
    finally:
        ctx.store.close()
