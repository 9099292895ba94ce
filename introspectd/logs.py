"""Logging setup shared by the CLI and the judge child process (a base module: it imports
nothing from introspectd but errors, so both can use it without importing each other).

Two settings come from the environment, and a bad value of either is one line and exit 2
before anything runs: `$INTROSPECTD_LOG` (the level of the human log on stderr) and
`$INTROSPECTD_LOG_EVERY_S` (seconds between progress lines when stdout is not a terminal).
"""

from __future__ import annotations

import logging
import math
import os
import sys

from introspectd.errors import BadInput

LOG_LEVEL_ENV = "INTROSPECTD_LOG"
LOG_EVERY_ENV = "INTROSPECTD_LOG_EVERY_S"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_LOG_EVERY_S = 10.0


def log_level() -> str:
    """`$INTROSPECTD_LOG`, upper-cased, or INFO; anything else is BadInput."""
    value = os.environ.get(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL).strip().upper() or DEFAULT_LOG_LEVEL
    if value not in LOG_LEVELS:
        raise BadInput(
            f"${LOG_LEVEL_ENV}: must be one of {', '.join(LOG_LEVELS)}, "
            f"got {os.environ[LOG_LEVEL_ENV]!r}"
        )
    return value


def log_every_s() -> float:
    """`$INTROSPECTD_LOG_EVERY_S` (seconds between progress lines), or 10; BadInput unless a
    finite number > 0."""
    raw = os.environ.get(LOG_EVERY_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_LOG_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BadInput(f"${LOG_EVERY_ENV}: must be a number of seconds > 0, got {raw!r}")
    return value


def configure_logging() -> None:
    level = log_level()
    log_every_s()  # checked here, at start, not at the first progress line minutes later
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s introspectd %(levelname)s %(message)s",
    )
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "google", "urllib3"):
        # One line per HTTP request would drown the progress lines (and Cloud Logging).
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Without credentials google.auth warns about the metadata server before it fails; the
    # failure itself is reported as one line (cloud.gcs.NO_CREDENTIALS).
    logging.getLogger("google.auth").setLevel(logging.ERROR)


def route_library_logs(name: str) -> None:
    """Send library `name`'s log records through the root handler only. huggingface_hub adds
    its own stderr handler when imported, so each of its warnings printed twice, the second
    time in our format; without the extra handler it is printed once, in our format, and above
    the live view (which only redirects the root handler). Call after importing the library;
    a no-op before `configure_logging` (then the library's handler is the only one)."""
    if not logging.getLogger().handlers:
        return
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)
