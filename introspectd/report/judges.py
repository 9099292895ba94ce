"""Which judge's grades the report counts, when the results sit beside their run database.

Every judgement is kept in the run's history (`judgements` table); `rejudge --all` under a new
judge adds grades without deleting the old ones. The report counts one judge's grades: by
default the judge that graded last, or the one `--judge FINGERPRINT` names. Results read
without a database beside them (copied files, `rejudge --input`) are counted as they are.

A judge is identified by the fingerprint judge/provenance.py defines and every judgement
stores; calibrations (`introspectd calibrate`) are stored in the run database under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.protocol.results import Record
from introspectd.run.db import Store
from introspectd.run.rundir import DB_NAME, open_store


def judge_fingerprints(store: Store) -> list[str]:
    """The run's judges, least recently used first (judge/provenance.py defines the
    fingerprint; every judgement stores its judge's). Judgements made before fingerprints were
    stored have none and are counted as read."""
    return store.history.judge_fingerprints()


@dataclass
class JudgeSelection:
    fingerprint: str | None  # None: no run database, records counted as read
    known: list[str] = field(default_factory=list)
    num_regraded: int = 0  # records whose grade was swapped for this judge's
    num_ungraded: int = 0  # records this judge never graded (now unjudged)
    stored_calibration: dict[str, Any] | None = None


def run_databases(files: tuple[Path, ...]) -> list[Path]:
    """The run databases beside the input files (a run directory holds both)."""
    found = {f.parent / DB_NAME for f in files}
    return sorted(db for db in found if db.is_file() and db.stat().st_size > 0)


def select_judge(
    records: list[Record], files: tuple[Path, ...], fingerprint: str | None
) -> JudgeSelection:
    """Replace each record's grade with the chosen judge's latest grade of that trial (in
    place). Raises BadInput for an unknown `fingerprint`, naming the known ones."""
    stores = [open_store(db, read_only=True) for db in run_databases(files)]
    try:
        known: list[str] = []
        for store in stores:
            fingerprints = judge_fingerprints(store)
            known = [fp for fp in known if fp not in fingerprints] + fingerprints
        if fingerprint is not None and fingerprint not in known:
            listed = ", ".join(reversed(known)) or "none: no run database with judgements"
            raise BadInput(f"--judge: unknown judge fingerprint {fingerprint!r} (known: {listed})")
        if not known:
            return JudgeSelection(None)
        chosen = fingerprint or known[-1]
        grades: dict[str, dict[str, Any]] = {}
        graded_ids: set[str] = set()  # trials some judge graded: their grade is swapped
        stored = None
        for store in stores:
            graded_ids.update(trial_id for trial_id, *_ in store.history.graded_history())
            grades.update(store.history.judgements_by(chosen))
            stored = stored or store.history.latest_calibration(chosen)
        selection = JudgeSelection(chosen, list(reversed(known)), stored_calibration=stored)
        _apply(records, grades, graded_ids, selection)
        return selection
    finally:
        for store in stores:
            store.close()


def _apply(
    records: list[Record],
    grades: dict[str, dict[str, Any]],
    in_db: set[str],
    selection: JudgeSelection,
) -> None:
    for record in records:
        if record["id"] not in in_db:
            continue
        grade = grades.get(record["id"])
        if grade is None:
            selection.num_ungraded += record["judge"] is not None
            record["judge"] = None
        elif grade != record["judge"]:
            selection.num_regraded += 1
            record["judge"] = grade
