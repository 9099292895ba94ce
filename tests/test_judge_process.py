"""The run's judge lives in a child process: its death fails only what it held, and it never
outlives its parent."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers import start_run
from judge_server import JudgeServer, Recorded, ok
from test_engine import _records
from test_judged_run import SECRET, _judged_plan

from introspectd.cli import main


def _judge_children(parent: int) -> list[int]:
    """Live `introspectd.judge.process` processes whose parent is `parent` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(ppid) == parent and state != "Z" and b"introspectd.judge.process" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_judge_fails_its_trials_and_rejudge_finishes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", SECRET)
    lock = threading.Lock()
    seen = []

    def kill_judge_on_the_fifth(rec: Recorded) -> object:
        with lock:
            seen.append(rec)
            if len(seen) == 5:
                for pid in _judge_children(os.getpid()):
                    os.kill(pid, signal.SIGKILL)
        return ok()

    with JudgeServer(responder=kill_judge_on_the_fifth) as server:  # type: ignore[arg-type]
        plan = _judged_plan(tmp_path, server)
        assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    records = _records(tmp_path / "out" / "exp" / "tiny")
    assert len(records) == 32
    lost = [r for r in records if r["judge"] is None]
    assert 32 - 5 <= len(lost) < 32, "the child answered at most the four before it died"
    assert all("judge process exited with code -9" in r["judge_error"] for r in lost)
    with JudgeServer() as healthy:
        plan = _judged_plan(tmp_path, healthy)
        assert main(["rejudge", "--plan", str(plan)]) == 0
        assert len(healthy.requests) == len(lost)
    assert all(r["judge"] is not None for r in _records(tmp_path / "out" / "exp" / "tiny"))


def test_the_judge_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    with JudgeServer(latency_s=3.0) as server:
        plan = _judged_plan(tmp_path, server)
        run = start_run(plan, "--local", env={"TEST_JUDGE_KEY": SECRET})
        try:
            deadline = time.monotonic() + 120
            while not server.requests and time.monotonic() < deadline:
                assert run.poll() is None, run.stderr.read() if run.stderr else ""
                time.sleep(0.05)
            children = _judge_children(run.pid)
            assert len(children) == 1
            run.send_signal(signal.SIGKILL)
            run.wait()
            deadline = time.monotonic() + 10
            while _is_alive(children[0]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _is_alive(children[0]), "an orphaned judge must not keep grading"
        finally:
            if run.poll() is None:
                run.kill()
