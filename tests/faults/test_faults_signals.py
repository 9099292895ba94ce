"""Fault suite — signals at every phase (issue 11). Real processes, real signals, a real judge
server and a real fake-gcs-server; each test fails on the code before the fix.

- item 1:  test_sigterm_after_generation_drains_despite_a_hanging_judge
- item 16: test_signal_during_gcs_restore_is_one_line_and_75,
           test_interrupted_rejudge_file_writes_what_was_graded,
           test_interrupted_rejudge_plan_keeps_what_was_graded
- item 19: test_orphaned_judge_child_exits_quietly_after_a_double_sigterm
"""

from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gcs_emulator import BUCKET, GcsEmulator
from helpers import REPO, TINY_PLAN, run_cli, start_run, write_plan
from judge_server import JudgeServer, hang, ok

RUN_DIR = Path("out/exp/tiny")


class StderrLines:
    """Reads a process's stderr in a thread, so a test can wait for a line and still get all of
    it at the end."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"exited before {text!r}:\n{''.join(self.lines)}")
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout_s:.0f} s:\n{''.join(self.lines)}")

    def rest(self, timeout_s: float) -> str:
        """Everything, once stderr closes (the process and any child holding it are gone)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self.proc.wait(timeout=10)
                return "".join(self.lines)
            self.lines.append(line)
        self.proc.kill()
        raise AssertionError(f"still running after {timeout_s:.0f} s:\n{''.join(self.lines)}")


def assert_one_line_error(err: str, starts: str) -> None:
    assert "Traceback" not in err, err
    ours = [line for line in err.splitlines() if line.startswith("introspectd: ")]
    assert len(ours) == 1 and ours[0].startswith(starts), err


def statuses(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM trials GROUP BY status").fetchall())


def judged_plan(tmp_path: Path, server: JudgeServer, concurrency: int = 2) -> Path:
    return write_plan(
        tmp_path,
        TINY_PLAN
        + f"""
[judge]
base_url = "{server.base_url}"
concurrency = {concurrency}
timeout_s = 60
max_attempts = 3
backoff_s = 0.1
""",
    )


def test_sigterm_after_generation_drains_despite_a_hanging_judge(tmp_path: Path) -> None:
    """Item 1: the drain has one deadline from the signal, whatever the judge backlog; the
    trials the judge held stay `generated` and the next run judges them."""
    with JudgeServer(default=hang(60)) as server:
        plan = judged_plan(tmp_path, server)
        proc = start_run(plan, "--local", env={"INTROSPECTD_LOG": "INFO"})
        err = StderrLines(proc)
        err.wait_for("generation finished")
        proc.send_signal(signal.SIGTERM)
        text = err.rest(timeout_s=60)  # was unbounded (10 min); the latency: bench/stop_latency.py
        assert proc.returncode == 75, text
        assert "Traceback" not in text, text
        assert statuses(tmp_path / RUN_DIR / "state.sqlite") == {"generated": 32}
        server.default = ok()
        done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert statuses(tmp_path / RUN_DIR / "state.sqlite") == {"judged": 32}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_gcs_restore_is_one_line_and_75(
    tmp_path: Path, gcs_emulator: GcsEmulator, signum: signal.Signals
) -> None:
    """Item 16: a signal before the engine runs (here while the restore keeps retrying an
    unreachable GCS) was exit 143 without a word, or a KeyboardInterrupt traceback."""
    plan = write_plan(tmp_path, TINY_PLAN + f'[upload]\ngcs = "gs://{BUCKET}/sweeps"\n')
    gcs_emulator.stop()
    proc = start_run(plan)
    lock = tmp_path / RUN_DIR / ".introspectd.lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the lock is taken just before the restore starts
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert_one_line_error(err, f"introspectd: received {signum.name}")


def _seed_record(i: int) -> dict[str, object]:
    return {
        "id": f"20260123_143022_fear_injection_L1_S2.0_t{i}",
        "timestamp": "2026-01-23T14:30",
        "concept": "fear",
        "was_injected": True,
        "response": f"response {i}",
        "config": {"model": "m", "layer": 1, "strength": 2.0, "trial": i},
        "judge": None,
        "judge_error": "boom",
    }


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_rejudge_file_writes_what_was_graded(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Item 16: `rejudge --input/--output` stopped by a signal wrote nothing (a traceback or a
    silent death); now the output holds every grade received, the rest unchanged, exit 75."""
    src, dest = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [json.dumps(_seed_record(i)) for i in range(8)]
    src.write_text("".join(f"{line}\n" for line in lines))
    with JudgeServer(default=hang(60)) as server:
        server.script(ok(), ok(), ok())
        plan = judged_plan(tmp_path, server, concurrency=1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "introspectd.cli", "rejudge", "--plan", str(plan),
             "--input", str(src), "--output", str(dest)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(server.requests) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # three graded, the fourth hanging
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert_one_line_error(err, f"introspectd: stopped by {signum.name}")
    out = dest.read_text().splitlines()
    assert [json.loads(line)["judge"] is not None for line in out] == [True] * 3 + [False] * 5
    assert out[3:] == lines[3:]


def test_orphaned_judge_child_exits_quietly_after_a_double_sigterm(tmp_path: Path) -> None:
    """Item 19: the second SIGTERM exits the run at once; its judge child, left with a broken
    pipe, printed a BrokenPipeError traceback. It must leave without a word."""
    with JudgeServer(default=hang(60)) as server:
        plan = judged_plan(tmp_path, server)
        proc = start_run(plan, "--local", env={"INTROSPECTD_LOG": "INFO"})
        err = StderrLines(proc)
        err.wait_for("generation finished")
        deadline = time.monotonic() + 30
        while len(server.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the child holds trials
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        text = err.rest(timeout_s=30)  # stderr closes once the child is gone too
    assert proc.returncode == 75, text
    assert "again: exiting now" in text
    assert "Traceback" not in text and "BrokenPipeError" not in text, text


def test_interrupted_rejudge_plan_keeps_what_was_graded(tmp_path: Path) -> None:
    """Item 16 (the --plan form): a signal saves the grades received, one line, exit 75."""
    plan = write_plan(tmp_path, TINY_PLAN)  # no judge: every trial ends `judge_failed`
    first = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert first.returncode == 0, first.stderr
    with JudgeServer(default=hang(60)) as server:
        plan = judged_plan(tmp_path, server, concurrency=1)
        server.script(ok(), ok(), ok())
        proc = subprocess.Popen(
            [sys.executable, "-m", "introspectd.cli", "rejudge", "--plan", str(plan)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(server.requests) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert_one_line_error(err, "introspectd: stopped by SIGTERM")
    assert statuses(tmp_path / RUN_DIR / "state.sqlite").get("judged") == 3
