"""The judge client: grades one response with an LLM over an OpenAI-compatible API.

`Judge.grade` never raises for judge-side trouble: every call ends with a judgement or a short
human reason in `JudgeOutcome.error`, so a judge outage can never stop generation. The retry
policy lives in one predicate (`should_retry`); pacing lives in `AdaptiveLimiter`; a 429 with
`insufficient_quota` trips a breaker after which nothing more is sent.

The API key is only handed to the SDK. Every text a judge sends back, error or judgement, is
redacted (redact.py): servers and models echo (parts of) keys. Replies are read up to a cap
(http.py) and judgements' texts bounded, so one rambling reply cannot sink a run.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import openai
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from introspectd.judge.http import ReplyTooLarge, capped_http_client
from introspectd.judge.limiter import AdaptiveLimiter, Signal, Ticket
from introspectd.judge.prompt import (
    JUDGEMENT_SCHEMA,
    SCHEMA_NAME,
    JudgeOutputError,
    judge_prompt_for,
    parse_judgement,
)
from introspectd.judge.redact import redact_judgement, scrub
from introspectd.protocol.plan import JudgeConfig

log = logging.getLogger(__name__)

JUDGING_DISABLED = "judging off: no API key and no [judge] base_url"
QUOTA_ERROR = "quota exhausted (insufficient_quota)"
MAX_RETRY_AFTER_S = 120.0   # a server asking for longer is better served by `rejudge` later
# ...and the others then pause only this long: enough that the senders queued behind the 429 do
# not all fire at a server that just refused, short enough that a judge asking for an hour
# fails rows every few seconds rather than stalling everyone MAX_RETRY_AFTER_S per row.
GIVE_UP_PAUSE_S = 2.0
LOG_EVERY_S = 30.0          # at most one "pausing" warning per this interval
MAX_BACKOFF_S = 60.0
REQUESTS_PER_CLIENT = 16   # concurrent requests per HTTP client (see Judge.__init__)
_RETRY_STATUSES = frozenset({408, 409, 429})

# What `chat.completions.create` and `responses.create` send besides the model and the turns.
# We post the request body ourselves (see Judge._send_chat): these never change, so they are
# built once.
_CHAT_FORMAT: dict[str, Any] = {"type": "json_schema", "json_schema": {
    "name": SCHEMA_NAME, "schema": JUDGEMENT_SCHEMA, "strict": True}}
_RESPONSES_FORMAT: dict[str, Any] = {"format": {
    "type": "json_schema", "name": SCHEMA_NAME, "schema": JUDGEMENT_SCHEMA, "strict": True}}
_BEARER_AUTH: openai.RequestOptions = {"security": {"bearer_auth": True}}   # as `create` asks


@dataclass(frozen=True)
class JudgeOutcome:
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    judge_model: str
    prompt_version: str
    fewshot_hash: str
    num_429: int
    num_retries: int
    error_kind: str | None = None   # stable key for counting failures by reason


@dataclass(frozen=True)
class JudgeStats:
    in_flight: int
    judged: int
    failed: int
    failed_by_reason: dict[str, int]
    retries: int
    num_429: int
    current_concurrency: int
    max_concurrency: int
    prompt_tokens: int
    completion_tokens: int
    tripped: bool
    paused_s: float


class JudgeRefused(JudgeOutputError):
    """The judge model refused to grade (a refusal field instead of JSON)."""


# --- retry policy ---------------------------------------------------------------------------


def is_quota_error(exc: BaseException) -> bool:
    return (isinstance(exc, openai.APIStatusError) and exc.status_code == 429
            and "insufficient_quota" in (exc.code, exc.type))


def should_retry(exc: BaseException) -> bool:
    """THE retry predicate: transient server or network trouble and bad judge output."""
    if isinstance(exc, openai.APIStatusError):
        if is_quota_error(exc):
            return False
        return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, openai.APIResponseValidationError,
                            TimeoutError, JudgeOutputError))


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
class _Decision:
    kind: str
    reason: str
    retry: bool
    delay_s: float          # how long to wait before the next attempt
    rate_limited: bool      # a 429 (not quota): the limiter pauses everyone for delay_s
    too_long: bool = False  # the server asked for more than MAX_RETRY_AFTER_S: row given up


def decide(exc: BaseException, attempt: int, cfg: JudgeConfig, secret: str) -> _Decision:
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
    return _Decision(kind, reason, retry, delay, kind == "rate_limited", too_long)


def final_reason(d: _Decision, attempts: int) -> str:
    if d.kind == "rate_limited" and not d.too_long:
        return f"{d.reason} after {attempts} attempt{'s' if attempts != 1 else ''}"
    return d.reason if attempts == 1 else f"{d.reason} (after {attempts} attempts)"


# --- the client -----------------------------------------------------------------------------


@dataclass
class _Reply:
    text: str
    refusal: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Call:
    """Accounting for one grade() call across its attempts."""

    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    num_429: int = 0
    retries: int = 0
    result: dict[str, Any] | None = None


@dataclass
class _Totals:
    judged: int = 0
    retries: int = 0
    num_429: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: Counter[str] = field(default_factory=Counter)


class Judge:
    """Built once per run from the plan's [judge] table; `grade` is safe to call concurrently."""

    def __init__(self, cfg: JudgeConfig, api_key: str | None, *,
                 base_dir: Path | None = None, limiter: AdaptiveLimiter | None = None) -> None:
        self.cfg = cfg
        self.prompt = judge_prompt_for(cfg, base_dir)
        self.fewshot_hash = self.prompt.fewshot_hash
        self.enabled = cfg.is_enabled(api_key)
        self._secret = api_key or ""
        # httpx's connection pool checks every pooled connection on each request, so one
        # client's CPU per request grows with the concurrency (0.8 ms at 256 connections);
        # requests take turns over clients of at most REQUESTS_PER_CLIENT connections.
        # (Local servers often need no key, but the SDK insists on one.)
        self._clients = [
            openai.AsyncOpenAI(api_key=api_key or "no-key", base_url=cfg.base_url or None,
                               max_retries=0, timeout=cfg.timeout_s,
                               http_client=capped_http_client())
            for _ in range(-(-cfg.concurrency // REQUESTS_PER_CLIENT))]
        self._client_turns = itertools.cycle(self._clients)
        self._limiter = limiter or AdaptiveLimiter(cfg.concurrency)
        self._tripped = False
        self._last_pause_log = -LOG_EVERY_S
        self._totals = _Totals()

    @property
    def is_tripped(self) -> bool:
        return self._tripped

    @property
    def stats(self) -> JudgeStats:
        t = self._totals
        return JudgeStats(
            in_flight=self._limiter.in_flight, judged=t.judged, failed=sum(t.failed.values()),
            failed_by_reason=dict(t.failed), retries=t.retries, num_429=t.num_429,
            current_concurrency=self._limiter.limit, max_concurrency=self.cfg.concurrency,
            prompt_tokens=t.prompt_tokens, completion_tokens=t.completion_tokens,
            tripped=self._tripped, paused_s=self._limiter.pause_left())

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()

    async def __aenter__(self) -> Judge:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def grade(self, concept: str, was_injected: bool, response: str) -> JudgeOutcome:
        call = _Call()
        if not self.enabled:
            return self._fail(call, "disabled", JUDGING_DISABLED)
        messages = self.prompt.messages(concept, was_injected, response)
        for attempt in range(1, self.cfg.max_attempts + 1):
            ticket = await self._limiter.acquire()
            if ticket is None:   # the breaker closed the limiter while we waited
                return self._fail(call, "quota", QUOTA_ERROR)
            call.attempts = attempt
            decision = await self._attempt(ticket, messages, call)
            if decision is None:
                return self._succeed(call)
            if not decision.retry:
                return self._fail(call, decision.kind, final_reason(decision, attempt))
            call.retries += 1
            self._totals.retries += 1
            log.debug("judge attempt %d failed (%s); retrying in %.2f s",
                      attempt, decision.reason, decision.delay_s)
            if not decision.rate_limited:   # a 429's wait is the limiter's global pause
                await anyio.sleep(decision.delay_s)
        raise AssertionError("unreachable: the last attempt never retries")

    async def _attempt(self, ticket: Ticket, messages: list[dict[str, str]],
                       call: _Call) -> _Decision | None:
        """One request. None on success (call.result set), else what to do about the failure."""
        signal, pause = Signal.NEUTRAL, 0.0
        try:
            with anyio.fail_after(self.cfg.timeout_s):
                reply = await self._send(messages)
            signal = Signal.OK
            call.prompt_tokens += reply.prompt_tokens
            call.completion_tokens += reply.completion_tokens
            self._totals.prompt_tokens += reply.prompt_tokens   # live, for the progress view
            self._totals.completion_tokens += reply.completion_tokens
            if reply.refusal:
                raise JudgeRefused(reply.refusal)
            call.result = redact_judgement(parse_judgement(reply.text), self._secret)
            return None
        except Exception as exc:   # every failure becomes a decision; cancellation propagates
            decision = decide(exc, call.attempts, self.cfg, self._secret)
            if decision.kind == "quota":
                self._trip()
            elif decision.rate_limited:
                call.num_429 += 1
                self._totals.num_429 += 1
                signal, pause = Signal.RATE_LIMITED, decision.delay_s
                if decision.too_long:
                    self._log_pause(decision)
            return decision
        finally:
            self._limiter.release(ticket, signal, pause)

    def _log_pause(self, decision: _Decision) -> None:
        now = time.monotonic()
        if now - self._last_pause_log >= LOG_EVERY_S:
            self._last_pause_log = now
            log.warning("judge: %s; failing the row and pausing sends for %g s "
                        "(run `introspectd rejudge` later)", decision.reason, decision.delay_s)

    def _trip(self) -> None:
        if not self._tripped:
            self._tripped = True
            self._limiter.close()
            log.warning("judge: %s; no more judge requests will be sent in this run "
                        "(generation continues; run `introspectd rejudge` later)", QUOTA_ERROR)

    async def _send(self, messages: list[dict[str, str]]) -> _Reply:
        try:
            if self.cfg.api == "responses":
                return await self._send_responses(messages)
            return await self._send_chat(messages)
        except (json.JSONDecodeError, AttributeError, TypeError, IndexError) as exc:
            # A 200 whose body is not JSON (a proxy's error page) or not shaped like a reply:
            # invalid JSON, which the README promises to retry.
            raise JudgeOutputError(f"invalid JSON: reply body is not an API reply "
                                   f"({type(exc).__name__})") from None

    async def _send_chat(self, messages: list[dict[str, str]]) -> _Reply:
        # `chat.completions.create` is this same `post` after a pass that checks and rewrites
        # the params against the SDK's TypedDicts: for our plain JSON body it changes nothing
        # but costs ~0.4 ms of CPU a request, taken from the decode loop that shares the GIL.
        # Errors (APIStatusError and kin, with the response's headers) and parsing are the
        # SDK's either way.
        completion = await next(self._client_turns).post(
            "/chat/completions", cast_to=ChatCompletion, options=_BEARER_AUTH,
            body={"model": self.cfg.model, "messages": messages,
                  "response_format": _CHAT_FORMAT})
        usage = completion.usage
        if not completion.choices:
            raise JudgeOutputError("invalid JSON: reply has no choices")
        message = completion.choices[0].message
        return _Reply(message.content or "", message.refusal,
                      usage.prompt_tokens if usage else 0,
                      usage.completion_tokens if usage else 0)

    async def _send_responses(self, messages: list[dict[str, str]]) -> _Reply:
        # The same shortcut as _send_chat, for `responses.create`.
        response = await next(self._client_turns).post(
            "/responses", cast_to=Response, options=_BEARER_AUTH,
            body={"model": self.cfg.model, "input": messages, "store": False,
                  "text": _RESPONSES_FORMAT})
        refusal = next((part.refusal for item in response.output if item.type == "message"
                        for part in item.content if part.type == "refusal"), None)
        usage = response.usage
        return _Reply(response.output_text, refusal,
                      usage.input_tokens if usage else 0, usage.output_tokens if usage else 0)

    def _outcome(self, call: _Call, error: str | None, kind: str | None) -> JudgeOutcome:
        return JudgeOutcome(
            result=call.result if error is None else None, error=error, attempts=call.attempts,
            prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
            judge_model=self.cfg.model, prompt_version=self.cfg.prompt_version,
            fewshot_hash=self.fewshot_hash, num_429=call.num_429, num_retries=call.retries,
            error_kind=kind)

    def _succeed(self, call: _Call) -> JudgeOutcome:
        self._totals.judged += 1
        return self._outcome(call, None, None)

    def _fail(self, call: _Call, kind: str, reason: str) -> JudgeOutcome:
        self._totals.failed[kind] += 1
        return self._outcome(call, reason, kind)
