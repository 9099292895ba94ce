"""The exception hierarchy of introspectd, in one place.

IntrospectdError
├── BadInput          a plan, flag or file the user can fix; the CLI prints one line, exits 2
│   └── PlanMismatch  the database holds a run whose generation plan differs from this one
├── RestoreError      GCS holds a snapshot that cannot be trusted and has no good fallback (exit 2)
├── Interrupted       SIGTERM/SIGINT/preemption after a final upload; safe to resume (exit 75)
└── Transient         GCS unreachable (at start, or for the final upload); safe to rerun (exit 75)

Anything else escaping a task is a bug: the task group is cancelled and the process exits 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 75


class IntrospectdError(Exception):
    """Base class of every error introspectd raises on purpose."""

    exit_code = EXIT_FAILURE


class BadInput(IntrospectdError):
    """Input the user can fix. The message is one line: what is wrong and where."""

    exit_code = EXIT_BAD_INPUT


class PlanMismatch(BadInput):
    """The run's stored generation plan differs from the plan given now."""


class RestoreError(IntrospectdError):
    """A GCS snapshot exists but is unusable, and starting over would duplicate trials."""

    exit_code = EXIT_BAD_INPUT


class Interrupted(IntrospectdError):
    """The run was stopped on request after saving everything; rerun to resume."""

    exit_code = EXIT_INTERRUPTED


class Transient(IntrospectdError):
    """A failure that retrying later may fix (GCS unreachable): exit 75, so Cloud Batch retries
    the task instead of marking it done or failed for good."""

    exit_code = EXIT_INTERRUPTED


def sole_error(group: BaseExceptionGroup) -> BaseException:  # type: ignore[type-arg]
    """The one introspectd error a task group failed with, else the group itself: a bad model
    found inside the run loop is still one line and exit 2, not a traceback."""
    leaves = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and isinstance(leaves[0], IntrospectdError):
        return leaves[0]
    return group
