"""The judge's retry policy: which failures are retried, after how long, and how each is named.

One predicate (`should_retry`) says what is worth another attempt; `decide` turns one failed
attempt into what the client does next. Every reason text is scrubbed of the API key.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass

import openai

from introspectd.judge.http import ReplyTooLarge
from introspectd.judge.prompt import JudgeOutputError
from introspectd.judge.redact import scrub
from introspectd.protocol.plan import JudgeConfig

log = logging.getLogger(__name__)

QUOTA_ERROR = "quota exhausted (insufficient_quota)"
MAX_RETRY_AFTER_S = 120.0  # a server asking for longer is better served by `rejudge` later
# ...and the others then pause (when the 429s are a burst: limiter.py) only this long: enough
# that the senders queued behind the 429 do not all fire at a server that just refused, short
# enough that a judge asking for an hour fails rows every few seconds rather than stalling
# everyone MAX_RETRY_AFTER_S per row.
GIVE_UP_PAUSE_S = 2.0
MAX_BACKOFF_S = 60.0
_RETRY_STATUSES = frozenset({408, 409, 429})


class JudgeRefused(JudgeOutputError):
    """The judge model refused to grade (a refusal field instead of JSON)."""


def is_quota_error(exc: BaseException) -> bool:
    return (
        isinstance(exc, openai.APIStatusError)
        and exc.status_code == 429
        and "insufficient_quota" in (exc.code, exc.type)
    )


def should_retry(exc: BaseException) -> bool:
    """THE retry predicate: transient server or network trouble and bad judge output."""
    if isinstance(exc, openai.APIStatusError):
        if is_quota_error(exc):
            return False
        return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
    return isinstance(
        exc,
        (
            openai.APIConnectionError,
            openai.APIResponseValidationError,
            TimeoutError,
            JudgeOutputError,
        ),
    )


def retry_after_s(exc: BaseException) -> float | None:
    """Server-requested wait: `retry-after-ms` first, then `retry-after` (seconds or a date)."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, ""))
        except ValueError:
            continue
        return max(0.0, value / scale)
    date = email.utils.parsedate_tz(headers.get("retry-after", ""))
    return max(0.0, email.utils.mktime_tz(date) - time.time()) if date else None


def backoff_delay(base_s: float, attempt: int) -> float:
    """base, 2·base, 4·base... with ±25% jitter so waiting callers do not retry in lockstep."""
    return min(MAX_BACKOFF_S, base_s * 2.0 ** (attempt - 1)) * random.uniform(0.75, 1.25)


def describe(exc: BaseException, timeout_s: float, secret: str) -> tuple[str, str]:
    """(kind, short human reason) for one failed attempt."""
    if is_quota_error(exc):
        return "quota", QUOTA_ERROR
    if isinstance(exc, ReplyTooLarge):
        return "too_large", str(exc)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return "rate_limited", "rate limited (429)"
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("message") if isinstance(body.get("message"), str) else exc.message
        return f"http_{exc.status_code}", scrub(f"HTTP {exc.status_code}: {detail}", secret)
    if isinstance(exc, (TimeoutError, openai.APITimeoutError)):
        return "timeout", f"timeout after {timeout_s:g} s"
    if isinstance(exc, openai.APIConnectionError):
        return "connection", scrub(f"connection error: {exc.message}", secret)
    if isinstance(exc, JudgeRefused):
        return "refused", scrub(f"judge refused: {exc}", secret)
    if isinstance(exc, JudgeOutputError):
        kind = "invalid_json" if str(exc).startswith("invalid JSON") else "schema"
        return kind, scrub(str(exc), secret)
    if isinstance(exc, openai.APIResponseValidationError):
        return "bad_response", "malformed API response"
    reason = scrub(f"{type(exc).__name__}: {exc}", secret)
    log.warning("judge: unexpected error (recorded, not retried): %s", reason)
    return "unexpected", reason


@dataclass(frozen=True)
class Decision:
    kind: str
    reason: str
    retry: bool
    delay_s: float  # how long to wait before the next attempt
    rate_limited: bool  # a 429 (not quota): the limiter pauses everyone for delay_s
    too_long: bool = False  # the server asked for more than MAX_RETRY_AFTER_S: row given up


def decide(exc: BaseException, attempt: int, cfg: JudgeConfig, secret: str) -> Decision:
    kind, reason = describe(exc, cfg.timeout_s, secret)
    retry = should_retry(exc) and attempt < cfg.max_attempts
    delay = backoff_delay(cfg.backoff_s, attempt)
    server_wait = retry_after_s(exc)
    too_long = server_wait is not None and server_wait > MAX_RETRY_AFTER_S
    if too_long:
        # Rows that cannot wait are better failed now (with the reason) and finished later by
        # `rejudge`; the others pause only briefly (GIVE_UP_PAUSE_S), not for the server's wait.
        retry, delay = False, GIVE_UP_PAUSE_S
        reason = f"{reason}: server asked to wait {server_wait:.0f} s"
    elif server_wait is not None:
        delay = server_wait
    return Decision(kind, reason, retry, delay, kind == "rate_limited", too_long)


def final_reason(d: Decision, attempts: int) -> str:
    if d.kind == "rate_limited" and not d.too_long:
        return f"{d.reason} after {attempts} attempt{'s' if attempts != 1 else ''}"
    return d.reason if attempts == 1 else f"{d.reason} (after {attempts} attempts)"
