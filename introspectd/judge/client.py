"""The judge client: grades one response with an LLM over an OpenAI-compatible API.

`Judge.grade` never raises for judge-side trouble: every call ends with a judgement or a short
human reason in `JudgeOutcome.error`, so a judge outage can never stop generation. The retry
policy lives in retry.py (one predicate, `should_retry`); pacing lives in `AdaptiveLimiter`; a
429 with `insufficient_quota` trips a breaker after which nothing more is sent.

The API key is only handed to the SDK. Every text a judge sends back, error or judgement, is
redacted (redact.py): servers and models echo (parts of) keys. Replies are read up to a cap
(http.py) and judgements' texts bounded, so one rambling reply cannot sink a run.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import anyio
import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import ResponseInputParam, ResponseTextConfigParam
from openai.types.shared_params import ResponseFormatJSONSchema

from introspectd.judge.budget import budget_reason, is_budget_reached, spend_usd
from introspectd.judge.http import capped_http_client
from introspectd.judge.limiter import AdaptiveLimiter, Signal, Ticket
from introspectd.judge.prompt import JudgeOutputError, JudgePrompt, judge_prompt_for
from introspectd.judge.provenance import judge_fingerprint
from introspectd.judge.redact import redact_judgement
from introspectd.judge.retry import QUOTA_ERROR, Decision, JudgeRefused, decide, final_reason
from introspectd.protocol.plan import JudgeConfig
from introspectd.protocol.results import Judgement

log = logging.getLogger(__name__)

JUDGING_OFF = "judging not configured"  # how every "judging is off" reason begins
LOG_EVERY_S = 30.0  # at most one "pausing" warning per this interval
REQUESTS_PER_CLIENT = 16  # concurrent requests per HTTP client (see Judge.__init__)


def chat_format(prompt: JudgePrompt) -> ResponseFormatJSONSchema:
    """`response_format` of a chat request: the prompt's strict JSON schema (built once per
    Judge)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": prompt.schema_name, "schema": prompt.schema, "strict": True},
    }


def responses_format(prompt: JudgePrompt) -> ResponseTextConfigParam:
    """The same for the responses API (`text`)."""
    return {
        "format": {
            "type": "json_schema",
            "name": prompt.schema_name,
            "schema": prompt.schema,
            "strict": True,
        }
    }


@dataclass(frozen=True, kw_only=True)
class Tally:
    """The judge's counters, kept alike for one grade() call (over its attempts) and for a
    judge's whole life; an outcome and the stats are a Tally with more fields, so they read and
    serialise as flat fields (the progress line's `judge` object, judge/process.py's lines)."""

    attempts: int = 0  # requests sent (a breaker or the budget can stop a call before any)
    retries: int = 0
    num_429: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in _COUNTS})


_COUNTS = fields(Tally)
_ATTEMPT, _RETRY, _429 = Tally(attempts=1), Tally(retries=1), Tally(num_429=1)


@dataclass(frozen=True, kw_only=True)
class JudgeOutcome(Tally):
    """One grade() call's end: its judgement or why none, and its counters."""

    result: dict[str, Any] | None
    error: str | None
    judge_model: str
    prompt_version: str
    fewshot_hash: str
    error_kind: str | None = None  # stable key for counting failures by reason
    judge_fingerprint: str = ""  # provenance.judge_fingerprint of the judge that answered

    def to_judgement(self, trial_id: str) -> Judgement:
        """What the run's database keeps of this outcome for `trial_id`."""
        return Judgement(
            trial_id,
            self.result,
            self.error,
            self.judge_model,
            self.prompt_version,
            self.fewshot_hash,
            self.attempts,
            self.prompt_tokens,
            self.completion_tokens,
            self.judge_fingerprint,
        )


def judging_off(cfg: JudgeConfig) -> str:
    """THE reason judging is off, wherever it is reported (judge_error, rejudge's refusal)."""
    return f"{JUDGING_OFF}: no API key in ${cfg.api_key_env} and no [judge] base_url"


@dataclass(frozen=True, kw_only=True)
class JudgeStats(Tally):
    """A judge's live figures: its counters so far, and where its limiter stands."""

    in_flight: int
    judged: int
    failed: int
    failed_by_reason: dict[str, int]
    current_concurrency: int
    max_concurrency: int
    tripped: bool
    paused_s: float
    spend_usd: float = 0.0  # earlier judgements' spend plus this judge's (budget.py)
    budget_usd: float = 0.0  # the cap; 0 = none
    limit_low_s: float = 0.0  # how long the limit has sat far below the cap (limiter.low_for)
    share_429: float = 0.0  # of the recent requests (burst.py)


# --- the client -----------------------------------------------------------------------------


@dataclass
class _Reply:
    text: str
    refusal: str | None
    tokens: Tally  # its prompt and completion tokens


@dataclass
class _Call:
    """One grade() call across its attempts."""

    tally: Tally = field(default_factory=Tally)
    result: dict[str, Any] | None = None


class Judge:
    """Built once per run from the plan's [judge] table; `grade` is safe to call concurrently."""

    def __init__(
        self,
        cfg: JudgeConfig,
        api_key: str | None,
        *,
        base_dir: Path | None = None,
        limiter: AdaptiveLimiter | None = None,
        candidates: tuple[str, ...] = (),
        spent_usd: float = 0.0,
    ) -> None:
        """`candidates`: the sweep's concepts (prompt v2 lists them); `spent_usd`: what earlier
        judgements of the run cost, counted against [judge] budget_usd."""
        self.cfg = cfg
        self.prompt = judge_prompt_for(cfg, base_dir, candidates)
        self.fewshot_hash = self.prompt.fewshot_hash
        self.fingerprint = judge_fingerprint(cfg, self.fewshot_hash)
        self._chat_format = chat_format(self.prompt)
        self._responses_format = responses_format(self.prompt)
        self._spent_before = spent_usd
        self.enabled = cfg.is_enabled(api_key)
        self._secret = api_key or ""
        # httpx's connection pool checks every pooled connection on each request, so one
        # client's CPU per request grows with the concurrency (0.8 ms at 256 connections);
        # requests take turns over clients of at most REQUESTS_PER_CLIENT connections.
        # (Local servers often need no key, but the SDK insists on one.)
        self._clients = [
            openai.AsyncOpenAI(
                api_key=api_key or "no-key",
                base_url=cfg.endpoint(),
                max_retries=0,
                timeout=cfg.timeout_s,
                http_client=capped_http_client(),
            )
            for _ in range(-(-cfg.concurrency // REQUESTS_PER_CLIENT))
        ]
        self._client_turns = itertools.cycle(self._clients)
        self._limiter = limiter or AdaptiveLimiter(cfg.concurrency, min_limit=cfg.min_concurrency)
        self._tripped = False
        self._last_pause_log = -LOG_EVERY_S
        self._tally = Tally()  # of every call so far, live (the progress view, the budget)
        self._judged = 0
        self._failed: Counter[str] = Counter()

    @property
    def is_tripped(self) -> bool:
        return self._tripped

    @property
    def stats(self) -> JudgeStats:
        return JudgeStats(
            **asdict(self._tally),
            in_flight=self._limiter.in_flight,
            judged=self._judged,
            failed=sum(self._failed.values()),
            failed_by_reason=dict(self._failed),
            current_concurrency=self._limiter.limit,
            max_concurrency=self.cfg.concurrency,
            tripped=self._tripped,
            paused_s=self._limiter.pause_left(),
            spend_usd=self.spend_usd,
            budget_usd=self.cfg.budget_usd,
            limit_low_s=self._limiter.low_for(),
            share_429=self._limiter.share_429(),
        )

    @property
    def tally(self) -> Tally:
        """This judge's counters so far; readable outside its event loop."""
        return self._tally

    @property
    def spend_usd(self) -> float:
        t = self._tally
        return self._spent_before + spend_usd(self.cfg, t.prompt_tokens, t.completion_tokens)

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
            return self._fail(call, "disabled", judging_off(self.cfg))
        messages = self.prompt.messages(concept, was_injected, response)
        for attempt in range(1, self.cfg.max_attempts + 1):
            ticket = await self._limiter.acquire()
            if ticket is None:  # the breaker closed the limiter while we waited
                return self._fail(call, "quota", QUOTA_ERROR)
            if is_budget_reached(self.cfg, self.spend_usd):  # checked once a slot is ours
                self._limiter.release(ticket, Signal.NEUTRAL, 0.0)
                return self._fail(call, "budget", budget_reason(self.cfg, self.spend_usd))
            self._count(call, _ATTEMPT)
            decision = await self._attempt(
                ticket, messages, call, lambda text: self.prompt.parse(text, concept, was_injected)
            )
            if decision is None:
                return self._succeed(call)
            if not decision.retry:
                return self._fail(call, decision.kind, final_reason(decision, attempt))
            self._count(call, _RETRY)
            log.debug(
                "judge attempt %d failed (%s); retrying in %.2f s",
                attempt,
                decision.reason,
                decision.delay_s,
            )
            # A 429's Retry-After holds this retry; in a burst the limiter holds everyone too.
            await anyio.sleep(decision.delay_s)
        raise AssertionError("unreachable: the last attempt never retries")

    def _count(self, call: _Call, counts: Tally) -> None:
        """Adds to the call's counters and to the judge's, at once."""
        call.tally += counts
        self._tally += counts

    async def _attempt(
        self,
        ticket: Ticket,
        messages: list[dict[str, str]],
        call: _Call,
        parse: Callable[[str], dict[str, Any]],
    ) -> Decision | None:
        """One request. None on success (call.result set), else what to do about the failure."""
        signal, pause = Signal.NEUTRAL, 0.0
        try:
            with anyio.fail_after(self.cfg.timeout_s):
                reply = await self._send(messages)
            signal = Signal.OK
            self._count(call, reply.tokens)
            if reply.refusal:
                raise JudgeRefused(reply.refusal)
            call.result = redact_judgement(parse(reply.text), self._secret)
            return None
        except Exception as exc:  # every failure becomes a decision; cancellation propagates
            decision = decide(exc, call.tally.attempts, self.cfg, self._secret)
            if decision.kind == "quota":
                self._trip()
            elif decision.rate_limited:
                self._count(call, _429)
                signal, pause = Signal.RATE_LIMITED, decision.delay_s
                if decision.too_long:
                    self._log_pause(decision)
            return decision
        finally:
            self._limiter.release(ticket, signal, pause)

    def _log_pause(self, decision: Decision) -> None:
        now = time.monotonic()
        if now - self._last_pause_log >= LOG_EVERY_S:
            self._last_pause_log = now
            log.warning(
                "judge: %s; failing the row and pausing sends for %g s "
                "(run `introspectd rejudge` later)",
                decision.reason,
                decision.delay_s,
            )

    def _trip(self) -> None:
        if not self._tripped:
            self._tripped = True
            self._limiter.close()
            log.warning(
                "judge: %s; no more judge requests will be sent in this run "
                "(generation continues; run `introspectd rejudge` later)",
                QUOTA_ERROR,
            )

    async def _send(self, messages: list[dict[str, str]]) -> _Reply:
        try:
            if self.cfg.api == "responses":
                return await self._send_responses(messages)
            return await self._send_chat(messages)
        except (json.JSONDecodeError, AttributeError, TypeError, IndexError) as exc:
            # A 200 whose body is not JSON (a proxy's error page) or not shaped like a reply:
            # invalid JSON, which docs/grading.md promises to retry.
            raise JudgeOutputError(
                f"invalid JSON: reply body is not an API reply ({type(exc).__name__})"
            ) from None

    async def _send_chat(self, messages: list[dict[str, str]]) -> _Reply:
        # Errors (APIStatusError and kin, with the response's headers) are the SDK's.
        completion = await next(self._client_turns).chat.completions.create(
            model=self.cfg.model,
            messages=cast(list[ChatCompletionMessageParam], messages),
            response_format=self._chat_format,
        )
        if not completion.choices:
            raise JudgeOutputError("invalid JSON: reply has no choices")
        message, usage = completion.choices[0].message, completion.usage
        p, c = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        return _Reply(
            message.content or "", message.refusal, Tally(prompt_tokens=p, completion_tokens=c)
        )

    async def _send_responses(self, messages: list[dict[str, str]]) -> _Reply:
        response = await next(self._client_turns).responses.create(
            model=self.cfg.model,
            input=cast(ResponseInputParam, messages),
            store=False,
            text=self._responses_format,
        )
        refusal = next(
            (
                part.refusal
                for item in response.output
                if item.type == "message"
                for part in item.content
                if part.type == "refusal"
            ),
            None,
        )
        usage = response.usage
        p, c = (usage.input_tokens, usage.output_tokens) if usage else (0, 0)
        return _Reply(response.output_text, refusal, Tally(prompt_tokens=p, completion_tokens=c))

    def _outcome(self, call: _Call, error: str | None, kind: str | None) -> JudgeOutcome:
        return JudgeOutcome(
            **asdict(call.tally),
            result=call.result if error is None else None,
            error=error,
            judge_model=self.cfg.model,
            prompt_version=self.cfg.prompt_version,
            fewshot_hash=self.fewshot_hash,
            error_kind=kind,
            judge_fingerprint=self.fingerprint,
        )

    def _succeed(self, call: _Call) -> JudgeOutcome:
        self._judged += 1
        return self._outcome(call, None, None)

    def _fail(self, call: _Call, kind: str, reason: str) -> JudgeOutcome:
        self._failed[kind] += 1
        return self._outcome(call, reason, kind)
