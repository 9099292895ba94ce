"""`calibrate` and `rejudge` as a user meets them (issue 22 items 8, 20, 21, 22, 23): they show
their progress while grading (a live line on a terminal, JSON progress lines otherwise), share
the run's spending cap, never end as if done when the judge graded nothing, and print label
names literally. Every judge is the real local HTTP server (judge_server.py); every command the
real CLI in a subprocess or on a real pty."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from helpers import REPO, TINY_PLAN, run_cli, write_plan
from judge_server import JudgeServer, labelled_judge, ok, status
from terminal import Terminal

KEY = {"TEST_JUDGE_KEY": "sk-test-judging-commands-0123456789"}


def _plan(tmp_path: Path, server: JudgeServer, extra: str = "", concurrency: int = 2) -> Path:
    return write_plan(
        tmp_path,
        TINY_PLAN
        + f"""
[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
concurrency = {concurrency}
max_attempts = 1
timeout_s = 5
{extra}
""",
    )


def _labels(path: Path, n: int, concept: str = "ocean", model: str = "m") -> Path:
    records = [
        {
            "id": f"r{i}",
            "concept": concept,
            "was_injected": i % 2 == 0,
            "response": f"answer number {i}",
            "config": {"model": model},
            "label": {
                "answer": "pass" if i % 3 else "fail",
                "coherent": True,
                "detected_concept": None,
                "reasoning": "r",
                "refused": False,
            },
            "split": "test",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _calibrations(tmp_path: Path) -> int:
    db = tmp_path / "out" / "exp" / "tiny" / "state.sqlite"
    if not db.is_file():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM calibrations").fetchone()[0])


def _progress(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_a_calibration_the_judge_graded_nothing_of_is_not_stored(tmp_path: Path) -> None:
    labels = _labels(tmp_path / "labels.jsonl", 6)
    with JudgeServer(default=status(500, "outage")) as server:
        plan = _plan(tmp_path, server)
        shown = run_cli("calibrate", "--plan", str(plan), "--labels", str(labels), env=KEY)
    assert shown.returncode == 75, shown.stderr
    assert "calibrate: the judge graded none of 6 labelled records" in shown.stderr
    assert "no grade was stored" in shown.stderr and "Traceback" not in shown.stderr
    assert _calibrations(tmp_path) == 0
    assert not list((tmp_path / "out" / "exp" / "tiny").glob("calibration_*.json"))


def test_calibrate_and_a_file_rejudge_share_the_runs_budget(tmp_path: Path) -> None:
    prices = "price_in_per_mtok = 2\nprice_out_per_mtok = 10000\n"
    labels = _labels(tmp_path / "labels.jsonl", 4)
    with JudgeServer() as server:
        plan = _plan(tmp_path, server, prices + "budget_usd = 1000\n", concurrency=1)
        calibrated = run_cli("calibrate", "--plan", str(plan), "--labels", str(labels), env=KEY)
        assert calibrated.returncode == 0, calibrated.stderr
        assert len(server.requests) == 4
        spent = run_cli("status", "--plan", str(plan), "--json")
        spend = json.loads(spent.stdout)["judge"]["spend_usd"]
        assert spend > 0, "the calibration's requests are counted in the run's spend"

        capped = _plan(tmp_path, server, prices + f"budget_usd = {spend * 0.99}\n", 1)
        again = run_cli("calibrate", "--plan", str(capped), "--labels", str(labels), env=KEY)
        assert again.returncode == 2, again.stderr
        assert "the judge graded none of 4 labelled records: 4× budget reached" in again.stderr
        records = tmp_path / "records.jsonl"
        records.write_text(labels.read_text())
        out = tmp_path / "judged.jsonl"
        rejudged = run_cli(
            "rejudge", "--plan", str(capped), "--input", str(records), "--output", str(out), env=KEY
        )
        assert rejudged.returncode == 2, rejudged.stderr
        assert "budget reached" in rejudged.stderr
        assert len(server.requests) == 4, "nothing is sent past the run's cap"
    assert _calibrations(tmp_path) == 1


def test_a_rejudge_whose_every_grade_fails_does_not_exit_0(tmp_path: Path) -> None:
    with JudgeServer(default=status(500, "outage")) as server:
        plan = _plan(tmp_path, server)
        ran = run_cli("run", "--plan", str(plan), "--local", "--no-progress", env=KEY)
        assert ran.returncode == 0, ran.stderr
        again = run_cli("rejudge", "--plan", str(plan), env=KEY)
        records = _labels(tmp_path / "records.jsonl", 3)
        on_file = run_cli(
            "rejudge",
            "--input",
            str(records),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--plan",
            str(plan),
            env=KEY,
        )
    assert again.returncode == 75, again.stderr
    assert "rejudge: the judge graded none of 32 rows (32× HTTP 500" in again.stderr
    assert on_file.returncode == 75 and "none of 3 records" in on_file.stderr, on_file.stderr


def test_rejudge_prints_json_progress_lines_while_it_grades(tmp_path: Path) -> None:
    records = _labels(tmp_path / "records.jsonl", 24)
    with JudgeServer(default=ok(delay_s=0.1)) as server:
        plan = _plan(tmp_path, server)
        shown = run_cli(
            "rejudge",
            "--plan",
            str(plan),
            "--input",
            str(records),
            "--output",
            str(tmp_path / "judged.jsonl"),
            env={**KEY, "INTROSPECTD_LOG_EVERY_S": "0.3"},
        )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    progress = _progress(shown.stdout)
    assert len(progress) >= 3, shown.stdout
    assert all(p["command"] == "rejudge" and p["total"] == 24 for p in progress)
    done = [p["done"] for p in progress]
    assert done == sorted(done) and done[0] < 24 and done[-1] == 24
    assert progress[-1]["judged"] == 24 and progress[-1]["severity"] == "INFO"
    assert lines[-1].endswith("24 records, 24 sent to the judge: 24 judged, 0 failed")


def test_calibrate_on_a_terminal_shows_a_live_line_and_label_names_literally(
    tmp_path: Path,
) -> None:
    # Rich markup in a concept and a model name must be printed, not interpreted (or raise).
    labels = _labels(tmp_path / "labels.jsonl", 16, concept="[/oops]", model="[bold]m")
    records = [json.loads(line) for line in labels.read_text().splitlines()]
    with JudgeServer(responder=labelled_judge(records), default=ok(delay_s=0.1)) as server:
        plan = _plan(tmp_path, server)
        env = {**os.environ, **KEY, "TERM": "xterm-256color"}
        for name in ("COLUMNS", "LINES", "NO_COLOR", "INTROSPECTD_LOG_EVERY_S"):
            env.pop(name, None)
        argv = [
            sys.executable,
            "-m",
            "introspectd.cli",
            "calibrate",
            "--plan",
            str(plan),
            "--labels",
            str(labels),
        ]
        term = Terminal(argv, 150, 45, env, REPO)
        seen: list[str] = []
        while term.pump(0.2):
            seen += [line for line in term.lines() if line.startswith("judging ")]
        code = term.finish()
        screen = term.text()
    assert code == 0, screen
    assert any("/16 labelled records" in line and "in flight" in line for line in seen), seen
    assert "judging 16/16 labelled records" in screen
    assert "concept [/oops]" in screen and "model [bold]m" in screen
    assert "Traceback" not in screen
