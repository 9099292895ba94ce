"""`failures.exit_line`: the one mapping of an exception to one line and an exit code."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from introspectd.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    BadInput,
    Transient,
    leaves,
    one_line,
)
from introspectd.failures import environment_failure, exit_line


def test_our_errors_carry_their_line_and_code() -> None:
    assert exit_line(BadInput("plan.toml: [sweep] trials: must be >= 1")) == (
        "plan.toml: [sweep] trials: must be >= 1",
        EXIT_BAD_INPUT,
    )
    assert exit_line(Transient("cannot reach gs://b")) == ("cannot reach gs://b", EXIT_INTERRUPTED)
    assert environment_failure(BadInput("x")) is None, "ours are not the machine's"


def test_a_full_disk_inside_nested_groups_is_one_line() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/run/t.jsonl")
    group = ExceptionGroup("tasks", [ExceptionGroup("inner", [full])])
    line, code = exit_line(group) or ("", 0)
    assert code == EXIT_INTERRUPTED
    assert line.startswith("disk full: /data/run/t.jsonl: No space left on device (nothing")


def test_a_read_only_database_is_bad_input() -> None:
    exc = sqlite3.OperationalError("attempt to write a readonly database")
    exc.sqlite_errorcode = 8  # type: ignore[attr-defined]
    assert exit_line(exc) == (
        "cannot write the run's database: attempt to write a readonly database",
        EXIT_BAD_INPUT,
    )


@pytest.mark.parametrize(
    "exc",
    [
        KeyError("bug"),
        ExceptionGroup("tasks", [BadInput("fine"), ZeroDivisionError("bug")]),
        OSError(errno.EIO, "I/O error"),  # not one we can name a fix for: keep the traceback
    ],
)
def test_a_bug_keeps_its_traceback(exc: BaseException) -> None:
    assert exit_line(exc) is None


def test_leaves_and_one_line() -> None:
    a, b, c = ValueError("a"), KeyError("b"), OSError("c")
    assert leaves(ExceptionGroup("g", [a, ExceptionGroup("h", [b, c])])) == [a, b, c]
    assert leaves(a) == [a]
    assert one_line(ValueError("two\nlines")) == "ValueError: two lines"
    assert one_line(ValueError("x" * 400), limit=20) == "ValueError: xxxxx..."
