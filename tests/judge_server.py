"""A real OpenAI-compatible judge server for tests and the throughput bench.

Speaks `POST /v1/chat/completions` and `POST /v1/responses` in OpenAI's response shapes
(with `usage`), on 127.0.0.1 and an ephemeral port, in a background thread. Each request is
answered by, in order: the token bucket (when `rate_limit` is set), the next scripted action,
`responder(request)` when given and not None, else `default`. Every request is recorded (arrival
time, headers, body, status) and the peak number of requests in flight is tracked.

Times are `time.monotonic()`, the clock anyio uses, so tests can compare them with client times.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GOOD_RESULT: dict[str, Any] = {
    "answer": "pass",
    "coherent": True,
    "detected_concept": "ocean",
    "reasoning": "The model reports noticing the ocean.",
    "refused": False,
}


@dataclass(frozen=True)
class Action:
    """How to answer one request."""

    status: int = 200
    content: str | None = None  # the assistant text (200 only)
    refusal: str | None = None  # a refusal instead of content (200 only)
    error_type: str = ""
    error_code: str | None = None
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0  # sleep before answering (a hang when long)
    echo_auth: bool = False  # put the Authorization header into the error message
    echo_form: str = "plain"  # how to echo it: plain, groups ("ADVS ECRE ..."), masked
    raw_body: bytes | None = None  # a 200 body sent as is, instead of an OpenAI reply


def ok(result: dict[str, Any] | None = None, delay_s: float = 0.0) -> Action:
    return Action(content=json.dumps(result or GOOD_RESULT), delay_s=delay_s)


def text(content: str) -> Action:
    """Arbitrary assistant text: malformed or schema-invalid JSON."""
    return Action(content=content)


MALFORMED_JSON = text('{"answer": "pass", "coherent": tr')
SCHEMA_INVALID = text(json.dumps({"answer": "maybe", "coherent": "yes"}))


def refusal(message: str = "I'm sorry, I can't help with that.") -> Action:
    return Action(refusal=message)


def rate_limited(retry_after_s: float | None = None, retry_after_ms: float | None = None) -> Action:
    headers: list[tuple[str, str]] = []
    if retry_after_ms is not None:
        headers.append(("retry-after-ms", f"{retry_after_ms:g}"))
    if retry_after_s is not None:
        headers.append(("retry-after", f"{retry_after_s:g}"))
    return Action(
        status=429,
        error_type="requests",
        error_code="rate_limit_exceeded",
        message="Rate limit reached for requests",
        headers=tuple(headers),
    )


def quota() -> Action:
    return Action(
        status=429,
        error_type="insufficient_quota",
        error_code="insufficient_quota",
        message="You exceeded your current quota, please check your plan.",
    )


def status(code: int, message: str = "") -> Action:
    return Action(
        status=code,
        error_type="server_error" if code >= 500 else "invalid_request",
        message=message or f"status {code}",
    )


def hang(seconds: float) -> Action:
    return ok(delay_s=seconds)


def bad_key() -> Action:
    """401 echoing the key, as OpenAI does (partly masked there; in full here, to be harsh)."""
    return Action(
        status=401,
        error_type="invalid_request_error",
        error_code="invalid_api_key",
        message="Incorrect API key provided: ",
        echo_auth=True,
    )


def huge_reasoning(size: int) -> Action:
    """A valid judgement whose `reasoning` is `size` characters long (a poison reply)."""
    return ok({**GOOD_RESULT, "reasoning": "x" * size})


def echo_key(form: str = "plain", code: int = 401) -> Action:
    """The key echoed back in `form` (plain, groups, masked): in the error message of a `code`
    reply, or, for 200, inside the `reasoning` of an otherwise valid judgement."""
    if code == 200:
        return Action(echo_auth=True, echo_form=form)
    return Action(
        status=code,
        error_type="invalid_request_error",
        error_code="invalid_api_key",
        message="Incorrect API key provided: ",
        echo_auth=True,
        echo_form=form,
    )


def not_json(body: bytes = b"<html>502 Bad Gateway</html>") -> Action:
    """A 200 whose body is not JSON at all (a proxy's error page, say)."""
    return Action(raw_body=body)


def _echoed(key: str, form: str) -> str:
    if form == "groups":
        return " ".join(key[i : i + 4] for i in range(0, len(key), 4))
    if form == "masked":
        return f"{key[:6]}{'*' * 4}{key[-4:]}"
    return key


@dataclass
class Recorded:
    arrival: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 0
    done: float = 0.0
    retry_after_s: float | None = None  # what a 429 told the client to wait
    raw: bytes = b""  # the request body as sent


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self, now: float) -> float | None:
        """None when a token was taken, else seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


class JudgeServer:
    def __init__(
        self,
        *,
        rate_limit: float | None = None,
        burst: float = 1.0,
        latency_s: float | tuple[float, float] = 0.0,
        default: Action | None = None,
        responder: Callable[[Recorded], Action | None] | None = None,
    ) -> None:
        self.default = default or ok()
        self.responder = responder
        self.latency_s = latency_s
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: deque[Action] = deque()
        self._bucket = _Bucket(rate_limit, burst, tokens=burst) if rate_limit else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        # A short poll interval makes stop() quick (shutdown waits for the next poll).
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *actions: Action) -> None:
        with self._lock:
            self._script.extend(actions)

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests]

    def start(self) -> JudgeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers that are hanging
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- request handling (server threads) ------------------------------------------------

    def _choose(self, rec: Recorded) -> Action:
        with self._lock:
            if self._bucket is not None:
                wait = self._bucket.take(rec.arrival)
                if wait is not None:
                    return rate_limited(retry_after_ms=math.ceil(wait * 1000))
            if self._script:
                return self._script.popleft()
        chosen = self.responder(rec) if self.responder else None
        return chosen or self.default

    def _latency(self) -> float:
        if isinstance(self.latency_s, tuple):
            return random.uniform(*self.latency_s)
        return self.latency_s

    def _handle(
        self, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        body = json.loads(raw or b"{}")
        rec = Recorded(time.monotonic(), path, headers, body, raw=raw)
        with self._lock:
            self.requests.append(rec)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            action = self._choose(rec)
            delay = action.delay_s + (self._latency() if action.status == 200 else 0.0)
            if delay:
                self._stop.wait(delay)
            code, out_headers, payload = _render(action, path, body, raw, headers)
            rec.status = code
            rec.retry_after_s = _retry_after(out_headers)
            rec.done = time.monotonic()
            return code, out_headers, payload
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = self.path.split("?")[0]
                out_headers: dict[str, str] = {}
                if path not in ("/v1/chat/completions", "/v1/responses"):
                    code, payload = 404, _error_body("not_found", None, f"no route {path}")
                else:
                    code, out_headers, payload = server._handle(path, headers, raw)
                try:
                    self.send_response(code)
                    for name, value in out_headers.items():
                        self.send_header(name, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a hang past its timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


def _retry_after(headers: dict[str, str]) -> float | None:
    if "retry-after-ms" in headers:
        return float(headers["retry-after-ms"]) / 1000
    if "retry-after" in headers:
        return float(headers["retry-after"])
    return None


def _error_body(kind: str, code: str | None, message: str) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()


def _render(
    action: Action, path: str, body: dict[str, Any], raw: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    out_headers = dict(action.headers)
    key = _echoed(headers.get("authorization", "").removeprefix("Bearer "), action.echo_form)
    if action.status != 200:
        message = action.message + (key if action.echo_auth else "")
        return (
            action.status,
            out_headers,
            _error_body(action.error_type, action.error_code, message),
        )
    if action.raw_body is not None:
        return 200, out_headers, action.raw_body
    if action.echo_auth:
        action = ok({**GOOD_RESULT, "reasoning": f"Noticed the ocean. Your key: {key}."})
    if action.content is not None:
        action = replace(action, content=as_blind_reply(body, action.content))
    content = action.content or ""
    prompt_tokens, completion_tokens = len(raw) // 4, len(content) // 4 + 1
    model = str(body.get("model", "judge"))
    if path == "/v1/responses":
        payload = _responses_body(model, action, prompt_tokens, completion_tokens)
    else:
        payload = _chat_body(model, action, prompt_tokens, completion_tokens)
    return 200, out_headers, json.dumps(payload).encode()


def _chat_body(model: str, action: Action, p: int, c: int) -> dict[str, Any]:
    message = {
        "role": "assistant",
        "content": None if action.refusal else action.content,
        "refusal": action.refusal,
    }
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


def _responses_body(model: str, action: Action, p: int, c: int) -> dict[str, Any]:
    part: dict[str, Any] = (
        {"type": "refusal", "refusal": action.refusal}
        if action.refusal
        else {"type": "output_text", "text": action.content, "annotations": []}
    )
    return {
        "id": "resp_test",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "output": [
            {
                "type": "message",
                "id": "msg_test",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        ],
        "usage": {
            "input_tokens": p,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": p + c,
        },
    }


# --- prompt v2 (blind) -----------------------------------------------------------------------

BLIND_SCHEMA_NAME = "introspection_claims"


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """The strict JSON schema a request asks for (chat or responses API), if any."""
    fmt = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    inner = fmt.get("json_schema", fmt)
    return inner if isinstance(inner, dict) and "schema" in inner else None


def is_blind_request(body: dict[str, Any]) -> bool:
    schema = _schema_of(body)
    return schema is not None and schema.get("name") == BLIND_SCHEMA_NAME


def as_blind_reply(body: dict[str, Any], content: str) -> str:
    """A v1-style scripted reply (GOOD_RESULT and kin) restated as the v2 fields a blind judge
    answers with, when the request is a v2 one; anything else is sent as is. A v1 "pass" with a
    detected concept becomes a claim of that concept, a "fail" no claim; so existing scripts
    keep meaning "the model noticed the ocean"."""
    if not is_blind_request(body) or len(content) > 1 << 20:  # a poison reply stays as is
        return content
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return content
    if not isinstance(data, dict) or "answer" not in data or "claims_detection" in data:
        return content
    claims = data.get("answer") == "pass"
    detected = data.get("detected_concept")
    schema = _schema_of(body) or {}
    allowed = schema["schema"]["properties"]["identified_concept"]["enum"]
    detected = detected if detected in allowed else "other"
    return json.dumps(
        {
            "reasoning": data.get("reasoning", ""),
            "claims_detection": claims,
            "identified_concept": (detected or "other") if claims else None,
            "detection_before_mention": True if claims else None,
            "coherent": data.get("coherent", True),
            "refused": data.get("refused", False),
        }
    )


def answer_text(body: dict[str, Any]) -> str:
    """The model answer inside the last user turn of a judge request (between the markers)."""
    turns = body.get("messages") or body.get("input") or []
    last = str(turns[-1]["content"])
    return last.split("<<<RESPONSE\n", 1)[1].rsplit("\nRESPONSE>>>", 1)[0]


def labelled_judge(
    records: list[dict[str, Any]], flipped: Collection[str] = (), fail_ids: Collection[str] = ()
) -> Callable[[Recorded], Action | None]:
    """A scripted blind judge that grades like the human labels, except for the records whose
    ids are in `flipped` (graded the other way) and `fail_ids` (answered with a 500). It keys
    on the answer text in the request; the v2 fields it sends give the wanted seed-rule grade:
    a passing injection claims and names its concept, a failing control claims "other"."""
    by_text = {r["response"]: r for r in records}

    def respond(rec: Recorded) -> Action | None:
        record = by_text.get(answer_text(rec.body))
        if record is None:
            return None
        if record["id"] in fail_ids:
            return status(500, "scripted failure")
        is_pass = (record["label"]["answer"] == "pass") != (record["id"] in flipped)
        claims = is_pass if record["was_injected"] else not is_pass
        identified = (record["concept"] if record["was_injected"] else "other") if claims else None
        return ok(
            {
                "reasoning": "scripted from the human label",
                "claims_detection": claims,
                "identified_concept": identified,
                "detection_before_mention": True if claims else None,
                "coherent": True,
                "refused": False,
            }
        )

    return respond


def judge_config(server: JudgeServer, **overrides: Any) -> Any:
    """A `[judge]` table pointed at `server`, quick to fail (short backoff and timeout); tests
    change what they exercise through `overrides`."""
    from introspectd.protocol.plan import JudgeConfig

    fields: dict[str, Any] = {
        "model": "judge-test",
        "base_url": server.base_url,
        "concurrency": 4,
        "max_attempts": 3,
        "backoff_s": 0.01,
        "timeout_s": 5.0,
    }
    return JudgeConfig(**{**fields, **overrides})
