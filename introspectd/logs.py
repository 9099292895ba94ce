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
