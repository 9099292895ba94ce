"""Outputs never land on a run's own files (issue 22 items 17 and 23): `calibrate --out`,
`rejudge --output` and `export --out` refuse the database, its -wal/-shm/-journal, the lock,
adaptive.json and a run directory's JSONL files (through symbolic links too) with one line and
exit 2, before anything is graded; `export` says when what it wrote is a partial set."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import TINY_PLAN, run_cli, write_plan

from introspectd.run.rundir import lock_run_dir


def _digest(directory: Path) -> dict[str, str]:
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(directory.iterdir())
        if f.is_file() and f.name != ".introspectd.lock"
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(plan, run directory) of a finished tiny run, judging off."""
    root = tmp_path_factory.mktemp("run")
    plan = write_plan(root, TINY_PLAN)
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    return plan, root / "out" / "exp" / "tiny"


@pytest.mark.parametrize(
    ("command", "flag", "name"),
    [
        ("calibrate", "--out", "state.sqlite"),
        ("calibrate", "--out", "state.sqlite-wal"),
        ("calibrate", "--out", "ocean.jsonl"),
        ("rejudge", "--output", "state.sqlite"),
        ("rejudge", "--output", "state.sqlite-journal"),
        ("rejudge", "--output", "fear.jsonl"),
        ("rejudge", "--output", ".introspectd.lock"),
        ("rejudge", "--output", "adaptive.json"),
    ],
)
def test_an_output_on_a_run_file_is_refused_and_nothing_changes(
    finished: tuple[Path, Path], tmp_path: Path, command: str, flag: str, name: str
) -> None:
    plan, run_dir = finished
    before = _digest(run_dir)
    labels = tmp_path / "labels.jsonl"
    labels.write_text("")
    extra = (
        ["--labels", str(labels)]
        if command == "calibrate"
        else ["--input", str(run_dir / "ocean.jsonl")]
    )
    shown = run_cli(command, "--plan", str(plan), *extra, flag, str(run_dir / name))
    assert shown.returncode == 2, shown.stderr
    assert shown.stderr.count("\n") == 1, shown.stderr
    assert shown.stderr.startswith(f"introspectd: {flag} {run_dir / name}: is a run's")
    assert _digest(run_dir) == before


def test_a_link_into_a_run_is_refused_and_other_files_beside_it_are_allowed(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    plan, run_dir = finished
    link = tmp_path / "innocent.sqlite"
    link.symlink_to(run_dir / "state.sqlite")
    shown = run_cli("rejudge", "--input", str(run_dir / "ocean.jsonl"), "--output", str(link))
    assert shown.returncode == 2 and "is a run's state.sqlite" in shown.stderr, shown.stderr
    # A calibration JSON beside the run is what calibrate writes by default: not refused here
    # (it then stops at the judge, which this plan does not have).
    calibrate = run_cli(
        "calibrate",
        "--plan",
        str(plan),
        "--labels",
        str(tmp_path / "none.jsonl"),
        "--out",
        str(run_dir / "calibration_mine.json"),
    )
    assert "is a run's" not in calibrate.stderr, calibrate.stderr


def test_export_refuses_another_runs_directory(finished: tuple[Path, Path], tmp_path: Path) -> None:
    plan, run_dir = finished
    other = write_plan(tmp_path, TINY_PLAN.replace('"fear"', '"dust"'))
    made = run_cli("run", "--plan", str(other), "--local", "--no-progress", "--trials", "1")
    assert made.returncode == 0, made.stderr
    other_dir = tmp_path / "out" / "exp" / "tiny"
    before = _digest(other_dir)
    shown = run_cli("export", "--plan", str(plan), "--out", str(other_dir))
    assert shown.returncode == 2 and "is another run's directory" in shown.stderr, shown.stderr
    assert _digest(other_dir) == before
    own = run_cli("export", "--plan", str(plan), "--out", str(run_dir))
    assert own.returncode == 0, own.stderr
    assert own.stdout.strip() == f"exported 32 of 32 planned trials to {run_dir}"


def test_export_says_when_its_files_are_partial(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)
    part = run_cli("run", "--plan", str(plan), "--local", "--no-progress", "--trials", "1")
    assert part.returncode == 0, part.stderr
    run_dir = tmp_path / "out" / "exp" / "tiny"
    shown = run_cli("export", "--plan", str(plan), "--out", str(tmp_path / "copy"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().endswith(
        "exported 16 of 32 planned trials to "
        f"{tmp_path / 'copy'} — partial: 16 not finished; `introspectd run` finishes them"
    )
    fd = lock_run_dir(run_dir)  # what a `run` of this directory holds while it works
    try:
        during = run_cli("export", "--plan", str(plan), "--out", str(tmp_path / "copy"))
    finally:
        os.close(fd)
    assert during.returncode == 0, during.stderr
    assert "partial: a process (pid " in during.stdout and "still running" in during.stdout
