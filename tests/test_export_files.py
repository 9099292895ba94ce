"""The JSONL files during and after a run (issue 12 item 6, flat cost per trial at scale).

- test_flushes_append_each_new_record_once: a flush appends what finished (same file, no
  rewrite), each record exactly once; a re-grade rewrites the file; the end is in plan order.
- test_reconcile_repairs_torn_doubled_edited_and_missing_lines: the start's reconciliation
  replaces a torn last line, a doubled, an edited and a missing line by the database's records.
- test_restart_repairs_damaged_files_from_the_database: the same through `run`, as a user
  meets it after a crash mid-append or a hand edit.
- test_records_carry_mention_and_older_lines_are_not_damage: each generated answer's record
  says where it first mentions its concept (the plan's `[mentions]` or the built-in list); a
  file written before records had `mention` is rewritten at the start without a warning.
- test_logit_readouts_carry_no_mention: a read-out has no text, so no `mention`.
- test_stopped_run_holds_each_record_once_then_plan_order: a SIGTERM-drained run leaves
  appended files with every finished record exactly once; the resumed run ends in plan order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TINY_PLAN, jsonl_lines, run_cli, start_run, write_plan

from introspectd.output.exporter import Exporter
from introspectd.output.records import record_line
from introspectd.protocol.plan import load_plan
from introspectd.protocol.results import Generation, Judgement, Readout, TrialRow, now_iso
from introspectd.protocol.trials import Status
from introspectd.run.session import RunContext, open_run


def _finish(ctx: RunContext, ids: list[str], result: dict[str, str] | None = None) -> None:
    """Rows generated and judged (or failed, with no result), as the engine records them."""
    ctx.store.record_generations([Generation(i, f"answer {i}", 3, now_iso()) for i in ids])
    error = None if result else "judging not configured"
    judgement = [Judgement(i, result, error, "j", "v2", "", 1, 1, 1) for i in ids]
    ctx.store.record_judgements(judgement)


def _expected(ctx: RunContext, concept: str) -> list[str]:
    """The concept's finished records as lines, in plan order: what `export` writes."""
    norms = ctx.store.vector_norms()
    rows = ctx.store.completed(concept)
    lexicon = ctx.plan.mentions.lexicon()
    return [record_line(r, ctx.run.model_name, norms, ctx.plan.sweep, lexicon) for r in rows]


def _lines(path: Path) -> list[str]:
    return jsonl_lines(path.read_text())


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[RunContext]:
    context = open_run(load_plan(str(write_plan(tmp_path, TINY_PLAN))))
    yield context
    context.close()


def test_flushes_append_each_new_record_once(ctx: RunContext) -> None:
    fear = [t.trial_id for t in ctx.pending if t.spec.concept == "fear"]
    exporter = Exporter(ctx)
    exporter.reconcile()
    path = exporter.path("fear")
    inode = path.stat().st_ino
    late, early = fear[10:14], fear[2:5]  # finish later trials of the plan first
    for batch in (late, early):
        _finish(ctx, batch)
        exporter.mark_finished(batch)
        exporter.flush()
    assert path.stat().st_ino == inode, "a flush appends to the file, never rewrites it"
    by_id = {json.loads(line)["id"]: line for line in _expected(ctx, "fear")}
    assert _lines(path) == [by_id[i] for i in late + early]  # finish order, each once
    # A row already in the file that changes (a re-grade) has its file rewritten whole.
    _finish(ctx, early[:1], {"answer": "pass"})
    exporter.mark_finished(early[:1])
    exporter.flush()
    assert path.stat().st_ino != inode
    assert sorted(_lines(path)) == sorted(_expected(ctx, "fear"))
    regraded = [json.loads(line) for line in _lines(path) if early[0] in line]
    assert [r["judge"] for r in regraded] == [{"answer": "pass"}]
    _finish(ctx, fear[0:2])
    exporter.mark_finished(fear[0:2])
    exporter.flush()
    assert len(_lines(path)) == len(set(_lines(path))) == 9
    exporter.export_all()
    assert _lines(path) == _expected(ctx, "fear"), "plan order at the end"


def test_reconcile_repairs_torn_doubled_edited_and_missing_lines(
    ctx: RunContext, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [t.trial_id for t in ctx.pending if t.spec.concept == "ocean"][:6]
    exporter = Exporter(ctx)
    exporter.reconcile()
    _finish(ctx, ids)
    exporter.mark_finished(ids)
    exporter.flush()
    path = exporter.path("ocean")
    lines = _lines(path)
    edited = json.loads(lines[1])
    edited["response"] = "edited by hand"
    damaged = [lines[0], lines[0], json.dumps(edited) + "\n", *lines[3:5], lines[5][:40]]
    path.write_text("".join(damaged))  # doubled, edited, missing (line 2) and torn lines
    with caplog.at_level(logging.WARNING, logger="introspectd"):
        Exporter(ctx).reconcile()
    assert _lines(path) == _expected(ctx, "ocean")
    assert "3 line(s) torn, doubled or not as in the run database" in caplog.text


MENTIONS_PLAN = TINY_PLAN + '\n[mentions]\nocean = ["answer"]\n'


def test_records_carry_mention_and_older_lines_are_not_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = open_run(load_plan(str(write_plan(tmp_path, MENTIONS_PLAN))))
    try:
        ocean = [t.trial_id for t in ctx.pending if t.spec.concept == "ocean"][:3]
        fear = [t.trial_id for t in ctx.pending if t.spec.concept == "fear"][:2]
        exporter = Exporter(ctx)
        exporter.reconcile()
        _finish(ctx, ocean + fear)  # every answer is "answer <id>"
        exporter.export_all()
        records = [json.loads(line) for line in _lines(exporter.path("ocean"))]
        # The plan's list for ocean: "answer" at offset 0.
        assert [r["mention"] for r in records] == [{"first_char": 0, "text": "answer"}] * 3
        # fear keeps the built-in list: "_fear_" inside the id is no whole word.
        records = [json.loads(line) for line in _lines(exporter.path("fear"))]
        assert [r["mention"] for r in records] == [{"first_char": None, "text": None}] * 2
        # The same records as an earlier version wrote them (no `mention`), one of them torn.
        path = exporter.path("ocean")
        older = [
            json.dumps(
                {k: v for k, v in json.loads(line).items() if k != "mention"}, ensure_ascii=False
            )
            + "\n"
            for line in _lines(path)
        ]
        path.write_text("".join(older[:2]) + older[2][:30])
        with caplog.at_level(logging.WARNING, logger="introspectd"):
            Exporter(ctx).reconcile()
        assert _lines(path) == _expected(ctx, "ocean")
        assert "1 line(s) torn, doubled or not as in the run database" in caplog.text
    finally:
        ctx.close()


def test_logit_readouts_carry_no_mention(ctx: RunContext) -> None:
    trial = next(t for t in ctx.pending if t.spec.concept == "ocean")
    row = TrialRow(
        trial.trial_id,
        0,
        trial.spec,
        Status.JUDGED,
        "",
        0,
        now_iso(),
        None,
        None,
        Readout(0.75, 0.3, 0.1),
    )
    text_row = dataclasses.replace(row, response="the ocean", readout=None)
    lexicon = ctx.plan.mentions.lexicon()
    assert "mention" not in json.loads(record_line(row, "m", {}, ctx.plan.sweep, lexicon))
    line = record_line(text_row, "m", {}, ctx.plan.sweep, lexicon)
    assert json.loads(line)["mention"] == {"first_char": 4, "text": "ocean"}


def _export_copy(plan: Path, dest: Path) -> dict[str, bytes]:
    proc = run_cli("export", "--plan", str(plan), "--out", str(dest))
    assert proc.returncode == 0, proc.stderr
    return {f.name: f.read_bytes() for f in dest.glob("*.jsonl")}


def test_restart_repairs_damaged_files_from_the_database(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)
    first = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert first.returncode == 0, first.stderr
    out = tmp_path / "out" / "exp" / "tiny"
    truth = _export_copy(plan, tmp_path / "truth")
    fear, ocean = out / "fear.jsonl", out / "ocean.jsonl"
    with fear.open("a") as f:  # a crash in the middle of an append
        f.write(_lines(fear)[0][:57])
    record = json.loads(_lines(ocean)[3])
    record["judge"] = {"answer": "pass"}  # a grade made up by hand
    ocean.write_text("".join([*_lines(ocean)[:3], json.dumps(record) + "\n", *_lines(ocean)]))
    again = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert {f.name: f.read_bytes() for f in out.glob("*.jsonl")} == truth
    assert f"{fear}: 1 line(s) torn" in again.stderr
    assert f"{ocean}: " in again.stderr and "rewritten from the database" in again.stderr


def _finished_by_concept(db: Path) -> dict[str, list[str]]:
    """Finished ids per concept, in plan (ordinal) order."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT concept, id FROM trials WHERE status IN ('judged', 'judge_failed') "
            "ORDER BY ordinal"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for concept, trial_id in rows:
        out.setdefault(concept, []).append(trial_id)
    return out


def _file_ids(out: Path, concept: str) -> list[str]:
    return [json.loads(line)["id"] for line in _lines(out / f"{concept}.jsonl")]


def _wait_for_finished(db: Path, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if sum(len(v) for v in _finished_by_concept(db).values()) >= n:
                return
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} trials finished in {timeout_s} s")


def test_stopped_run_holds_each_record_once_then_plan_order(tmp_path: Path) -> None:
    # Long enough answers that the run is still going after 40 finished + 2.5 s: on a quiet
    # machine 640 trials of 8 tokens finished before the signal and the run exited 0.
    body = TINY_PLAN.replace("trials = 2", "trials = 40").replace(
        "max_new_tokens = 8", "max_new_tokens = 48"
    )
    plan = write_plan(tmp_path, body)
    out = tmp_path / "out" / "exp" / "tiny"
    proc = start_run(plan, "--local")
    _wait_for_finished(out / "state.sqlite", 40)
    time.sleep(2.5)  # past one flush interval: appends, not only the start's rewrite
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    finished = _finished_by_concept(out / "state.sqlite")
    for concept, ids in finished.items():
        in_file = _file_ids(out, concept)
        assert sorted(in_file) == sorted(ids), f"{concept}: each finished record exactly once"
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    finished = _finished_by_concept(out / "state.sqlite")
    assert sum(len(v) for v in finished.values()) == 640
    for concept, ids in finished.items():
        assert _file_ids(out, concept) == ids, f"{concept}: plan order at the end"
