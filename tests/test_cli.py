"""The command line itself, as a person meets it: `--help` and `--version`, one-line refusals,
and the end-of-run summary."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TINY_PLAN, run_cli, write_plan

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


def test_run_ends_with_counts_files_and_next_commands(tmp_path: Path) -> None:
    """Judging off: the summary says so, and what to do about it."""
    plan = write_plan(tmp_path, TINY_PLAN)
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "exp" / "tiny"
    summary = done.stdout.splitlines()[-5:]
    assert summary == [
        f"done: 32/32 trials; results in {out}",
        "32 generated, 0 judged, 32 not judged (32 judge not configured): set $OPENAI_API_KEY "
        f"or [judge] base_url, then introspectd rejudge --plan {plan}",
        f"files in {out}: ocean.jsonl, fear.jsonl, database state.sqlite",
        f"next: introspectd report {out} --out {out / 'report'}",
        f"      introspectd explore --plan {plan}",
    ]
