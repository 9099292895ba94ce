"""Logging setup shared by the CLI and the judge child process (a base module: it imports
nothing from introspectd, so both can use it without importing each other)."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("INTROSPECTD_LOG", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s introspectd %(levelname)s %(message)s",
    )
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "google", "urllib3"):
        # One line per HTTP request would drown the progress lines (and Cloud Logging).
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Without credentials google.auth warns about the metadata server before it fails; the
    # failure itself is reported as one line (fs_errors.NO_CREDENTIALS).
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
