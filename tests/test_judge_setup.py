"""Where judging goes, said at start, at the end and by `status` (issue 22 items 6 and 7).

- item 6: test_unset_key_is_said_at_start_end_and_status_then_a_run_with_the_key_grades
- item 7: the same test (the judge reached through $OPENAI_BASE_URL, its host logged and
  stored), test_plan_base_url_wins_over_the_environment, test_the_start_line_names_the_endpoint,
  test_malformed_openai_base_url_is_one_line
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import anyio
import pytest
from helpers import run_cli, write_plan
from judge_server import JudgeServer

from introspectd.judge.client import Judge
from introspectd.protocol.plan import JudgeConfig, load_plan

KEY = "sk-test-SETUP-QWXZ-0123456789"
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

[judge]
api_key_env = "MY_MISSING_KEY"
concurrency = 4
max_attempts = 1
timeout_s = 5
"""
OFF = "no API key in $MY_MISSING_KEY and no [judge] base_url"


def _records(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "out" / "exp" / "tiny" / "ocean.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unset_key_is_said_at_start_end_and_status_then_a_run_with_the_key_grades(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_MISSING_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    plan = write_plan(tmp_path, SIX_TRIALS)
    proc = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"WARNING judging is OFF: {OFF}; answers are generated but not graded" in proc.stderr
    first, second = _summary(proc.stdout)[:2]
    assert first.startswith("done: 6/6 trials generated, 0 judged; results in"), proc.stdout
    assert second == (
        f"6 not judged (judging not configured: {OFF}): set $MY_MISSING_KEY (or [judge] "
        f"base_url), then: introspectd rejudge --plan {plan} (or run again)"
    ), proc.stdout

    status = run_cli("status", "--plan", str(plan))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[1] == "finished 6/6 generated, 0/6 judged", "not called complete"
    assert lines[2].startswith("6 not judged (judging not configured:")

    # With the key set, `run` (not only `rejudge`) grades them, at the endpoint the
    # environment names, which the start line and the stored plan say.
    with JudgeServer() as server:
        env = {"MY_MISSING_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
        proc = run_cli("run", "--plan", str(plan), "--local", "--no-progress", env=env)
        assert proc.returncode == 0, proc.stderr
        assert len(server.requests) == 6
    host = server.base_url.split("/")[2]
    assert (
        f"judge: gpt-5-mini at {host} (from $OPENAI_BASE_URL; chat API, key from "
        "$MY_MISSING_KEY, up to 4 requests in flight)"
    ) in proc.stderr
    assert "judging again 6 answers an earlier run left unjudged" in proc.stderr
    assert KEY not in proc.stderr + proc.stdout
    assert _summary(proc.stdout)[0].startswith("done: 6/6 trials generated, 6 judged; results in")
    progress = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert progress[-1]["done"] == 6, "counted once"
    assert all(r["judge"] is not None and r["judge_error"] is None for r in _records(tmp_path))
    with sqlite3.connect(tmp_path / "out" / "exp" / "tiny" / "state.sqlite") as conn:
        stored = json.loads(conn.execute("SELECT plan_json FROM run").fetchone()[0])
    conn.close()
    assert stored["judge"]["endpoint_host"] == host

    status = run_cli("status", "--plan", str(plan), env={"MY_MISSING_KEY": KEY})
    assert status.stdout.splitlines()[1] == "finished 6/6 generated, 6/6 judged  (complete)"


def test_plan_base_url_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with JudgeServer() as planned, JudgeServer() as from_env:
        monkeypatch.setenv("OPENAI_BASE_URL", from_env.base_url)
        cfg = JudgeConfig(model="m", base_url=planned.base_url, max_attempts=1)

        async def grade() -> None:
            async with Judge(cfg, KEY) as judge:
                outcome = await judge.grade("ocean", True, "I notice the sea.")
                assert outcome.error is None

        anyio.run(grade)
        assert len(planned.requests) == 1 and not from_env.requests


@pytest.mark.parametrize(
    ("base_url", "env_url", "expected"),
    [
        ("", "", "judge: m at api.openai.com (the default endpoint; chat API"),
        ("", "http://judge.internal:8000/v1", "at judge.internal:8000 (from $OPENAI_BASE_URL;"),
        (
            "http://user:pw@127.0.0.1:9/v1",
            "http://judge.internal:8000/v1",
            "at 127.0.0.1:9 (from [judge] base_url;",
        ),
    ],
)
def test_the_start_line_names_the_endpoint(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    base_url: str,
    env_url: str,
    expected: str,
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", env_url)
    plan = write_plan(
        tmp_path,
        SIX_TRIALS.replace(
            'api_key_env = "MY_MISSING_KEY"', 'api_key_env = "TEST_JUDGE_KEY"'
        ).replace("[judge]\n", f'[judge]\nmodel = "m"\nbase_url = "{base_url}"\n'),
    )
    from introspectd.app.start import log_judging

    with caplog.at_level(logging.INFO, logger="introspectd"):
        log_judging(load_plan(plan))
    assert expected in caplog.text
    assert KEY not in caplog.text and "pw" not in caplog.text


def test_malformed_openai_base_url_is_one_line(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, SIX_TRIALS)
    proc = run_cli(
        "run",
        "--plan",
        str(plan),
        "--local",
        env={"MY_MISSING_KEY": KEY, "OPENAI_BASE_URL": "judge.internal:8000"},
    )
    assert proc.returncode == 2
    expected = "introspectd: $OPENAI_BASE_URL: must be an http:// or https:// URL"
    assert proc.stderr.strip() == expected
    assert not (tmp_path / "out").exists(), "refused before anything is created"


def _summary(stdout: str) -> list[str]:
    """The end-of-run lines, after the JSON progress lines stdout gets without a terminal."""
    lines = stdout.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("done: ")) :]
