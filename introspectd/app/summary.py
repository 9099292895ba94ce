"""What a finished run prints last: its counts, where its files are, and the next commands.

One function, `run_summary`, from the store's counts of the selected trials (so a resumed run
counts what earlier processes did too), so every command that ends a sweep (`run`, `confirm`)
words it the same way. When answers are left ungraded its second line is the one a person acts
on: `K not judged (why): introspectd rejudge --plan P` (status.not_judged_line, shared with
`status`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from introspectd.app.status import not_judged_line
from introspectd.protocol.plan import Plan
from introspectd.run.db import JudgingCounts


def run_summary(
    counts: JudgingCounts,
    plan: Plan,
    out_dir: Path,
    files: Sequence[Path] = (),
    database: Path | None = None,
) -> list[str]:
    """The end-of-run lines: counts, what is left ungraded, files, and the commands to run next."""
    lines = [f"done: {counts_words(counts)}; results in {out_dir}"]
    hint = not_judged_line(counts, plan)
    if hint:
        lines.append(hint)
    where = _files_words(files)
    if database is not None:
        where.append(f"database {database.name}")
    if where:
        lines.append(f"files in {out_dir}: " + ", ".join(where))
    out = shlex.quote(str(out_dir))
    lines.append(f"next: introspectd report {out} --out {shlex.quote(str(out_dir / 'report'))}")
    lines.append(f"      introspectd explore --plan {shlex.quote(str(plan.path))}")
    return lines


def counts_words(c: JudgingCounts) -> str:
    """ "30/32 trials generated, 28 judged", with read-outs for logit runs."""
    parts = [f"{c.generated:,}/{c.total:,} trials generated"]
    if c.read_out:
        parts.append(f"{c.read_out:,} read out (logit: nothing to judge)")
    if c.judged or not c.read_out:
        parts.append(f"{c.judged:,} judged")
    return ", ".join(parts)


def _files_words(files: Sequence[Path]) -> list[str]:
    """ "ocean.jsonl, fear.jsonl", or "12 JSONL files (ocean.jsonl, …)" past three."""
    names = [f.name for f in files]
    if len(names) <= 3:
        return names
    return [f"{len(names)} JSONL files ({names[0]}, …)"]
