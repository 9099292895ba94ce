"""The exception hierarchy of introspectd, in one place: every error it raises on purpose.

`cli.main` is the one boundary that prints one line on stderr and returns an exit code
(0 done, 2 bad input, 75 interrupted or transient — safe to rerun, Cloud Batch retries —,
1 anything else). Library code raises them and never prints or exits.

IntrospectdError (1)      base class; a subclass sets the exit code
├── BadInput (2)          a plan, flag, file or bucket the user can fix: one line, what and where
│   └── PlanMismatch (2)  the database holds a run whose generation plan differs from this one
├── RestoreError (2)      GCS holds a snapshot that cannot be trusted and has no good fallback
├── Interrupted (75)      SIGTERM/SIGINT/preemption after a final upload; safe to resume
├── Transient (75)        GCS unreachable (at start, or for the final upload); safe to rerun
├── StaleWriter (1)       another process has replaced this run's GCS manifest: stop uploading
├── UploadError (1)       an upload that retrying will not fix (a caller bug, a name clash)
└── SnapshotError (1)     the local database could not be snapshotted consistently

(the line and code of every exception come from one place, `failures.exit_line`). Faults of the
machine (a full disk, a read-only directory) arrive as OSError/sqlite3.Error and are mapped
there; GCS errors are translated where they arise, in `cloud.gcs.gcs_errors`: what the user
must fix (no such bucket, no permission, no credentials) becomes BadInput, outages Transient.
Exceptions that never leave their module (a bad snapshot object before its fallback, a judge
reply that is not a grade and becomes the row's `judge_error`) are not part of this tree.
Anything else escaping a task is a bug: the task group is cancelled and the process exits 1
with its traceback.
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


class StaleWriter(IntrospectdError):
    """Another process has written this run's manifest since we last saw it.

    The process holding this error is the older one (e.g. a zombie VM after preemption) and must
    stop uploading: replacing the newer manifest would throw away the other process's work.
    """


class UploadError(IntrospectdError):
    """An upload that retrying will not fix (an object we never wrote is in our way)."""


class SnapshotError(IntrospectdError):
    """The local database could not be snapshotted consistently."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order; `[exc]` for a plain one."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def sole_error(group: BaseExceptionGroup) -> BaseException:  # type: ignore[type-arg]
    """The one introspectd error a task group failed with, else the group itself: a bad model
    found inside the run loop is still one line and exit 2, not a traceback."""
    found = leaves(group)
    if len(found) == 1 and isinstance(found[0], IntrospectdError):
        return found[0]
    return group


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A foreign exception as one line for a log or a stored reason: its type and text."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
