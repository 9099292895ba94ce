"""Filesystem and storage faults: real SQLite files, real damage, real fake-gcs-server.

Issue 11 items covered:

- item 4  results without their database are never overwritten:
          test_results_without_database_are_kept[deleted|empty]
- item 5  `export`/`status --from` never merge different runs (stamps) into one count:
          test_gcs_export_refuses_to_merge_different_runs
- item 6  a damaged local database: restored from a good GCS snapshot, kept as .bak:
          test_damaged_local_database_restores_the_gcs_snapshot; without GCS one line, exit 2:
          test_damaged_database_is_one_line[truncated|garbage-page-3] (also item 18)
- item 13 a symlinked `.introspectd.lock` is refused and its target untouched:
          test_symlinked_lock_is_refused
- item 18 `status`/`export`/`run` on a read-only copy of a run: test_read_only_copy
- item 19a a resumed run counts rows left `generated` once: test_resume_counts_generated_rows_once
- item 19c a damaged or older sibling `*-sweep` database neither blocks nor is written by
          `status` of a plan without experiment_id: test_status_skips_and_never_writes_siblings
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from gcs_emulator import BUCKET, GcsEmulator
from helpers import REPO, TINY_PLAN, run_cli, start_run, write_plan

RUN = Path("out/exp/tiny")
PAGE = 4096  # SQLite's default page size, which the run database uses


def _records(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.open()]


def _one_line_error(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The process failed with exit 2 and exactly one line on stderr (no traceback)."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished local run of TINY_PLAN (32 trials), copied by each test that needs one."""
    base = tmp_path_factory.mktemp("finished")
    done = run_cli("run", "--plan", str(write_plan(base, TINY_PLAN)), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    return base / RUN


@pytest.fixture
def run_copy(tmp_path: Path, finished_run: Path) -> Iterator[tuple[Path, Path]]:
    """(plan, run directory): a private copy of the finished run, and a plan that opens it."""
    shutil.copytree(finished_run, tmp_path / RUN)
    yield write_plan(tmp_path, TINY_PLAN), tmp_path / RUN


# --- item 4 -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "empty"])
def test_results_without_database_are_kept(run_copy: tuple[Path, Path], how: str) -> None:
    plan, out = run_copy
    before = {f.name: f.read_bytes() for f in out.glob("*.jsonl")}
    assert len(before) == 2 and all(before.values())
    for db in out.glob("state.sqlite*"):
        db.unlink()
    if how == "empty":
        (out / "state.sqlite").write_bytes(b"")
    again = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    _one_line_error(again, str(out), "fear.jsonl", "no run database")
    assert {f.name: f.read_bytes() for f in out.glob("*.jsonl")} == before


# --- item 6 (no GCS) and item 18: a damaged database is one line -----------------------------


def _damage(db: Path, how: str) -> None:
    if how == "truncated":
        with db.open("r+b") as f:
            f.truncate(db.stat().st_size // 2)
    else:  # garbage over page 3, as a bad disk block would leave it
        with db.open("r+b") as f:
            f.seek(2 * PAGE)
            f.write(bytes(range(256)) * (PAGE // 256))


@pytest.mark.parametrize("how", ["truncated", "garbage-page-3"])
def test_damaged_database_is_one_line(run_copy: tuple[Path, Path], how: str) -> None:
    plan, out = run_copy
    _damage(out / "state.sqlite", how)
    damaged = (out / "state.sqlite").read_bytes()
    for args in (("run", "--local", "--no-progress"), ("status",), ("export",)):
        proc = run_cli(args[0], "--plan", str(plan), *args[1:])
        _one_line_error(proc, str(out / "state.sqlite"), "damaged")
    assert (out / "state.sqlite").read_bytes() == damaged  # nothing tried to "repair" it


# --- item 6 with GCS ------------------------------------------------------------------------

GCS_PLAN = (
    TINY_PLAN
    + f"""
[upload]
gcs = "gs://{BUCKET}/sweeps"
every_trials = 1000
min_interval_s = 0
"""
)


def test_damaged_local_database_restores_the_gcs_snapshot(
    tmp_path: Path, gcs_emulator: GcsEmulator
) -> None:
    plan = write_plan(tmp_path, GCS_PLAN)
    out = tmp_path / RUN
    first = run_cli("run", "--plan", str(plan), "--no-progress")
    assert first.returncode == 0, first.stderr
    want = {r["id"]: r for r in _records(out)}
    assert len(want) == 32
    for how in ("truncated", "garbage-page-3"):
        _damage(out / "state.sqlite", how)
        damaged = (out / "state.sqlite").read_bytes()
        again = run_cli("run", "--plan", str(plan), "--no-progress")
        assert again.returncode == 0, again.stderr
        assert "Traceback" not in again.stderr and "is damaged" in again.stderr, again.stderr
        assert "done: 32/32" in again.stdout
        assert {r["id"]: r for r in _records(out)} == want  # restored, nothing regenerated
        kept = [p for p in out.glob("state.sqlite*.bak") if p.read_bytes() == damaged]
        assert len(kept) == 1, sorted(p.name for p in out.iterdir())
    assert (out / "state.sqlite.bak").is_file()


# --- item 5 ---------------------------------------------------------------------------------


def test_gcs_export_refuses_to_merge_different_runs(
    tmp_path: Path, gcs_emulator: GcsEmulator
) -> None:
    plan = write_plan(tmp_path, GCS_PLAN.replace("trials = 2", "trials = 1"))
    uri = f"gs://{BUCKET}/sweeps"
    whole = run_cli("run", "--plan", str(plan), "--no-progress")
    assert whole.returncode == 0, whole.stderr
    with closing(sqlite3.connect(tmp_path / RUN / "state.sqlite")) as conn:
        stamp = str(conn.execute("SELECT stamp FROM run").fetchone()[0])
    shards = [start_run(plan, "--shard", f"{i}/2") for i in range(2)]
    for proc in shards:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    merged = tmp_path / "merged"
    export = run_cli("export", "--plan", str(plan), "--from", uri, "--out", str(merged))
    line = _one_line_error(export, "different runs", stamp, "shard-0-of-2", "INTROSPECTD_STAMP")
    assert "(unsharded)" in line
    status = run_cli("status", "--plan", str(plan), "--from", uri, "--json")
    _one_line_error(status, "different runs")
    assert not merged.exists()

    chosen = {"INTROSPECTD_STAMP": stamp}
    export = run_cli("export", "--plan", str(plan), "--from", uri, "--out", str(merged), env=chosen)
    assert export.returncode == 0, export.stderr
    assert "exported 16 trials (16/16 of the plan)" in export.stdout
    assert "ignoring shard-0-of-2" in export.stderr
    ids = [r["id"] for r in _records(merged)]
    assert len(ids) == len(set(ids)) == 16 and all(i.startswith(stamp) for i in ids)
    status = run_cli("status", "--plan", str(plan), "--from", uri, "--json", env=chosen)
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert (summary["finished"], summary["planned"], summary["is_complete"]) == (16, 16, True)


# --- item 13 --------------------------------------------------------------------------------


def test_symlinked_lock_is_refused(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)
    (tmp_path / RUN).mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / RUN / ".introspectd.lock").symlink_to(victim)
    proc = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    _one_line_error(proc, ".introspectd.lock", "symbolic link")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / RUN / "state.sqlite").exists()


# --- item 18: a read-only copy --------------------------------------------------------------


def _run_read_only(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with `directory` read-only. chmod does not stop root, so as root the directory
    is bind-mounted read-only in a private mount namespace (needs CAP_SYS_ADMIN)."""
    cli = [sys.executable, "-m", "introspectd.cli", *args]
    if os.geteuid() != 0:
        return subprocess.run(cli, capture_output=True, text=True, cwd=REPO, timeout=120)
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(directory), *cli],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def _read_only_or_skip(directory: Path) -> None:
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(directory)], check=True)
        return
    probe = _run_read_only(directory, "--help")
    if probe.returncode != 0:
        pytest.skip(f"running as root and cannot bind-mount read-only: {probe.stderr.strip()}")
    sh = 'mount --bind -o ro "$0" "$0" && touch "$0/probe"'
    touched = subprocess.run(["unshare", "--mount", "sh", "-c", sh, str(directory)])
    if touched.returncode == 0:
        pytest.skip("the read-only bind mount still accepted a write")


def test_read_only_copy(run_copy: tuple[Path, Path], tmp_path: Path) -> None:
    plan, out = run_copy
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _read_only_or_skip(out)
    try:
        status = _run_read_only(out, "status", "--plan", str(plan), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["finished"] == 32
        elsewhere = tmp_path / "exported"
        export = _run_read_only(out, "export", "--plan", str(plan), "--out", str(elsewhere))
        assert export.returncode == 0, export.stderr
        assert len(_records(elsewhere)) == 32
        in_place = _run_read_only(out, "export", "--plan", str(plan))
        _one_line_error(in_place, str(out), "--out")
        run = _run_read_only(out, "run", "--plan", str(plan), "--local", "--no-progress")
        _one_line_error(run, str(out))
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(out)], check=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- item 19a -------------------------------------------------------------------------------


def test_resume_counts_generated_rows_once(run_copy: tuple[Path, Path]) -> None:
    plan, out = run_copy
    # What a kill after generation and before judging leaves: answers, no grades.
    with closing(sqlite3.connect(out / "state.sqlite")) as conn, conn:
        conn.execute(
            "UPDATE trials SET status = 'generated', judge_json = NULL, judge_error = NULL "
            "WHERE ordinal < 10"
        )
    again = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "done: 32/32 trials" in again.stdout
    progress = [json.loads(line) for line in again.stdout.splitlines() if line.startswith("{")]
    assert progress and all(p["done"] <= p["total"] == 32 for p in progress)
    assert progress[-1]["done"] == 32


# --- item 19c -------------------------------------------------------------------------------


def test_status_skips_and_never_writes_siblings(
    run_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = run_copy
    root = tmp_path / "dated"
    ours = root / "2020-02-02-sweep" / "tiny"
    shutil.copytree(out, ours)
    corrupt = root / "2000-01-01-sweep" / "tiny" / "state.sqlite"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8000)
    older = root / "2010-01-01-sweep" / "tiny" / "state.sqlite"  # another plan, older schema
    older.parent.mkdir(parents=True)
    shutil.copy(out / "state.sqlite", older)
    with closing(sqlite3.connect(older)) as conn, conn:
        conn.execute("UPDATE run SET spec_hash = 'other', spec_json = '{\"model\": {}}'")
        conn.execute("DROP TABLE judgements")
        conn.execute("DELETE FROM schema_migrations WHERE version = 2")
    assert not Path(f"{older}-wal").exists()
    siblings = {p: p.read_bytes() for p in (corrupt, older)}
    plan = write_plan(tmp_path, f'[run]\noutput_dir = "{root}"\n' + TINY_PLAN, name="undated.toml")
    status = run_cli("status", "--plan", str(plan), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["run"]["directory"] == str(ours)
    assert "Traceback" not in status.stderr and f"skipping {corrupt}" in status.stderr
    assert {p: p.read_bytes() for p in siblings} == siblings
    # A read-only SQLite reader may leave an empty -wal beside a WAL database, nothing more.
    assert not any(Path(f"{p}-wal").exists() and Path(f"{p}-wal").stat().st_size for p in siblings)
