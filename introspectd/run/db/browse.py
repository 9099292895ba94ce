"""The explorer's queries on a run's database: cell aggregates, filtered pages of trials, one
trial, and loading seed-format records into a scratch database.

Logit-measure runs (generate/logit.py) have no text to read: their trials carry p_yes (and the
factual control question they asked, if any), and a cell sums p_yes of its detection-question
trials so the page can show the mean yes-shift.

The SQL lives here rather than in store.py to keep that module readable, in run/db/ like all
SQL; it never imports sqlite3 and goes through a `Store`'s connection and its `write`. Every
read is one autocommit statement, so a reader of a live (WAL) run sees each new commit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from introspectd.run.db.store import Store
from introspectd.text import loads_text

# A judge's "answer"; JSON true/false arrive from json_extract as 1/0.
_ANSWER = "json_extract(judge_json, '$.answer')"
_FLAGS = {
    "coherent": "json_extract(judge_json, '$.coherent')",
    "refused": "json_extract(judge_json, '$.refused')",
}
_REASONING = "json_extract(judge_json, '$.reasoning')"
_LIST_COLUMNS = (
    "id, ordinal, concept, arm AS arm_of, layer, strength, trial, status, response, "
    "judge_json, judge_error, question, p_yes"
)
MAX_PAGE = 200
SQL_INTEGER = range(-(2**63), 2**63)  # what SQLite binds: a larger int is an OverflowError


@dataclass(frozen=True)
class TrialFilter:
    """Which trials a list shows; None (or "") means any."""

    concept: str | None = None
    layer: int | None = None
    strength: float | None = None
    arm: str | None = None  # the trial's arm: injection, control, random
    answer: str | None = None  # pass, fail, or "none" (not judged)
    coherent: bool | None = None
    refused: bool | None = None
    is_failed: bool | None = None  # judge_failed rows (True) or the others (False)
    # A substring of the answer or the judge's reasoning. Not of the id: ids name the concept,
    # arm and cell, so searching "ocean" within concept ocean would list every trial.
    text: str | None = None
    id_text: str | None = None  # a substring of the id (the page's `id:` search)

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause (always excluding trials not yet generated) and its arguments."""
        where, args = ["status != 'pending'"], []
        for column, value in (
            ("concept", self.concept),
            ("layer", self.layer),
            ("strength", self.strength),
            ("arm", self.arm),  # every row has one since 0006_arm.sql
        ):
            if value is not None and value != "":
                where.append(f"{column} = ?")
                args.append(value)
        if self.answer == "none":
            where.append(f"{_ANSWER} IS NULL")
        elif self.answer:
            where.append(f"lower({_ANSWER}) = ?")
            args.append(self.answer.lower())
        for name, value in (("coherent", self.coherent), ("refused", self.refused)):
            if value is not None:
                where.append(f"{_FLAGS[name]} = ?")
                args.append(int(value))
        if self.is_failed is not None:
            where.append(
                "status = 'judge_failed'" if self.is_failed else "status != 'judge_failed'"
            )
        if self.text:
            where.append(f"(response LIKE ? ESCAPE '\\' OR {_REASONING} LIKE ? ESCAPE '\\')")
            args += [_like(self.text)] * 2
        if self.id_text:
            where.append("id LIKE ? ESCAPE '\\'")
            args.append(_like(self.id_text))
        return " AND ".join(where), args


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ searched for as characters."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_filter(query: str) -> dict[str, str | None]:
    """The page's search box as TrialFilter fields: `id:TEXT` searches ids, anything else the
    answers and the judge's reasoning (web/local.js `searchOf` reads it the same way)."""
    if query.lstrip().lower().startswith("id:"):
        return {"text": None, "id_text": query.lstrip()[3:].strip() or None}
    return {"text": query or None, "id_text": None}


def excerpt(text: str, needle: str | None, width: int = 300) -> str | None:
    """Up to `width` characters of `text` around needle's first match (ignoring case), with
    "…" where cut; None where it does not match. Without a needle: the start of `text`."""
    if not needle:
        return text[:width]
    found = re.search(re.escape(needle), text, re.IGNORECASE)
    if found is None:
        return None
    start = max(0, found.start() - width // 4)
    return ("…" if start else "") + text[start : start + width]


def _row_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "ordinal": r["ordinal"],
        "concept": r["concept"],
        "arm": r["arm_of"],
        "layer": r["layer"],
        "strength": r["strength"],
        "trial": r["trial"],
        "status": r["status"],
        "response": r["response"],
        "judge": loads_text(r["judge_json"]) if r["judge_json"] else None,
        "judge_error": r["judge_error"],
        "question": r["question"],  # a factual control question's index, logit runs only
        "p_yes": r["p_yes"],  # logit runs only
    }


def concepts(store: Store) -> list[str]:
    """The run's concepts in plan order (first appearance)."""
    sql = "SELECT concept, MIN(ordinal) AS o FROM trials GROUP BY concept ORDER BY o"
    return [r["concept"] for r in store.conn.execute(sql)]


def arms(store: Store) -> list[str]:
    sql = "SELECT DISTINCT arm AS arm_of FROM trials ORDER BY arm_of"
    return [r["arm_of"] for r in store.conn.execute(sql)]


def status_counts(store: Store) -> dict[str, int]:
    sql = "SELECT status, COUNT(*) AS n FROM trials GROUP BY status"
    return {r["status"]: r["n"] for r in store.conn.execute(sql)}


def cells(store: Store, concept: str) -> list[dict[str, Any]]:
    """One entry per (layer, strength, arm) of `concept`: planned, generated, judged, passed."""
    sql = (
        "SELECT layer, strength, arm AS arm_of, COUNT(*) AS n_planned, "
        "SUM(status != 'pending') AS n_generated, "
        f"SUM({_ANSWER} IS NOT NULL) AS n_judged, "
        f"SUM(lower({_ANSWER}) = 'pass') AS n_pass, "
        "SUM(status = 'judge_failed') AS n_failed, "
        # The detection question's read-outs (factual controls have their own shift, the
        # mismatch design's questions their own report section).
        "SUM(CASE WHEN question IS NULL AND about IS NULL THEN p_yes END) AS sum_p_yes, "
        "SUM(question IS NULL AND about IS NULL AND p_yes IS NOT NULL) AS n_p_yes "
        "FROM trials WHERE concept = ? GROUP BY layer, strength, arm_of ORDER BY layer, strength"
    )
    return [
        {
            "layer": r["layer"],
            "strength": r["strength"],
            "arm": r["arm_of"],
            "n_planned": r["n_planned"],
            "n_generated": r["n_generated"] or 0,
            "n_judged": r["n_judged"] or 0,
            "n_pass": r["n_pass"] or 0,
            "n_failed": r["n_failed"] or 0,
            "n_p_yes": r["n_p_yes"] or 0,
            "sum_p_yes": r["sum_p_yes"] or 0.0,
        }
        for r in store.conn.execute(sql, (concept,))
    ]


def count_trials(store: Store, where: TrialFilter) -> int:
    clause, args = where.where()
    row = store.conn.execute(f"SELECT COUNT(*) FROM trials WHERE {clause}", args).fetchone()
    return int(row[0])


def page_trials(
    store: Store, where: TrialFilter, offset: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """One page of the matching trials in plan order."""
    clause, args = where.where()
    sql = f"SELECT {_LIST_COLUMNS} FROM trials WHERE {clause} ORDER BY ordinal LIMIT ? OFFSET ?"
    limit = max(1, min(limit, MAX_PAGE))
    return [_row_dict(r) for r in store.conn.execute(sql, [*args, limit, max(0, offset)])]


def get_trial(store: Store, trial_id: str) -> dict[str, Any] | None:
    r = store.conn.execute(
        f"SELECT {_LIST_COLUMNS}, num_new_tokens, generated_at, judged_at, prob_yes, prob_no "
        "FROM trials WHERE id = ?",
        (trial_id,),
    ).fetchone()
    if r is None:
        return None
    return {
        **_row_dict(r),
        "num_new_tokens": r["num_new_tokens"],
        "generated_at": r["generated_at"],
        "judged_at": r["judged_at"],
        "prob_yes": r["prob_yes"],
        "prob_no": r["prob_no"],
    }


def import_trials(store: Store, rows: Iterable[dict[str, Any]]) -> int:
    """Insert finished trials as they are (ids, answers and grades from seed-format files) into
    a scratch database, in the given order; returns how many."""
    values = [
        (
            row["id"],
            ordinal,
            row["concept"],
            # `legacy_kind`'s CHECK predates the random arm (0006_arm.sql).
            "control" if row["arm"] == "control" else "injection",
            row["arm"],
            row["layer"],
            row["strength"],
            row["trial"],
            row["status"],
            row["response"],
            json.dumps(row["judge"]) if row["judge"] is not None else None,
            row["judge_error"],
            row.get("generated_at"),
            row.get("question"),
            row.get("p_yes"),
            row.get("prob_yes"),
            row.get("prob_no"),
        )
        for ordinal, row in enumerate(rows)
    ]
    with store.write() as conn:
        conn.executemany(
            "INSERT INTO trials (id, ordinal, concept, legacy_kind, arm, layer, strength, trial, "
            "status, response, judge_json, judge_error, generated_at, question, p_yes, prob_yes, "
            "prob_no) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    return len(values)
