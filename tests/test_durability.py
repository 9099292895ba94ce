"""Spot safety end to end: real processes, a real fake-gcs-server, SIGKILL and SIGTERM."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gcs_emulator import BUCKET, FaultyProxy, GcsEmulator
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from helpers import TINY_PLAN, jsonl_lines, run_cli, start_run, write_plan
from test_engine import _planned_ids, _records, _stamp, _wait_for_progress

GCS_PLAN = (
    TINY_PLAN.replace("trials = 2", "trials = 6").replace(
        "max_new_tokens = 8", "max_new_tokens = 16"
    )
    + f"""
[upload]
gcs = "gs://{BUCKET}/sweeps"
every_trials = 8
min_interval_s = 0
"""
)
RUN_DIR = "exp/tiny"


def _bucket() -> storage.Bucket:
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
    )
    return client.bucket(BUCKET)


def _gcs_records(bucket: storage.Bucket) -> dict[str, dict]:  # type: ignore[type-arg]
    manifest = json.loads(bucket.blob(f"sweeps/{RUN_DIR}/manifest.json").download_as_bytes())
    out = {}
    for name, obj in manifest["objects"].items():
        if name.endswith(".jsonl"):
            text = bucket.blob(f"sweeps/{RUN_DIR}/{obj['object']}").download_as_bytes().decode()
            for line in jsonl_lines(text):
                record = json.loads(line)
                assert record["id"] not in out
                out[record["id"]] = record
    return out


def _start(plan: Path) -> subprocess.Popen[str]:
    return start_run(plan, env={"INTROSPECTD_LOG": "INFO"})


def test_uploads_match_local_files(tmp_path: Path, gcs_emulator: GcsEmulator) -> None:
    plan = write_plan(tmp_path, GCS_PLAN)
    done = run_cli("run", "--plan", str(plan), "--no-progress")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / RUN_DIR
    local = {r["id"]: r for r in _records(out)}
    assert _gcs_records(_bucket()) == local
    assert len(local) == 96


def test_sigkill_and_lost_disks_then_resume(tmp_path: Path, gcs_emulator: GcsEmulator) -> None:
    plan = write_plan(tmp_path, GCS_PLAN)
    out = tmp_path / "out" / RUN_DIR
    rng = random.Random(3)
    uploaded: dict[str, str] = {}
    targets = [0, *sorted(rng.sample(range(4, 92), 10))]
    for i, target in enumerate(targets):
        if i % 3 == 2 and out.exists():
            shutil.rmtree(out)  # a fresh VM: only what reached GCS survives
        proc = _start(plan)
        _wait_for_progress(out / "state.sqlite", target, proc, rng)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        try:
            in_gcs = _gcs_records(_bucket())
        except Exception:
            in_gcs = {}
        for trial_id, record in in_gcs.items():
            # Trials that reached GCS are restored, never regenerated: same timestamp forever.
            assert uploaded.setdefault(trial_id, record["timestamp"]) == record["timestamp"]
    shutil.rmtree(out, ignore_errors=True)
    done = run_cli("run", "--plan", str(plan), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "restored snapshot" in done.stderr
    local = {r["id"]: r for r in _records(out)}
    planned = _planned_ids(_stamp(out), ["ocean", "fear"], [1, 3], [2.0, 4.0], 6)
    assert set(local) == planned
    assert _gcs_records(_bucket()) == local
    assert uploaded, "some snapshots should have landed before the kills"
    assert all(local[i]["timestamp"] == ts for i, ts in uploaded.items())


def _gone_is_fine(function: object, path: str, exc_info: tuple[type, BaseException, Any]) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def test_sigterm_exits_75_after_final_upload_and_resumes(
    tmp_path: Path, gcs_emulator: GcsEmulator
) -> None:
    plan = write_plan(tmp_path, GCS_PLAN.replace("every_trials = 8", "every_trials = 1000"))
    out = tmp_path / "out" / RUN_DIR
    proc = _start(plan)
    _wait_for_progress(out / "state.sqlite", 30, proc, random.Random(0))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)  # a hang guard; the latency is bench/stop_latency.py
    assert proc.returncode == 75, err
    assert "final snapshot uploaded" in err
    in_gcs = _gcs_records(_bucket())
    assert len(in_gcs) >= 30
    # The machine is lost: only GCS remains. SQLite may remove its -wal file while the tree
    # goes (a fresh-clone CI run saw it vanish mid-rmtree once), so a file already gone is fine.
    shutil.rmtree(out, onerror=_gone_is_fine)
    done = run_cli("run", "--plan", str(plan), "--no-progress")
    assert done.returncode == 0, done.stderr
    local = {r["id"]: r for r in _records(out)}
    assert len(local) == 96
    assert all(local[i]["timestamp"] == r["timestamp"] for i, r in in_gcs.items())


def test_gcs_run_needs_a_fixed_experiment_id(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, f'[run]\noutput_dir = "{tmp_path}"\n' + GCS_PLAN)
    proc = run_cli("run", "--plan", str(plan))
    assert proc.returncode == 2
    assert "[run] experiment_id: required when [upload] gcs is set" in proc.stderr


def test_flaky_gcs_never_stops_generation_and_uploads_catch_up(
    tmp_path: Path, gcs_proxy: FaultyProxy
) -> None:
    """Through a proxy answering 503 to a third of requests and dropping every other upload's
    reply, the run finishes and GCS ends equal to the local files. Uploads that slow can miss
    the final upload's time budget: that attempt exits 75 (never 0 without the final snapshot
    in GCS) and the next one, as Cloud Batch would start it, uploads."""
    gcs_proxy.fail_before = 0.33
    gcs_proxy.drop_reply_every_other_upload = True
    plan = write_plan(tmp_path, GCS_PLAN)
    for _ in range(3):
        done = run_cli("run", "--plan", str(plan), "--no-progress")
        if done.returncode != 75:
            break
        assert "final snapshot NOT uploaded" in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert gcs_proxy.failed > 0 and gcs_proxy.dropped_replies > 0
    gcs_proxy.fail_before = 0.0
    local = {r["id"]: r for r in _records(tmp_path / "out" / RUN_DIR)}
    assert len(local) == 96
    assert _gcs_records(_bucket()) == local


@pytest.mark.parametrize("fault", ["no-bucket", "403"])
def test_missing_bucket_or_no_permission_is_one_line_and_2_before_any_work(
    tmp_path: Path, gcs_proxy: FaultyProxy, fault: str
) -> None:
    """A bucket that does not exist read as "no snapshot yet": the whole sweep ran, then every
    upload failed and the run exited 75, which Cloud Batch retries to no end. No permission
    was a traceback. Both are the user's to fix: one line, exit 2, before any work."""
    body = GCS_PLAN
    if fault == "no-bucket":
        body = GCS_PLAN.replace(f"gs://{BUCKET}/", "gs://no-such-bucket/")
    else:
        gcs_proxy.down, gcs_proxy.fail_status = True, 403
    plan = write_plan(tmp_path, body)
    proc = run_cli("run", "--plan", str(plan), "--no-progress", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    expected = "does not exist" if fault == "no-bucket" else "permission denied (injected)"
    assert lines[0].startswith("introspectd: gs://") and expected in lines[0], lines[0]
    assert not list((tmp_path / "out").rglob("*.jsonl"))
    assert not list((tmp_path / "out").rglob("state.sqlite"))
