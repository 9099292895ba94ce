"""SIGTERM and SIGINT for every command, installed before anything else happens.

Without this, a signal in the first seconds of `run` (loading the plan, restoring from GCS,
opening the database) killed the process silently (exit 143) or with a KeyboardInterrupt
traceback. Two modes:

- immediate (the default): the handler raises `Interrupted` wherever the main thread is. What
  runs there is read-only or crash-safe (SQLite transactions, files replaced atomically), so
  unwinding is as safe as SIGKILL and tidier: `finally` blocks run, one line, exit 75.
- deferred (`with deferred():`, around an event loop): the handler only records the signal;
  the loop polls `received()` and drains. A second signal while deferred exits at once (75):
  every finished trial is already committed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from introspectd.errors import EXIT_INTERRUPTED, Interrupted

log = logging.getLogger("introspectd")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.deferring = 0
        self.received: str | None = None


_state = _State()


def received() -> str | None:
    """The name of the first signal received since the handlers were installed, if any."""
    return _state.received


def _handle(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _state.deferring:
        if _state.received is not None:
            log.warning("received %s again: exiting now; rerun to resume", name)
            os._exit(EXIT_INTERRUPTED)
        _state.received = name
        return
    if _state.received is not None:
        return  # the first one is already unwinding the stack
    _state.received = name
    raise Interrupted(
        f"received {name} while starting up; nothing was lost — "
        "run the same command again to resume"
    )


def _install() -> dict[int, Any] | None:
    """Our handler for SIGTERM/SIGINT; the previous handlers, or None off the main thread
    (where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {int(s): signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _handle)
    _state.installed = True
    _state.received = None
    return previous


def _restore(previous: dict[int, Any] | None) -> None:
    if previous is None:
        return
    for s, handler in previous.items():
        signal.signal(s, handler)
    _state.installed = False


@contextmanager
def handled() -> Iterator[None]:
    """Immediate mode for the body (a whole command); the previous handlers afterwards."""
    previous = _install()
    try:
        yield
    finally:
        _restore(previous)


@contextmanager
def deferred() -> Iterator[None]:
    """Deferred mode for the body: signals are recorded for the caller to poll."""
    previous = None if _state.installed else _install()
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        _restore(previous)
