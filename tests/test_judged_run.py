"""A sweep judged online by a real local server that fails a third of its requests; rejudge."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from helpers import TINY_PLAN, run_cli, write_plan
from judge_server import JudgeServer, Recorded, ok, status
from test_engine import _records

from introspectd.cli import main

SECRET = "sk-test-THIS-KEY-MUST-NOT-LEAK-0123456789"


def _judged_plan(tmp_path: Path, server: JudgeServer, extra: str = "") -> Path:
    return write_plan(
        tmp_path,
        TINY_PLAN
        + f"""
[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
concurrency = 4
max_attempts = 1
backoff_s = 0.01
timeout_s = 5
{extra}
""",
    )


def _every_third_fails() -> JudgeServer:
    counter = itertools.count()
    lock = threading.Lock()

    def respond(rec: Recorded) -> object:
        with lock:
            n = next(counter)
        return status(503) if n % 3 == 0 else ok()

    return JudgeServer(responder=respond)  # type: ignore[arg-type]


def test_flaky_judge_then_rejudge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", SECRET)
    with _every_third_fails() as server:
        plan = _judged_plan(tmp_path, server)
        assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
        out = tmp_path / "out" / "exp" / "tiny"
        records = _records(out)
        assert len(records) == 32
        failed = [r for r in records if r["judge"] is None]
        judged = [r for r in records if r["judge"] is not None]
        assert failed and judged, "a third of requests fail with max_attempts = 1"
        assert all(r["judge_error"] and "503" in r["judge_error"] for r in failed)
        assert all(
            r["judge"]["answer"] in ("pass", "fail") and r["judge_error"] is None for r in judged
        )
        assert server.max_in_flight <= 4
        assert len(server.requests) == 32, "one attempt per row, none lost, none repeated"
        kept = {r["id"]: r["judge"] for r in judged}

    # status: judge tokens and failures by reason, from the database.
    capsys.readouterr()
    assert main(["status", "--plan", str(plan), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["judge"]["judgements"] == 32 and summary["judge"]["prompt_tokens"] > 0
    assert sum(summary["judge"]["failures_by_reason"].values()) == len(failed)
    assert summary["by_status"]["judge_failed"] == len(failed)

    with JudgeServer() as healthy:
        plan = _judged_plan(tmp_path, healthy)
        capsys.readouterr()
        assert main(["rejudge", "--plan", str(plan)]) == 0
        assert len(healthy.requests) == len(failed), "rejudge sends exactly the failed rows"
    records = _records(out)
    assert all(r["judge"] is not None and r["judge_error"] is None for r in records)
    assert all(r["judge"] == kept[r["id"]] for r in records if r["id"] in kept)
    _assert_no_secret(tmp_path)


def test_rejudge_file_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", SECRET)
    src = tmp_path / "in.jsonl"
    lines = [
        {
            "id": f"x{i}",
            "concept": "fear",
            "was_injected": i % 2 == 0,
            "response": f"r{i}",
            "config": {"layer": 1, "strength": 2.0},
            "judge": None if i % 3 else {"answer": "fail"},
            "judge_error": "boom" if i % 3 else None,
        }
        for i in range(9)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with JudgeServer() as server:
        plan = _judged_plan(tmp_path, server)
        proc = run_cli(
            "rejudge",
            "--input",
            str(src),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--plan",
            str(plan),
            env={"TEST_JUDGE_KEY": SECRET},
        )
        assert proc.returncode == 0, proc.stderr
        assert len(server.requests) == 6
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in lines]
    assert all(r["judge"] is not None for r in out)
    assert [r["judge"] for r in out[::3]] == [{"answer": "fail"}] * 3


def test_bad_key_error_never_leaks_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from judge_server import bad_key

    monkeypatch.setenv("TEST_JUDGE_KEY", SECRET)
    with JudgeServer(default=bad_key()) as server:
        plan = _judged_plan(tmp_path, server)
        assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    records = _records(tmp_path / "out" / "exp" / "tiny")
    assert all(r["judge"] is None and "401" in r["judge_error"] for r in records)
    assert SECRET not in caplog.text
    captured = capfd.readouterr()  # file descriptors: the judge child's log lines too
    assert SECRET not in captured.err + captured.out
    _assert_no_secret(tmp_path)


def _assert_no_secret(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
            if path.suffix == ".sqlite":
                with sqlite3.connect(path) as conn:
                    dump = "\n".join(conn.iterdump())
                assert SECRET not in dump
