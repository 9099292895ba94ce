"""Judge faults (issue 11), each against a real local judge server, real CLI runs and SQLite.

- item 3:  test_failed_regrades_keep_previous_grades
- item 8:  test_poison_reply_fails_its_row_and_the_run_goes_on,
           test_long_reasoning_is_truncated_before_it_is_stored
- item 9:  test_long_retry_after_fails_rows_without_stalling_the_others
- item 12: test_echoed_key_fragments_are_redacted, test_redact_forms
- item 14: test_rejudge_refuses_while_run_holds_the_run
- item 19 (part): test_non_json_200_body_is_retried_as_the_readme_says
- issue 22 item 9: test_random_429s_keep_the_limit_near_concurrency,
  test_a_burst_of_429s_still_backs_off
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import run_cli, start_run, write_plan
from judge_server import (
    GOOD_RESULT,
    Action,
    JudgeServer,
    Recorded,
    echo_key,
    huge_reasoning,
    judge_config,
    not_json,
    ok,
    quota,
    rate_limited,
    status,
)

from introspectd.judge.client import Judge, JudgeOutcome
from introspectd.judge.redact import redact
from introspectd.protocol.plan import JudgeConfig

SECRET = "ADVSECRET1234567890abcdefXYZ"
TEN_TRIALS = """
[model]
name = "builtin:tiny"

[sweep]
concepts = ["ocean"]
layers = [1]
strengths = [2.0]
trials = 5
max_new_tokens = 4
batch_size = 8
"""


def _plan(
    tmp_path: Path,
    server: JudgeServer,
    *,
    attempts: int = 1,
    timeout_s: float = 5,
    concurrency: int = 4,
) -> Path:
    return write_plan(
        tmp_path,
        TEN_TRIALS
        + f"""
[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
concurrency = {concurrency}
max_attempts = {attempts}
backoff_s = 0.01
timeout_s = {timeout_s}
""",
    )


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "out" / "exp" / "tiny" / "ocean.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _history(tmp_path: Path) -> list[tuple[str, str | None, str | None]]:
    db = tmp_path / "out" / "exp" / "tiny" / "state.sqlite"
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT trial_id, result_json, error FROM judgements"))


def _cli(*args: str, timeout: float = 120) -> Any:
    return run_cli(*args, env={"TEST_JUDGE_KEY": SECRET}, timeout=timeout)


def _judge_config(server: JudgeServer, **overrides: Any) -> JudgeConfig:
    config: JudgeConfig = judge_config(server, **overrides)
    return config


def _grade(cfg: JudgeConfig, n: int, deadline_s: float = 60.0) -> list[JudgeOutcome]:
    async def main() -> list[JudgeOutcome]:
        out: list[JudgeOutcome] = []
        with anyio.fail_after(deadline_s):
            async with Judge(cfg, SECRET) as judge, anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(_append, out, judge, i)
        return out

    return anyio.run(main)


async def _append(out: list[JudgeOutcome], judge: Judge, i: int) -> None:
    out.append(await judge.grade("ocean", i % 2 == 0, f"response {i}"))


# --- item 3: a failed re-grade keeps the grade it was meant to replace ----------------------


def test_failed_regrades_keep_previous_grades(tmp_path: Path) -> None:
    with JudgeServer() as healthy:
        plan = _plan(tmp_path, healthy, concurrency=1)
        proc = _cli("run", "--plan", str(plan), "--local", "--no-progress")
        assert proc.returncode == 0, proc.stderr
    before = {r["id"]: r["judge"] for r in _records(tmp_path)}
    assert len(before) == 10 and all(before.values())

    with JudgeServer(default=status(401, "invalid key")) as refusing:
        plan = _plan(tmp_path, refusing, concurrency=1)
        proc = _cli("rejudge", "--plan", str(plan), "--all")
        # Not one re-grade came back: not "done" (exit 75, issue 22 item 23), grades kept.
        assert proc.returncode == 75, proc.stderr
        assert len(refusing.requests) == 10
    after = _records(tmp_path)
    assert {r["id"]: r["judge"] for r in after} == before
    assert all(r["judge_error"] is None for r in after)
    assert "the judge graded none of 10 rows (10× HTTP 401" in proc.stderr
    assert "no grade was stored or lost" in proc.stderr
    failures = [h for h in _history(tmp_path) if h[1] is None]
    assert len(failures) == 10 and all("401" in (h[2] or "") for h in failures)

    regraded = {**GOOD_RESULT, "reasoning": "graded again"}
    with JudgeServer(default=quota()) as running_out:
        running_out.script(ok(regraded), ok(regraded), ok(regraded))
        plan = _plan(tmp_path, running_out, concurrency=1)
        proc = _cli("rejudge", "--plan", str(plan), "--all")
        assert proc.returncode == 0, proc.stderr
    after = _records(tmp_path)
    assert sum(r["judge"]["reasoning"] == "graded again" for r in after) == 3
    assert all(
        r["judge"] == before[r["id"]] for r in after if r["judge"]["reasoning"] != "graded again"
    )
    assert "7 re-grades failed; their previous grades are kept" in proc.stdout


# --- item 14: rejudge takes the run's lock ---------------------------------------------------


def test_rejudge_refuses_while_run_holds_the_run(tmp_path: Path) -> None:
    gate = threading.Event()

    def held(rec: Recorded) -> None:
        gate.wait(60)  # keep `run` judging until the test lets it go

    with JudgeServer(responder=held) as server:
        plan = _plan(tmp_path, server, timeout_s=90)
        run = start_run(plan, "--local", env={"TEST_JUDGE_KEY": SECRET})
        try:
            deadline = time.monotonic() + 60
            while not server.requests and time.monotonic() < deadline:
                assert run.poll() is None, run.communicate()[1]
                time.sleep(0.1)
            assert server.requests, "run never reached the judge"
            seen = len(server.requests)
            proc = _cli("rejudge", "--plan", str(plan), timeout=60)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and f"pid {run.pid}" in lines[0], proc.stderr
            assert len(server.requests) == seen, "the refused rejudge sent nothing"
        finally:
            gate.set()
            _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert len(server.requests) == 10, "each trial judged once"


# --- item 8: a poison reply ------------------------------------------------------------------


def test_poison_reply_fails_its_row_and_the_run_goes_on(tmp_path: Path) -> None:
    with JudgeServer() as server:
        server.script(huge_reasoning(70 << 20))
        plan = _plan(tmp_path, server)
        proc = _cli("run", "--plan", str(plan), "--local", "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        records = _records(tmp_path)
        failed = [r for r in records if r["judge"] is None]
        assert len(records) == 10 and len(failed) == 1
        assert "too large" in failed[0]["judge_error"], failed[0]["judge_error"]
        proc = _cli("run", "--plan", str(plan), "--local", "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert len(server.requests) == 10, "the failed row is left for rejudge, not resent"


def test_long_reasoning_is_truncated_before_it_is_stored() -> None:
    with JudgeServer(default=huge_reasoning(100_000)) as server:
        [outcome] = _grade(_judge_config(server), 1)
    assert outcome.result is not None and outcome.error is None
    assert 1000 < len(outcome.result["reasoning"]) <= 8192
    assert outcome.result["reasoning"].endswith("[truncated]")


# --- item 9: a server asking for an hour ----------------------------------------------------


def test_long_retry_after_fails_rows_without_stalling_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="introspectd.judge.client")
    with JudgeServer(default=rate_limited(retry_after_s=3600)) as server:
        outcomes = _grade(_judge_config(server), 4, deadline_s=40)  # the hang guard
    assert len(outcomes) == 4 and all(o.result is None for o in outcomes)
    assert all("asked to wait 3600 s" in (o.error or "") for o in outcomes)
    assert len(server.requests) == 4, "a row that cannot wait is not retried"
    assert "pausing" in caplog.text


# --- item 12: the key echoed in pieces --------------------------------------------------------


def _fragments() -> list[str]:
    groups = " ".join(SECRET[i : i + 4] for i in range(0, len(SECRET), 4))
    return [SECRET, groups, groups[:14], f"{SECRET[:6]}****{SECRET[-4:]}", SECRET[:6]]


def test_redact_forms() -> None:
    for fragment in _fragments()[:4]:
        text = f"Incorrect API key provided: {fragment}. See the docs."
        cleaned = redact(text, SECRET)
        assert "[redacted]" in cleaned and "See the docs." in cleaned, cleaned
        assert SECRET[:6] not in cleaned and "ADVS" not in cleaned, cleaned
    prose = "plain prose, no key: 2024 **bold** a-b. Done ..."
    assert redact(prose, SECRET) == prose


@pytest.mark.parametrize("code", [401, 200])
@pytest.mark.parametrize("form", ["plain", "groups", "masked"])
def test_echoed_key_fragments_are_redacted(code: int, form: str) -> None:
    with JudgeServer(default=echo_key(form, code)) as server:
        [outcome] = _grade(_judge_config(server, max_attempts=1), 1)
    stored = json.dumps([outcome.error, outcome.result])
    assert "[redacted]" in stored, stored
    for fragment in _fragments():
        assert fragment not in stored, (fragment, stored)
    if code == 200:
        assert outcome.result is not None, "a judgement that echoes the key is still a grade"


# --- item 19 (part): a 200 reply that is not JSON --------------------------------------------


@pytest.mark.parametrize(
    "body", [b"<html>502 Bad Gateway</html>", b'{"choices": [{"message": 5}]}']
)
def test_non_json_200_body_is_retried_as_the_readme_says(body: bytes) -> None:
    with JudgeServer() as server:
        server.script(not_json(body))
        [outcome] = _grade(_judge_config(server), 1)
    assert outcome.error is None and outcome.result is not None
    assert outcome.attempts == 2 and len(server.requests) == 2


# --- issue 22 item 9: a steady background of 429s is not a reason to back off ----------------


def _background_429s(share: float, burst: range = range(0)) -> JudgeServer:
    """`share` of requests answered 429 (retry-after 0.5 s) at random, and every request whose
    number is in `burst`; the rest judged after a short think."""
    rng = random.Random(22)
    count = itertools.count()
    lock = threading.Lock()

    def respond(rec: Recorded) -> Action:
        with lock:
            n, roll = next(count), rng.random()
        if n in burst:
            return rate_limited(retry_after_s=0.1)
        return rate_limited(retry_after_s=0.5) if roll < share else ok(delay_s=0.03)

    return JudgeServer(responder=respond)


def _limits_while_grading(cfg: JudgeConfig, n: int) -> tuple[list[int], list[JudgeOutcome]]:
    """Grade `n` rows; the limiter's limit as each row finishes."""
    limits: list[int] = []
    outcomes: list[JudgeOutcome] = []

    async def main() -> None:
        with anyio.fail_after(240):
            async with Judge(cfg, SECRET) as judge, anyio.create_task_group() as tg:

                async def one(i: int) -> None:
                    outcomes.append(await judge.grade("ocean", i % 2 == 0, f"response {i}"))
                    limits.append(judge.stats.current_concurrency)

                for i in range(n):
                    tg.start_soon(one, i)

    anyio.run(main)
    return limits, outcomes


def test_random_429s_keep_the_limit_near_concurrency() -> None:
    with _background_429s(0.08) as server:
        limits, outcomes = _limits_while_grading(
            _judge_config(server, concurrency=8, max_attempts=6), 400
        )
        statuses = server.statuses()
    assert all(o.error is None for o in outcomes)
    share = statuses.count(429) / len(statuses)
    assert 0.04 < share < 0.13, share  # the background the server was told to send
    after_slow_start = sorted(limits[50:])
    assert after_slow_start[len(after_slow_start) // 10] >= 7, after_slow_start  # 90% of the time


def test_a_burst_of_429s_still_backs_off() -> None:
    with _background_429s(0.08, burst=range(150, 230)) as server:
        limits, outcomes = _limits_while_grading(
            _judge_config(server, concurrency=8, max_attempts=20), 400
        )
    assert all(o.error is None for o in outcomes)
    assert max(limits[:100]) == 8
    assert min(limits) <= 2, "100% 429s for 80 requests: backed off"
    assert limits[-1] >= 6, "and won back once the burst ended"
