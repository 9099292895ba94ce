"""Requested stops: SIGTERM and a GCE preemption notice drain the run and exit 75; the
progress lines carry the live figures as JSON on stdout."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helpers import run_cli, start_run, write_plan
from test_engine import KILL_PLAN, _planned_ids, _records, _stamp, _wait_for_progress


def _start(plan: Path) -> subprocess.Popen[str]:
    return start_run(plan, "--local")


def test_sigterm_without_gcs_exits_75_and_resumes(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, KILL_PLAN)
    out = tmp_path / "out" / "exp" / "tiny"
    proc = _start(plan)
    _wait_for_progress(out / "state.sqlite", 20, proc, random.Random(0))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "rerun the same command to resume" in err
    finished = {r["id"] for r in _records(out)}
    assert 20 <= len(finished) < 128
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert {r["id"] for r in _records(out)} == _planned_ids(
        _stamp(out), ["ocean", "fear"], [1, 3], [2.0, 4.0], 8
    )


class _Metadata(ThreadingHTTPServer):
    preempted = False


class _MetadataHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert self.headers.get("Metadata-Flavor") == "Google"
        body = b"TRUE" if self.server.preempted else b"FALSE"  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_preemption_notice_drains_like_sigterm(tmp_path: Path) -> None:
    server = _Metadata(("127.0.0.1", 0), _MetadataHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/computeMetadata/v1/instance/preempted"
    try:
        plan = write_plan(
            tmp_path, KILL_PLAN + f'\n[upload]\npreemption_url = "{url}"\npreemption_poll_s = 0.1\n'
        )
        out = tmp_path / "out" / "exp" / "tiny"
        proc = _start(plan)
        _wait_for_progress(out / "state.sqlite", 20, proc, random.Random(0))
        server.preempted = True
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 75, err
        assert "preemption notice" in err
    finally:
        server.shutdown()
        server.server_close()


def test_progress_lines_are_pure_json_on_stdout(tmp_path: Path) -> None:
    """Without a terminal each progress line is one JSON object on stdout (Cloud Logging files
    it as jsonPayload, with its severity); the human log lines stay on stderr."""
    plan = write_plan(tmp_path, KILL_PLAN)
    proc = run_cli(
        "run",
        "--plan",
        str(plan),
        "--local",
        "--no-progress",
        env={"INTROSPECTD_LOG_EVERY_S": "0.2"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    summary_at = next(i for i, line in enumerate(out) if line.startswith("done: "))
    progress = [json.loads(line) for line in out[:summary_at]]  # every line before: JSON
    assert progress, proc.stdout
    assert all(p["severity"] == "INFO" and p["message"].startswith("progress ") for p in progress)
    figures = progress[-1]
    assert figures["total"] == 128 and figures["done"] == 128
    assert {"generated", "trials_per_s", "tokens_per_s", "batch_size"} <= set(figures["generation"])
    assert {"judged", "waiting", "failed", "failed_by_reason"} <= set(figures["judge"])
    assert " INFO progress" not in proc.stderr, proc.stderr
    assert all(re.match(r"\d{4}-\d\d-\d\d .* introspectd ", ln) for ln in proc.stderr.splitlines())


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    """The first signal starts a drain that waits for slow judgements; the second cuts it."""
    from judge_server import JudgeServer, hang

    with JudgeServer(default=hang(30)) as server:
        plan = write_plan(
            tmp_path,
            KILL_PLAN
            + f"""
[judge]
base_url = "{server.base_url}"
timeout_s = 60
""",
        )
        out = tmp_path / "out" / "exp" / "tiny"
        proc = _start(plan)
        _wait_for_progress(out / "state.sqlite", 10, proc, random.Random(0))
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "again: exiting now" in err
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert len(_records(out)) == 128


def test_second_process_on_the_same_run_is_refused(tmp_path: Path) -> None:
    """A hanging judge keeps the first process on the run however fast generation is (on an
    idle machine the 128 trials once finished before the second process had started)."""
    from judge_server import JudgeServer, hang

    with JudgeServer(default=hang(60)) as server:
        plan = write_plan(
            tmp_path, KILL_PLAN + f'\n[judge]\nbase_url = "{server.base_url}"\ntimeout_s = 90\n'
        )
        out = tmp_path / "out" / "exp" / "tiny"
        first = _start(plan)
        try:
            _wait_for_progress(out / "state.sqlite", 5, first, random.Random(0))
            second = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
            assert first.poll() is None, "the first process ended before the second started"
            assert second.returncode == 2, second.stderr
            msg = f"another introspectd process (pid {first.pid}) is running this run"
            assert msg in second.stderr
        finally:
            first.send_signal(signal.SIGINT)
            time.sleep(1.0)
            first.send_signal(signal.SIGINT)
            _, err = first.communicate(timeout=60)
    assert first.returncode == 75, err
