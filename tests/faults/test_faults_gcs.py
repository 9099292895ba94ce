"""Fault suite — GCS outages around a run (issue 11), with a real fake-gcs-server process
(stopped for an outage, restarted with its data) or a proxy answering 503.

- item 2: test_failed_final_upload_exits_75_and_the_next_attempt_uploads
- item 7: test_gcs_outage_at_start_is_one_line_and_75 (connection refused; 503s),
          test_unreachable_gs_plan_is_one_line_and_75
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gcs_emulator import BUCKET, FaultyProxy, GcsEmulator
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from helpers import TINY_PLAN, run_cli, start_run, write_plan
from judge_server import JudgeServer, ok
from test_faults_signals import StderrLines, assert_one_line_error

GCS_PLAN = TINY_PLAN + f'\n[upload]\ngcs = "gs://{BUCKET}/sweeps"\n'


def test_failed_final_upload_exits_75_and_the_next_attempt_uploads(
    tmp_path: Path, gcs_emulator: GcsEmulator
) -> None:
    """Item 2: GCS down for the final upload meant `done`, exit 0, and Cloud Batch deleting
    the VM with GCS behind. Now exit 75 and one line; the rerun uploads and exits 0."""
    with JudgeServer(default=ok(delay_s=0.15)) as server:  # judging keeps it going ~5 s
        plan = write_plan(
            tmp_path, GCS_PLAN + f'\n[judge]\nbase_url = "{server.base_url}"\nconcurrency = 1\n'
        )
        proc = start_run(plan, env={"INTROSPECTD_LOG": "INFO"})
        err = StderrLines(proc)
        err.wait_for("selected trials to generate")  # the restore is over
        gcs_emulator.stop()
        text = err.rest(timeout_s=120)
        assert proc.returncode == 75, text
        assert_one_line_error(text, "introspectd: final snapshot NOT uploaded")
        gcs_emulator.start()
        again = run_cli("run", "--plan", str(plan), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "final snapshot uploaded" in again.stderr


@pytest.mark.parametrize("outage", ["refused", "503"])
def test_gcs_outage_at_start_is_one_line_and_75(
    tmp_path: Path, gcs_emulator: GcsEmulator, gcs_proxy: FaultyProxy, outage: str
) -> None:
    """Item 7: an unreachable GCS at start was a 129-line traceback and exit 1 (the task
    failed for good). Now one line and exit 75; once GCS answers, the run proceeds."""
    plan = write_plan(tmp_path, GCS_PLAN)
    if outage == "refused":
        gcs_emulator.stop()  # the proxy would answer 503 "upstream unreachable": bypass it
        env = {"STORAGE_EMULATOR_HOST": gcs_emulator.url}
    else:
        gcs_proxy.down = True  # every request answered 503
        env = {}
    proc = run_cli("run", "--plan", str(plan), "--no-progress", env=env, timeout=120)
    assert proc.returncode == 75, proc.stderr
    assert_one_line_error(proc.stderr, "introspectd: cannot reach gs://")
    if outage == "refused":
        gcs_emulator.start()  # same port, same data
    again = run_cli(
        "run", "--plan", str(plan), "--no-progress", env={"STORAGE_EMULATOR_HOST": gcs_emulator.url}
    )
    assert again.returncode == 0, again.stderr


def test_unreachable_gs_plan_is_one_line_and_75(tmp_path: Path, gcs_emulator: GcsEmulator) -> None:
    """Item 7: a Cloud Batch task reads its plan from GCS first; an outage there was exit 2
    ("bad input"), which fails the task for good. Now exit 75, one line."""
    plan = write_plan(tmp_path, TINY_PLAN)
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_emulator.url},
    )
    client.bucket(BUCKET).blob("plans/plan.toml").upload_from_filename(str(plan))
    uri = f"gs://{BUCKET}/plans/plan.toml"
    gcs_emulator.stop()
    proc = run_cli("run", "--plan", uri, "--local", "--no-progress", timeout=120)
    assert proc.returncode == 75, proc.stderr
    assert_one_line_error(proc.stderr, f"introspectd: {uri}: cannot read plan file now")
    gcs_emulator.start()
    again = run_cli("run", "--plan", uri, "--local", "--no-progress")
    assert again.returncode == 0, again.stderr
