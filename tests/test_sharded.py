"""Sharded runs: three real shard processes against fake-gcs-server, merged by `export --from`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gcs_emulator import BUCKET, GcsEmulator
from helpers import TINY_PLAN, run_cli, start_run, write_plan
from test_engine import _planned_ids, _records

PLAN = (
    TINY_PLAN
    + f"""
[upload]
gcs = "gs://{BUCKET}/sweeps"
every_trials = 4
min_interval_s = 0
"""
)
STAMP = "20260101_120000"


def _sharded_plan(tmp_path: Path) -> Path:
    return write_plan(
        tmp_path,
        f'[run]\noutput_dir = "{tmp_path / "out"}"\nexperiment_id = "exp"\n'
        f'stamp = "{STAMP}"\n' + PLAN,
    )


def test_three_shards_merge_to_the_unsharded_plan(
    tmp_path: Path, gcs_emulator: GcsEmulator
) -> None:
    plan = _sharded_plan(tmp_path)
    procs = [
        start_run(plan, env={"BATCH_TASK_INDEX": str(i), "BATCH_TASK_COUNT": "3"}) for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    shard_dirs = sorted(p.name for p in (tmp_path / "out" / "exp" / "tiny").iterdir())
    assert shard_dirs == ["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"]
    per_shard = [
        {r["id"] for r in _records(tmp_path / "out" / "exp" / "tiny" / d)} for d in shard_dirs
    ]
    assert not (per_shard[0] & per_shard[1]) and not (per_shard[1] & per_shard[2])
    assert max(map(len, per_shard)) - min(map(len, per_shard)) <= 1

    merged = tmp_path / "merged"
    done = run_cli(
        "export", "--plan", str(plan), "--from", f"gs://{BUCKET}/sweeps", "--out", str(merged)
    )
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in _records(merged)]
    assert len(ids) == len(set(ids))
    assert set(ids) == _planned_ids(STAMP, ["ocean", "fear"], [1, 3], [2.0, 4.0], 2)
    status = run_cli("status", "--plan", str(plan), "--from", f"gs://{BUCKET}/sweeps", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["is_complete"] is True


def test_missing_shard_is_named_and_fails(tmp_path: Path, gcs_emulator: GcsEmulator) -> None:
    plan = _sharded_plan(tmp_path)
    for i in (0, 2):
        done = run_cli("run", "--plan", str(plan), "--no-progress", "--shard", f"{i}/3")
        assert done.returncode == 0, done.stderr
    status = run_cli("status", "--plan", str(plan), "--from", f"gs://{BUCKET}/sweeps", "--json")
    assert status.returncode == 1
    summary = json.loads(status.stdout)
    assert summary["shards_missing"] == ["shard-1-of-3"] and summary["missing_trials"] > 0
    export = run_cli(
        "export",
        "--plan",
        str(plan),
        "--from",
        f"gs://{BUCKET}/sweeps",
        "--out",
        str(tmp_path / "merged"),
    )
    assert export.returncode == 1
    assert "missing shards shard-1-of-3" in export.stderr


def test_batch_render_reads_a_gs_plan(tmp_path: Path, gcs_emulator: GcsEmulator) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
    )
    client.bucket(BUCKET).blob("plans/sweep.toml").upload_from_string(
        _sharded_plan(tmp_path).read_text()
    )
    uri = f"gs://{BUCKET}/plans/sweep.toml"
    proc = run_cli(
        "batch",
        "render",
        "--plan",
        uri,
        "--tasks",
        "3",
        "--image",
        "img:1",
        "--secret",
        "projects/p/secrets/openai-api-key/versions/latest",
    )
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    group = job["taskGroups"][0]
    assert group["taskCount"] == 3
    runnable = group["taskSpec"]["runnables"][0]["container"]
    assert uri in " ".join([*runnable.get("commands", []), runnable.get("entrypoint", "")])
    missing = run_cli(
        "batch",
        "render",
        "--plan",
        f"gs://{BUCKET}/plans/nope.toml",
        "--tasks",
        "3",
        "--image",
        "img:1",
    )
    assert missing.returncode == 2 and "plan file not found" in missing.stderr


@pytest.mark.parametrize("command", ["status", "export"])
def test_gather_from_a_missing_bucket_is_one_line_and_2(
    tmp_path: Path, gcs_emulator: GcsEmulator, command: str
) -> None:
    """`status/export --from` a bucket that does not exist was a traceback (issue 12)."""
    plan = _sharded_plan(tmp_path)
    proc = run_cli(command, "--plan", str(plan), "--from", "gs://no-such-bucket/sweeps")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "introspectd: gs://no-such-bucket/sweeps: bucket gs://no-such-bucket does not exist"
    ]
