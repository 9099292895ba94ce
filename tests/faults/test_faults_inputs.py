"""Hostile plans, environment and filesystem inputs: one line on stderr, the right exit code
(2 bad input, 75 disk full: resume after freeing space), never a traceback, nothing written.

Issue 11 items:
- 10 `[judge] concurrency = 1000000`: test_hostile_plan_is_refused[judge-concurrency-*]
- 11 a key pasted into `api_key_env`: test_pasted_key_is_refused_and_never_echoed
- 15 INTROSPECTD_EXPERIMENT_ID / INTROSPECTD_STAMP: test_env_override_is_checked_like_the_plan_key,
     test_env_override_is_checked_by_status_too
- 17 trailing newlines, nan/inf/1e308, temperature and every other number or string key:
     test_hostile_plan_is_refused (most cases), test_sane_bounds_are_accepted
- 18 one line, never a traceback:
     disk full at several fill levels (real tmpfs) / a file-size limit: test_disk_full_*;
     output_dir a file or read-only: test_unusable_output_dir_is_refused;
     names over 255 bytes, trials = 1e9, huge max_new_tokens / batch_size:
     test_hostile_plan_is_refused[*-long-*, *trials*, *max_new_tokens*, *batch_size*];
     `--plan gs://` without credentials: test_gs_plan_without_credentials;
     a manifest that is [] or null: test_manifest_that_is_not_an_object;
     `report --out FILE`: test_report_out_must_be_a_directory;
     `rejudge --output DIR`: test_rejudge_output_directory_is_refused_before_any_request.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gcs_emulator import BUCKET, GcsEmulator
from helpers import REPO, jsonl_lines
from judge_server import JudgeServer

from introspectd.cli import main

TINY: dict[str, dict[str, str | None]] = {
    "run": {"experiment_id": '"exp"'},
    "model": {"name": '"builtin:tiny"'},
    "sweep": {
        "concepts": '["ocean", "fear"]',
        "layers": "[1, 3]",
        "strengths": "[2.0, 4.0]",
        "trials": "2",
        "max_new_tokens": "8",
        "batch_size": "8",
    },
}
LONG = "x" * 300  # over the 255-byte file-name limit


def plan_text(out: Path, **overrides: dict[str, str | None]) -> str:
    """TINY with `section={key: toml value}` overrides (None drops the key)."""
    sections = {name: dict(keys) for name, keys in TINY.items()}
    sections["run"]["output_dir"] = json.dumps(str(out))
    for name, keys in overrides.items():
        sections.setdefault(name, {}).update(keys)
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None)
        for name, keys in sections.items()
    )


def write(tmp_path: Path, **overrides: dict[str, str | None]) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(plan_text(tmp_path / "out", **overrides), encoding="utf-8")
    return path


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("introspectd: ")
    return lines[0]


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTROSPECTD_LOG", "WARNING")  # stderr then holds only what goes wrong
    monkeypatch.delenv("INTROSPECTD_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("INTROSPECTD_STAMP", raising=False)


HOSTILE = [
    # (section, key, TOML value, what the line must say)
    ("run", "experiment_id", r'"p\n"', "[run] experiment_id: must not contain control"),
    ("run", "experiment_id", f'"{LONG}"', "[run] experiment_id: must be at most 128 characters"),
    ("run", "experiment_id", '"../up"', "[run] experiment_id: must be a plain path component"),
    ("run", "stamp", r'"20260123_143022\n"', "[run] stamp: must not contain control"),
    ("run", "output_dir", r'"out\u0000x"', "[run] output_dir: must not contain control"),
    ("model", "slug", r'"tiny\n"', "[model] slug: must not contain control"),
    ("model", "slug", f'"{LONG}"', "[model] slug: must be at most 128 characters"),
    ("model", "device", '"cuda:zero"', "[model] device: must be auto, cpu"),
    ("sweep", "concepts", r'["fear\n"]', "[sweep] concepts: must be a lowercase word"),
    ("sweep", "concepts", f'["{LONG}"]', "[sweep] concepts: must be at most 128 characters"),
    ("sweep", "strengths", "[nan]", "[sweep] strengths: each strength must be a number > 0"),
    ("sweep", "strengths", "[2.0, inf]", "[sweep] strengths: each strength must be a number > 0"),
    ("sweep", "strengths", "[1e308]", "[sweep] strengths: each strength must be a number > 0"),
    ("sweep", "temperature", "nan", "[sweep] temperature: must be a finite number, got nan"),
    ("sweep", "temperature", "inf", "[sweep] temperature: must be a finite number, got inf"),
    ("sweep", "temperature", "1e6", "[sweep] temperature: must be <= 10"),
    ("sweep", "temperature", "-0.5", "[sweep] temperature: must be >= 0"),
    ("sweep", "trials", "1000000000", "[sweep] trials: must be <= 1000000"),
    ("sweep", "trials", "100000", "[sweep] trials: 2 concepts x 2 layers x 2 strengths"),
    ("sweep", "max_new_tokens", "1000000000", "[sweep] max_new_tokens: must be <= 32768"),
    ("sweep", "max_new_tokens", "4096", "max_new_tokens: 4096 does not fit in builtin:tiny"),
    ("sweep", "batch_size", "1000000000", '[sweep] batch_size: must be "auto" or an integer'),
    ("sweep", "prompt_version", r'"v2\n"', "[sweep] prompt_version: must not contain control"),
    ("judge", "concurrency", "1000000", "[judge] concurrency: must be <= 1024"),
    ("judge", "max_attempts", "1000000", "[judge] max_attempts: must be <= 20"),
    ("judge", "fewshot_n", "1000000000", "[judge] fewshot_n: must be <= 1000"),
    ("judge", "backoff_s", "nan", "[judge] backoff_s: must be a finite number"),
    ("judge", "backoff_s", "1e308", "[judge] backoff_s: must be <= 600"),
    ("judge", "timeout_s", "inf", "[judge] timeout_s: must be a finite number"),
    ("judge", "model", r'"gpt-5-mini\n"', "[judge] model: must not contain control"),
    ("judge", "base_url", '"localhost:8000"', "[judge] base_url: must be an http:// or https://"),
    ("upload", "min_interval_s", "nan", "[upload] min_interval_s: must be a finite number"),
    ("upload", "preemption_poll_s", "inf", "[upload] preemption_poll_s: must be a finite"),
    ("upload", "preemption_url", r'"http://x\n"', "[upload] preemption_url: must not contain"),
    ("upload", "gcs", r'"gs://bucket/p\n"', "[upload] gcs: must not contain control"),
]


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    HOSTILE,
    ids=[f"{s}-{k}-{v[:12]}" for s, k, v, _ in HOSTILE],
)
def test_hostile_plan_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    section: str,
    key: str,
    value: str,
    expected: str,
) -> None:
    override: dict[str, str | None] = {key: value}
    plan = write(tmp_path, **{section: override})
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 2
    assert expected in one_line(capsys)
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_sane_bounds_are_accepted(tmp_path: Path) -> None:
    from introspectd.protocol.plan import load_plan

    plan = load_plan(
        write(
            tmp_path,
            sweep={"temperature": "0", "strengths": "[0.5, 1000]", "batch_size": "1024"},
            judge={"concurrency": "1024", "api_key_env": '"MY_JUDGE_KEY_2"'},
            model={"device": '"cuda:1"', "slug": '"' + "s" * 128 + '"'},
            upload={"preemption_url": '"http://metadata.google.internal/x"'},
        )
    )
    assert (plan.sweep.temperature, plan.judge.concurrency) == (0.0, 1024)
    assert plan.sweep.strengths == (0.5, 1000.0)


def test_pasted_key_is_refused_and_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "sk-proj-Zq8vT2nLm4Xw9Rb7Kp3Hc6Ys1Jd5Fg0A"
    plan = write(
        tmp_path, judge={"api_key_env": json.dumps(key), "base_url": '"http://127.0.0.1:9/v1"'}
    )
    for argv in (
        ["run", "--plan", str(plan), "--local", "--no-progress"],
        ["rejudge", "--plan", str(plan)],
        ["status", "--plan", str(plan)],
    ):
        assert main(argv) == 2
        line = one_line(capsys)
        assert "api_key_env: must name an environment variable" in line
        assert "not hold a key" in line
        assert key not in line and key[:12] not in line
    assert not (tmp_path / "out").exists()  # no stored plan holds it


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INTROSPECTD_EXPERIMENT_ID", "../../escaped"),
        ("INTROSPECTD_EXPERIMENT_ID", "ABSOLUTE"),
        ("INTROSPECTD_EXPERIMENT_ID", "exp\n"),
        ("INTROSPECTD_EXPERIMENT_ID", LONG),
        ("INTROSPECTD_STAMP", "../../x y"),
        ("INTROSPECTD_STAMP", "20260123_143022\n"),
    ],
)
def test_env_override_is_checked_like_the_plan_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    if value == "ABSOLUTE":
        value = str(tmp_path / "abs")
    monkeypatch.setenv(variable, value)
    plan = write(tmp_path, run={"experiment_id": None})
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 2
    line = one_line(capsys)
    assert line.startswith(f"introspectd: ${variable}: must ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]  # nothing created
    assert not (tmp_path.parent / "escaped").exists()


def test_env_override_is_checked_by_status_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTROSPECTD_EXPERIMENT_ID", "../../escaped")
    plan = write(tmp_path, run={"experiment_id": None})
    assert main(["status", "--plan", str(plan)]) == 2
    assert "$INTROSPECTD_EXPERIMENT_ID: must be a plain path component" in one_line(capsys)


def test_batch_render_stamp_is_matched_whole(tmp_path: Path) -> None:
    from introspectd.cloud.batchjob import JobOptions, render_job
    from introspectd.errors import BadInput
    from introspectd.protocol.plan import load_plan

    plan = load_plan(write(tmp_path, upload={"gcs": '"gs://bucket/sweeps"'}))
    with pytest.raises(BadInput, match="--stamp: must look like"):
        render_job("gs://b/p.toml", plan, 1, "i", JobOptions(stamp="20260123_143022\n"))


# --- the file system -------------------------------------------------------------------------


def mount_tmpfs(where: Path, size: str, read_only: bool = False) -> None:
    """A real small file system, or skip: needs root and mount(8)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot write: a read-only mount as root, else mode 0555."""
    where = tmp_path / "ro"
    if os.geteuid() == 0:
        mount_tmpfs(where, "64k", read_only=True)
        yield where
        unmount(where)
    else:
        where.mkdir()
        where.chmod(0o555)
        yield where
        where.chmod(0o755)


@pytest.mark.parametrize("how", ["a file", "under a file", "read-only"])
def test_unusable_output_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str, request: pytest.FixtureRequest
) -> None:
    if how == "read-only":
        out = request.getfixturevalue("read_only_dir") / "sweeps"
    else:
        (tmp_path / "file").write_text("not a directory")
        out = tmp_path / "file" if how == "a file" else tmp_path / "file" / "sweeps"
    plan = write(tmp_path, run={"output_dir": json.dumps(str(out))})
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 2
    line = one_line(capsys)
    assert "[run] output_dir:" in line
    assert ("not writable" if how == "read-only" else "is not a directory") in line


def run_tiny(
    plan: Path, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "introspectd.cli",
            "run",
            "--plan",
            str(plan),
            "--local",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        preexec_fn=preexec,
        env={**os.environ, "INTROSPECTD_LOG": "WARNING"},
    )


def assert_disk_full(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == 75, proc.stderr
    assert "nothing finished is lost; free space and run the same command again" in lines[0]


def assert_complete(out: Path) -> None:
    for concept in ("ocean", "fear"):
        lines = jsonl_lines((out / f"{concept}.jsonl").read_text(encoding="utf-8"))
        ids = [json.loads(line)["id"] for line in lines]
        assert len(ids) == len(set(ids)) == 16, concept  # every trial, exactly once


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "1m")
    yield disk
    unmount(disk)


# 0: the lock file's first write fails; 24 KiB: creating the database; 160 KiB: mid-run, with
# generations committed and not yet exported.
@pytest.mark.parametrize("free_kib", [0, 24, 160])
def test_disk_full_at_any_level_is_one_line_and_resumes(
    tmp_path: Path, small_disk: Path, free_kib: int
) -> None:
    plan = write(tmp_path, run={"output_dir": json.dumps(str(small_disk / "out"))})
    stat = os.statvfs(small_disk)
    filler = small_disk / "filler"
    with filler.open("wb") as f:
        f.write(bytes(max(0, stat.f_bavail * stat.f_frsize - free_kib * 1024)))
    assert_disk_full(run_tiny(plan))
    filler.unlink()  # space freed: the same command finishes, nothing done twice or lost
    done = run_tiny(plan)
    assert done.returncode == 0, done.stderr
    assert_complete(small_disk / "out" / "exp" / "tiny")


def test_disk_full_by_a_file_size_limit_is_one_line_and_resumes(tmp_path: Path) -> None:
    """Where no tmpfs can be mounted, `ulimit -f` gives the same fault (EFBIG) anywhere."""
    plan = write(tmp_path)

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))

    assert_disk_full(run_tiny(plan, limit_file_size))
    done = run_tiny(plan)
    assert done.returncode == 0, done.stderr
    assert_complete(tmp_path / "out" / "exp" / "tiny")


# --- GCS, reports, rejudge -----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--plan", "gs://introspectd-nowhere/plan.toml", "--no-progress"],
        ["status", "--plan", "gs://introspectd-nowhere/plan.toml"],
        [
            "batch",
            "render",
            "--plan",
            "gs://introspectd-nowhere/p.toml",
            "--tasks",
            "1",
            "--image",
            "i",
        ],
    ],
    ids=["run", "status", "batch-render"],
)
def test_gs_plan_without_credentials(tmp_path: Path, argv: list[str]) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STORAGE_EMULATOR", "GOOGLE_", "CLOUDSDK_", "GCE_"))
    }
    # No credentials anywhere, and a metadata server that refuses at once (not a 3 s probe).
    env.update(
        HOME=str(tmp_path),
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
        NO_GCE_CHECK="true",
        GCE_METADATA_HOST="127.0.0.1:9",
        GCE_METADATA_IP="127.0.0.1:9",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "introspectd.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"introspectd: {argv[2] if argv[0] != 'batch' else argv[3]}: cannot read plan file: no "
        "Google Cloud credentials (run `gcloud auth application-default login`, or set "
        "GOOGLE_APPLICATION_CREDENTIALS)"
    ]


@pytest.mark.parametrize("content", [b"[]", b"null"])
def test_manifest_that_is_not_an_object(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    gcs_emulator: GcsEmulator,
    content: bytes,
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_emulator.url},
    )
    client.bucket(BUCKET).blob("sweeps/exp/tiny/manifest.json").upload_from_string(content)
    plan = write(tmp_path, upload={"gcs": f'"gs://{BUCKET}/sweeps"'})
    assert main(["run", "--plan", str(plan), "--no-progress"]) == 2
    assert "manifest.json is unreadable (manifest is not a JSON object" in one_line(capsys)
    assert main(["export", "--plan", str(plan), "--from", f"gs://{BUCKET}/sweeps"]) == 2
    assert "manifest.json is unreadable" in one_line(capsys)


def seed_record(i: int, judged: bool = True) -> dict[str, object]:
    grade = {
        "answer": "pass",
        "coherent": True,
        "detected_concept": "fear",
        "reasoning": "r",
        "refused": False,
    }
    return {
        "id": f"20260123_143022_fear_injection_L24_S2.0_t{i}",
        "concept": "fear",
        "was_injected": True,
        "response": f"response {i}",
        "config": {"model": "m", "layer": 24, "strength": 2.0, "trial": i},
        "judge": grade if judged else None,
        "judge_error": None if judged else "boom",
    }


@pytest.mark.parametrize("how", ["a file", "under a file"])
def test_report_out_must_be_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    results = tmp_path / "fear.jsonl"
    results.write_text("".join(json.dumps(seed_record(i)) + "\n" for i in range(4)))
    existing = tmp_path / "existing.md"
    existing.write_text("keep me")
    out = existing if how == "a file" else existing / "report"
    assert main(["report", str(results), "--out", str(out)]) == 2
    assert "--out: " in one_line(capsys)
    assert existing.read_text() == "keep me"


def test_rejudge_output_directory_is_refused_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "fear.jsonl"
    src.write_text("".join(json.dumps(seed_record(i, judged=False)) + "\n" for i in range(3)))
    (tmp_path / "graded").mkdir()
    with JudgeServer() as server:
        plan = write(tmp_path, judge={"base_url": json.dumps(server.base_url)})
        rc = main(
            [
                "rejudge",
                "--plan",
                str(plan),
                "--input",
                str(src),
                "--output",
                str(tmp_path / "graded"),
            ]
        )
        assert rc == 2
        assert "--output: " in (line := one_line(capsys)) and "is a directory" in line
    assert server.requests == []  # checked before judging, not after
