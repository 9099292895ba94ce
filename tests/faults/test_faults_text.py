"""Lone surrogates (issue 22 item 16): `"\\ud800"` is valid JSON, but the string it decodes to
cannot be written as UTF-8. A judge reply, an input file or a row an older version stored may
hold one; no command may crash on it.

- test_judge_reply_with_a_lone_surrogate_does_not_wedge_the_run: a real judged run, export
- test_a_stored_surrogate_row_exports_and_runs: a database as an older version left it
- test_input_files_with_surrogates: report --explorer, explore FILE, rejudge --input
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from explorer_server import explorer
from helpers import run_cli, write_plan
from judge_server import GOOD_RESULT, Action, JudgeServer, Recorded, ok, status

from introspectd.cli import main

BAD = "bad \ud800 surrogate"  # what json.loads makes of "bad \\ud800 surrogate"
FIXED = "bad \ufffd surrogate"
KEY = "sk-test-QWXZ-0123456789"
SIX_TRIALS = """
[model]
name = "builtin:tiny"

[sweep]
concepts = ["ocean"]
layers = [1]
strengths = [2.0]
trials = 3
max_new_tokens = 4
batch_size = 8
"""


def _plan(tmp_path: Path, base_url: str = "") -> Path:
    judge = f'\n[judge]\nbase_url = "{base_url}"\napi_key_env = "TEST_JUDGE_KEY"\n' + (
        "concurrency = 2\nmax_attempts = 1\ntimeout_s = 5\n"
    )
    return write_plan(tmp_path, SIX_TRIALS + (judge if base_url else ""))


def _lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "out" / "exp" / "tiny" / "ocean.jsonl").read_text("utf-8").splitlines()


def _surrogate_replies() -> JudgeServer:
    """Every other reply a judgement whose reasoning escapes a lone surrogate, the others an
    HTTP 400 whose error message does (that one becomes the row's judge_error)."""
    count = iter(range(10**6))

    def respond(rec: Recorded) -> Action:
        if next(count) % 2:
            return status(400, BAD)
        return ok({**GOOD_RESULT, "reasoning": BAD})

    return JudgeServer(responder=respond)


def test_judge_reply_with_a_lone_surrogate_does_not_wedge_the_run(tmp_path: Path) -> None:
    with _surrogate_replies() as server:
        plan = _plan(tmp_path, server.base_url)
        proc = run_cli(
            "run", "--plan", str(plan), "--local", "--no-progress", env={"TEST_JUDGE_KEY": KEY}
        )
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(server.requests) == 6
    records = [json.loads(line) for line in _lines(tmp_path)]
    judged = [r for r in records if r["judge"] is not None]
    failed = [r for r in records if r["judge"] is None]
    assert len(judged) == 3 and len(failed) == 3
    assert all(r["judge"]["reasoning"] == FIXED for r in judged)
    assert all(FIXED in r["judge_error"] for r in failed)
    # Every later command works on the run: export, and run again.
    assert main(["export", "--plan", str(plan)]) == 0
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0


def test_a_stored_surrogate_row_exports_and_runs(tmp_path: Path) -> None:
    plan = _plan(tmp_path)  # judging off: a quick run to get a database
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    db = tmp_path / "out" / "exp" / "tiny" / "state.sqlite"
    # What an older version stored: json.dumps escapes the surrogate, so SQLite took it.
    stored = json.dumps({**GOOD_RESULT, "reasoning": BAD})
    assert "\\ud800" in stored
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE trials SET status = 'judged', judge_json = ?, judge_error = NULL", (stored,)
        )
    conn.close()
    assert main(["export", "--plan", str(plan)]) == 0
    assert all(json.loads(line)["judge"]["reasoning"] == FIXED for line in _lines(tmp_path))
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    assert main(["status", "--plan", str(plan)]) == 0


def _surrogate_records() -> list[dict[str, Any]]:
    return [
        {
            "id": f"r_t{i}",
            "timestamp": "2026-01-01T00:00:00",
            "concept": "ocean",
            "was_injected": i % 2 == 0,
            "response": f"answer {i} {BAD}",
            "config": {
                "model": "m",
                "layer": 1,
                "strength": 2.0,
                "trial": i,
                "prompt_version": "v2",
                "inject_style": "generation",
            },
            "judge": None if i == 3 else {**GOOD_RESULT, "reasoning": BAD},
            "judge_error": f"old error {BAD}" if i == 3 else None,
        }
        for i in range(4)
    ]


def test_input_files_with_surrogates(tmp_path: Path) -> None:
    src = tmp_path / "in" / "m.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps(r) + "\n" for r in _surrogate_records()))  # escaped

    proc = run_cli("report", str(src), "--out", str(tmp_path / "rep"), "--explorer")
    assert proc.returncode == 0, proc.stderr
    assert FIXED in (tmp_path / "rep" / "explorer.html").read_text("utf-8")

    with explorer(str(src)) as server:
        trial = server.get("/api/trial", id="r_t0")
        assert trial["judge"]["reasoning"] == FIXED and trial["response"].endswith(FIXED)

    with JudgeServer(default=ok({**GOOD_RESULT, "reasoning": BAD})) as judge:
        plan = _plan(tmp_path, judge.base_url)
        out = tmp_path / "out.jsonl"
        proc = run_cli(
            "rejudge",
            "--input",
            str(src),
            "--output",
            str(out),
            "--plan",
            str(plan),
            env={"TEST_JUDGE_KEY": KEY},
        )
        assert proc.returncode == 0, proc.stderr
        assert len(judge.requests) == 1
    rejudged = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert rejudged[3]["judge"]["reasoning"] == FIXED
