"""Rows of the run database as the package's value types, and back: the column list the
store selects, a `run` row, a `trials` row, a read-out's update values. Pure mapping, no
queries of its own (store.py runs them)."""

from __future__ import annotations

import json
import sqlite3

from introspectd.protocol.results import ChoiceReadout, Generation, Readout, RunRow, TrialRow
from introspectd.protocol.trials import Arm, Status, TrialSpec
from introspectd.text import loads_text

TRIAL_COLUMNS = (
    "id, ordinal, concept, layer, strength, trial, status, response, "
    "num_new_tokens, generated_at, judge_json, judge_error, arm, question, p_yes, prob_yes, "
    "prob_no, is_confirmation, about, choice_json, prompt"
)


def get_run(conn: sqlite3.Connection) -> RunRow | None:
    r = conn.execute("SELECT * FROM run WHERE id = 1").fetchone()
    if r is None:
        return None
    return RunRow(
        r["stamp"],
        r["experiment_id"],
        r["model_name"],
        r["plan_json"],
        json.loads(r["spec_json"]),
        r["spec_hash"],
        json.loads(r["baseline_json"]),
        r["created_at"],
    )


def trial_row(r: sqlite3.Row) -> TrialRow:
    spec = TrialSpec(
        r["concept"],
        Arm(r["arm"]),
        r["layer"],
        r["strength"],
        r["trial"],
        r["question"],
        bool(r["is_confirmation"]),
        r["about"],
        r["prompt"],
    )
    judge = loads_text(r["judge_json"]) if r["judge_json"] else None
    readout = None
    if r["p_yes"] is not None:
        readout = Readout(r["p_yes"], r["prob_yes"], r["prob_no"])
    choice = None
    if r["choice_json"] is not None:
        choice = ChoiceReadout.from_json(loads_text(r["choice_json"]))
    return TrialRow(
        r["id"],
        r["ordinal"],
        spec,
        Status(r["status"]),
        r["response"],
        r["num_new_tokens"],
        r["generated_at"],
        judge,
        r["judge_error"],
        readout,
        choice,
    )


def read_out_values(g: Generation) -> tuple[object, ...]:
    r, choice = g.readout, g.choice
    return (
        g.generated_at,
        g.generated_at,
        r.p_yes if r else None,
        r.prob_yes if r else None,
        r.prob_no if r else None,
        json.dumps(choice.as_json()) if choice else None,
        g.trial_id,
    )
